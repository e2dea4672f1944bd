"""limitbench, the loopback ceiling the SMTP figures are read against.

Both modes x both backends at 10 sessions for 0.3 s: a JSON object with all
its keys, counts above zero, rates that are the counts over the window, the
CPU figure consistent with cpu_s, and the human line.  Requests larger than
one 64 KiB send and 1-octet requests; the defaults (100 sessions, 1k, one
thread per online CPU on each side); 1000 sessions; usage errors exit 2
naming the option; an unwritable --json fails before the run.  Every run
must end well inside its own backstop (--duration + 10 s).
"""
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import sinklib  # noqa: E402
from sinklib import SLOW  # noqa: E402

LIMITBENCH = os.environ.get("LIMITBENCH", "")
DUR = 0.3
COMMON_KEYS = {"mode", "io", "sessions", "size", "duration_s", "threads", "server_threads",
               "cpu_s", "cpu_us_per_unit", "errors"}
UNIT_KEYS = {"pingpong": ("round_trips", "round_trips_per_s"), "stream": ("bytes", "bytes_per_s")}


def run(*args, timeout=30):
    """limitbench ARGS --json FILE: (rc, report or None, stdout, stderr, seconds)."""
    with tempfile.TemporaryDirectory() as d:
        jp = os.path.join(d, "r.json")
        t0 = time.monotonic()
        r = subprocess.run([LIMITBENCH, "--json", jp] + list(args), capture_output=True,
                           timeout=timeout * SLOW)
        took = time.monotonic() - t0
        rep = None
        if os.path.exists(jp) and os.path.getsize(jp):
            with open(jp, "rb") as f:
                rep = json.loads(f.read().decode("utf-8"))
        return r.returncode, rep, r.stdout.decode(), r.stderr.decode(errors="replace"), took


def backends():
    """epoll always; io_uring when limitbench's own probe allows it (else it
    must refuse with exit 1 and the probe's reason)."""
    r = subprocess.run([LIMITBENCH, "--mode", "pingpong", "--io", "uring", "--sessions", "1",
                        "--threads", "1", "--server-threads", "1", "--duration", "10ms",
                        "--quiet"], capture_output=True, timeout=30 * SLOW)
    if r.returncode == 0:
        return ["uring", "epoll"]
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 1 and "--io uring: " in err, (r.returncode, err)
    sys.stderr.write("io_uring unavailable here (%s): testing epoll only\n" % err.strip())
    return ["epoll"]


