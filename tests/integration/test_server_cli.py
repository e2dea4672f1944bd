"""smtpsink's command line: usage errors exit 2 with one clear message."""
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import sinklib  # noqa: E402
from sinklib import SMTPSINK, Sink, chat  # noqa: E402


def run(args):
    return subprocess.run([SMTPSINK] + args, capture_output=True, timeout=20)


class Cli(unittest.TestCase):
    def setUp(self):
        if not SMTPSINK:
            self.skipTest("SMTPSINK not set")

    def test_bad_options_exit_2(self):
        for args in (["--bogus"], ["--threads"], ["--threads", "0"], ["--max-size", "12Q"],
                     ["--idle-timeout", "soon"], ["--listen", "nohostport"],
                     ["--bare-lf", "maybe"], ["--hide", "STARTTLS"], ["--io", "kqueue"],
                     ["--line-max", "100"], ["extra-arg"], ["--listen", "256.1.1.1:25"]):
            with self.subTest(args=args):
                r = run(args)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertTrue(r.stderr.startswith(b"smtpsink: "), r.stderr)
                self.assertEqual(r.stdout, b"")

    def test_version_and_help(self):
        r = run(["--version"])
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout.decode(), r"^smtpsink \d+\.\d+\.\d+ \(git ")
        r = run(["--help"])
        self.assertEqual(r.returncode, 0)
        for opt in ("--listen", "--max-size", "--idle-timeout", "--bare-lf", "--hide",
                    "--exit-after", "--json", "--io"):
            self.assertIn(opt, r.stdout.decode())

    def test_port_in_use_is_a_clear_error(self):
        with Sink() as s:
            r = run(["--listen", "127.0.0.1:%d" % s.port])
            self.assertEqual(r.returncode, 1)
            self.assertIn(b"cannot listen on 127.0.0.1:%d" % s.port, r.stderr)

    def test_ipv6_and_options_reach_the_session(self):
        import socket
        with Sink(["--listen", "[::1]:0", "--hostname", "mx.example.test", "--max-size", "1k",
                   "--hide", "CHUNKING,SMTPUTF8"]) as s:
            self.assertEqual(len(s.addrs), 2)
            v6 = [a for a in s.addrs if a.startswith("[::1]")][0]
            port = int(v6.rsplit(":", 1)[1])
            c = socket.create_connection(("::1", port), timeout=5)
            self.assertEqual(chat(c, b""), b"220 mx.example.test ESMTP smtpsink\r\n")
            ehlo = chat(c, b"EHLO x\r\n")
            self.assertIn(b"250-SIZE 1024\r\n", ehlo)
            self.assertNotIn(b"CHUNKING", ehlo)
            self.assertNotIn(b"SMTPUTF8", ehlo)
            c.close()


if __name__ == "__main__":
    sinklib.main()
