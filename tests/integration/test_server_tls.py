"""smtpsink with TLS and AUTH, per I/O backend: real clients (swaks, curl,
msmtp, Python smtplib, openssl s_client) over STARTTLS (RFC 3207) and
implicit TLS (RFC 8314) with AUTH PLAIN and LOGIN (RFC 4954), the STARTTLS
injection case (CVE-2011-0411), policies, and hostile TLS input: each
costs only its own connection.
"""
import os
import shutil
import smtplib
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
from sinklib import (SLOW, SMTPSINK, Sink, backends, chat, good_session, proc_rss_kib,  # noqa: E402
                     raise_nofile, recv_until)

BACKENDS = backends()
MSG = b"From: a@client.test\r\nTo: b@client.test\r\nSubject: tls\r\n\r\nhello\r\n.dot\r\n"


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, timeout=30 * SLOW, **kw)


class TlsSink(Sink):
    """smtpsink with a self-signed certificate, a plain and a TLS listener."""

    def __init__(self, args=(), backend=None):
        self.certdir = tempfile.mkdtemp(prefix="sinktls.")
        self.cert = os.path.join(self.certdir, "cert.pem")
        super().__init__(["--listen-tls", "127.0.0.1:0", "--tls-self-signed", "--tls-cert-out",
                          self.cert] + list(args), backend=backend)

    def context(self):
        ctx = ssl.create_default_context(cafile=self.cert)
        return ctx

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            shutil.rmtree(self.certdir, ignore_errors=True)


