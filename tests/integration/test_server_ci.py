"""smtpsink as a CI service: --expect as the exit status, --max-runtime,
configuration from SMTPSINK_* environment variables, `smtpsink check`.
"""
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import sinklib  # noqa: E402
from sinklib import SLOW, SMTPSINK, good_session  # noqa: E402


def start(args, env=None):
    """smtpsink with args; returns (process, port) once it is ready."""
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.Popen([SMTPSINK] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e)
    port = None
    for line in p.stdout:
        if b"listening on" in line:
            port = port or int(line.split(b"listening on ")[1].split()[0].rsplit(b":", 1)[1])
        if line.strip().endswith(b"ready"):
            break
    return p, port


def finish(p, timeout=15):
    out, err = p.communicate(timeout=timeout * SLOW)
    return p.returncode, err.decode(errors="replace")


class Ci(unittest.TestCase):
    def setUp(self):
        if not SMTPSINK:
            self.skipTest("SMTPSINK not set")

    def test_expect_pass_exit_0(self):
        p, port = start(["--listen", "127.0.0.1:0", "--exit-after", "2", "--expect", "messages=2",
                         "--expect", "rejected_messages=0", "--expect", "recipients>=2",
                         "--expect", "err_bare_lf<1"])
        good_session(port)
        good_session(port, last=True)
        rc, err = finish(p)
        self.assertEqual(rc, 0, err)
        self.assertNotIn("expectation failed", err)

    def test_expect_fail_exit_3_names_actual_value(self):
        p, port = start(["--listen", "127.0.0.1:0", "--exit-after", "1", "--expect", "messages=5",
                         "--expect", "recipients!=1", "--expect", "sessions>=1"])
        good_session(port, last=True)
        rc, err = finish(p)
        self.assertEqual(rc, 3, err)
        self.assertIn("expectation failed: messages=5, but messages is 1", err)
        self.assertIn("expectation failed: recipients!=1, but recipients is 1", err)
        self.assertNotIn("sessions>=1", err)
        self.assertIn("2 of 3 expectations failed", err)

    def test_expect_unknown_counter_is_usage_error(self):
        r = subprocess.run([SMTPSINK, "--listen", "127.0.0.1:0", "--expect", "mesages=1"],
                           capture_output=True, timeout=10)
        self.assertEqual(r.returncode, 2)
        self.assertIn(b"no counter 'mesages'", r.stderr)
        r = subprocess.run([SMTPSINK, "--listen", "127.0.0.1:0", "--expect", "verify.ok=1"],
                           capture_output=True, timeout=10)
        self.assertEqual(r.returncode, 2, "verify.* needs --verify")
        r = subprocess.run([SMTPSINK, "--listen", "127.0.0.1:0", "--expect", "messages~1"],
                           capture_output=True, timeout=10)
        self.assertEqual(r.returncode, 2)

    def test_expect_on_verify_section(self):
        p, port = start(["--listen", "127.0.0.1:0", "--verify", "--exit-after", "1",
                         "--expect", "verify.corrupt=0", "--expect", "verify.unstamped=1"])
        good_session(port, last=True)
        rc, err = finish(p)
        self.assertEqual(rc, 0, err)

    def test_max_runtime(self):
        t0 = time.monotonic()
        p, port = start(["--listen", "127.0.0.1:0", "--max-runtime", "1s", "--expect",
                         "messages=0"])
        rc, err = finish(p)
        self.assertEqual(rc, 0, err)
        self.assertLess(time.monotonic() - t0, 4 * SLOW)
        self.assertIn("--max-runtime reached", err)

    def test_environment_only(self):
        env = {"SMTPSINK_LISTEN": "127.0.0.1:0", "SMTPSINK_HOSTNAME": "env.example.test",
               "SMTPSINK_EXIT_AFTER": "1", "SMTPSINK_EXPECT": "messages=1,recipients=1",
               "SMTPSINK_VERIFY": "true", "SMTPSINK_MAX_SIZE": "1M", "SMTPSINK_QUIET": "0"}
        p, port = start([], env)
        s = __import__("socket").create_connection(("127.0.0.1", port), timeout=5)
        self.assertIn(b"env.example.test", s.recv(200))
        s.close()
        good_session(port, last=True)
        rc, err = finish(p)
        self.assertEqual(rc, 0, err)
        self.assertIn("hostname env.example.test", err)
        # a flag wins over its variable
        p, port = start(["--hostname", "flag.example.test"], env)
        s = __import__("socket").create_connection(("127.0.0.1", port), timeout=5)
        self.assertIn(b"flag.example.test", s.recv(200))
        s.close()
        good_session(port, last=True)
        finish(p)
        bad = dict(env, SMTPSINK_MAX_SIZE="lots")
        r = subprocess.run([SMTPSINK], capture_output=True, timeout=10,
                           env=dict(os.environ, **bad))
        self.assertEqual(r.returncode, 2)
        r = subprocess.run([SMTPSINK], capture_output=True, timeout=10,
                           env=dict(os.environ, SMTPSINK_VERIFY="maybe"))
        self.assertEqual(r.returncode, 2)
        self.assertIn(b"SMTPSINK_VERIFY", r.stderr)

    def test_check(self):
        p, port = start(["--listen", "127.0.0.1:0"])
        addr = "127.0.0.1:%d" % port
        r = subprocess.run([SMTPSINK, "check", addr], capture_output=True, timeout=10)
        self.assertEqual(r.returncode, 0, r.stderr)
        # the address from the environment, a wildcard meaning loopback
        r = subprocess.run([SMTPSINK, "check"], capture_output=True, timeout=10,
                           env=dict(os.environ, SMTPSINK_LISTEN="0.0.0.0:%d,[::1]:1" % port))
        self.assertEqual(r.returncode, 0, r.stderr)
        p.terminate()
        finish(p)
        r = subprocess.run([SMTPSINK, "check", addr], capture_output=True, timeout=10)
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"cannot connect", r.stderr)
        self.assertEqual(r.stderr.count(b"\n"), 1, "one line saying why")


if __name__ == "__main__":
    sinklib.main()
