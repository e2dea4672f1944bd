#!/usr/bin/env python3
"""ab_server.py - two smtpsink builds side by side under the same smtpbench.

    scripts/ab_server.py --a OLD/smtpsink --b NEW/smtpsink --bench smtpbench \
        --out results/DATE-label [--reps 5] [--duration 3s] [--a-args '...']
        [--b-args '--fault "rcpt ..."'] [--backends uring,epoll] [--sessions 100,1000]
        [--sizes 1k,100k] [--postfix]

--a-args/--b-args add smtpsink options to one side (e.g. the same binary with
and without a fault rule).  --postfix adds Postfix smtp-sink as a third side
under the same generator in the same alternation, as the reference.

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
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from bench_server import cpu_seconds as proc_cpu, free_port, wait_port  # noqa: E402


def one_run(sink, bench, backend, sessions, size, duration, warmup, extra=()):
    d = tempfile.mkdtemp(prefix="ab.")
    sj, bj = os.path.join(d, "sink.json"), os.path.join(d, "bench.json")
    port = free_port()
    postfix = sink == "postfix"
    if postfix:
        # one process, one core, like smtpsink --threads 1; -c keeps counts
        sp = subprocess.Popen(["/usr/sbin/smtp-sink", "-u", "nobody", "-m",
                               str(sessions * 2 + 100), "127.0.0.1:%d" % port,
                               str(max(1024, min(sessions * 2, 4096)))],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port)
    else:
        sp = subprocess.Popen([sink, "--listen", "127.0.0.1:%d" % port, "--io", backend,
                               "--threads", "1", "--quiet", "--json", sj] + list(extra),
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        for line in sp.stdout:
            if line.strip().endswith(b"ready"):
                break
    cmd = [bench, "--target", "127.0.0.1:%d" % port, "--io", backend, "--threads", "1",
           "--sessions", str(sessions), "--size", size, "--duration", duration,
           "--warmup", warmup, "--quiet", "--json", bj]
    r = subprocess.run(cmd, capture_output=True, timeout=300)
    with open(bj) as f:
        b = json.load(f)
    if postfix:
        cpu = proc_cpu(sp.pid)
        sp.terminate()
        sp.wait(timeout=30)
        # smtp-sink keeps no JSON: its CPU over what the generator saw delivered
        msgs = b["messages"]["delivered"] + b["messages"]["partial"]
        backend_used = "smtp-sink"
    else:
        sp.terminate()
        sp.wait(timeout=30)
        with open(sj) as f:
            s = json.load(f)
        cpu, msgs, backend_used = s["cpu_seconds"], s["counters"]["messages"], s["backend"]
    return {"msgs_per_s": b["msgs_per_s"],
            "sink_cpu_us_per_msg": cpu * 1e6 / max(msgs, 1),
            "failed": b["messages"]["failed"],
            "bench_rc": r.returncode, "sink_backend": backend_used}, cmd


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
    ap.add_argument("--a-args", default="", help="extra smtpsink options for A (shell words)")
    ap.add_argument("--b-args", default="", help="extra smtpsink options for B (shell words)")
    ap.add_argument("--backends", default="uring,epoll")
    ap.add_argument("--sessions", default="100,1000")
    ap.add_argument("--sizes", default="1k,100k")
    ap.add_argument("--postfix", action="store_true",
                    help="Postfix smtp-sink as reference side P in the same alternation")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    configs = [("io_uring" if be == "uring" else be, int(n), sz)
               for be in args.backends.split(",") for n in args.sessions.split(",")
               for sz in args.sizes.split(",")]
    sides = [("A", args.a, shlex.split(args.a_args)), ("B", args.b, shlex.split(args.b_args))]
    if args.postfix:
        sides.append(("P", "postfix", []))
    rows, cmds = [], {}
    for be, n, sz in configs:
        for rep in range(args.reps):
            for side, sink, extra in sides:
                res, cmd = one_run(sink, args.bench, "uring" if be == "io_uring" else "epoll",
                                   n, sz, args.duration, args.warmup, extra)
                res.update(backend=be, sessions=n, size=sz, rep=rep, side=side)
                rows.append(res)
                cmds[(be, n, sz)] = " ".join(cmd[:2] + ["HOST:PORT"] + cmd[3:-1] + ["FILE"])
                print("%-8s %5d %5s rep %d %s: %9.0f msgs/s  %6.2f us/msg" %
                      (be, n, sz, rep, side, res["msgs_per_s"], res["sink_cpu_us_per_msg"]),
                      flush=True)
    with open(os.path.join(args.out, "raw.csv"), "w") as f:
        keys = ["backend", "sessions", "size", "rep", "side", "msgs_per_s",
                "sink_cpu_us_per_msg", "failed", "bench_rc", "sink_backend"]
        f.write(",".join(keys) + "\n")
        for r in rows:
            f.write(",".join(str(r[k]) for k in keys) + "\n")

    def rev(binary):
        if binary == "postfix":
            return "Postfix smtp-sink " + subprocess.run(
                ["dpkg-query", "-W", "-f=${Version}", "postfix"], capture_output=True,
                timeout=5).stdout.decode()
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
        f.write("A (%s): %s %s -> %s\nB (%s): %s %s -> %s\nbench: %s -> %s\n" %
                (args.label_a, args.a, args.a_args, rev(args.a), args.label_b, args.b,
                 args.b_args, rev(args.b), args.bench, rev(args.bench)))
        if args.postfix:
            f.write("P: %s, one process (-u nobody -m SESSIONS*2+100 backlog)\n" %
                    rev("postfix"))
        f.write("reps %d, alternating A B per rep; sink --threads 1, bench --threads 1\n"
                % args.reps)
        f.write("command: %s\n" % " ".join(sys.argv))
        for k, c in cmds.items():
            f.write("bench %s: %s\n" % (k, c))

    pf = " | smtp-sink msgs/s | B/smtp-sink msgs/s | smtp-sink us/msg" if args.postfix else ""
    lines = ["| backend | sessions | size | %s msgs/s | %s msgs/s | B/A msgs/s median (min-max) "
             "| %s us/msg | %s us/msg | B/A CPU/msg median (min-max)%s |"
             % (args.label_a, args.label_b, args.label_a, args.label_b, pf),
             "|---|---|---|---|---|---|---|---|---|" + ("---|" * 3 if args.postfix else "")]
    for be, n, sz in configs:
        a = [r for r in rows if (r["backend"], r["sessions"], r["size"], r["side"]) ==
             (be, n, sz, "A")]
        b = [r for r in rows if (r["backend"], r["sessions"], r["size"], r["side"]) ==
             (be, n, sz, "B")]
        rt = [y["msgs_per_s"] / x["msgs_per_s"] for x, y in zip(a, b) if x["msgs_per_s"]]
        rc = [y["sink_cpu_us_per_msg"] / x["sink_cpu_us_per_msg"] for x, y in zip(a, b)
              if x["sink_cpu_us_per_msg"]]
        med = statistics.median
        line = ("| %s | %d | %s | %.0f | %.0f | %.2f (%.2f-%.2f) | %.2f | %.2f | "
                "%.2f (%.2f-%.2f) |" %
                (be, n, sz, med(x["msgs_per_s"] for x in a),
                 med(x["msgs_per_s"] for x in b), med(rt), min(rt), max(rt),
                 med(x["sink_cpu_us_per_msg"] for x in a),
                 med(x["sink_cpu_us_per_msg"] for x in b), med(rc), min(rc), max(rc)))
        if args.postfix:
            p = [r for r in rows if (r["backend"], r["sessions"], r["size"], r["side"]) ==
                 (be, n, sz, "P")]
            rp = [y["msgs_per_s"] / x["msgs_per_s"] for x, y in zip(p, b) if x["msgs_per_s"]]
            line += " %.0f | %.2f | %.2f |" % (med(x["msgs_per_s"] for x in p),
                                               med(rp) if rp else 0,
                                               med(x["sink_cpu_us_per_msg"] for x in p))
        lines.append(line)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