class LimitBench(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.backends = backends()

    def check(self, rep, mode, io, sessions, size):
        count_key, rate_key = UNIT_KEYS[mode]
        other_count, other_rate = UNIT_KEYS["stream" if mode == "pingpong" else "pingpong"]
        self.assertLessEqual(COMMON_KEYS | {count_key, rate_key}, set(rep), rep)
        self.assertNotIn(other_count, rep)
        self.assertNotIn(other_rate, rep)
        self.assertEqual((rep["mode"], rep["io"], rep["sessions"], rep["size"]),
                         (mode, io, sessions, size))
        self.assertEqual(rep["errors"], 0)
        self.assertAlmostEqual(rep["duration_s"], DUR, delta=DUR * 0.01)
        n = rep[count_key]
        self.assertGreater(n, 0, rep)
        self.assertAlmostEqual(rep[rate_key], n / rep["duration_s"], delta=n / DUR * 0.01)
        self.assertGreater(rep["cpu_s"], 0)
        per = rep["cpu_s"] * 1e6 / (n if mode == "pingpong" else n / 1048576.0)
        self.assertAlmostEqual(rep["cpu_us_per_unit"], per, delta=per * 0.01)
        return n

    def bounded(self, took, dur=DUR):
        # connecting and stopping are quick; the backstop is dur + 10 s
        self.assertGreaterEqual(took, dur)
        self.assertLess(took, dur + 10)

    def test_modes_and_backends(self):
        for io in self.backends:
            for mode in ("pingpong", "stream"):
                with self.subTest(io=io, mode=mode):
                    rc, rep, out, err, took = run("--mode", mode, "--io", io, "--sessions",
                                                  "10", "--size", "1k", "--duration", "0.3s",
                                                  "--threads", "2", "--server-threads", "2")
                    self.assertEqual(rc, 0, err)
                    self.bounded(took)
                    self.check(rep, mode, io, 10, 1024)
                    self.assertEqual((rep["threads"], rep["server_threads"]), (2, 2))
                    unit = r"rt/s  cpu [0-9.]+ us/rt" if mode == "pingpong" else \
                        r"MiB/s  cpu [0-9.]+ us/MiB"
                    self.assertRegex(out, r"^%s %s sessions=10 size=1024: [0-9.]+ %s\n$"
                                     % (mode, io, unit))

    def test_sizes(self):
        # 100k: a request is two sends and several recvs; 1: a 1-octet request
        for io in self.backends:
            for mode, size, octets in (("pingpong", "100k", 102400), ("pingpong", "1", 1),
                                       ("stream", "100k", 102400)):
                with self.subTest(io=io, mode=mode, size=size):
                    rc, rep, out, err, took = run("--mode", mode, "--io", io, "--sessions",
                                                  "10", "--size", size, "--duration", "0.3s",
                                                  "--quiet")
                    self.assertEqual(rc, 0, err)
                    self.assertEqual(out, "")
                    self.bounded(took)
                    self.check(rep, mode, io, 10, octets)

    def test_defaults(self):
        cpus = os.sysconf("SC_NPROCESSORS_ONLN")
        rc, rep, out, err, took = run("--mode", "pingpong", "--io", "epoll", "--duration",
                                      "0.3s", "--quiet")
        self.assertEqual(rc, 0, err)
        self.check(rep, "pingpong", "epoll", 100, 1024)
        self.assertEqual((rep["threads"], rep["server_threads"]), (cpus, cpus))

    def test_thousand_sessions(self):
        # one descriptor a session on each side (each side has its own table)
        if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 1200 and os.geteuid() != 0:
            self.skipTest("hard RLIMIT_NOFILE below 1200")
        for io in self.backends:
            for mode in ("pingpong", "stream"):
                with self.subTest(io=io, mode=mode):
                    rc, rep, out, err, took = run("--mode", mode, "--io", io, "--sessions",
                                                  "1000", "--duration", "0.3s", "--quiet")
                    self.assertEqual(rc, 0, err)
                    self.bounded(took)
                    self.check(rep, mode, io, 1000, 1024)

    def test_usage_errors(self):
        ok = ["--mode", "pingpong", "--io", "epoll"]
        cases = [
            ([], "--mode"),
            (["--io", "epoll"], "--mode"),
            (["--mode", "pingpong"], "--io"),
            (["--mode", "pong", "--io", "epoll"], "--mode"),
            (["--mode", "stream", "--io", "kqueue"], "--io"),
            (ok + ["--sessions", "0"], "--sessions"),
            (ok + ["--sessions", "ten"], "--sessions"),
            (ok + ["--sessions", "100001"], "--sessions"),
            (ok + ["--size", "0"], "--size"),
            (ok + ["--size", "2G"], "--size"),
            (ok + ["--size", "1q"], "--size"),
            (ok + ["--duration", "0"], "--duration"),
            (ok + ["--duration", "soon"], "--duration"),
            (ok + ["--threads", "0"], "--threads"),
            (ok + ["--threads", "257"], "--threads"),
            (ok + ["--server-threads", "0"], "--server-threads"),
            (ok + ["--bogus"], "--bogus"),
            (ok + ["--sessions"], "--sessions"),
            (ok + ["extra"], "extra"),
        ]
        for args, name in cases:
            with self.subTest(args=args):
                t0 = time.monotonic()
                r = subprocess.run([LIMITBENCH] + args, capture_output=True, timeout=10 * SLOW)
                err = r.stderr.decode(errors="replace")
                self.assertEqual(r.returncode, 2, err)
                self.assertIn(name, err)
                self.assertIn("--help", err)
                self.assertEqual(r.stdout, b"")
                self.assertLess(time.monotonic() - t0, 2 * SLOW)
        r = subprocess.run([LIMITBENCH, "--help"], capture_output=True, timeout=10 * SLOW)
        self.assertEqual(r.returncode, 0)
        for opt in ("--mode", "--io", "--sessions", "--size", "--duration", "--threads",
                    "--server-threads", "--json", "--quiet"):
            self.assertIn(opt, r.stdout.decode())

    def test_unwritable_json_fails_before_the_run(self):
        t0 = time.monotonic()
        r = subprocess.run([LIMITBENCH, "--mode", "stream", "--io", "epoll", "--duration", "5s",
                            "--json", "/nonexistent/dir/r.json"], capture_output=True,
                           timeout=10 * SLOW)
        self.assertEqual(r.returncode, 1)
        self.assertIn("--json", r.stderr.decode())
        self.assertLess(time.monotonic() - t0, 2 * SLOW)


if __name__ == "__main__":
    if not LIMITBENCH or not os.path.exists(LIMITBENCH):
        # CTest counts exit 77 as skipped (SKIP_RETURN_CODE)
        print("skipped: the LIMITBENCH binary is not set (run through ctest)")
        sys.exit(77)
    sinklib.main()
