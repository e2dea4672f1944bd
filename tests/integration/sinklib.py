"""sinklib - start the real smtpsink binary on 127.0.0.1 for integration tests.

Every helper bounds its own time; Sink cleans up its process on exit (also
when a test fails), so no test leaves a server behind.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

SMTPSINK = os.environ.get("SMTPSINK", "")
SANITIZE = os.environ.get("SINK_SANITIZE") == "1"
# ASan/UBSan builds run slower; give every wait more room.
SLOW = 4 if SANITIZE else 1
# what a sanitizer report looks like on stderr (ASan, UBSan, TSan)
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "runtime error:", "WARNING: ThreadSanitizer",
                   "ERROR: LeakSanitizer")


def have_uring():
    """True when this machine lets smtpsink use io_uring (probe via the binary)."""
    if not SMTPSINK:
        return False
    with Sink(["--io", "auto", "--threads", "1"]) as s:
        pass
    return "using epoll" not in s.stderr_text


class Sink:
    """A running smtpsink.  Use as a context manager."""

    def __init__(self, args=(), backend=None, timeout=10, wrapper=()):
        if not SMTPSINK or not os.path.exists(SMTPSINK):
            raise unittest.SkipTest("SMTPSINK binary not set")
        self.dir = tempfile.mkdtemp(prefix="sinktest.")
        self.json_path = os.path.join(self.dir, "summary.json")
        cmd = [SMTPSINK, "--listen", "127.0.0.1:0", "--json", self.json_path]
        if backend:
            cmd += ["--io", backend]
        cmd += list(args)
        cmd = list(wrapper) + cmd
        self.cmd = cmd
        self.err_path = os.path.join(self.dir, "stderr")
        self.errf = open(self.err_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.errf)
        self.port = None
        self.addrs = []
        self.tls_addrs = []
        self.extra_lines = []  # everything printed on stdout until "ready"
        deadline = time.monotonic() + timeout * SLOW
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            if not line:
                break
            self.extra_lines.append(line)
            if "listening on" in line:
                addr = line.split("listening on ", 1)[1].split()[0]
                (self.tls_addrs if "(TLS)" in line else self.addrs).append(addr)
            if line.strip().endswith("ready"):
                break
        if not self.addrs and not self.tls_addrs:
            self.kill()
            raise AssertionError("smtpsink did not become ready: " + self.stderr_text)
        self.port = int(self.addrs[0].rsplit(":", 1)[1])
        self.tls_port = int(self.tls_addrs[0].rsplit(":", 1)[1]) if self.tls_addrs else None
        self.summary = None
        self._stderr_kept = None

    @property
    def stderr_text(self):
        if self._stderr_kept is not None:  # the directory is gone (__exit__)
            return self._stderr_kept
        try:
            with open(self.err_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def connect(self, timeout=5):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout * SLOW)
        return s

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Signal and wait; returns the exit status and loads the JSON summary."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout * SLOW)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("smtpsink did not exit after %s" % sig)
        self._load()
        return rc

    def wait(self, timeout=15):
        try:
            rc = self.proc.wait(timeout=timeout * SLOW)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("smtpsink did not exit by itself")
        self._load()
        return rc

    def _load(self):
        if os.path.exists(self.json_path):
            with open(self.json_path) as f:
                self.summary = json.load(f)

    def counters(self):
        return self.summary["counters"]

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.stop()
        self.kill()
        self.errf.close()
        self.proc.stdout.close()
        if self.proc.returncode not in (0, None, -9) and exc[0] is None:
            raise AssertionError("smtpsink exited %s: %s" % (self.proc.returncode, self.stderr_text))
        # keep what tests read after the block, then leave no directory
        # behind (thousands of runs filled /tmp)
        self._load()
        self._stderr_kept = self.stderr_text
        shutil.rmtree(self.dir, ignore_errors=True)
        if any(m in self.stderr_text for m in SANITIZER_MARKS):
            raise AssertionError("sanitizer report:\n" + self.stderr_text)
        return False


def recv_until(sock, pred, timeout=5):
    """Read until pred(data) is true; returns the bytes read (or fails on timeout)."""
    sock.settimeout(timeout * SLOW)
    data = b""
    deadline = time.monotonic() + timeout * SLOW
    while not pred(data):
        if time.monotonic() > deadline:
            raise AssertionError("timeout waiting; got %r" % data[-300:])
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def smtp_reply_complete(data):
    """True when data ends with a complete (possibly multi-line) reply."""
    lines = data.split(b"\r\n")
    return len(lines) >= 2 and len(lines[-2]) >= 4 and lines[-2][3:4] == b" "


def chat(sock, send, timeout=5):
    """Send bytes, return one complete reply."""
    if send:
        sock.sendall(send)
    return recv_until(sock, smtp_reply_complete, timeout)


def good_session(port, rcpts=1, last=False):
    """One normal SMTP transaction with raw bytes; asserts every reply code.
    last: this message makes the sink stop (--exit-after), so it answers
    421 4.3.2 right after the 250 instead of waiting for QUIT."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5 * SLOW)
    try:
        assert chat(s, b"").startswith(b"220 "), "greeting"
        assert chat(s, b"EHLO t.test\r\n").startswith(b"250-")
        assert chat(s, b"MAIL FROM:<a@t.test>\r\n").startswith(b"250 ")
        for i in range(rcpts):
            assert chat(s, b"RCPT TO:<r%d@t.test>\r\n" % i).startswith(b"250 ")
        assert chat(s, b"DATA\r\n").startswith(b"354 ")
        r = chat(s, b"Subject: x\r\n\r\nbody\r\n.\r\n")
        assert r.startswith(b"250 2.0.0 Ok: queued as "), r
        if last:
            r = r if b"\r\n421 " in r else recv_until(s, lambda d: b"421 " in d)
            assert b"421 4.3.2" in r, r
        else:
            assert chat(s, b"QUIT\r\n").startswith(b"221 ")
    finally:
        s.close()


