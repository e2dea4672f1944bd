"""smtpsink fault injection on the real binary, per I/O backend: every stage
and action with a raw client asserting bytes and timing, exact schedules,
reproducible chance, greylisting, rate limits, connection faults, real
clients seeing injected replies, the JSON "faults" list and SIGHUP reload.
"""
import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import sinklib  # noqa: E402
from sinklib import SLOW, SMTPSINK, Sink, backends, chat, recv_until  # noqa: E402

BACKENDS = backends()


def session(port, cmds, timeout=10):
    """Send commands one by one (each waits for its reply); returns the
    replies (bytes, first line of each)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW)
    out = [chat(s, b"")]
    for cmd in cmds:
        out.append(chat(s, cmd))
    s.close()
    return out


def message(port, frm=b"a@client.test", rcpt=b"r@server.test", body=b"hello\r\n"):
    return session(port, [b"EHLO c.test\r\n", b"MAIL FROM:<" + frm + b">\r\n",
                          b"RCPT TO:<" + rcpt + b">\r\n", b"DATA\r\n", body + b".\r\n",
                          b"QUIT\r\n"])


class Faults(unittest.TestCase):
    def each(self, args):
        return [(be, lambda be=be: Sink(list(args), backend=be)) for be in BACKENDS]

    def test_reply_at_every_stage(self):
        stages = [("helo", b"HELO c.test\r\n"), ("ehlo", b"EHLO c.test\r\n"),
                  ("mail", b"MAIL FROM:<a@b.test>\r\n"), ("rcpt", b"RCPT TO:<r@x.test>\r\n"),
                  ("data", b"DATA\r\n"), ("rset", b"RSET\r\n"), ("noop", b"NOOP\r\n"),
                  ("quit", b"QUIT\r\n")]
        for be in BACKENDS:
            for stage, cmd in stages:
                with self.subTest(backend=be, stage=stage), Sink(
                        ["--fault", "%s reply='554 5.7.1 Fault at %s'" % (stage, stage)],
                        backend=be) as s:
                    prep = {"rcpt": [b"EHLO c\r\n", b"MAIL FROM:<a@b>\r\n"],
                            "data": [b"EHLO c\r\n", b"MAIL FROM:<a@b>\r\n", b"RCPT TO:<r@x>\r\n"],
                            "mail": [b"EHLO c\r\n"]}.get(stage, [])
                    out = session(s.port, prep + [cmd])
                    self.assertEqual(out[-1], b"554 5.7.1 Fault at %s\r\n" % stage.encode())
                    s.stop()
                    self.assertEqual(s.counters()["faults_injected"], 1)
                    self.assertEqual(s.summary["faults"][0]["injected"], 1)

    def test_connect_and_eod(self):
        for be, make in self.each(["--fault", "connect client=127.0.0.0/8 delay=500ms",
                                   "--fault", "eod reply='451 4.3.0 Try again later' every=2"]):
            with self.subTest(backend=be), make() as s:
                t0 = time.monotonic()
                c = s.connect()
                self.assertTrue(chat(c, b"").startswith(b"220"))
                self.assertGreaterEqual(time.monotonic() - t0, 0.45)
                c.close()
                r1 = message(s.port)
                r2 = message(s.port)
                self.assertTrue(r1[5].startswith(b"250 2.0.0 Ok: queued"))
                self.assertEqual(r2[5], b"451 4.3.0 Try again later\r\n")
                s.stop()
                self.assertEqual(s.counters()["messages"], 1)
                self.assertEqual(s.counters()["rejected_messages"], 1)

    def test_every_10_over_100_is_exactly_10(self):
        for be, make in self.each(["--threads", "2", "--fault",
                                   "rcpt reply='452 4.2.2 Mailbox full' every=10"]):
            with self.subTest(backend=be), make() as s:
                # 10 clients in parallel, 10 messages each
                import threading
                refused = []

                def client():
                    c = smtplib.SMTP("127.0.0.1", s.port, timeout=10 * SLOW)
                    n = 0
                    for i in range(10):
                        try:
                            c.sendmail("a@b.test", ["r@x.test"], "Subject: %d\r\n\r\nx\r\n" % i)
                        except smtplib.SMTPRecipientsRefused:
                            n += 1
                    c.quit()
                    refused.append(n)
                ts = [threading.Thread(target=client) for _ in range(10)]
                for t in ts:
                    t.start()
                for t in ts:
                    t.join(60)
                self.assertEqual(sum(refused), 10)
                s.stop()
                self.assertEqual(s.counters()["messages"], 90)
                self.assertEqual(s.summary["faults"][0],
                                 {"rule": "rcpt reply='452 4.2.2 Mailbox full' every=10",
                                  "matched": 100, "injected": 10})

    def test_seed_reproducible_across_runs_and_backends(self):
        seen = []
        for be in BACKENDS * 2:
            with Sink(["--seed", "7", "--fault", "mail reply='451 4.3.2 Busy' prob=0.3"],
                      backend=be) as s:
                c = smtplib.SMTP("127.0.0.1", s.port, timeout=10 * SLOW)
                c.ehlo()
                pattern = []
                for _ in range(60):
                    pattern.append(c.mail("a@b.test")[0])
                    c.rset()
                c.quit()
                seen.append(pattern)
        self.assertTrue(all(p == seen[0] for p in seen), "same seed, same faults")
        n = seen[0].count(451)
        self.assertTrue(8 <= n <= 30, n)

    def test_window(self):
        for be, make in self.each(["--fault", "mail reply='451 4.3.2 Later' window=1s-2s"]):
            with self.subTest(backend=be), make() as s:
                c = smtplib.SMTP("127.0.0.1", s.port, timeout=10 * SLOW)
                c.ehlo()
                self.assertEqual(c.mail("a@b")[0], 250)
                c.rset()
                time.sleep(1.3)
                self.assertEqual(c.mail("a@b")[0], 451)
                time.sleep(1.0)
                self.assertEqual(c.mail("a@b")[0], 250)
                c.quit()

    def test_drop_reset_stall(self):
        for be, make in self.each(["--idle-timeout", "2s",
                                   "--fault", "mail from=drop@* drop",
                                   "--fault", "mail from=reset@* reset",
                                   "--fault", "mail from=stall@* stall"]):
            with self.subTest(backend=be), make() as s:
                c = s.connect()
                chat(c, b"")
                chat(c, b"EHLO c\r\n")
                c.sendall(b"MAIL FROM:<drop@x>\r\n")
                self.assertEqual(c.recv(100), b"")  # closed without a reply
                c.close()
                c = s.connect()
                chat(c, b"")
                chat(c, b"EHLO c\r\n")
                c.sendall(b"MAIL FROM:<reset@x>\r\n")
                with self.assertRaises(ConnectionResetError):
                    c.recv(100)
                c.close()
                c = s.connect()
                chat(c, b"")
                chat(c, b"EHLO c\r\n")
                t0 = time.monotonic()
                c.sendall(b"MAIL FROM:<stall@x>\r\nNOOP\r\n")
                out = recv_until(c, lambda d: b"421" in d, timeout=6)
                self.assertGreaterEqual(time.monotonic() - t0, 1.8)
                self.assertEqual(out, b"421 4.4.2 smtpsink.localhost Error: timeout exceeded\r\n")
                c.close()
                s.stop()
                ctr = s.counters()
                self.assertEqual((ctr["faults_closed"], ctr["faults_delayed"]), (2, 1))
                self.assertEqual(ctr["timeouts"], 1)

    def test_throttle(self):
        for be, make in self.each(["--fault", "ehlo throttle=2k/s"]):
            with self.subTest(backend=be), make() as s:
                c = s.connect()
                chat(c, b"")
                chat(c, b"EHLO c\r\n")
                t0 = time.monotonic()
                c.sendall(b"HELP\r\n" * 100)  # ~9.2 KB of replies at 2 KiB/s
                out = recv_until(c, lambda d: d.count(b"\r\n") >= 100, timeout=20)
                dt = time.monotonic() - t0
                rate = len(out) / dt
                self.assertTrue(1400 < rate < 2600, "%.0f octets/s" % rate)
                c.close()

    def test_greylist(self):
        for be, make in self.each(["--greylist", "1s"]):
            with self.subTest(backend=be), make() as s:
                c = smtplib.SMTP("127.0.0.1", s.port, timeout=10 * SLOW)
                c.ehlo()
                c.mail("a@b.test")
                self.assertEqual(c.rcpt("r@x.test")[0], 451)  # first attempt
                self.assertEqual(c.rcpt("r@x.test")[0], 451)  # early retry
                self.assertEqual(c.rcpt("other@x.test")[0], 451)  # another triplet
                time.sleep(1.2)
                self.assertEqual(c.rcpt("r@x.test")[0], 250)  # late retry passes
                c.quit()
                s.stop()
                self.assertEqual(s.counters()["greylisted"], 3)

    def test_rate_limit(self):
        for be, make in self.each(["--rate-limit", "20/s"]):
            with self.subTest(backend=be), make() as s:
                c = smtplib.SMTP("127.0.0.1", s.port, timeout=10 * SLOW)
                c.ehlo()
                ok = 0
                t0 = time.monotonic()
                while time.monotonic() - t0 < 5:
                    if c.mail("a@b.test")[0] == 250:
                        ok += 1
                    c.rset()
                    time.sleep(0.005)
                c.quit()
                # burst of 20 plus 20/s for 5 s: 120, within 10%
                self.assertTrue(108 <= ok <= 132, ok)
                s.stop()
                self.assertGreater(s.counters()["rate_limited"], 0)

    def test_address_faults_and_per_session_and_per_ip_limits(self):
        for be, make in self.each(["--address-faults", "--max-msgs-per-session", "2",
                                   "--max-conns-per-ip", "2"]):
            with self.subTest(backend=be), make() as s:
                c = smtplib.SMTP("127.0.0.1", s.port, timeout=10 * SLOW)
                c.ehlo()
                c.mail("a@b.test")
                self.assertEqual(c.rcpt("reply-550-5.1.1@any.test")[0], 550)
                self.assertEqual(c.rcpt("ok@any.test")[0], 250)
                c.rset()
                a = s.connect()
                # a is counted before b connects: with several workers, two
                # connects in flight may be opened in either order
                self.assertIn(b"220 ", recv_until(a, lambda d: b"\r\n" in d))
                b = s.connect()
                self.assertIn(b"421 4.7.0", recv_until(b, lambda d: b"\r\n" in d))
                a.close()
                b.close()
                c.sendmail("a@b.test", ["x@y.test"], "x")
                c.sendmail("a@b.test", ["x@y.test"], "x")  # the 2nd, then 421
                with self.assertRaises((smtplib.SMTPServerDisconnected,
                                        smtplib.SMTPSenderRefused)) as e:
                    c.sendmail("a@b.test", ["x@y.test"], "x")
                if isinstance(e.exception, smtplib.SMTPSenderRefused):
                    self.assertEqual(e.exception.smtp_code, 421)
                s.stop()
                ctr = s.counters()
                self.assertEqual(ctr["conns_rejected_per_ip"], 1)
                self.assertEqual(ctr["msgs_per_session_close"], 1)

    def test_real_clients_see_injected_replies(self):
        for be, make in self.each(["--fault",
                                   "rcpt to=*@bounce.test reply='550 5.1.1 No such user'"]):
            with self.subTest(backend=be), make() as s:
                r = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % s.port, "--to",
                                    "x@bounce.test"], capture_output=True, timeout=30)
                self.assertIn(b"550 5.1.1 No such user", r.stdout)
                self.assertNotEqual(r.returncode, 0)
                c = smtplib.SMTP("127.0.0.1", s.port, timeout=10)
                with self.assertRaises(smtplib.SMTPRecipientsRefused):
                    c.sendmail("a@b", ["y@bounce.test"], "x")
                c.quit()

    def test_usage_errors_point_at_the_word(self):
        r = subprocess.run([SMTPSINK, "--fault", "rcpt reply='550 x' prob=2"],
                           capture_output=True, timeout=10)
        self.assertEqual(r.returncode, 2)
        self.assertIn(b"prob=2", r.stderr)
        self.assertIn(b"column", r.stderr)
        with tempfile.NamedTemporaryFile("w", suffix=".rules") as f:
            f.write("# ok\nmail reply='451 4.3.2 x'\nrcpt evry=10 reply='550 x'\n")
            f.flush()
            r = subprocess.run([SMTPSINK, "--fault-file", f.name], capture_output=True,
                               timeout=10)
            self.assertEqual(r.returncode, 2)
            self.assertIn(b"line 3", r.stderr)

    def test_sighup_reloads_rules(self):
        with tempfile.NamedTemporaryFile("w", suffix=".rules", delete=False) as f:
            f.write("mail reply='451 4.3.2 First'\n")
        try:
            for be, make in self.each(["--fault-file", f.name]):
                with self.subTest(backend=be), make() as s:
                    c = smtplib.SMTP("127.0.0.1", s.port, timeout=10 * SLOW)
                    c.ehlo()
                    self.assertEqual(c.mail("a@b"), (451, b"4.3.2 First"))
                    with open(f.name, "w") as g:
                        g.write("mail reply='451 4.3.2 Second'\n")
                    s.proc.send_signal(signal.SIGHUP)
                    deadline = time.monotonic() + 5
                    while time.monotonic() < deadline:
                        if c.mail("a@b") == (451, b"4.3.2 Second"):
                            break
                        time.sleep(0.05)
                    self.assertEqual(c.mail("a@b"), (451, b"4.3.2 Second"))
                    c.quit()  # the connection survived the reload
                    s.stop()
                    with open(f.name, "w") as g:
                        g.write("mail reply='451 4.3.2 First'\n")
        finally:
            os.unlink(f.name)


if __name__ == "__main__":
    sinklib.main()
