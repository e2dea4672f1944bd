"""smtpbench across many hosts (issue 14), on loopback with the real binaries.

--proxy v1|v2 --proxy-source: the sink trusting 127.0.0.1 sees the claimed
client (a client= fault rule answers 5xx only to it), on both smtpbench I/O
backends, plaintext and implicit TLS; the exact header octets on the wire
(read by a listener here, built independently of the C builder): the
connection's own address and ephemeral port without --proxy-source, the
mapped form across families, nothing but the header before the greeting and
the ClientHello right behind it with --tls.

--segment i/3 --start-at: three instances are one run - shares that add up,
one run id, smtpsink --verify counting every message once and none as
another run's, starts within a few ms of each other - against one sink and
through real HAProxy (send-proxy-v2, round robin) to two sinks.  Usage
errors exit 2 before any connection.
"""
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import sinklib  # noqa: E402
from sinklib import SANITIZE, SLOW, HAProxy, Sink, backends, dead_port, free_port  # noqa: E402

SMTPBENCH = os.environ.get("SMTPBENCH", "")
BACKENDS = backends()
SEEN = "550 5.7.1 seen"
FAULT = ["--proxy-protocol", "127.0.0.1", "--fault", "mail client=127.0.0.8 reply='%s'" % SEEN]
V2SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def check_stderr(err):
    if any(m in err for m in sinklib.SANITIZER_MARKS):
        raise AssertionError("sanitizer report:\n" + err)


def bench(port, *args, timeout=60):
    """One smtpbench run; (exit status, report, stderr)."""
    with tempfile.TemporaryDirectory() as d:
        jp = os.path.join(d, "r.json")
        r = subprocess.run([SMTPBENCH, "--target", "127.0.0.1:%d" % port, "--quiet",
                            "--timeout", "10s", "--json", jp] + list(args),
                           capture_output=True, timeout=timeout * SLOW)
        err = r.stderr.decode(errors="replace")
        check_stderr(err)
        with open(jp) as f:
            return r.returncode, json.load(f), err


def segments(port, n, extra, ios=None, lead=2.0, timeout=120, keep=None):
    """n instances --segment i/n, all with --start-at now + lead s; returns
    [(exit status, report, stderr)] in order of i.  keep: a directory that
    receives each instance's report (i.json) and interval log (i.jsonl)."""
    d = keep or tempfile.mkdtemp(prefix="benchseg.")
    try:
        at = "%.3f" % (time.time() + lead * SLOW)
        procs = []
        for i in range(1, n + 1):
            io = ios[(i - 1) % len(ios)] if ios else None
            cmd = [SMTPBENCH, "--target", "127.0.0.1:%d" % port, "--quiet", "--timeout", "10s",
                   "--segment", "%d/%d" % (i, n), "--start-at", at,
                   "--json", os.path.join(d, "%d.json" % i)] + list(extra)
            if keep:
                cmd += ["--interval-log", os.path.join(d, "%d.jsonl" % i)]
            if io:
                cmd += ["--io", io]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE))
        out = []
        for i, p in enumerate(procs, 1):
            try:
                _, e = p.communicate(timeout=timeout * SLOW)
            except subprocess.TimeoutExpired:
                for q in procs:
                    q.kill()
                raise AssertionError("segment %d/%d did not finish" % (i, n))
            err = e.decode(errors="replace")
            check_stderr(err)
            with open(os.path.join(d, "%d.json" % i)) as f:
                out.append((p.returncode, json.load(f), err))
        return at, out
    finally:
        if not keep:
            shutil.rmtree(d, ignore_errors=True)


class HeaderCatcher:
    """A listener that takes one connection, reads its PROXY header and what
    follows for a moment, then says 421 and closes: the octets smtpbench
    really wrote, and the client's own address as accept() saw it."""

    def __init__(self, family=socket.AF_INET, host="127.0.0.1"):
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(4)
        self.sock.settimeout(20 * SLOW)
        self.port = self.sock.getsockname()[1]
        self.data = b""
        self.peer = None
        self.error = None
        self.th = threading.Thread(target=self.run, daemon=True)
        self.th.start()

    def run(self):
        try:
            c, self.peer = self.sock.accept()
            c.settimeout(0.5 * SLOW)
            deadline = time.monotonic() + 1.0 * SLOW
            while time.monotonic() < deadline:
                try:
                    k = c.recv(4096)
                except socket.timeout:
                    break
                if not k:
                    break
                self.data += k
            try:
                c.sendall(b"421 4.3.2 enough\r\n")
            except OSError:
                pass
            c.close()
        except Exception as e:  # reported by the test
            self.error = e
        finally:
            self.sock.close()

    def wait(self):
        self.th.join(30 * SLOW)
        if self.error:
            raise AssertionError("catcher: %r" % self.error)
        return self.data


