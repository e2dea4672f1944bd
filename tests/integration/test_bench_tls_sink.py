"""smtpbench with TLS and AUTH against smtpsink --verify (both backends).

STARTTLS + AUTH on the plain listener and implicit TLS on --listen-tls, with
the sink's self-signed certificate (--tls-self-signed, written out with
--tls-cert-out so smtpbench can verify it) and --auth any: every message
smtpbench says was delivered must be verified by the sink, exactly once,
with intact content; --verify stamps travel inside the content, so TLS must
change nothing about them.

Runs only when this smtpsink has TLS: `smtpsink --help` must list
--listen-tls; otherwise every test skips with the reason (exit 77).
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import sinklib  # noqa: E402
from sinklib import SLOW, Sink, backends, free_port  # noqa: E402

SMTPBENCH = os.environ.get("SMTPBENCH", "")
SMTPSINK = os.environ.get("SMTPSINK", "")


def sink_has_tls():
    """(True, "") when smtpsink --help lists --listen-tls, else (False, why)."""
    if not SMTPSINK or not os.path.exists(SMTPSINK):
        return False, "SMTPSINK not set"
    try:
        r = subprocess.run([SMTPSINK, "--help"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, "smtpsink --help failed: %s" % e
    if b"--listen-tls" not in r.stdout + r.stderr:
        return False, "this smtpsink has no TLS yet (--listen-tls not in --help; issue 11)"
    return True, ""


HAVE_TLS, WHY = sink_has_tls()
BACKENDS = backends() if HAVE_TLS else []


def bench(port, *args, timeout=120):
    with tempfile.TemporaryDirectory() as d:
        jp = os.path.join(d, "r.json")
        r = subprocess.run([SMTPBENCH, "--target", "127.0.0.1:%d" % port, "--quiet",
                            "--timeout", "20s", "--json", jp] + list(args),
                           capture_output=True, timeout=timeout * SLOW)
        with open(jp) as f:
            rep = json.load(f)
        err = r.stderr.decode(errors="replace")
        if any(m in err for m in sinklib.SANITIZER_MARKS):
            raise AssertionError("sanitizer report:\n" + err)
        return r.returncode, rep, err


class TLSSink:
    """smtpsink --verify with TLS on both listeners and --auth any."""

    def __init__(self, backend):
        self.dir = tempfile.TemporaryDirectory()
        self.cert = os.path.join(self.dir.name, "sink-cert.pem")
        self.tls_port = free_port()
        self.sink = Sink(["--verify", "--tls-self-signed", "--tls-cert-out", self.cert,
                          "--auth", "any", "--listen-tls", "127.0.0.1:%d" % self.tls_port],
                         backend=backend)
        # the plain listener: the listening address that is not the TLS one
        ports = []
        for a in self.sink.addrs:
            try:
                ports.append(int(a.rsplit(":", 1)[1]))
            except (ValueError, IndexError):
                pass
        plain = [p for p in ports if p != self.tls_port]
        if not plain:
            self.sink.kill()
            raise AssertionError("no plain listener among %r" % self.sink.addrs)
        self.port = plain[0]

    def __enter__(self):
        self.sink.__enter__()
        return self

    def __exit__(self, *exc):
        try:
            return self.sink.__exit__(*exc)
        finally:
            self.dir.cleanup()


class BenchTLSSink(unittest.TestCase):
    def setUp(self):
        if not SMTPBENCH:
            self.skipTest("SMTPBENCH not set")
        if not HAVE_TLS:
            self.skipTest(WHY)

    def check_verified(self, srv, rep, n):
        self.assertEqual(rep["messages"]["delivered"], n)
        srv.sink.stop()
        v = srv.sink.summary["verify"]
        self.assertEqual((v["ok"], v["corrupt"], v["duplicate"], v["unstamped"]), (n, 0, 0, 0))
        self.assertEqual(v["run_id"], rep["run_id"])
        self.assertEqual(srv.sink.counters()["messages"], n)

    def test_starttls_auth_counts_agree_with_verify(self):
        for be in BACKENDS:
            for gen_io in BACKENDS:
                for mode in ([], ["--bdat"], ["--auth-mech", "LOGIN", "--pipelining", "off"]):
                    with self.subTest(sink=be, bench_io=gen_io, mode=mode), TLSSink(be) as srv:
                        rc, rep, err = bench(srv.port, "--io", gen_io, "--starttls",
                                             "--tls-ca", srv.cert, "--auth-user", "u{s}",
                                             "--auth-pass", "p{s}", "--sessions", "8",
                                             "--threads", "2", "--messages", "400", *mode)
                        self.assertEqual(rc, 0, err)
                        n = rep["connections"]["established"]
                        self.assertEqual(rep["auth"]["ok"], n)
                        self.assertEqual(rep["tls"]["full"] + rep["tls"]["resumed"], n)
                        self.check_verified(srv, rep, 400)

    def test_implicit_tls_counts_agree_with_verify(self):
        for be in BACKENDS:
            for gen_io in BACKENDS:
                with self.subTest(sink=be, bench_io=gen_io), TLSSink(be) as srv:
                    rc, rep, err = bench(srv.tls_port, "--io", gen_io, "--tls", "--tls-ca",
                                         srv.cert, "--auth-user", "u", "--auth-pass", "p",
                                         "--sessions", "8", "--threads", "2", "--messages",
                                         "400", "--size", "1k:3,64k:1")
                    self.assertEqual(rc, 0, err)
                    self.check_verified(srv, rep, 400)

    def test_resumed_handshakes(self):
        for gen_io in BACKENDS:
            with self.subTest(bench_io=gen_io), TLSSink(BACKENDS[0]) as srv:
                rc, rep, err = bench(srv.tls_port, "--io", gen_io, "--tls", "--tls-resume",
                                     "--msgs-per-session", "1", "--sessions", "4",
                                     "--messages", "100")
                self.assertEqual(rc, 0, err)
                self.assertGreater(rep["tls"]["resumed"], 0, rep["tls"])
                self.check_verified(srv, rep, 100)


if __name__ == "__main__":
    if not SMTPBENCH or not os.path.exists(SMTPBENCH):
        print("skipped: the SMTPBENCH binary is not set (run through ctest)")
        sys.exit(77)
    sinklib.main()
