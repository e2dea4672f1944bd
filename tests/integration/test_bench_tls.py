"""smtpbench with TLS and AUTH against a real TLS server: Debian's aiosmtpd.

aiosmtpd (an independent implementation: Python's ssl module over OpenSSL,
asyncio) runs in this process on 127.0.0.1, with a throwaway P-256
certificate made by `openssl req` for CN=localhost, DNS:localhost,
IP:127.0.0.1: STARTTLS (require_starttls, AUTH only over TLS) or implicit
TLS (RFC 8314), and an authenticator that accepts one user/password (plus
per-slot ones for {s} templates) and refuses everything else.  Every case
runs with both smtpbench backends, asserts exact counts on both sides of
the wire and a bound on the run time.  A few raw-socket servers cover what
aiosmtpd cannot do: reply injection after the 220 to STARTTLS, a handshake
cut off by the server.
"""
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import sinklib  # noqa: E402
from sinklib import SLOW, backends, free_port  # noqa: E402

SMTPBENCH = os.environ.get("SMTPBENCH", "")
BACKENDS = backends()
USER, PASSWORD = "bench", "s3cret-Pa55"
CERT = {}

try:
    import logging
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword
    HAVE_AIOSMTPD = True
    # the handshakes these tests fail on purpose are logged as tracebacks
    logging.getLogger("mail.log").setLevel(logging.CRITICAL)
except ImportError:  # deps.sh installs python3-aiosmtpd
    HAVE_AIOSMTPD = False


def setUpModule():
    if not HAVE_AIOSMTPD or not shutil.which("openssl"):
        return
    d = tempfile.mkdtemp(prefix="benchtls.")
    CERT["dir"] = d
    CERT["cert"] = os.path.join(d, "cert.pem")
    CERT["key"] = os.path.join(d, "key.pem")
    # and one for another name only: a good chain with the wrong address
    CERT["other"] = os.path.join(d, "other.pem")
    CERT["other_key"] = os.path.join(d, "other-key.pem")
    for cert, key, san in ((CERT["cert"], CERT["key"], "DNS:localhost,IP:127.0.0.1"),
                           (CERT["other"], CERT["other_key"], "DNS:other.test")):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=localhost", "-addext",
                        "subjectAltName=" + san, "-days", "1", "-keyout", key, "-out", cert],
                       check=True, capture_output=True, timeout=30)


def tearDownModule():
    if "dir" in CERT:
        shutil.rmtree(CERT["dir"], ignore_errors=True)


class Handler:
    def __init__(self):
        self.lock = threading.Lock()
        self.delivered = 0
        self.logins = set()
        self.refused = 0

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.delivered += 1
        return "250 2.0.0 Ok: queued"


class Aio:
    """aiosmtpd on 127.0.0.1: mode 'starttls', 'implicit' or 'plain'."""

    def __init__(self, mode, host="127.0.0.1", cert="cert", key="key"):
        self.h = Handler()
        self.sni = []
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(CERT[cert], CERT[key])

        def sni_cb(sslobj, name, _ctx):
            with self.h.lock:
                self.sni.append(name)
        ctx.sni_callback = sni_cb
        self.port = free_port(host)
        kw = dict(hostname=host, port=self.port, authenticator=self.auth,
                  server_hostname="aio.test", ready_timeout=10 * SLOW)
        if mode == "starttls":
            kw.update(tls_context=ctx, require_starttls=True, auth_require_tls=True)
        elif mode == "implicit":
            # aiosmtpd counts only STARTTLS as TLS for auth_require_tls; the
            # whole connection is TLS here
            kw.update(ssl_context=ctx, auth_require_tls=False)
        else:
            kw.update(auth_require_tls=False)
        self.c = Controller(self.h, **kw)
        self.c.start()
        with self.h.lock:  # the controller's own start-up probe
            self.sni.clear()

    def auth(self, server, session, envelope, mechanism, data):
        ok = False
        if isinstance(data, LoginPassword):
            login, pw = data.login.decode(), data.password.decode()
            m = re.fullmatch(r"slot(\d+)", login)
            ok = (login, pw) == (USER, PASSWORD) or bool(m and pw == "pw%s!" % m.group(1))
            with self.h.lock:
                if ok:
                    self.h.logins.add(login)
                else:
                    self.h.refused += 1
        # handled=False: aiosmtpd answers 535 5.7.8 itself
        return AuthResult(success=ok, handled=False)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.c.stop()


