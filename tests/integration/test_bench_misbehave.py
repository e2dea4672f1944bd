"""smtpbench against tiny misbehaving SMTP servers (both generator backends).

Each server lives in this file (stdlib threads, 127.0.0.1, port 0).  For each
case the exit status, the counts per class and a bound on the run time are
asserted: smtpbench must end, and must count exactly, whatever the server
does.  The servers also count what they accepted, so the generator's numbers
are checked against the other side of the wire, not against themselves.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import sinklib  # noqa: E402
from sinklib import SLOW, backends  # noqa: E402

SMTPBENCH = os.environ.get("SMTPBENCH", "")
BACKENDS = backends()

EHLO_FULL = [b"250-fake.test", b"250-PIPELINING", b"250-8BITMIME", b"250 CHUNKING"]


class Conn:
    """One accepted connection with a line/octet reader."""

    def __init__(self, sock, srv):
        self.s = sock
        self.srv = srv
        self.buf = b""

    def send(self, data):
        if self.srv.byte_by_byte:
            for i in range(len(data)):
                self.s.sendall(data[i:i + 1])
                time.sleep(0.0005)
        else:
            self.s.sendall(data)

    def reply(self, *lines):
        if self.srv.delay:
            time.sleep(self.srv.delay)
        self.send(b"".join(ln + b"\r\n" for ln in lines))

    def _fill(self):
        d = self.s.recv(65536)
        if not d:
            raise EOFError
        self.buf += d

    def line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        ln, self.buf = self.buf.split(b"\r\n", 1)
        return ln

    def until(self, marker):
        while marker not in self.buf:
            self._fill()
        data, self.buf = self.buf.split(marker, 1)
        return data

    def octets(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data


class FakeServer:
    """A scripted SMTP server.  mode picks the misbehaviour:
    smtp (correct), greet421, close220, close, garbage, silent."""

    def __init__(self, mode="smtp", ehlo=None, max_msgs=None, delay=0.0,
                 byte_by_byte=False, ehlo_split=False, refuse_rcpt=None, end_delay=0.0):
        self.mode = mode
        self.ehlo = ehlo or EHLO_FULL
        self.max_msgs = max_msgs
        self.delay = delay
        self.byte_by_byte = byte_by_byte
        self.ehlo_split = ehlo_split
        self.refuse_rcpt = refuse_rcpt or ()
        self.end_delay = end_delay
        self.accepted = 0
        self.conns = 0
        self.bdat_used = 0
        self.lock = threading.Lock()
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(256)
        self.port = self.ls.getsockname()[1]
        self.stop = False
        self.socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stop:
            try:
                s, _ = self.ls.accept()
            except OSError:
                return
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.conns += 1
                self.socks.append(s)
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s):
        c = Conn(s, self)
        try:
            self._session(c)
        except (EOFError, OSError):
            pass
        finally:
            try:
                s.close()
            except OSError:
                pass

    def _session(self, c):
        m = self.mode
        if m == "close":
            return
        if m == "greet421":
            c.reply(b"421 4.7.0 fake.test too many connections")
            return
        if m == "garbage":
            c.send(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            time.sleep(5)
            return
        if m == "silent":
            while True:
                c._fill()
        c.reply(b"220 fake.test ESMTP")
        if m == "close220":
            return
        msgs = 0
        rcpts = 0
        while True:
            ln = c.line()
            verb = ln[:4].upper()
            if verb == b"EHLO":
                body = b"".join(x + b"\r\n" for x in self.ehlo)
                if self.ehlo_split:
                    # split inside the keywords: "250-PIPEL" / "INING..." etc.
                    for k in range(0, len(body), 7):
                        c.send(body[k:k + 7])
                        time.sleep(0.01)
                else:
                    c.reply(*self.ehlo)
            elif verb == b"HELO":
                c.reply(b"250 fake.test")
            elif verb == b"MAIL":
                rcpts = 0
                c.reply(b"250 2.1.0 Ok")
            elif verb == b"RCPT":
                if any(r in ln for r in self.refuse_rcpt):
                    c.reply(b"550 5.1.1 no such user")
                else:
                    rcpts += 1
                    c.reply(b"250 2.1.5 Ok")
            elif verb == b"DATA":
                if not rcpts:
                    c.reply(b"554 5.5.1 no valid recipients")
                    continue
                c.reply(b"354 go ahead")
                c.until(b"\r\n.\r\n")
                msgs += self._end(c, msgs)
            elif verb == b"BDAT":
                n = int(ln.split()[1])
                c.octets(n)
                with self.lock:
                    self.bdat_used += 1
                if not rcpts:
                    c.reply(b"554 5.5.1 no valid recipients")
                    continue
                msgs += self._end(c, msgs)
            elif verb == b"RSET":
                c.reply(b"250 2.0.0 Ok")
            elif verb == b"QUIT":
                c.reply(b"221 2.0.0 Bye")
                return
            else:
                c.reply(b"502 5.5.2 not implemented")

    def _end(self, c, msgs):
        if self.max_msgs is not None and msgs >= self.max_msgs:
            # RFC 5321 3.8: 421 and close, here right after the content
            c.reply(b"421 4.3.2 fake.test closing after %d messages" % self.max_msgs)
            raise EOFError
        time.sleep(self.end_delay)
        with self.lock:
            self.accepted += 1
        c.reply(b"250 2.0.0 Ok: queued")
        return 1

    def close(self):
        self.stop = True
        self.ls.close()
        with self.lock:
            for s in self.socks:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def run(port, io, *args, timeout=60, signal_after=None):
    """Run smtpbench; returns (exit status, report, stderr, seconds)."""
    with tempfile.TemporaryDirectory() as d:
        jp = os.path.join(d, "r.json")
        cmd = [SMTPBENCH, "--target", "127.0.0.1:%d" % port, "--quiet", "--io", io,
               "--json", jp] + list(args)
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if signal_after:
            time.sleep(signal_after)
            p.send_signal(signal.SIGTERM)
        try:
            _, err = p.communicate(timeout=timeout * SLOW)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            raise AssertionError("smtpbench did not end: %s" % cmd)
        took = time.monotonic() - t0
        with open(jp) as f:
            rep = json.load(f)
        err = err.decode(errors="replace")
        if any(m in err for m in sinklib.SANITIZER_MARKS):
            raise AssertionError("sanitizer report:\n" + err)
        return p.returncode, rep, err, took


def nonzero(d):
    return {k: v for k, v in d.items() if v}


class Misbehaving(unittest.TestCase):
    def setUp(self):
        if not SMTPBENCH:
            self.skipTest("SMTPBENCH not set")

    def check_totals(self, rep):
        m = rep["messages"]
        self.assertEqual(m["attempted"], m["delivered"] + m["partial"] + m["failed"], m)
        self.assertEqual(m["failed"], sum(m["failed_by"].values()), m)
        c = rep["connections"]
        self.assertEqual(c["failed"], sum(c["failed_by"].values()), c)

    def test_sessions_that_cannot_start_give_up(self):
        # 2 sessions x --max-attempts 5, back-off 50..400 ms: ends in ~1 s
        cases = [("greet421", {}, "4xx", "421 4.7.0 fake.test too many"),
                 ("close220", {}, "dropped", "server closed the connection"),
                 ("close", {}, "dropped", ""),
                 ("garbage", {}, "protocol", "HTTP/1.1 400"),
                 ("smtp", {"ehlo": [b"250-fake.test", b"250 PIPELINING"]}, "unsupported",
                  "CHUNKING")]
        for io in BACKENDS:
            for mode, kw, cls, text in cases:
                with self.subTest(io=io, mode=mode), FakeServer(mode, **kw) as srv:
                    rc, rep, err, took = run(srv.port, io, "--sessions", "2", "--threads", "1",
                                             "--messages", "10", "--timeout", "2s", "--bdat")
                    self.assertEqual(rc, 1, err)
                    self.assertLess(took, 6 * SLOW, err)
                    self.check_totals(rep)
                    c, m = rep["connections"], rep["messages"]
                    self.assertEqual(c["attempts"], 10, c)
                    self.assertEqual(nonzero(c["failed_by"]), {cls: 10}, c)
                    self.assertEqual(c["gave_up"], 2)
                    self.assertEqual((m["attempted"], m["unsent"]), (0, 10), m)
                    self.assertIn("every session gave up", rep["stopped"])
                    self.assertIn(text, err)
                    self.assertEqual(srv.conns, 10)

    def test_silent_server_stops_after_no_progress_deadline(self):
        for io in BACKENDS:
            with self.subTest(io=io), FakeServer("silent") as srv:
                rc, rep, err, took = run(srv.port, io, "--sessions", "2", "--threads", "1",
                                         "--messages", "10", "--timeout", "1s")
                self.assertEqual(rc, 1, err)
                # first timeouts at 1 s, watchdog at 3 x --timeout
                self.assertGreater(took, 2.5)
                self.assertLess(took, 6 * SLOW)
                self.assertIn("no progress", rep["stopped"])
                c = rep["connections"]
                self.assertGreaterEqual(c["failed_by"]["timeout"], 2)
                self.assertEqual(nonzero(c["failed_by"]).keys(), {"timeout"})
                self.assertEqual(rep["messages"]["attempted"], 0)
                self.assertIn("timeout: session", err)

    def test_slow_replies(self):
        for io in BACKENDS:
            # slower than usual but within --timeout: everything delivered
            with self.subTest(io=io, case="within"), FakeServer(delay=0.05) as srv:
                rc, rep, err, took = run(srv.port, io, "--sessions", "2", "--threads", "1",
                                         "--messages", "6", "--timeout", "2s")
                self.assertEqual(rc, 0, err)
                self.assertEqual(rep["messages"]["delivered"], 6)
                self.assertEqual(srv.accepted, 6)
                self.assertLess(took, 10 * SLOW)
            # slower than --timeout: timeouts, and the run still ends
            with self.subTest(io=io, case="beyond"), FakeServer(delay=1.5) as srv:
                rc, rep, err, took = run(srv.port, io, "--sessions", "1", "--messages", "3",
                                         "--timeout", "0.5s")
                self.assertEqual(rc, 1, err)
                self.assertLess(took, 5 * SLOW)
                self.assertEqual(nonzero(rep["connections"]["failed_by"]).keys(), {"timeout"})

    def test_replies_one_byte_per_write_and_ehlo_split(self):
        for io in BACKENDS:
            for kw in ({"byte_by_byte": True}, {"ehlo_split": True}):
                for extra in ([], ["--bdat"], ["--pipelining", "off"]):
                    with self.subTest(io=io, server=kw, extra=extra), FakeServer(**kw) as srv:
                        rc, rep, err, took = run(srv.port, io, "--sessions", "2", "--threads",
                                                 "1", "--messages", "8", "--rcpts", "2", *extra)
                        self.assertEqual(rc, 0, err)
                        self.assertEqual(rep["messages"]["delivered"], 8)
                        self.assertEqual(srv.accepted, 8)
                        self.assertEqual(srv.bdat_used, 8 if extra == ["--bdat"] else 0)
                        self.assertLess(took, 20 * SLOW)

    def test_lower_case_ehlo_keywords(self):
        ehlo = [b"250-fake.test", b"250-pipelining", b"250 chunking"]
        for io in BACKENDS:
            with self.subTest(io=io), FakeServer(ehlo=ehlo) as srv:
                rc, rep, err, took = run(srv.port, io, "--sessions", "2", "--threads", "1",
                                         "--messages", "10", "--bdat")
                self.assertEqual(rc, 0, err)
                self.assertEqual(rep["messages"]["delivered"], 10)
                self.assertEqual(srv.bdat_used, 10)
                self.assertEqual(rep["replies"]["bdat"]["ok"], 10)
        # a keyword that merely contains CHUNKING is not CHUNKING
        ehlo = [b"250-fake.test", b"250-XCHUNKINGX", b"250 CHUNKINGS"]
        with FakeServer(ehlo=ehlo) as srv:
            rc, rep, err, took = run(srv.port, BACKENDS[-1], "--sessions", "1", "--messages",
                                     "3", "--bdat", "--timeout", "2s")
            self.assertEqual(rc, 1)
            self.assertEqual(nonzero(rep["connections"]["failed_by"]), {"unsupported": 5})
            self.assertEqual(srv.bdat_used, 0)

    def test_421_after_n_messages_no_ghost_message(self):
        for io in BACKENDS:
            for extra in ([], ["--bdat"], ["--pipelining", "off"]):
                with self.subTest(io=io, extra=extra), FakeServer(max_msgs=4) as srv:
                    rc, rep, err, took = run(srv.port, io, "--sessions", "1", "--messages",
                                             "10", *extra)
                    self.assertEqual(rc, 1, err)
                    self.check_totals(rep)
                    m = rep["messages"]
                    # 4 + 421, 4 + 421: 8 delivered, 2 failed, nothing else
                    self.assertEqual((m["attempted"], m["delivered"], m["failed"], m["unsent"]),
                                     (10, 8, 2, 0), m)
                    self.assertEqual(nonzero(m["failed_by"]), {"4xx": 2})
                    end = rep["replies"]["bdat" if extra == ["--bdat"] else "end"]
                    self.assertEqual((end["ok"], end["4xx"]), (8, 2))
                    self.assertEqual(srv.accepted, 8)
                    c = rep["connections"]
                    self.assertEqual((c["attempts"], c["closed_early"], c["failed"]), (2, 2, 0))
                    self.assertLess(took, 10 * SLOW)

    def test_partial_delivery(self):
        for io in BACKENDS:
            for extra in ([], ["--bdat"], ["--pipelining", "off"]):
                with self.subTest(io=io, extra=extra), \
                        FakeServer(refuse_rcpt=[b"<rcpt1@"]) as srv:
                    rc, rep, err, took = run(srv.port, io, "--sessions", "2", "--threads", "1",
                                             "--messages", "10", "--rcpts", "3", *extra)
                    self.assertEqual(rc, 1, err)
                    m = rep["messages"]
                    self.assertEqual((m["attempted"], m["delivered"], m["partial"], m["failed"]),
                                     (10, 0, 10, 0), m)
                    r = rep["replies"]["rcpt"]
                    self.assertEqual((r["ok"], r["5xx"]), (20, 10))
                    self.assertEqual(srv.accepted, 10)
                    # accepted content counts as content bytes
                    self.assertGreater(rep["bytes"]["content"], 10 * 1024)
        # every recipient refused: one failed message each, 5xx, no double count
        with FakeServer(refuse_rcpt=[b"<rcpt"]) as srv:
            rc, rep, err, took = run(srv.port, BACKENDS[-1], "--sessions", "1",
                                     "--messages", "5", "--rcpts", "2")
            self.assertEqual(rc, 1)
            m = rep["messages"]
            self.assertEqual((m["failed"], nonzero(m["failed_by"])), (5, {"5xx": 5}))
            self.assertEqual(rep["replies"]["rcpt"]["5xx"], 10)
            self.assertEqual(srv.accepted, 0)

    def test_sigterm_ends_the_run_at_once_with_a_report(self):
        for io in BACKENDS:
            # the final reply takes 30 s: both messages are in flight at the signal
            with self.subTest(io=io), FakeServer(end_delay=30) as srv:
                rc, rep, err, took = run(srv.port, io, "--sessions", "2", "--threads", "1",
                                         "--duration", "60s", "--timeout", "40s",
                                         signal_after=1.5)
                self.assertEqual(rc, 1, err)
                self.assertLess(took, 3 * SLOW)
                self.assertEqual(rep["stopped"], "interrupted by SIGTERM")
                self.check_totals(rep)
                m = rep["messages"]
                self.assertEqual((m["attempted"], m["failed"], nonzero(m["failed_by"])),
                                 (2, 2, {"aborted": 2}), m)


if __name__ == "__main__":
    if not SMTPBENCH or not os.path.exists(SMTPBENCH):
        # CTest counts exit 77 as skipped (SKIP_RETURN_CODE)
        print("skipped: the SMTPBENCH binary is not set (run through ctest)")
        sys.exit(77)
    sinklib.main()
