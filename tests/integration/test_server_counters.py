"""Every counter in smtpsink's JSON summary equals what a scripted client did.

Each scenario runs a fresh sink per backend, drives it with raw bytes, stops
it, and compares the whole "counters" object: the counters a scenario names
must have exactly the value given, every other counter must be 0.  Only the
diagnostic counters (loops, cqes, short_sends, enobufs), whose values depend
on the kernel's scheduling, are left out; they are checked for plausibility.
"""
import os
import signal
import socket
import struct
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import sinklib  # noqa: E402
from sinklib import SLOW, Sink, backends, recv_until, smtp_reply_complete  # noqa: E402

BACKENDS = backends()
DIAGNOSTIC = {"loops", "cqes", "short_sends", "enobufs"}


class Client:
    """A raw SMTP client that remembers how many octets it sent."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=5 * SLOW)
        self.sent = 0
        self.greeting = self.reply()

    def send(self, data):
        self.s.sendall(data)
        self.sent += len(data)

    def reply(self):
        return recv_until(self.s, smtp_reply_complete)

    def cmd(self, data):
        self.send(data)
        return self.reply()

    def quit(self):
        r = self.cmd(b"QUIT\r\n")
        assert r.startswith(b"221 "), r
        self.s.settimeout(5 * SLOW)
        assert self.s.recv(100) == b""  # the server closes after 221
        self.s.close()

    def reset(self):
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.s.close()


def transaction(c, body=b"Subject: t\r\n\r\nhello\r\n", rcpts=1, ehlo=True):
    if ehlo:
        assert c.cmd(b"EHLO client.test\r\n").startswith(b"250")
    assert c.cmd(b"MAIL FROM:<a@client.test>\r\n").startswith(b"250")
    for i in range(rcpts):
        assert c.cmd(b"RCPT TO:<r%d@server.test>\r\n" % i).startswith(b"250")
    assert c.cmd(b"DATA\r\n").startswith(b"354")
    return c.cmd(body + b".\r\n")


def base(c, commands):
    """Counters every scenario with one client session that ends has."""
    return {"sessions": 1, "conns_accepted": 1, "conns_closed": 1, "conns_peak": 1,
            "commands": commands, "recv_bytes": c.sent}


def wait_closed(s):
    """Wait until the sink has closed every connection (so counters are
    final before we stop it)."""
    time.sleep(0.3 * SLOW)


class Counters(unittest.TestCase):
    def check(self, args, script):
        """Run script(sink) -> expected dict on each backend; compare."""
        for be in BACKENDS:
            with self.subTest(backend=be), Sink(list(args), backend=be) as s:
                want = script(s)
                wait_closed(s)
                self.assertEqual(s.stop(), 0)
                got = dict(s.counters())
                for k in DIAGNOSTIC:
                    self.assertIn(k, got)
                    self.assertGreaterEqual(got.pop(k), 0)
                self.assertGreater(s.counters()["loops"], 0)
                if be == "epoll":
                    self.assertEqual(s.counters()["cqes"], 0)
                full = {k: 0 for k in got}
                full.update(want)
                self.assertEqual(set(full), set(got), "unknown counter names")
                diff = {k: (got[k], full[k]) for k in got if got[k] != full[k]}
                self.assertEqual(diff, {}, "counter: (got, want)")

    def test_message_counters(self):
        body = b"Subject: t\r\n\r\n..stuffed\r\nline two\r\n"

        def script(s):
            c = Client(s.port)
            r = transaction(c, body, rcpts=3)
            self.assertTrue(r.startswith(b"250 2.0.0 Ok: queued as"), r)
            c.quit()
            # RFC 1870 size: after unstuffing, terminator excluded
            return dict(base(c, 7), messages=1, message_bytes=len(body) - 1, recipients=3)
        self.check([], script)

    def test_err_unknown(self):
        def script(s):
            c = Client(s.port)
            for cmd in (b"FOO", b"STARTTLS", b"AUTH PLAIN x", b"EXPN list", b"TURN",
                        b"ETRN x", b"SEND FROM:<a@b>"):
                self.assertRegex(c.cmd(cmd + b"\r\n"), rb"^50[02] ")
            c.quit()
            return dict(base(c, 8), err_unknown=7)
        self.check([], script)

    def test_err_syntax(self):
        def script(s):
            c = Client(s.port)
            c.cmd(b"EHLO c\r\n")
            for cmd in (b"HELO", b"MAIL FROM:<a", b"MAIL FROM:<a@b> FOO=1", b"RSET x",
                        b"MAIL TO:<a@b>", b"NOOP\rX"):
                self.assertRegex(c.cmd(cmd + b"\r\n"), rb"^50[01]|^555 ")
            c.quit()
            return dict(base(c, 8), err_syntax=6, bare_cr=1)
        self.check([], script)

    def test_err_sequence(self):
        def script(s):
            c = Client(s.port)
            self.assertTrue(c.cmd(b"MAIL FROM:<a@b>\r\n").startswith(b"503"))
            c.cmd(b"EHLO c\r\n")
            self.assertTrue(c.cmd(b"RCPT TO:<a@b>\r\n").startswith(b"503"))
            self.assertTrue(c.cmd(b"DATA\r\n").startswith(b"503"))
            c.quit()
            return dict(base(c, 5), err_sequence=3)
        self.check([], script)

    def test_err_size_and_rejected(self):
        def script(s):
            c = Client(s.port)
            c.cmd(b"EHLO c\r\n")
            self.assertTrue(c.cmd(b"MAIL FROM:<a@b> SIZE=1000\r\n").startswith(b"552"))
            r = transaction(c, b"x" * 150 + b"\r\n", ehlo=False)
            self.assertTrue(r.startswith(b"552 5.3.4"), r)
            c.quit()
            return dict(base(c, 6), err_size=2, rejected_messages=1, recipients=1)
        self.check(["--max-size", "100"], script)

    def test_err_rcpt_limit(self):
        def script(s):
            c = Client(s.port)
            c.cmd(b"EHLO c\r\n")
            c.cmd(b"MAIL FROM:<a@b>\r\n")
            for i in range(5):
                c.cmd(b"RCPT TO:<r%d@b>\r\n" % i)
            self.assertTrue(c.cmd(b"DATA\r\n").startswith(b"354"))
            self.assertTrue(c.cmd(b"x\r\n.\r\n").startswith(b"250"))
            c.quit()
            return dict(base(c, 9), err_rcpt_limit=3, recipients=2, messages=1,
                        message_bytes=3)
        self.check(["--max-rcpt", "2"], script)

    def test_err_too_long(self):
        def script(s):
            c = Client(s.port)
            self.assertTrue(c.cmd(b"NOOP " + b"x" * 5000 + b"\r\n").startswith(b"500 5.5.2"))
            c.quit()
            return dict(base(c, 2), err_too_long=1)
        self.check([], script)

    def test_err_bare_lf_and_bare_lf_lines(self):
        def script(s):
            c = Client(s.port)
            self.assertTrue(c.cmd(b"EHLO c\n").startswith(b"550 5.5.2"))
            c.cmd(b"EHLO c\r\n")
            r = transaction(c, b"a\nb\r\n", ehlo=False)
            self.assertTrue(r.startswith(b"550 5.5.2"), r)
            c.quit()
            return dict(base(c, 6), err_bare_lf=2, bare_lf_lines=2, rejected_messages=1,
                        recipients=1)
        self.check(["--bare-lf", "reject"], script)

    def test_err_utf8(self):
        def script(s):
            c = Client(s.port)
            c.cmd(b"EHLO c\r\n")
            self.assertTrue(c.cmd("MAIL FROM:<ü@b>\r\n".encode()).startswith(b"553"))
            c.quit()
            return dict(base(c, 3), err_utf8=1)
        self.check([], script)

    def test_err_limit_close(self):
        def script(s):
            c = Client(s.port)
            c.cmd(b"FOO\r\n")
            c.cmd(b"FOO\r\n")
            r = c.cmd(b"FOO\r\n")
            self.assertIn(b"421 4.7.0", r)
            c.s.settimeout(5 * SLOW)
            self.assertEqual(c.s.recv(100), b"")
            c.s.close()
            return dict(base(c, 3), err_unknown=3, err_limit_close=1)
        self.check(["--max-errors", "3"], script)

    def test_content_counters(self):
        body = b"a\rb\r\n" + b"y" * 1500 + b"\r\nc\nd\r\n"

        def script(s):
            c = Client(s.port)
            self.assertTrue(transaction(c, body).startswith(b"250"))
            c.quit()
            return dict(base(c, 5), messages=1, message_bytes=len(body), recipients=1,
                        bare_cr=1, long_body_lines=1, bare_lf_lines=1)
        self.check([], script)

    def test_pipelining_violations(self):
        def script(s):
            c = Client(s.port)
            c.send(b"NOOP\r\nNOOP\r\n")  # NOOP must end a group (RFC 2920 3.1)
            recv_until(c.s, lambda d: d.count(b"\r\n") == 2)
            c.quit()
            return dict(base(c, 3), pipelining_violations=1)
        self.check([], script)

    def test_lenient_syntax(self):
        def script(s):
            c = Client(s.port)
            c.cmd(b"EHLO c\r\n")
            self.assertTrue(c.cmd(b"MAIL FROM:a@b\r\n").startswith(b"250"))
            self.assertTrue(c.cmd(b"RCPT TO: <c@d>\r\n").startswith(b"250"))
            c.quit()
            return dict(base(c, 4), lenient_syntax=2, recipients=1)
        self.check([], script)

    def test_strict(self):
        def script(s):
            c = Client(s.port)
            c.cmd(b"EHLO c\r\n")
            self.assertTrue(c.cmd(b"MAIL FROM:a@b\r\n").startswith(b"501 5.1.7"))
            self.assertTrue(c.cmd(b"MAIL FROM: <a@b>\r\n").startswith(b"501 5.1.7"))
            c.quit()
            return dict(base(c, 4), err_syntax=2)
        self.check(["--strict"], script)

    def test_timeouts(self):
        def script(s):
            c = Client(s.port)
            c.s.settimeout(5 * SLOW)
            self.assertIn(b"421 4.4.2", recv_until(c.s, lambda d: b"421" in d))
            self.assertEqual(c.s.recv(100), b"")
            c.s.close()
            return dict(base(c, 0), timeouts=1)
        self.check(["--idle-timeout", "1s"], script)

    def test_shutdown_421(self):
        for be in BACKENDS:
            with self.subTest(backend=be), Sink([], backend=be) as s:
                c = Client(s.port)
                c.cmd(b"EHLO c\r\n")
                s.proc.send_signal(signal.SIGTERM)
                self.assertIn(b"421 4.3.2", c.reply())
                self.assertEqual(s.wait(), 0)
                got = s.counters()
                self.assertEqual(got["shutdown_421"], 1)
                self.assertEqual(got["conns_closed"], 1)
                self.assertEqual(s.summary["stop_reason"], "Terminated")

    def test_peer_closed(self):
        def script(s):
            c = Client(s.port)
            c.cmd(b"EHLO c\r\n")
            c.s.close()
            return dict(base(c, 1), peer_closed=1)
        self.check([], script)

    def test_peer_closed_in_content(self):
        def script(s):
            c = Client(s.port)
            c.cmd(b"EHLO c\r\n")
            c.cmd(b"MAIL FROM:<a@b>\r\n")
            c.cmd(b"RCPT TO:<c@d>\r\n")
            c.cmd(b"DATA\r\n")
            c.send(b"half a message\r\n")
            c.s.shutdown(socket.SHUT_WR)
            c.s.settimeout(5 * SLOW)
            self.assertEqual(c.s.recv(100), b"")
            c.s.close()
            return dict(base(c, 4), peer_closed_in_content=1, recipients=1)
        self.check([], script)

    def test_io_errors(self):
        def script(s):
            c = Client(s.port)
            c.cmd(b"EHLO c\r\n")
            c.reset()  # RST in the middle of a session
            return dict(base(c, 1), io_errors=1)
        self.check([], script)

    def test_read_pauses_and_close_timeouts(self):
        # A client floods EHLOs and never reads: reading pauses; at the idle
        # timeout it gets 421 queued behind megabytes it will never read, so
        # the close deadline resets it.
        def script(s):
            c = socket.create_connection(("127.0.0.1", s.port))
            c.setblocking(False)
            data, off = b"EHLO flood.test\r\n" * 60000, 0
            deadline = time.monotonic() + 2
            while off < len(data) and time.monotonic() < deadline:
                try:
                    off += c.send(data[off:])
                except BlockingIOError:
                    time.sleep(0.01)
            time.sleep((1 + 3 + 1) * SLOW)  # idle timeout + close deadline
            c.close()
            return {"sessions": 1, "conns_accepted": 1, "conns_closed": 1, "conns_peak": 1,
                    "timeouts": 1, "close_timeouts": 1, "read_pauses": None,
                    "commands": None, "recv_bytes": None, "pipelining_violations": None}
        self.check_loose(["--idle-timeout", "1s"], script)

    def check_loose(self, args, script):
        """As check(), but counters given as None must merely be non-zero."""
        for be in BACKENDS:
            with self.subTest(backend=be), Sink(list(args), backend=be) as s:
                want = script(s)
                wait_closed(s)
                self.assertEqual(s.stop(), 0)
                got = {k: v for k, v in s.counters().items() if k not in DIAGNOSTIC}
                for k, v in want.items():
                    if v is None:
                        self.assertGreater(got.pop(k), 0, k)
                full = {k: 0 for k in got}
                full.update({k: v for k, v in want.items() if v is not None})
                diff = {k: (got[k], full[k]) for k in got if got[k] != full[k]}
                self.assertEqual(diff, {}, "counter: (got, want)")

    def test_conns_rejected_and_peak(self):
        def script(s):
            a, b = Client(s.port), Client(s.port)
            third = socket.create_connection(("127.0.0.1", s.port), timeout=5 * SLOW)
            self.assertIn(b"421 4.7.0", recv_until(third, lambda d: b"\r\n" in d))
            third.close()
            a.quit()
            b.quit()
            return {"sessions": 2, "conns_accepted": 2, "conns_closed": 2, "conns_peak": 2,
                    "conns_rejected": 1, "commands": 2, "recv_bytes": a.sent + b.sent}
        self.check(["--max-conns", "2"], script)


if __name__ == "__main__":
    sinklib.main()