def run(port, io, *args, host="127.0.0.1", timeout=60):
    """smtpbench; returns (exit status, report, stderr, seconds)."""
    with tempfile.TemporaryDirectory() as d:
        jp = os.path.join(d, "r.json")
        cmd = [SMTPBENCH, "--target", "%s:%d" % (host, port), "--quiet", "--io", io,
               "--json", jp] + list(args)
        t0 = time.monotonic()
        r = subprocess.run(cmd, capture_output=True, timeout=timeout * SLOW)
        took = time.monotonic() - t0
        with open(jp, "rb") as f:
            raw = f.read()
        err = r.stderr.decode(errors="replace")
        if any(m in err for m in sinklib.SANITIZER_MARKS):
            raise AssertionError("sanitizer report:\n" + err)
        # the password is never printed nor stored
        assert PASSWORD.encode() not in raw and PASSWORD not in err, "password leaked"
        return r.returncode, json.loads(raw), err, took


def nonzero(d):
    return {k: v for k, v in d.items() if v}


class TLS(unittest.TestCase):
    def setUp(self):
        if not SMTPBENCH:
            self.skipTest("SMTPBENCH not set")
        if not HAVE_AIOSMTPD:
            self.skipTest("python3-aiosmtpd not installed")
        if not CERT:
            self.skipTest("openssl not found")

    def check_tls(self, rep, conns, resumed=None):
        t = rep["tls"]
        self.assertEqual(t["full"] + t["resumed"], conns, t)
        self.assertEqual(sum(t["versions"].values()), conns, t)
        self.assertEqual(sum(t["ciphers"].values()), conns, t)
        self.assertTrue(set(t["versions"]) <= {"TLSv1.2", "TLSv1.3"}, t)
        h = rep["histograms"]
        self.assertEqual(h["tls_handshake_full"]["count"], t["full"])
        self.assertEqual(h["tls_handshake_resumed"]["count"], t["resumed"])
        if resumed is not None:
            self.assertEqual(t["resumed"], resumed, t)

    def test_starttls_and_auth_exact_counts(self):
        for io in BACKENDS:
            for mech in ("PLAIN", "LOGIN", None):
                with self.subTest(io=io, mech=mech), Aio("starttls") as srv:
                    extra = ["--auth-mech", mech] if mech else []
                    rc, rep, err, took = run(srv.port, io, "--starttls", "--auth-user", USER,
                                             "--auth-pass", PASSWORD, "--sessions", "6",
                                             "--threads", "2", "--messages", "120",
                                             "--msgs-per-session", "10", *extra)
                    self.assertEqual(rc, 0, err)
                    m, c, a = rep["messages"], rep["connections"], rep["auth"]
                    self.assertEqual((m["attempted"], m["delivered"], m["failed"]), (120, 120, 0))
                    self.assertEqual(srv.h.delivered, 120)
                    # 12 connections when every one carries 10 messages; a
                    # connection ends short only once its thread's 60 are all
                    # claimed, so at most its 3 open sessions end short, and
                    # 10*full + shorts = 60 allows 6, 7 or 8 per thread (no
                    # slot connects only to say QUIT)
                    n = c["established"]
                    self.assertTrue(12 <= n <= 16, c)
                    self.assertEqual((c["attempts"], c["failed"]), (n, 0), c)
                    self.assertEqual((a["attempts"], a["ok"], a["failed"]), (n, n, 0), a)
                    self.assertEqual(a["login" if mech == "LOGIN" else "plain"], n, a)
                    self.assertEqual(rep["replies"]["starttls"]["ok"], n)
                    # EHLO again after TLS (RFC 3207 4.2)
                    self.assertEqual(rep["replies"]["ehlo"]["ok"], 2 * n)
                    self.check_tls(rep, n, resumed=0)
                    self.assertEqual(srv.h.logins, {USER})
                    self.assertEqual(rep["options"]["tls"], "starttls")
                    self.assertIn("--auth-pass ***", rep["command"])
                    # no SNI for an address literal (RFC 6066 3)
                    self.assertEqual(set(srv.sni), {None})
                    self.assertLess(took, 30 * SLOW)

    def test_session_templates_in_credentials(self):
        for io in BACKENDS:
            with self.subTest(io=io), Aio("starttls") as srv:
                rc, rep, err, _ = run(srv.port, io, "--starttls", "--auth-user", "slot{s}",
                                      "--auth-pass", "pw{s}!", "--sessions", "5", "--threads",
                                      "2", "--messages", "25")
                self.assertEqual(rc, 0, err)
                self.assertEqual(srv.h.delivered, 25)
                self.assertEqual(srv.h.logins, {"slot%d" % i for i in range(5)})

    def test_implicit_tls_exact_counts(self):
        for io in BACKENDS:
            for auth in ([], ["--auth-user", USER, "--auth-pass", PASSWORD]):
                with self.subTest(io=io, auth=bool(auth)), Aio("implicit") as srv:
                    rc, rep, err, took = run(srv.port, io, "--tls", "--sessions", "8",
                                             "--threads", "2", "--messages", "200",
                                             "--size", "1k:3,20k:1", *auth)
                    self.assertEqual(rc, 0, err)
                    self.assertEqual(rep["messages"]["delivered"], 200)
                    self.assertEqual(srv.h.delivered, 200)
                    self.check_tls(rep, 8)
                    self.assertEqual(rep["auth"]["ok"], 8 if auth else 0)
                    self.assertEqual(rep["replies"]["starttls"]["ok"], 0)
                    # the ciphertext on the wire is more than the content
                    self.assertGreater(rep["bytes"]["sent"], rep["bytes"]["content"])

    def test_wrong_password_is_an_auth_failure_and_the_run_ends(self):
        for io in BACKENDS:
            for mech in ("PLAIN", "LOGIN"):
                with self.subTest(io=io, mech=mech), Aio("starttls") as srv:
                    rc, rep, err, took = run(srv.port, io, "--starttls", "--auth-user", USER,
                                             "--auth-pass", "wrong-" + PASSWORD[::-1],
                                             "--auth-mech", mech, "--sessions", "2",
                                             "--threads", "1", "--messages", "10",
                                             "--timeout", "5s")
                    self.assertEqual(rc, 1, err)
                    self.assertLess(took, 10 * SLOW)
                    c, a = rep["connections"], rep["auth"]
                    # 2 sessions x --max-attempts 5, each refused with 535
                    self.assertEqual(nonzero(c["failed_by"]), {"auth": 10}, c)
                    self.assertEqual((a["attempts"], a["ok"], a["failed"]), (10, 0, 10), a)
                    self.assertEqual(rep["replies"]["auth"]["5xx"], 10)
                    self.assertEqual(c["gave_up"], 2)
                    self.assertEqual(rep["messages"]["attempted"], 0)
                    self.assertEqual(srv.h.refused, 10)
                    self.assertIn("every session gave up", rep["stopped"])
                    self.assertTrue(all(e.startswith("auth: session: 535 5.7.8")
                                        for e in rep["first_errors"]), rep["first_errors"])
                    self.assertNotIn(PASSWORD[::-1], json.dumps(rep))

    def test_verify(self):
        local_ok = socket.getaddrinfo("localhost", 25, socket.AF_UNSPEC,
                                      socket.SOCK_STREAM)[0][4][0] == "127.0.0.1"
        for io in BACKENDS:
            # the CA is given: the chain and the address (IP SAN) match
            with self.subTest(io=io, case="ca, address"), Aio("implicit") as srv:
                rc, rep, err, _ = run(srv.port, io, "--tls", "--tls-verify", "--tls-ca",
                                      CERT["cert"], "--sessions", "2", "--messages", "20")
                self.assertEqual(rc, 0, err)
                self.assertEqual(srv.h.delivered, 20)
                self.assertTrue(rep["options"]["tls_verify"])
            # by name: SNI is the name, the DNS SAN matches
            if local_ok:
                with self.subTest(io=io, case="ca, name"), Aio("starttls") as srv:
                    rc, rep, err, _ = run(srv.port, io, "--starttls", "--tls-ca", CERT["cert"],
                                          "--sessions", "2", "--messages", "20",
                                          host="localhost")
                    self.assertEqual(rc, 0, err)
                    self.assertEqual(srv.h.delivered, 20)
                    self.assertEqual(set(srv.sni), {"localhost"})
            # no CA: the self-signed certificate fails, counted, the run ends
            for mode, flag in (("implicit", "--tls"), ("starttls", "--starttls")):
                with self.subTest(io=io, case="system store", mode=mode), Aio(mode) as srv:
                    rc, rep, err, took = run(srv.port, io, flag, "--tls-verify", "--sessions",
                                             "2", "--threads", "1", "--messages", "10",
                                             "--timeout", "5s")
                    self.assertEqual(rc, 1, err)
                    self.assertLess(took, 10 * SLOW)
                    c = rep["connections"]
                    self.assertEqual(nonzero(c["failed_by"]), {"tls": 10}, c)
                    self.assertEqual(c["gave_up"], 2)
                    self.assertEqual(srv.h.delivered, 0)
                    self.assertIn("certificate verify failed", err)
                    self.assertEqual(rep["tls"]["full"], 0)
        # the chain is good but the address is not in the certificate
        with Aio("implicit", cert="other", key="other_key") as srv:
            rc, rep, err, _ = run(srv.port, BACKENDS[-1], "--tls", "--tls-ca", CERT["other"],
                                  "--sessions", "1", "--messages", "5", "--max-attempts", "2")
            self.assertEqual(rc, 1, err)
            self.assertEqual(nonzero(rep["connections"]["failed_by"]), {"tls": 2})
            self.assertIn("IP address mismatch", err)

    def test_starttls_not_offered_is_unsupported(self):
        for io in BACKENDS:
            with self.subTest(io=io), Aio("plain") as srv:
                rc, rep, err, took = run(srv.port, io, "--starttls", "--sessions", "2",
                                         "--threads", "1", "--messages", "10", "--timeout", "5s")
                self.assertEqual(rc, 1, err)
                self.assertLess(took, 6 * SLOW)
                c = rep["connections"]
                self.assertEqual(nonzero(c["failed_by"]), {"unsupported": 10}, c)
                self.assertEqual(rep["replies"]["quit"]["ok"], 10)  # left politely
                self.assertEqual(srv.h.delivered, 0)
                self.assertIn("does not offer STARTTLS", err)

    def test_resumed_handshakes(self):
        for io in BACKENDS:
            for mode, flag in (("implicit", "--tls"), ("starttls", "--starttls")):
                with self.subTest(io=io, mode=mode), Aio(mode) as srv:
                    rc, rep, err, _ = run(srv.port, io, flag, "--tls-resume",
                                          "--msgs-per-session", "1", "--sessions", "4",
                                          "--threads", "2", "--messages", "40")
                    self.assertEqual(rc, 0, err)
                    self.assertEqual(srv.h.delivered, 40)
                    t = rep["tls"]
                    # a slot may connect once more and find the quota taken
                    self.check_tls(rep, rep["connections"]["established"])
                    # each slot's first connection is full, later ones resume
                    self.assertGreaterEqual(t["full"], 4, t)
                    self.assertGreater(t["resumed"], 0, t)
                    self.assertTrue(rep["options"]["tls_resume"])
        # without --tls-resume nothing is resumed
        with Aio("implicit") as srv:
            rc, rep, err, _ = run(srv.port, BACKENDS[-1], "--tls", "--msgs-per-session", "1",
                                  "--sessions", "2", "--messages", "10")
            self.assertEqual(rc, 0, err)
            self.check_tls(rep, rep["connections"]["established"], resumed=0)

    def test_usage_errors(self):
        for args in (["--starttls", "--tls"], ["--tls-verify"], ["--tls-resume"],
                     ["--auth-user", "u"], ["--auth-pass", "p"], ["--auth-mech", "CRAM-MD5",
                                                                  "--auth-user", "u",
                                                                  "--auth-pass", "p"],
                     ["--starttls", "--helo"], ["--auth-user", "u" * 256, "--auth-pass", "p"],
                     ["--tls", "--tls-ca", "/nonexistent/ca.pem"]):
            with self.subTest(args=args):
                r = subprocess.run([SMTPBENCH, "--target", "127.0.0.1:1"] + args,
                                   capture_output=True, timeout=10)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertTrue(r.stderr.startswith(b"smtpbench: "), r.stderr)


