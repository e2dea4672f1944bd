"""smtpsink --http: Prometheus /metrics (checked with promtool), /livez,
/readyz, /api/v1/stats and POST /api/v1/reset, driven with curl.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import sinklib  # noqa: E402
from sinklib import SLOW, Sink, backends, chat, good_session  # noqa: E402

BACKENDS = backends()


class HttpSink(Sink):
    def __init__(self, args=(), backend=None):
        super().__init__(["--http", "127.0.0.1:0"] + list(args), backend=backend)
        deadline = time.monotonic() + 5
        self.http = None
        while not self.http and time.monotonic() < deadline:
            # "smtpsink: http on ADDR" is printed before "ready"
            self.http = next((a for a in self.extra_lines if "http on" in a), None)
            time.sleep(0.01)
        self.http = self.http.split("http on ", 1)[1].strip()

    def curl(self, path, method="GET"):
        r = subprocess.run(["curl", "-s", "-X", method, "-o", "-", "-w", "\n%{http_code}",
                            "http://%s%s" % (self.http, path)], capture_output=True,
                           timeout=10 * SLOW)
        body, _, code = r.stdout.decode().rpartition("\n")
        return int(code), body


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError("no metric " + name)


class Http(unittest.TestCase):
    def setUp(self):
        if not shutil.which("curl"):
            self.skipTest("curl not installed")

    def test_endpoints(self):
        for be in BACKENDS:
            with self.subTest(backend=be), HttpSink(backend=be) as s:
                self.assertEqual(s.curl("/livez"), (200, "ok\n"))
                self.assertEqual(s.curl("/readyz"), (200, "ready\n"))
                for _ in range(3):
                    good_session(s.port)
                c = s.connect()
                chat(c, b"")
                chat(c, b"EHLO x\r\n")
                self.assertTrue(chat(c, b"RCPT TO:<a@b>\r\n").startswith(b"503"))
                code, text = s.curl("/metrics")
                self.assertEqual(code, 200)
                self.assertEqual(metric(text, "smtpsink_messages_accepted_total"), 3)
                self.assertEqual(metric(text, "smtpsink_connections_active"), 1)
                self.assertIn('smtpsink_messages_rejected_total{stage="rcpt"} 1', text)
                self.assertIn('smtpsink_replies_total{code="503"} 1', text)
                self.assertIn('smtpsink_message_size_bytes_bucket{le="1024"} 3', text)
                self.assertIn('smtpsink_message_size_bytes_count 3', text)
                self.assertIn('io_backend="%s"' % ("io_uring" if be == "uring" else "epoll"),
                              text)
                if shutil.which("promtool"):
                    r = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                                       capture_output=True, timeout=30)
                    self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                code, body = s.curl("/api/v1/stats")
                self.assertEqual(code, 200)
                rep = json.loads(body)
                self.assertEqual(rep["counters"]["messages"], 3)
                self.assertEqual(rep["counters"]["err_sequence"], 1)
                c.close()
                # reset: every report counts from zero again
                self.assertEqual(s.curl("/api/v1/reset", "POST")[0], 200)
                self.assertEqual(s.curl("/api/v1/reset")[0], 405)
                rep = json.loads(s.curl("/api/v1/stats")[1])
                self.assertEqual(rep["counters"]["messages"], 0)
                self.assertEqual(rep["counters"]["sessions"], 0)
                good_session(s.port)
                self.assertEqual(json.loads(s.curl("/api/v1/stats")[1])["counters"]["messages"], 1)
                self.assertEqual(s.curl("/nope")[0], 404)
                self.assertEqual(s.curl("/metrics", "POST")[0], 405)
                s.stop()
                self.assertEqual(s.counters()["messages"], 1, "the final report counts from the reset")

    def test_fault_and_capture_metrics(self):
        # a rule whose text needs label escaping (quotes in the reply), a
        # greylist, and capture: each shows up in /metrics, promtool-clean
        import tempfile
        cap = tempfile.mkdtemp(prefix="sinkhttpcap.")
        try:
            rule = "rcpt to=*@bounce.test reply='550 5.1.1 \"no\" such user'"
            with HttpSink(["--fault", rule, "--greylist", "1h", "--capture", cap,
                           "--capture-first", "1"]) as s:
                c = s.connect()
                chat(c, b"")
                chat(c, b"EHLO x\r\n")
                chat(c, b"MAIL FROM:<a@b.test>\r\n")
                self.assertTrue(chat(c, b"RCPT TO:<u@bounce.test>\r\n").startswith(b"550"))
                self.assertTrue(chat(c, b"RCPT TO:<u@ok.test>\r\n").startswith(b"451"))
                c.close()
                code, text = s.curl("/metrics")
                self.assertEqual(code, 200)
                self.assertIn('smtpsink_faults_injected_total{source="rule"} 1', text)
                self.assertIn('smtpsink_faults_injected_total{source="greylist"} 1', text)
                self.assertIn('smtpsink_fault_rule_injected_total{index="0",rule="rcpt '
                              'to=*@bounce.test reply=\'550 5.1.1 \\"no\\" such user\'"} 1',
                              text)
                self.assertIn('smtpsink_capture_messages_total{result="stored"} 0', text)
                if shutil.which("promtool"):
                    r = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                                       capture_output=True, timeout=30)
                    self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        finally:
            shutil.rmtree(cap, ignore_errors=True)

    def test_proxy_metrics(self):
        # --proxy-protocol: results and bad headers by reason, promtool-clean
        with HttpSink(["--proxy-protocol", "127.0.0.1"]) as s:
            for data in (b"PROXY TCP4 192.0.2.1 127.0.0.1 1 25\r\nQUIT\r\n",
                         b"PROXY UNKNOWN\r\nQUIT\r\n", b"EHLO x\r\n",
                         b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 25\r\n"):
                c = s.connect()
                c.sendall(data)
                while c.recv(4096):
                    pass
                c.close()
            code, text = s.curl("/metrics")
            self.assertEqual(code, 200)
            self.assertIn('smtpsink_proxy_headers_total{result="proxied"} 1', text)
            self.assertIn('smtpsink_proxy_headers_total{result="local"} 1', text)
            self.assertIn('smtpsink_proxy_bad_headers_total{reason="not_proxy"} 1', text)
            self.assertIn('smtpsink_proxy_bad_headers_total{reason="v1_syntax"} 1', text)
            if shutil.which("promtool"):
                r = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                                   capture_output=True, timeout=30)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_readyz_503_while_draining(self):
        for be in BACKENDS:
            with self.subTest(backend=be), HttpSink(["--drain-timeout", "10s"], backend=be) as s:
                busy = s.connect()
                chat(busy, b"")
                busy.sendall(b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
                time.sleep(0.3)
                s.proc.send_signal(signal.SIGTERM)
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and s.curl("/readyz")[0] != 503:
                    time.sleep(0.05)
                self.assertEqual(s.curl("/readyz"), (503, "stopping\n"))
                self.assertEqual(s.curl("/livez")[0], 200)
                self.assertIn("smtpsink_up 0", s.curl("/metrics")[1])
                busy.sendall(b"x\r\n.\r\n")
                busy.close()
                self.assertEqual(s.wait(), 0)


if __name__ == "__main__":
    sinklib.main()
