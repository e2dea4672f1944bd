#!/usr/bin/env python3
"""ab_server.py - two smtpsink builds side by side under the same smtpbench.

    scripts/ab_server.py --a OLD/smtpsink --b NEW/smtpsink --bench smtpbench \
        --out results/DATE-label [--reps 5] [--duration 3s] [--quick]

For every configuration (backend x sessions x size) the two builds run in
turn, A B A B ..., each time with a fresh sink and the same generator
command, so drift on a noisy machine hits both alike.  Timing is the same
for both sides: smtpbench's own measured window (after --warmup) gives
msgs/s; the sink's CPU per message is its whole-process CPU (from its JSON
summary) over the messages it accepted, warm-up included on both sides.
Writes raw.csv (every run), meta.txt (machine, revisions, commands) and
summary.md (medians, and the B/A ratio per pair: median and min-max).
"""
import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def one_run(sink, bench, backend, sessions, size, duration, warmup):
    d = tempfile.mkdtemp(prefix="ab.")
    sj, bj = os.path.join(d, "sink.json"), os.path.join(d, "bench.json")
    port = free_port()
    sp = subprocess.Popen([sink, "--listen", "127.0.0.1:%d" % port, "--io", backend,
                           "--threads", "1", "--quiet", "--json", sj],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    for line in sp.stdout:
        if line.strip().endswith(b"ready"):
            break
    cmd = [bench, "--target", "127.0.0.1:%d" % port, "--io", backend, "--threads", "1",
           "--sessions", str(sessions), "--size", size, "--duration", duration,
           "--warmup", warmup, "--quiet", "--json", bj]
    r = subprocess.run(cmd, capture_output=True, timeout=300)
    sp.terminate()
    sp.wait(timeout=30)
    b = json.load(open(bj))
    s = json.load(open(sj))
    msgs = s["counters"]["messages"]
    return {"msgs_per_s": b["msgs_per_s"],
            "sink_cpu_us_per_msg": s["cpu_seconds"] * 1e6 / max(msgs, 1),
            "bench_rc": r.returncode, "sink_backend": s["backend"]}, cmd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", required=True, help="baseline smtpsink")
    ap.add_argument("--b", required=True, help="candidate smtpsink")
    ap.add_argument("--bench", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--duration", default="3s")
    ap.add_argument("--warmup", default="0.5s")
    ap.add_argument("--label-a", default="A")
    ap.add_argument("--label-b", default="B")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    configs = [(be, n, sz) for be in ("io_uring", "epoll") for n in (100, 1000)
               for sz in ("1k", "100k")]
    rows, cmds = [], {}
    for be, n, sz in configs:
        for rep in range(args.reps):
            for side, sink in (("A", args.a), ("B", args.b)):
                res, cmd = one_run(sink, args.bench, "uring" if be == "io_uring" else "epoll",
                                   n, sz, args.duration, args.warmup)
                res.update(backend=be, sessions=n, size=sz, rep=rep, side=side)
                rows.append(res)
                cmds[(be, n, sz)] = " ".join(cmd[:2] + ["HOST:PORT"] + cmd[3:-1] + ["FILE"])
                print("%-8s %5d %5s rep %d %s: %9.0f msgs/s  %6.2f us/msg" %
                      (be, n, sz, rep, side, res["msgs_per_s"], res["sink_cpu_us_per_msg"]),
                      flush=True)
    with open(os.path.join(args.out, "raw.csv"), "w") as f:
        keys = ["backend", "sessions", "size", "rep", "side", "msgs_per_s",
                "sink_cpu_us_per_msg", "bench_rc", "sink_backend"]
        f.write(",".join(keys) + "\n")
        for r in rows:
            f.write(",".join(str(r[k]) for k in keys) + "\n")

    def rev(binary):
        try:
            return subprocess.run([binary, "--version"], capture_output=True,
                                  timeout=5).stdout.decode().strip()
        except OSError:
            return "?"
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open(os.path.join(args.out, "meta.txt"), "w") as f:
        f.write("date: %s\nkernel: %s\ncpu: %s (%d online)\n" %
                (time.strftime("%Y-%m-%d %H:%M:%S %Z"), platform.release(), cpu,
                 os.cpu_count()))
        f.write("A (%s): %s -> %s\nB (%s): %s -> %s\nbench: %s -> %s\n" %
                (args.label_a, args.a, rev(args.a), args.label_b, args.b, rev(args.b),
                 args.bench, rev(args.bench)))
        f.write("reps %d, alternating A B per rep; sink --threads 1, bench --threads 1\n"
                % args.reps)
        f.write("command: %s\n" % " ".join(sys.argv))
        for k, c in cmds.items():
            f.write("bench %s: %s\n" % (k, c))

    lines = ["| backend | sessions | size | %s msgs/s | %s msgs/s | B/A msgs/s median (min-max) "
             "| %s us/msg | %s us/msg | B/A CPU/msg median (min-max) |"
             % (args.label_a, args.label_b, args.label_a, args.label_b),
             "|---|---|---|---|---|---|---|---|---|"]
    for be, n, sz in configs:
        a = [r for r in rows if (r["backend"], r["sessions"], r["size"], r["side"]) ==
             (be, n, sz, "A")]
        b = [r for r in rows if (r["backend"], r["sessions"], r["size"], r["side"]) ==
             (be, n, sz, "B")]
        rt = [y["msgs_per_s"] / x["msgs_per_s"] for x, y in zip(a, b) if x["msgs_per_s"]]
        rc = [y["sink_cpu_us_per_msg"] / x["sink_cpu_us_per_msg"] for x, y in zip(a, b)
              if x["sink_cpu_us_per_msg"]]
        med = statistics.median
        lines.append("| %s | %d | %s | %.0f | %.0f | %.2f (%.2f-%.2f) | %.2f | %.2f | "
                     "%.2f (%.2f-%.2f) |" %
                     (be, n, sz, med(x["msgs_per_s"] for x in a),
                      med(x["msgs_per_s"] for x in b), med(rt), min(rt), max(rt),
                      med(x["sink_cpu_us_per_msg"] for x in a),
                      med(x["sink_cpu_us_per_msg"] for x in b), med(rc), min(rc), max(rc)))
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