class RawTLS(unittest.TestCase):
    """Servers that break the STARTTLS exchange on purpose (no aiosmtpd)."""

    def setUp(self):
        if not SMTPBENCH:
            self.skipTest("SMTPBENCH not set")

    def serve(self, script):
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(16)
        stop = threading.Event()

        def loop():
            while not stop.is_set():
                try:
                    s, _ = ls.accept()
                except OSError:
                    return
                threading.Thread(target=one, args=(s,), daemon=True).start()

        def one(s):
            try:
                script(s)
            except OSError:
                pass
            finally:
                s.close()
        threading.Thread(target=loop, daemon=True).start()
        self.addCleanup(lambda: (stop.set(), ls.close()))
        return ls.getsockname()[1]

    @staticmethod
    def until_starttls(s):
        f = s.makefile("rb")
        s.sendall(b"220 raw.test ESMTP\r\n")
        f.readline()  # EHLO
        s.sendall(b"250-raw.test\r\n250 STARTTLS\r\n")
        f.readline()  # STARTTLS
        return f

    def test_reply_injection_after_starttls_is_refused(self):
        # RFC 3207 5 / the 2021 STARTTLS injection attacks: a forged EHLO
        # reply in the same segment as the 220 must never be read as one
        def script(s):
            self.until_starttls(s)
            s.sendall(b"220 go ahead\r\n250-raw.test\r\n250 AUTH PLAIN\r\n")
            time.sleep(0.5)
        port = self.serve(script)
        for io in BACKENDS:
            with self.subTest(io=io):
                rc, rep, err, took = run(port, io, "--starttls", "--sessions", "1",
                                         "--messages", "3", "--max-attempts", "2",
                                         "--timeout", "3s")
                self.assertEqual(rc, 1, err)
                self.assertEqual(nonzero(rep["connections"]["failed_by"]), {"protocol": 2})
                self.assertIn("plaintext after the 220 to STARTTLS", err)
                self.assertLess(took, 6 * SLOW)

    def test_handshake_cut_off_is_a_tls_failure(self):
        def script(s):
            self.until_starttls(s)
            s.sendall(b"220 go ahead\r\n")
            s.recv(4096)  # the ClientHello, then close
        port = self.serve(script)
        for io in BACKENDS:
            with self.subTest(io=io):
                rc, rep, err, took = run(port, io, "--starttls", "--sessions", "2",
                                         "--threads", "1", "--messages", "3",
                                         "--max-attempts", "2", "--timeout", "3s")
                self.assertEqual(rc, 1, err)
                self.assertEqual(nonzero(rep["connections"]["failed_by"]), {"tls": 4})
                self.assertLess(took, 6 * SLOW)

    def test_garbage_instead_of_server_hello_is_a_tls_failure(self):
        def script(s):
            self.until_starttls(s)
            s.sendall(b"220 go ahead\r\n")
            s.recv(4096)
            s.sendall(b"250 this is not TLS\r\n" * 4)
            time.sleep(0.5)
        port = self.serve(script)
        for io in BACKENDS:
            with self.subTest(io=io):
                rc, rep, err, took = run(port, io, "--starttls", "--sessions", "1",
                                         "--messages", "3", "--max-attempts", "2",
                                         "--timeout", "3s")
                self.assertEqual(rc, 1, err)
                self.assertEqual(nonzero(rep["connections"]["failed_by"]), {"tls": 2})
                self.assertIn("tls: session: TLS handshake", err)
                self.assertLess(took, 6 * SLOW)

    def test_silent_handshake_times_out(self):
        def script(s):
            self.until_starttls(s)
            s.sendall(b"220 go ahead\r\n")
            time.sleep(3)
        port = self.serve(script)
        rc, rep, err, took = run(port, BACKENDS[-1], "--starttls", "--sessions", "1",
                                 "--messages", "3", "--max-attempts", "1", "--timeout", "1s")
        self.assertEqual(rc, 1, err)
        self.assertEqual(nonzero(rep["connections"]["failed_by"]), {"timeout": 1})
        self.assertIn("TLS handshake not done within --timeout", err)
        self.assertLess(took, 4 * SLOW)


if __name__ == "__main__":
    if not SMTPBENCH or not os.path.exists(SMTPBENCH):
        print("skipped: the SMTPBENCH binary is not set (run through ctest)")
        sys.exit(77)
    sinklib.main()
