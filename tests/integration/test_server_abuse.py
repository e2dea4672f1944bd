"""smtpsink under hostile and broken clients, per I/O backend.

Every bad input may cost only its own connection: after each, a normal
session must still succeed and the server must still be running.
"""
import os
import resource
import signal
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import sinklib  # noqa: E402
from sinklib import SLOW, Sink, backends, chat, good_session, recv_until  # noqa: E402

BACKENDS = backends()
CLIENT_HELLO = bytes.fromhex(
    "16030100c4010000c00303" + "ab" * 32 + "20" + "cd" * 32 + "0026c02bc02fc02cc030cca9cca8"
    "c009c013c00ac014009c009d002f0035c012000a130113021303010000510000000e000c0000096c6f63616c"
    "686f7374")


def read_all(sock, timeout=5):
    """Read until EOF; returns the bytes."""
    sock.settimeout(timeout * SLOW)
    data = b""
    deadline = time.monotonic() + timeout * SLOW
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            return data
        data += chunk
    raise AssertionError("connection not closed; got %r" % data[-200:])


class Abuse(unittest.TestCase):
    def each(self, args=()):
        """(backend, Sink factory) per backend; use inside self.subTest."""
        return [(be, lambda be=be: Sink(list(args), backend=be)) for be in BACKENDS]

    def test_long_line_then_good(self):
        for be, make in self.each():
            with self.subTest(backend=be), make() as s:
                c = s.connect()
                chat(c, b"")
                r = chat(c, b"NOOP " + b"x" * 100000 + b"\r\n")
                self.assertEqual(r, b"500 5.5.2 Error: command too long\r\n")
                self.assertTrue(chat(c, b"NOOP\r\n").startswith(b"250 "))  # resynchronised
                c.close()
                good_session(s.port)
                s.stop()
                self.assertEqual(s.counters()["err_too_long"], 1)

    def test_binary_garbage_and_tls_hello(self):
        for be, make in self.each():
            with self.subTest(backend=be), make() as s:
                c = s.connect()
                chat(c, b"")
                c.sendall(bytes(range(256)) * 64)
                out = read_all(c)
                self.assertIn(b"421 4.7.0 smtpsink.localhost Error: too many errors\r\n", out)
                c.close()
                c = s.connect()
                chat(c, b"")
                c.sendall(CLIENT_HELLO)
                c.shutdown(socket.SHUT_WR)
                read_all(c)
                c.close()
                good_session(s.port)
                s.stop()
                self.assertGreaterEqual(s.counters()["err_limit_close"], 1)

    def test_idle_timeout(self):
        for be, make in self.each(["--idle-timeout", "1s"]):
            with self.subTest(backend=be), make() as s:
                c = s.connect()
                t0 = time.monotonic()
                self.assertTrue(chat(c, b"").startswith(b"220 "))
                out = read_all(c, timeout=5)
                self.assertEqual(out, b"421 4.4.2 smtpsink.localhost Error: timeout exceeded\r\n")
                self.assertGreater(time.monotonic() - t0, 0.9)
                good_session(s.port)
                s.stop()
                self.assertEqual(s.counters()["timeouts"], 1)

    def test_slowloris_trickle_is_served(self):
        # One byte at a time, well inside the idle timeout: slow but legal.
        for be, make in self.each(["--idle-timeout", "2s"]):
            with self.subTest(backend=be), make() as s:
                c = s.connect()
                chat(c, b"")
                for b in b"EHLO slow.test\r\n":
                    c.sendall(bytes([b]))
                    time.sleep(0.02)
                self.assertTrue(recv_until(c, lambda d: d.endswith(b"250 CHUNKING\r\n")))
                c.close()
                s.stop()

    def test_vanish_mid_data_and_half_close(self):
        for be, make in self.each():
            with self.subTest(backend=be), make() as s:
                c = s.connect()
                chat(c, b"")
                c.sendall(b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
                recv_until(c, lambda d: b"354 " in d)
                c.sendall(b"Subject: half\r\n\r\n" + b"y" * 50000)
                c.close()
                # half-closed: the whole session arrives, then FIN; replies still come
                c = s.connect()
                c.sendall(b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"
                          b"body\r\n.\r\nQUIT\r\n")
                c.shutdown(socket.SHUT_WR)
                out = read_all(c)
                self.assertIn(b"250 2.0.0 Ok: queued as", out)
                self.assertTrue(out.endswith(b"221 2.0.0 Bye\r\n"), out)
                c.close()
                good_session(s.port)
                s.stop()
                cnt = s.counters()
                self.assertEqual(cnt["messages"], 2)
                self.assertEqual(cnt["peer_closed_in_content"], 1)

    def test_many_idle_connections(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        n = 2000
        if hard < n + 100:
            self.skipTest("RLIMIT_NOFILE hard limit too low")
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, n + 100), hard))
        for be, make in self.each():
            with self.subTest(backend=be), make() as s:
                socks = [s.connect() for _ in range(n)]
                for c in socks[:: n // 20]:
                    self.assertTrue(chat(c, b"").startswith(b"220 "))
                good_session(s.port)
                for c in socks:
                    c.close()
                s.stop()
                self.assertEqual(s.counters()["conns_accepted"], n + 1)
                # the true peak: all n idle ones plus the good session
                self.assertEqual(s.counters()["conns_peak"], n + 1)

    def test_pipelining_without_reading(self):
        # The client writes far more than the reply buffer holds before it
        # reads anything: reading pauses, nothing is lost, order is kept.
        n = 200000
        for be, make in self.each():
            with self.subTest(backend=be), make() as s:
                c = s.connect()
                chat(c, b"")
                payload = b"NOOP\r\n" * n + b"QUIT\r\n"
                t = threading.Thread(target=c.sendall, args=(payload,))
                t.start()
                time.sleep(1)
                out = read_all(c, timeout=60)
                t.join(30)
                self.assertEqual(out.count(b"250 2.0.0 Ok\r\n"), n)
                self.assertTrue(out.endswith(b"221 2.0.0 Bye\r\n"))
                c.close()
                s.stop()
                self.assertGreaterEqual(s.counters()["read_pauses"], 1)

    def test_emfile_does_not_spin(self):
        # Descriptors run out: accept fails with EMFILE.  The server must back
        # off (not burn a core retrying) and serve again once fds free up.
        for be in BACKENDS:
            with self.subTest(backend=be), Sink(["--threads", "1"], backend=be,
                                                wrapper=["prlimit", "--nofile=48:48"]) as s:
                socks = [s.connect() for _ in range(80)]
                time.sleep(0.5)
                with open("/proc/%d/stat" % s.proc.pid) as f:
                    t0 = sum(int(x) for x in f.read().rsplit(")", 1)[1].split()[11:13])
                time.sleep(2)
                with open("/proc/%d/stat" % s.proc.pid) as f:
                    t1 = sum(int(x) for x in f.read().rsplit(")", 1)[1].split()[11:13])
                ticks = os.sysconf("SC_CLK_TCK")
                self.assertLess((t1 - t0) / ticks, 0.5, "accept loop spins on EMFILE")
                for c in socks:
                    c.close()
                time.sleep(0.5 * SLOW)
                good_session(s.port)
                s.stop()
                self.assertGreater(s.counters()["accept_errors"], 0)

    def test_max_conns(self):
        for be, make in self.each(["--max-conns", "2"]):
            with self.subTest(backend=be), make() as s:
                a, b = s.connect(), s.connect()
                chat(a, b"")
                chat(b, b"")
                c = s.connect()
                self.assertEqual(read_all(c),
                                 b"421 4.7.0 smtpsink.localhost Error: too many connections\r\n")
                a.close()
                time.sleep(0.3 * SLOW)
                good_session(s.port)
                b.close()
                s.stop()
                self.assertEqual(s.counters()["conns_rejected"], 1)

    def test_graceful_shutdown_with_session_in_data(self):
        for be, make in self.each(["--drain-timeout", "10s"]):
            with self.subTest(backend=be), make() as s:
                idle = s.connect()
                chat(idle, b"")
                busy = s.connect()
                chat(busy, b"")
                busy.sendall(b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
                recv_until(busy, lambda d: b"354 " in d)
                busy.sendall(b"Subject: in flight\r\n\r\npart one\r\n")
                time.sleep(0.2)
                s.proc.send_signal(signal.SIGTERM)
                self.assertEqual(read_all(idle),
                                 b"421 4.3.2 smtpsink.localhost Service shutting down\r\n")
                time.sleep(0.3)
                busy.sendall(b"part two\r\n.\r\n")
                out = read_all(busy)
                self.assertTrue(out.startswith(b"250 2.0.0 Ok: queued as"), out)
                self.assertTrue(out.endswith(b"421 4.3.2 smtpsink.localhost Service shutting down\r\n"))
                self.assertEqual(s.wait(), 0)
                self.assertEqual(s.counters()["messages"], 1)
                self.assertEqual(s.counters()["shutdown_421"], 2)

    def test_second_signal_forces(self):
        for be, make in self.each(["--drain-timeout", "60s"]):
            with self.subTest(backend=be), make() as s:
                busy = s.connect()
                chat(busy, b"")
                busy.sendall(b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
                recv_until(busy, lambda d: b"354 " in d)
                s.proc.send_signal(signal.SIGTERM)
                time.sleep(0.3)
                self.assertIsNone(s.proc.poll())  # still draining
                t0 = time.monotonic()
                s.proc.send_signal(signal.SIGTERM)
                self.assertEqual(s.wait(timeout=5), 0)
                self.assertLess(time.monotonic() - t0, 3 * SLOW)
                busy.close()

    def test_exit_after(self):
        # The 3rd accepted message stops the server: that session gets its
        # 250 and then 421 4.3.2 at once, and the process exits 0.
        for be, make in self.each(["--exit-after", "3", "--threads", "2"]):
            with self.subTest(backend=be), make() as s:
                for _ in range(2):
                    good_session(s.port)
                c = s.connect()
                chat(c, b"")
                chat(c, b"EHLO t.test\r\n")
                chat(c, b"MAIL FROM:<a@t.test>\r\n")
                chat(c, b"RCPT TO:<r@t.test>\r\n")
                chat(c, b"DATA\r\n")
                c.sendall(b"Subject: x\r\n\r\nbody\r\n.\r\n")
                out = read_all(c)
                self.assertRegex(out, rb"^250 2\.0\.0 Ok: queued as [0-9A-F]{16}\r\n"
                                      rb"421 4\.3\.2 smtpsink\.localhost Service shutting down\r\n$")
                self.assertEqual(s.wait(timeout=10), 0)
                self.assertEqual(s.counters()["messages"], 3)


if __name__ == "__main__":
    sinklib.main()