def backends():
    """Backends to test: epoll always; io_uring when the machine allows it."""
    out = ["epoll"]
    if have_uring():
        out.insert(0, "uring")
    else:
        sys.stderr.write("io_uring unavailable here: testing the epoll backend only\n")
    return out


def free_port(host="127.0.0.1"):
    """A TCP port nothing listens on right now (bound once, released)."""
    s = socket.socket()
    s.bind((host, 0))
    p = s.getsockname()[1]
    s.close()
    return p


def bucket_high(i, sub_bits=8):
    """Largest value in histogram bucket i: the layout docs/json.md documents,
    written out independently of common/hist.c (the tests' oracle)."""
    half = 1 << (sub_bits - 1)
    if i < 2 * half:
        return i
    shift = i // half - 1
    return ((half + i % half) << shift) + (1 << shift) - 1


def hist_quantile(buckets, mx, q, count=None):
    """Quantile q of {bucket: count}: the rank's bucket upper bound, clamped
    to the max, as docs/json.md says smtpbench computes it."""
    if count is None:
        count = sum(buckets.values())
    rank = min(max(int(q * count + 0.5), 1), count)
    seen = 0
    for i in sorted(buckets):
        seen += buckets[i]
        if seen >= rank:
            return min(bucket_high(i), mx)
    return mx


_held_ports = []


def dead_port():
    """A port on 127.0.0.1 where every connect is refused for as long as this
    test process lives: bound, never listening.  (A port from free_port()
    is only free for a moment: under ctest -j2 another test's server can
    be given it, and a test that expects refusals then talks to that
    server and breaks its counts.)"""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    _held_ports.append(s)
    return s.getsockname()[1]


def listening(port):
    """A TCP socket listens on 127.0.0.1:port (from /proc/net/tcp: checking
    without connecting, since a probe through a balancer is one more
    connection to a sink)."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and local == "0100007F:%04X" % port:
                return True
    return False


class HAProxy:
    """Debian's haproxy in front of sinks: mode tcp, one frontend on
    127.0.0.1:front, `servers` as (port, options) pairs, `backend` extra
    backend lines (balance, health checks).  Use as a context manager."""

    def __init__(self, front, servers, backend=""):
        self.dir = tempfile.mkdtemp(prefix="haproxy.")
        cfg = os.path.join(self.dir, "haproxy.cfg")
        lines = "".join("    server s%d 127.0.0.1:%d %s\n" % (i, port, opts)
                        for i, (port, opts) in enumerate(servers, 1))
        with open(cfg, "w") as f:
            f.write("global\n    maxconn 500\n"
                    "defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 60s\n"
                    "    timeout server 60s\n"
                    "frontend smtp\n    bind 127.0.0.1:%d\n    default_backend sinks\n"
                    "backend sinks\n%s%s" % (front, backend, lines))
        self.errf = open(os.path.join(self.dir, "stderr"), "wb")
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", cfg], stdout=subprocess.DEVNULL,
                                     stderr=self.errf)
        deadline = time.monotonic() + 10 * SLOW
        while not listening(front):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                with open(os.path.join(self.dir, "stderr"), "rb") as f:
                    raise AssertionError("haproxy did not listen: " + f.read().decode())
            time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.errf.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
        return False


def proc_rss_kib(pid):
    """Resident set size of a process, in KiB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def proc_cpu_seconds(pid):
    """User + system CPU seconds a process has used so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_fds(pid):
    """Number of open descriptors of a process."""
    return len(os.listdir("/proc/%d/fd" % pid))


def raise_nofile(n):
    """Let this test process hold n sockets; returns False when it cannot."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < n:
        return False
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, n), hard))
    return True


def main():
    """unittest.main(), but a file in which any test skipped exits 77, so
    CTest reports it as skipped instead of passing silently."""
    import unittest
    prog = unittest.main(verbosity=2, exit=False)
    res = prog.result
    if not res.wasSuccessful():
        sys.exit(1)
    if res.skipped:
        for test, why in res.skipped:
            sys.stderr.write("SKIPPED %s: %s\n" % (test.id(), why))
        sys.exit(77)
    sys.exit(0)
