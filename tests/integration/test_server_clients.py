"""smtpsink against real SMTP clients from Debian: swaks, curl, msmtp, smtplib.

Each client runs once per I/O backend; the JSON summary's counts must match
exactly what the clients sent.
"""
import os
import shutil
import smtplib
import subprocess
import sys
import tempfile
import unittest
from email.message import EmailMessage

sys.path.insert(0, os.path.dirname(__file__))
import sinklib  # noqa: E402
from sinklib import SLOW, Sink, backends, good_session  # noqa: E402

BACKENDS = backends()
MSG = b"From: a@client.test\r\nTo: b@client.test\r\nSubject: test\r\n\r\nhello\r\n.leading dot\r\n"


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, timeout=30 * SLOW, **kw)


class Clients(unittest.TestCase):
    def need(self, tool):
        if not shutil.which(tool):
            self.skipTest(tool + " not installed")

    def test_swaks_plain_and_pipelined(self):
        self.need("swaks")
        for be in BACKENDS:
            with self.subTest(backend=be), Sink(backend=be) as s:
                for extra in ([], ["--pipeline"]):
                    r = run(["swaks", "--server", "127.0.0.1", "--port", str(s.port),
                             "--from", "a@client.test", "--to", "b@client.test,c@client.test",
                             "--helo", "client.test"] + extra)
                    self.assertEqual(r.returncode, 0, r.stdout.decode(errors="replace")[-2000:])
                    self.assertIn(b"250 2.0.0 Ok: queued as", r.stdout)
                    if extra:
                        # swaks really pipelined: MAIL, RCPTs and DATA in one write
                        self.assertRegex(r.stdout.decode(),
                                         r" -> MAIL FROM:[^\n]*\n -> RCPT TO:[^\n]*\n"
                                         r" -> RCPT TO:[^\n]*\n -> DATA")
                s.stop()
                c = s.counters()
                self.assertEqual(c["messages"], 2)
                self.assertEqual(c["recipients"], 4)
                self.assertEqual(c["err_syntax"] + c["err_sequence"] + c["err_unknown"], 0)

    def test_curl(self):
        self.need("curl")
        for be in BACKENDS:
            with self.subTest(backend=be), Sink(backend=be) as s:
                with tempfile.NamedTemporaryFile() as f:
                    f.write(MSG)
                    f.flush()
                    for _ in range(3):
                        r = run(["curl", "-sS", "--max-time", str(20 * SLOW),
                                 "smtp://127.0.0.1:%d/client.test" % s.port,
                                 "--mail-from", "a@client.test",
                                 "--mail-rcpt", "b@client.test", "-T", f.name])
                        self.assertEqual(r.returncode, 0, r.stderr)
                s.stop()
                c = s.counters()
                self.assertEqual(c["messages"], 3)
                # RFC 1870 size excludes stuffing dots: curl stuffs ".leading"
                self.assertEqual(c["message_bytes"], 3 * len(MSG))

    def test_msmtp(self):
        self.need("msmtp")
        for be in BACKENDS:
            with self.subTest(backend=be), Sink(backend=be) as s:
                r = run(["msmtp", "-C", "/dev/null", "--host=127.0.0.1", "--port=%d" % s.port,
                         "--from=a@client.test", "--auth=off", "--tls=off",
                         "b@client.test", "c@client.test"], input=MSG.replace(b"\r\n", b"\n"))
                self.assertEqual(r.returncode, 0, r.stderr)
                s.stop()
                c = s.counters()
                self.assertEqual((c["messages"], c["recipients"]), (1, 2))

    def test_smtplib_recipients_and_smtputf8(self):
        for be in BACKENDS:
            with self.subTest(backend=be), Sink(backend=be) as s:
                with smtplib.SMTP("127.0.0.1", s.port, timeout=10 * SLOW) as c:
                    code, caps = c.ehlo("client.test")
                    self.assertEqual(code, 250)
                    for kw in ("PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES",
                               "SMTPUTF8", "CHUNKING"):
                        self.assertTrue(c.has_extn(kw), kw)
                    refused = c.sendmail("a@client.test",
                                         ["r%d@client.test" % i for i in range(5)], MSG)
                    self.assertEqual(refused, {})
                    m = EmailMessage()
                    m["From"] = "jöran@exämple.test"
                    m["To"] = "用户@例子.test"
                    m["Subject"] = "ünïcode"
                    m.set_content("grüße\n")
                    c.send_message(m, mail_options=["SMTPUTF8"])
                    # Without SMTPUTF8 a unicode address is refused (RFC 6531 3.5)
                    code, msg = c.mail("jöran@exämple.test".encode().decode("latin-1"))
                    self.assertEqual(code, 553, msg)
                    c.rset()
                    # unknown recipient parameter -> 555
                    c.mail("a@client.test")
                    code, msg = c.rcpt("b@client.test", ["NOTIFY=NEVER"])
                    self.assertEqual(code, 555, msg)
                s.stop()
                cnt = s.counters()
                self.assertEqual(cnt["messages"], 2)
                self.assertEqual(cnt["recipients"], 6)
                self.assertEqual(cnt["err_utf8"], 1)

    def test_many_sessions_counts(self):
        for be in BACKENDS:
            with self.subTest(backend=be), Sink(["--threads", "2"], backend=be) as s:
                for i in range(50):
                    good_session(s.port, rcpts=1 + i % 3)
                s.stop()
                c = s.counters()
                self.assertEqual(c["messages"], 50)
                self.assertEqual(c["recipients"], sum(1 + i % 3 for i in range(50)))
                self.assertEqual(c["conns_accepted"], 50)
                self.assertEqual(c["conns_closed"], 50)


if __name__ == "__main__":
    sinklib.main()