def split_header(data):
    """(header, rest) of a v1 or v2 PROXY header at the start of data."""
    if data.startswith(b"PROXY "):
        end = data.index(b"\r\n") + 2
        return data[:end], data[end:]
    assert data.startswith(V2SIG), data[:32]
    end = 16 + struct.unpack("!H", data[14:16])[0]
    return data[:end], data[end:]


class ProxyHeader(unittest.TestCase):
    def setUp(self):
        if not SMTPBENCH:
            self.skipTest("SMTPBENCH not set")

    def test_sink_sees_the_proxy_source(self):
        """Every message from the claimed 127.0.0.8 is refused by the rule
        keyed on it; the same run without --proxy-source is the real
        127.0.0.1 and is delivered: the sink took the header's address."""
        for io in BACKENDS:
            for ver in ("v1", "v2"):
                for tls in (False, True):
                    extra = ["--tls-self-signed", "--listen-tls", "127.0.0.1:0"] if tls else []
                    with self.subTest(io=io, proxy=ver, tls=tls), Sink(FAULT + extra) as s:
                        port = s.tls_port if tls else s.port
                        mode = ["--tls"] if tls else []
                        rc, rep, err = bench(port, "--io", io, "--proxy", ver, "--proxy-source",
                                             "127.0.0.8", "--sessions", "4", "--threads", "2",
                                             "--messages", "40", *mode)
                        self.assertEqual(rc, 1, err)
                        m = rep["messages"]
                        self.assertEqual((m["failed"], m["failed_by"]["5xx"], m["delivered"]),
                                         (40, 40, 0), err)
                        self.assertIn(SEEN, rep["first_errors"][0])
                        self.assertEqual(rep["options"]["proxy"], ver)
                        self.assertEqual(rep["options"]["proxy_source"], "127.0.0.8")
                        self.assertEqual(rep["backend"],
                                         "io_uring" if io == "uring" else "epoll")
                        conns = rep["connections"]["established"]
                        if tls:
                            self.assertEqual(rep["tls"]["full"], conns)
                        # the control: the connection's own address
                        rc, rep, err = bench(port, "--io", io, "--proxy", ver, "--sessions",
                                             "4", "--threads", "2", "--messages", "40", *mode)
                        self.assertEqual(rc, 0, err)
                        self.assertEqual(rep["messages"]["delivered"], 40)
                        conns += rep["connections"]["established"]
                        self.assertEqual(s.stop(), 0)
                        k = s.counters()
                        self.assertEqual(k["proxy_headers"], conns)
                        self.assertEqual(k["proxy_local"] + k["proxy_untrusted"] +
                                         k["proxy_timeouts"] + k["proxy_truncated"], 0)
                        self.assertEqual(sum(v for n, v in k.items()
                                             if n.startswith("proxy_bad_")), 0)
                        if tls:
                            self.assertEqual(k["tls_handshakes"], conns)

    def catch(self, args, family=socket.AF_INET, host="127.0.0.1", target="127.0.0.1:%d"):
        c = HeaderCatcher(family, host)
        r = subprocess.run([SMTPBENCH, "--target", target % c.port, "--quiet", "--messages", "1", "--sessions", "1", "--max-attempts",
                            "1", "--timeout", "5s"] + args,
                           capture_output=True, timeout=30 * SLOW)
        check_stderr(r.stderr.decode(errors="replace"))
        self.assertEqual(r.returncode, 1)  # the catcher is no SMTP server
        return c.wait(), c.peer, c.port

    def test_header_octets_on_the_wire(self):
        for io in BACKENDS:
            with self.subTest(io=io, case="v1 own address and port"):
                data, peer, port = self.catch(["--io", io, "--proxy", "v1"])
                hdr, rest = split_header(data)
                self.assertEqual(hdr, b"PROXY TCP4 127.0.0.1 127.0.0.1 %d %d\r\n" %
                                 (peer[1], port))
                self.assertEqual(rest, b"")  # nothing before the greeting
            with self.subTest(io=io, case="v2 own address and port"):
                data, peer, port = self.catch(["--io", io, "--proxy", "v2"])
                hdr, rest = split_header(data)
                self.assertEqual(hdr, V2SIG + b"\x21\x11\x00\x0c" +
                                 socket.inet_aton("127.0.0.1") * 2 +
                                 struct.pack("!HH", peer[1], port))
                self.assertEqual(rest, b"")
            with self.subTest(io=io, case="v1 given source and port"):
                data, peer, port = self.catch(["--io", io, "--proxy", "v1", "--proxy-source",
                                               "192.0.2.7:4000"])
                self.assertEqual(data, b"PROXY TCP4 192.0.2.7 127.0.0.1 4000 %d\r\n" % port)
            with self.subTest(io=io, case="v2 given source, own port"):
                data, peer, port = self.catch(["--io", io, "--proxy", "v2", "--proxy-source",
                                               "127.0.0.8"])
                self.assertEqual(data, V2SIG + b"\x21\x11\x00\x0c" +
                                 socket.inet_aton("127.0.0.8") + socket.inet_aton("127.0.0.1") +
                                 struct.pack("!HH", peer[1], port))
            with self.subTest(io=io, case="v1 IPv6 source, IPv4 target: mapped"):
                data, peer, port = self.catch(["--io", io, "--proxy", "v1", "--proxy-source",
                                               "[2001:db8::7]:5"])
                self.assertEqual(data, b"PROXY TCP6 2001:db8::7 ::ffff:127.0.0.1 5 %d\r\n" %
                                 port)
            with self.subTest(io=io, case="v2 IPv6 source, IPv4 target: mapped"):
                data, peer, port = self.catch(["--io", io, "--proxy", "v2", "--proxy-source",
                                               "2001:db8::7"])
                self.assertEqual(data, V2SIG + b"\x21\x21\x00\x24" +
                                 socket.inet_pton(socket.AF_INET6, "2001:db8::7") +
                                 socket.inet_pton(socket.AF_INET6, "::ffff:127.0.0.1") +
                                 struct.pack("!HH", peer[1], port))
            with self.subTest(io=io, case="implicit TLS: header, then the ClientHello"):
                data, peer, port = self.catch(["--io", io, "--proxy", "v2", "--tls"])
                hdr, rest = split_header(data)
                self.assertEqual(hdr[16:], socket.inet_aton("127.0.0.1") * 2 +
                                 struct.pack("!HH", peer[1], port))
                # a TLS handshake record holding a ClientHello (RFC 8446 5.1, 4)
                self.assertEqual(rest[:1], b"\x16")
                self.assertEqual(rest[5:6], b"\x01", rest[:16])
            if socket.has_ipv6:
                with self.subTest(io=io, case="IPv4 source, IPv6 target: source mapped"):
                    try:
                        data, peer, port = self.catch(
                            ["--io", io, "--proxy", "v1", "--proxy-source", "127.0.0.8:9"],
                            socket.AF_INET6, "::1", "[::1]:%d")
                    except OSError as e:
                        self.skipTest("no IPv6 loopback: %s" % e)
                    self.assertEqual(data, b"PROXY TCP6 ::ffff:127.0.0.8 ::1 9 %d\r\n" % port)


