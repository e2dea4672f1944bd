#!/usr/bin/python3
"""idle_rss.py - smtpsink memory per idle connection.

Starts smtpsink, reads its RSS (VmRSS), opens N client connections that each
read the 220 greeting and then stay idle, reads RSS again and reports the
difference per connection.  Loopback only; every socket and the server are
closed at the end.

With --active M, smtpbench then drives M more sessions for a few seconds
while the N idle ones stay open, and the peak RSS (VmHWM) is reported too:
the "N idle + M active" connection-scale point.

Usage: idle_rss.py [--smtpsink PATH] [--conns N] [--io uring|epoll]
                   [--active M --smtpbench PATH]
"""
import argparse
import resource
import selectors
import socket
import subprocess
import time


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smtpsink", default="build/server/smtpsink")
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--io", default="uring")
    ap.add_argument("--threads", default="2")
    ap.add_argument("--active", type=int, default=0)
    ap.add_argument("--smtpbench", default="build/bench/smtpbench")
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    p = subprocess.Popen([a.smtpsink, "--listen", "127.0.0.1:0", "--io", a.io, "--quiet",
                          "--threads", a.threads], stdout=subprocess.PIPE)
    port = None
    for line in p.stdout:
        line = line.decode()
        if "listening on" in line:
            port = int(line.rsplit(":", 1)[1])
        if line.strip().endswith("ready"):
            break
    socks = []
    try:
        # warm-up: one full connection so lazily created state exists
        w = socket.create_connection(("127.0.0.1", port))
        w.recv(100)
        w.close()
        time.sleep(0.3)
        before = rss_kib(p.pid)
        sel = selectors.DefaultSelector()
        for i in range(a.conns):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
            socks.append(s)
        got = 0
        deadline = time.monotonic() + 60
        while got < a.conns and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=1):
                if key.fileobj.recv(512).startswith(b"220 "):
                    got += 1
                sel.unregister(key.fileobj)
        time.sleep(0.5)
        after = rss_kib(p.pid)
        line = ("backend=%s threads=%s conns=%d greeted=%d rss_before=%d KiB rss_after=%d KiB "
                "per_conn=%.2f KiB" % (a.io, a.threads, a.conns, got, before, after,
                                       (after - before) / a.conns))
        if a.active:
            r = subprocess.run([a.smtpbench, "--target", "127.0.0.1:%d" % port, "--sessions",
                                str(a.active), "--duration", "3s", "--quiet"],
                               capture_output=True, text=True, timeout=120)
            with open("/proc/%d/status" % p.pid) as f:
                hwm = [int(x.split()[1]) for x in f if x.startswith("VmHWM:")][0]
            line += (" | +%d active sessions for 3 s (smtpbench exit %d): peak RSS %d KiB = "
                     "%.2f KiB per connection" % (a.active, r.returncode, hwm,
                                                  hwm / (a.conns + a.active)))
        print(line)
    finally:
        for s in socks:
            s.close()
        p.terminate()
        p.wait(timeout=20)


if __name__ == "__main__":
    main()