def plain_ctx():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Tls(unittest.TestCase):
    def need(self, tool):
        if not shutil.which(tool):
            self.skipTest(tool + " not installed")

    def test_swaks_starttls_and_implicit(self):
        self.need("swaks")
        for be in BACKENDS:
            with self.subTest(backend=be), TlsSink(["--auth", "any"], backend=be) as s:
                for port, tls, mech in ((s.port, "-tls", "PLAIN"), (s.tls_port, "-tlsc", "LOGIN")):
                    r = run(["swaks", "--server", "127.0.0.1", "--port", str(port), tls,
                             "--tls-verify", "--tls-ca-path", s.cert, "-a", mech, "-au", "user",
                             "-ap", "secret", "--from", "a@client.test", "--to", "b@client.test"])
                    out = r.stdout.decode(errors="replace")
                    self.assertEqual(r.returncode, 0, out[-2000:])
                    self.assertIn("235 2.7.0 Authentication successful", out)
                    self.assertIn("250 2.0.0 Ok: queued as", out)
                    self.assertNotIn("secret", s.stderr_text)
                s.stop()
                c = s.counters()
                self.assertEqual((c["messages"], c["tls_handshakes"], c["starttls"]), (2, 2, 1))
                self.assertEqual((c["auth_plain_ok"], c["auth_login_ok"]), (1, 1))
                self.assertEqual(c["tls_handshake_failures"], 0)

    def test_curl_smtp_starttls_and_smtps(self):
        self.need("curl")
        for be in BACKENDS:
            with self.subTest(backend=be), TlsSink(["--auth", "any"], backend=be) as s, \
                    tempfile.NamedTemporaryFile() as f:
                f.write(MSG)
                f.flush()
                for url in ("smtp://127.0.0.1:%d" % s.port, "smtps://127.0.0.1:%d" % s.tls_port):
                    extra = ["--ssl-reqd"] if url.startswith("smtp:") else []
                    r = run(["curl", "-sS", "--cacert", s.cert, "--url", url, "-u", "user:pw",
                             "--mail-from", "a@client.test", "--mail-rcpt", "b@client.test",
                             "-T", f.name] + extra)
                    self.assertEqual(r.returncode, 0, r.stderr)
                s.stop()
                c = s.counters()
                self.assertEqual(c["messages"], 2)
                self.assertEqual(c["message_bytes"], 2 * len(MSG))  # curl stuffs, we unstuff
                self.assertEqual(c["tls_handshakes"], 2)

    def test_msmtp(self):
        self.need("msmtp")
        for be in BACKENDS:
            with self.subTest(backend=be), TlsSink(["--auth", "any"], backend=be) as s:
                for port, starttls in ((s.port, "on"), (s.tls_port, "off")):
                    conf = os.path.join(s.certdir, "msmtprc")
                    with open(conf, "w") as f:
                        f.write("account default\nhost 127.0.0.1\nport %d\nfrom a@client.test\n"
                                "tls on\ntls_starttls %s\ntls_trust_file %s\nauth plain\n"
                                "user someone\npassword secret\n" % (port, starttls, s.cert))
                    os.chmod(conf, 0o600)
                    r = run(["msmtp", "-C", conf, "b@client.test"], input=MSG)
                    self.assertEqual(r.returncode, 0, r.stderr)
                s.stop()
                self.assertEqual(s.counters()["messages"], 2)
                self.assertEqual(s.counters()["auth_plain_ok"], 2)

    def test_smtplib_and_openssl_s_client(self):
        for be in BACKENDS:
            with self.subTest(backend=be), TlsSink(["--auth", "any"], backend=be) as s:
                c = smtplib.SMTP("127.0.0.1", s.port, timeout=10 * SLOW)
                c.starttls(context=s.context())
                c.login("u", "p")
                self.assertEqual(c.sendmail("a@client.test", ["b@client.test"], MSG), {})
                c.quit()
                c = smtplib.SMTP_SSL("127.0.0.1", s.tls_port, context=s.context(),
                                     timeout=10 * SLOW)
                c.login("u", "p")
                self.assertEqual(c.sendmail("a@client.test", ["b@client.test"], MSG), {})
                c.quit()
                if shutil.which("openssl"):
                    r = run(["openssl", "s_client", "-starttls", "smtp", "-quiet", "-CAfile",
                             s.cert, "-verify_return_error", "-connect",
                             "127.0.0.1:%d" % s.port], input=b"EHLO x\r\nQUIT\r\n")
                    self.assertIn(b"250 AUTH PLAIN LOGIN", r.stdout)
                    self.assertIn(b"221 2.0.0 Bye", r.stdout)
                s.stop()
                c = s.counters()
                self.assertEqual(c["messages"], 2)
                self.assertGreaterEqual(c["tls_v1_3"], 2)

    def test_starttls_injection_is_discarded(self):
        # CVE-2011-0411: commands pipelined after STARTTLS in plaintext must
        # never run inside the TLS session.
        for be in BACKENDS:
            with self.subTest(backend=be), TlsSink(backend=be) as s:
                raw = s.connect()
                chat(raw, b"")
                chat(raw, b"EHLO c.test\r\n")
                raw.sendall(b"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<v@x.test>\r\n")
                self.assertEqual(recv_until(raw, lambda d: d.endswith(b"\r\n")),
                                 b"220 2.0.0 Ready to start TLS\r\n")
                t = s.context().wrap_socket(raw, server_hostname="localhost")
                # the session is back at "after the greeting": MAIL needs EHLO
                self.assertTrue(chat(t, b"MAIL FROM:<a@b.test>\r\n").startswith(b"503 5.5.1"))
                ehlo = chat(t, b"EHLO c.test\r\n")
                self.assertNotIn(b"STARTTLS", ehlo)
                self.assertTrue(chat(t, b"STARTTLS\r\n").startswith(b"503 5.5.1"))
                self.assertTrue(chat(t, b"QUIT\r\n").startswith(b"221"))
                t.close()
                s.stop()
                c = s.counters()
                self.assertEqual(c["tls_injected"], 1)
                self.assertEqual((c["recipients"], c["messages"]), (0, 0))

    def test_require_tls_and_auth_file(self):
        for be in BACKENDS:
            with self.subTest(backend=be):
                users = tempfile.NamedTemporaryFile("w", suffix=".users", delete=False)
                users.write("# accounts\nalice:s3cret\nbob:hunter2\n")
                users.close()
                with TlsSink(["--require-tls", "--auth", users.name, "--require-auth"],
                             backend=be) as s:
                    c = smtplib.SMTP("127.0.0.1", s.port, timeout=10 * SLOW)
                    c.ehlo()
                    self.assertEqual(c.mail("a@b.test")[0], 530)
                    c.starttls(context=s.context())
                    c.ehlo()
                    self.assertEqual(c.mail("a@b.test")[0], 530)  # --require-auth
                    with self.assertRaises(smtplib.SMTPAuthenticationError):
                        c.login("alice", "wrong")
                    c.login("alice", "s3cret")
                    self.assertEqual(c.sendmail("a@b.test", ["c@d.test"], MSG), {})
                    c.quit()
                    s.stop()
                    ctr = s.counters()
                    self.assertEqual((ctr["err_tls_required"], ctr["err_auth_required"]), (1, 1))
                    self.assertGreaterEqual(ctr["auth_plain_failed"] + ctr["auth_login_failed"], 1)
                    self.assertNotIn("s3cret", open(s.json_path).read())
                os.unlink(users.name)

    def test_hostile_tls_input(self):
        # garbage, a truncated ClientHello, plaintext SMTP on the TLS port,
        # a ClientHello on the plain port: each costs only its connection.
        hello = bytes.fromhex("160301002c010000280303") + b"\xab" * 32 + b"\x00\x00\x02\x13\x01\x01"
        for be in BACKENDS:
            with self.subTest(backend=be), TlsSink(backend=be) as s:
                for payload in (os.urandom(3000), hello[:20], b"EHLO plain.test\r\n"):
                    c = socket.create_connection(("127.0.0.1", s.tls_port), timeout=5 * SLOW)
                    c.sendall(payload)
                    if len(payload) == 20:
                        c.shutdown(socket.SHUT_WR)  # truncated, then EOF
                    c.settimeout(5 * SLOW)
                    try:
                        while c.recv(4096):
                            pass
                    except (ConnectionResetError, socket.timeout):
                        pass
                    c.close()
                c = s.connect()
                chat(c, b"")
                c.sendall(hello + b"\r\n")  # a ClientHello on the plain port
                c.settimeout(5 * SLOW)
                self.assertIn(b"500 5.5.2", recv_until(c, lambda d: b"500" in d))
                c.close()
                good_session(s.port)
                t = smtplib.SMTP_SSL("127.0.0.1", s.tls_port, context=s.context(),
                                     timeout=10 * SLOW)
                t.quit()
                s.stop()
                ctr = s.counters()
                self.assertGreaterEqual(ctr["tls_handshake_failures"], 3)
                self.assertEqual(ctr["tls_handshakes"], 1)
                self.assertEqual(ctr["pipelining_violations"], 0)

    def test_split_records_and_backlog(self):
        # The server reads ciphertext in place from its receive buffers and
        # keeps only what is left unread (server/tls.c, common/tls/tlsbio.c):
        # records cut into 7-octet segments, then 100,000 pipelined RSETs
        # (RFC 2920 3.1 lets RSET stand anywhere in a group) from a client
        # that does not read until the server has paused with ciphertext left
        # over.  Every reply arrives, in order, once.
        n = 100000
        for be in BACKENDS:
            with self.subTest(backend=be), TlsSink(backend=be) as s:
                c = socket.socket()
                c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                c.settimeout(20 * SLOW)
                c.connect(("127.0.0.1", s.tls_port))
                inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
                tls = plain_ctx().wrap_bio(inc, out, server_side=False)

                def send(data, piece):
                    for i in range(0, len(data), piece):
                        c.sendall(data[i:i + piece])

                def pump_out(piece=1 << 20):
                    send(out.read(), piece)

                plain = bytearray()

                def read_until(pred):
                    while not pred(plain):
                        try:
                            d = c.recv(65536)
                        except ConnectionResetError:
                            d = b""
                        if not d:
                            s.stop()
                            self.fail("server closed; got %r; counters %r" % (
                                bytes(plain[-100:]),
                                {k: v for k, v in s.counters().items() if v}))
                        inc.write(d)
                        try:
                            while True:
                                got = tls.read(65536)
                                if not got:  # close_notify (after the 221)
                                    break
                                plain.extend(got)
                        except ssl.SSLWantReadError:
                            pass

                while True:
                    try:
                        tls.do_handshake()
                        break
                    except ssl.SSLWantReadError:
                        pump_out(7)  # the ClientHello, cut into 7-octet segments
                        d = c.recv(65536)
                        self.assertTrue(d)
                        inc.write(d)
                pump_out()
                read_until(lambda p: b"220 " in p)
                tls.write(b"EHLO split.test\r\n")
                pump_out(7)
                read_until(lambda p: b"\r\n250 " in p)
                plain.clear()
                tls.write(b"RSET\r\n" * n + b"QUIT\r\n")
                sender = threading.Thread(target=send, args=(out.read(), 4096))
                sender.start()
                # the server fills its buffers and pauses; not scaled by SLOW:
                # a server that got to the QUIT first waits 3 s for a reader
                time.sleep(0.5)
                read_until(lambda p: b"221 " in p)
                sender.join(30 * SLOW)
                self.assertFalse(sender.is_alive())
                lines = bytes(plain).split(b"\r\n")
                self.assertEqual(sum(1 for ln in lines if ln.startswith(b"250 ")), n)
                self.assertTrue(lines[-2].startswith(b"221 "), lines[-3:])
                c.close()
                good_session(s.port)
                s.stop()
                ctr = s.counters()
                self.assertEqual(ctr["in_overflow"], 0)
                self.assertEqual(ctr["out_overflow"], 0)
                self.assertEqual(ctr["tls_handshakes"], 1)

    def test_half_finished_handshakes(self):
        # 1,000 clients start a handshake and stop: memory stays bounded, a
        # normal TLS client is served meanwhile, and the handshake deadline
        # (10 s) resets them all.
        n = 300 if sinklib.SANITIZE else 1000
        if not raise_nofile(n + 200):
            self.skipTest("RLIMIT_NOFILE hard limit below %d" % (n + 200))
        be = BACKENDS[0]
        with TlsSink(["--threads", "2"], backend=be) as s:
            rss0 = proc_rss_kib(s.proc.pid)
            hellos = []
            for _ in range(n):
                c = socket.create_connection(("127.0.0.1", s.tls_port), timeout=5 * SLOW)
                # a real ClientHello start, never finished
                c.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x11" * 40)
                hellos.append(c)
            time.sleep(0.5)
            t0 = time.monotonic()
            t = smtplib.SMTP_SSL("127.0.0.1", s.tls_port, context=s.context(), timeout=10 * SLOW)
            t.quit()
            self.assertLess(time.monotonic() - t0, 2 * SLOW)
            per = (proc_rss_kib(s.proc.pid) - rss0) / n
            if not sinklib.SANITIZE:
                self.assertLess(per, 64, "RSS per half-finished handshake: %.1f KiB" % per)
            sys.stderr.write("%.1f KiB RSS per half-finished handshake\n" % per)
            time.sleep(11)
            closed = 0
            for c in hellos:
                c.settimeout(0.01)
                try:
                    closed += c.recv(100) == b""
                except ConnectionResetError:
                    closed += 1
                except socket.timeout:
                    pass
                c.close()
            self.assertEqual(closed, n)
            s.stop()
            self.assertEqual(s.counters()["tls_handshake_timeouts"], n)


class Cli(unittest.TestCase):
    def usage(self, *args):
        r = subprocess.run([SMTPSINK, "--listen", "127.0.0.1:0"] + list(args),
                           capture_output=True, timeout=10)
        self.assertEqual(r.returncode, 2, (args, r.stderr))
        return r.stderr

    def test_usage_errors(self):
        if not SMTPSINK:
            self.skipTest("SMTPSINK not set")
        self.assertIn(b"--listen-tls needs", self.usage("--listen-tls", "127.0.0.1:0"))
        self.assertIn(b"--auth needs TLS", self.usage("--auth", "any"))
        self.assertIn(b"--tls-cert", self.usage("--tls-cert", "/nonexistent.pem",
                                                 "--tls-key", "/nonexistent.key"))
        self.assertIn(b"--require-tls needs", self.usage("--require-tls"))
        self.assertIn(b"--tls-min", self.usage("--tls-self-signed", "--tls-min", "1.1"))


if __name__ == "__main__":
    sinklib.main()