class Segments(unittest.TestCase):
    def setUp(self):
        if not SMTPBENCH:
            self.skipTest("SMTPBENCH not set")

    def check_run(self, out, at, msgs, sessions):
        """The reports of one segmented run: each a clean run of its exact
        share, one run id, starts together."""
        n = len(out)
        for i, (rc, rep, err) in enumerate(out, 1):
            self.assertEqual(rc, 0, err)
            self.assertIn("waiting", err)
            self.assertEqual(rep["segment"]["index"], i)
            self.assertEqual(rep["segment"]["count"], n)
            self.assertEqual(rep["segment"]["sessions_total"], sessions)
            self.assertEqual(rep["segment"]["messages_total"], msgs)
            self.assertEqual(rep["options"]["sessions"], sessions // n + (i <= sessions % n))
            self.assertEqual(rep["options"]["messages"], msgs // n + (i <= msgs % n))
            self.assertAlmostEqual(rep["start_at"], float(at), places=3)
            self.assertIsNone(rep["stopped"])
        self.assertEqual(len({rep["run_id"] for _, rep, _ in out}), 1)
        starts = [rep["started_at"] for _, rep, _ in out]
        # each started at the agreed time (not before, hardly after) ...
        for s in starts:
            self.assertGreaterEqual(s, float(at) - 0.001)
            self.assertLess(s - float(at), 0.05 * SLOW, starts)
        # ... so within a few ms of each other
        self.assertLess(max(starts) - min(starts), 0.05 * SLOW, starts)
        delivered = sum(rep["messages"]["delivered"] for _, rep, _ in out)
        self.assertEqual(delivered, msgs)
        return out[0][1]["run_id"]

    def test_three_instances_are_one_verified_run(self):
        """Three instances (the backends mixed) against one smtpsink --verify:
        3000 delivered in all = the sink's messages = verify ok, no
        duplicate, no other run."""
        with Sink(["--verify"]) as s:
            at, out = segments(s.port, 3, ["--messages", "3000", "--sessions", "10",
                                           "--threads", "2", "--size", "1k:3,4k:1"],
                               ios=BACKENDS + ["auto"])
            run = self.check_run(out, at, 3000, 10)
            self.assertEqual(s.stop(), 0)
            v = s.summary["verify"]
            self.assertEqual(v["run_id"], run)
            self.assertEqual((v["ok"], v["duplicate"], v["other_run"], v["corrupt"],
                              v["unstamped"], v["out_of_range"]), (3000, 0, 0, 0, 0, 0))
            self.assertEqual(s.counters()["messages"], 3000)

    def test_open_loop_rate_is_split(self):
        """--rate 600 over three instances for 2 s: 1200 slots in all (the
        last may fall just outside), every one verified once."""
        with Sink(["--verify"]) as s:
            at, out = segments(s.port, 3, ["--rate", "600", "--duration", "2s",
                                           "--sessions", "12", "--threads", "2"])
            total = 0
            for i, (rc, rep, err) in enumerate(out, 1):
                self.assertEqual(rc, 0, err)
                self.assertEqual(rep["options"]["rate"], 200)
                self.assertEqual(rep["segment"]["rate_total"], 600)
                total += rep["messages"]["delivered"]
            self.assertLessEqual(total, 1200)
            self.assertGreaterEqual(total, 1170 if not SANITIZE else 1000)
            self.assertEqual(s.stop(), 0)
            v = s.summary["verify"]
            self.assertEqual((v["ok"], v["duplicate"], v["other_run"]), (total, 0, 0))

    def test_start_at_waits_and_can_be_interrupted(self):
        with Sink() as s:
            # just past (under 1 s): starts at once
            rc, rep, err = bench(s.port, "--start-at", "%.3f" % (time.time() - 0.3),
                                 "--messages", "20")
            self.assertEqual(rc, 0, err)
            self.assertEqual(rep["messages"]["delivered"], 20)
            self.assertIsNone(rep["segment"])
            # an RFC 3339 time ahead: waits for it
            t0 = time.time()
            at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(t0) + 2))
            rc, rep, err = bench(s.port, "--start-at", at, "--messages", "20")
            self.assertEqual(rc, 0, err)
            self.assertIn("waiting", err)
            self.assertGreaterEqual(rep["started_at"], int(t0) + 2 - 0.001)
            self.assertLess(rep["started_at"], int(t0) + 2 + 0.05 * SLOW)
            self.assertEqual(rep["start_at"], int(t0) + 2)
            # SIGTERM while waiting: no connection at all
            with tempfile.TemporaryDirectory() as d:
                jp = os.path.join(d, "r.json")
                p = subprocess.Popen([SMTPBENCH, "--target", "127.0.0.1:%d" % s.port, "-q",
                                      "--start-at", "%.3f" % (time.time() + 60), "--json", jp],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                time.sleep(0.5 * SLOW)
                p.send_signal(signal.SIGTERM)
                _, e = p.communicate(timeout=10 * SLOW)
                self.assertEqual(p.returncode, 1, e)
                with open(jp) as f:
                    rep = json.load(f)
                self.assertIn("while waiting for --start-at", rep["stopped"])
                self.assertEqual(rep["connections"]["attempts"], 0)
            self.assertEqual(s.stop(), 0)
            self.assertEqual(s.counters()["messages"], 40)
            self.assertEqual(s.counters()["conns_accepted"], 20)


@unittest.skipUnless(shutil.which("haproxy"), "haproxy not installed (scripts/deps.sh installs it)")
class ThroughHAProxy(unittest.TestCase):
    def setUp(self):
        if not SMTPBENCH:
            self.skipTest("SMTPBENCH not set")

    def test_three_instances_through_haproxy_to_two_sinks(self):
        sinks = [Sink(["--proxy-protocol", "127.0.0.1", "--verify"]) for _ in range(2)]
        hp = None
        keep = tempfile.mkdtemp(prefix="benchseg.")
        try:
            front = free_port()
            hp = HAProxy(front, [(s.port, "send-proxy-v2") for s in sinks],
                         "    balance roundrobin\n")
            at, out = segments(front, 3, ["--messages", "3000", "--sessions", "12",
                                          "--threads", "2"], ios=BACKENDS, keep=keep)
            run = Segments.check_run(self, out, at, 3000, 12)
            for s in sinks:
                self.assertEqual(s.stop(), 0)
            conns = sum(rep["connections"]["established"] for _, rep, _ in out)
            accepted = [s.counters()["messages"] for s in sinks]
            ok = [s.summary["verify"]["ok"] for s in sinks]
            self.assertEqual(sum(accepted), 3000)
            self.assertEqual(sum(ok), 3000)
            self.assertTrue(all(a > 0 for a in accepted), accepted)  # round robin
            for s in sinks:
                v = s.summary["verify"]
                k = s.counters()
                self.assertEqual(v["run_id"], run)
                self.assertEqual((v["duplicate"], v["other_run"], v["corrupt"]), (0, 0, 0))
                self.assertEqual(k["proxy_untrusted"] + k["proxy_local"], 0)
                self.assertEqual(k["proxy_headers"], k["conns_accepted"])
            # one balanced connection per smtpbench connection
            self.assertEqual(sum(s.counters()["proxy_headers"] for s in sinks), conns)
            # smtpbench merge of the three reports and of their interval logs
            # gives the same run: 3000 delivered, one histogram of 3000
            files = [os.path.join(keep, "%d.%s" % (i, x)) for x in ("json", "jsonl")
                     for i in (1, 2, 3)]
            r = subprocess.run([SMTPBENCH, "merge", "--json", "-"] + files, capture_output=True,
                               timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            merged = json.loads(r.stdout)
            self.assertEqual(merged["messages"]["delivered"], sum(accepted))
            self.assertEqual(merged["histograms"]["message"]["count"], 3000)
            self.assertEqual(merged["intervals"]["messages"]["delivered"], 3000)
        finally:
            if hp:
                hp.stop()
            for s in sinks:
                s.__exit__(None, None, None)
            shutil.rmtree(keep, ignore_errors=True)


class UsageErrors(unittest.TestCase):
    def setUp(self):
        if not SMTPBENCH:
            self.skipTest("SMTPBENCH not set")

    def test_usage_errors_exit_2_before_connecting(self):
        port = dead_port()  # nothing listens: a run would fail with 1, not 2
        past = "%.0f" % (time.time() - 30)
        soon = "%.3f" % (time.time() + 30)
        cases = [
            (["--segment", "0/3", "--start-at", soon], "invalid --segment '0/3'"),
            (["--segment", "4/3", "--start-at", soon], "invalid --segment '4/3'"),
            (["--segment", "3", "--start-at", soon], "invalid --segment '3'"),
            (["--segment", "1/0", "--start-at", soon], "invalid --segment"),
            (["--segment", "a/b", "--start-at", soon], "invalid --segment"),
            (["--segment", "1/3"], "--segment needs --start-at"),
            (["--segment", "1/3", "--start-at", soon, "--sessions", "2"],
             "--sessions 2 is fewer than the 3 segments"),
            (["--segment", "1/3", "--start-at", soon, "--messages", "2"],
             "--messages 2 is fewer than the 3 segments"),
            (["--start-at", "garbage"], "invalid --start-at 'garbage'"),
            (["--start-at", "2026-11-30T01:00:00"], "invalid --start-at"),
            (["--start-at", "2026-02-30T01:00:00Z"], "invalid --start-at"),
            (["--start-at", "-5"], "invalid --start-at"),
            (["--start-at", past], "--start-at is "),
            (["--start-at", "2020-01-01T00:00:00Z"], "s in the past"),
            (["--proxy", "v3"], "invalid --proxy 'v3' (v1 or v2)"),
            (["--proxy", "1"], "invalid --proxy"),
            (["--proxy", "v2", "--proxy-source", "not-an-ip"],
             "invalid --proxy-source 'not-an-ip'"),
            (["--proxy", "v2", "--proxy-source", "mail.example.com"], "invalid --proxy-source"),
            (["--proxy", "v2", "--proxy-source", "127.0.0.8:70000"], "port 0..65535"),
            (["--proxy", "v2", "--proxy-source", "127.0.0.8:"], "empty port"),
            (["--proxy", "v2", "--proxy-source", "[::1"], "unbalanced"),
            (["--proxy-source", "127.0.0.8"], "--proxy-source needs --proxy"),
        ]
        for args, msg in cases:
            with self.subTest(args=args):
                r = subprocess.run([SMTPBENCH, "--target", "127.0.0.1:%d" % port] + args,
                                   capture_output=True, text=True, timeout=10 * SLOW)
                check_stderr(r.stderr)
                self.assertEqual(r.returncode, 2, (args, r.stderr))
                self.assertIn(msg, r.stderr)
                self.assertNotIn("waiting", r.stderr)


if __name__ == "__main__":
    sinklib.main()
