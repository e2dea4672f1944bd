#!/usr/bin/python3
"""bench_gen.py - smtpbench vs Postfix smtp-source as load generators.

For each sink (Postfix smtp-sink, smtpsink) x sessions x repeat, both
generators send the same number of 1 KiB messages over reused sessions
(smtp-source -d; smtpbench default) to a freshly started sink.  Generator
CPU comes from getrusage(RUSAGE_CHILDREN) around the run (user+sys, all
threads), sink CPU from /proc/PID/stat.  Medians of repeats, ratios
smtpbench / smtp-source in the same run.

Usage: bench_gen.py --out DIR [--repeats 3] [--sessions 100,1000]
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from bench_server import cpu_seconds, free_port, meta, wait_port  # noqa: E402


def start_sink(kind, sessions, smtpsink):
    port = free_port()
    if kind == "smtp-sink":
        cmd = ["/usr/sbin/smtp-sink", "-u", "nobody", "-m", str(sessions * 2 + 100),
               "127.0.0.1:%d" % port, str(max(1024, sessions * 2))]
    else:
        cmd = [smtpsink, "--listen", "127.0.0.1:%d" % port, "--quiet", "--max-size", "0"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    time.sleep(0.1)
    return p, port, cmd


def run_gen(gen, port, sessions, msgs, smtpbench):
    if gen == "smtp-source":
        cmd = ["/usr/sbin/smtp-source", "-d", "-s", str(sessions), "-m", str(msgs), "-l", "1024",
               "-f", "bench@client.test", "-t", "sink@server.test", "127.0.0.1:%d" % port]
    else:
        cmd = [smtpbench, "--target", "127.0.0.1:%d" % port, "--sessions", str(sessions),
               "--messages", str(msgs), "--size", "1k", "--quiet"]
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, timeout=600)
    wall = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise RuntimeError("%s failed: %s" % (gen, r.stderr.decode()[-400:]))
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return wall, cpu, cmd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sessions", default="100,1000")
    ap.add_argument("--messages", type=int, default=30000)
    ap.add_argument("--smtpsink", default="build/server/smtpsink")
    ap.add_argument("--smtpbench", default="build/bench/smtpbench")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    rows = []
    for sink in ("smtp-sink", "smtpsink"):
        for sessions in [int(x) for x in a.sessions.split(",")]:
            for rep in range(a.repeats):
                for gen in ("smtp-source", "smtpbench"):
                    p, port, scmd = start_sink(sink, sessions, a.smtpsink)
                    try:
                        s0 = cpu_seconds(p.pid)
                        wall, cpu, gcmd = run_gen(gen, port, sessions, a.messages, a.smtpbench)
                        s1 = cpu_seconds(p.pid)
                    finally:
                        p.terminate()
                        try:
                            p.wait(timeout=15)
                        except subprocess.TimeoutExpired:
                            p.kill()
                    row = {"sink": sink, "generator": gen, "sessions": sessions, "repeat": rep,
                           "messages": a.messages, "wall_s": wall,
                           "msgs_per_s": a.messages / wall, "gen_cpu_s": cpu,
                           "gen_cpu_us_per_msg": cpu * 1e6 / a.messages,
                           "sink_cpu_s": s1 - s0, "sink_cpu_share": (s1 - s0) / wall,
                           "gen_cmd": " ".join(gcmd), "sink_cmd": " ".join(scmd)}
                    rows.append(row)
                    print("%-9s %-11s s=%-5d rep=%d %8.0f msg/s gen %6.2f us/msg sink busy %3.0f%%" %
                          (sink, gen, sessions, rep, row["msgs_per_s"], row["gen_cpu_us_per_msg"],
                           100 * row["sink_cpu_share"]), flush=True)
    m = meta(a.smtpsink)
    m["smtpbench_version"] = subprocess.run([a.smtpbench, "--version"], capture_output=True,
                                            text=True).stdout.strip()
    with open(os.path.join(a.out, "raw.json"), "w") as f:
        json.dump({"meta": m, "runs": rows}, f, indent=1)
    lines = ["# smtpbench vs Postfix smtp-source (1 KiB, reused sessions)", "",
             "| key | value |", "|---|---|"] + ["| %s | %s |" % kv for kv in m.items()]
    lines += ["", "Medians of %d repeats; generator CPU = getrusage(RUSAGE_CHILDREN), all threads; "
              "sink busy = sink CPU / wall (1.0 = one core)." % a.repeats, "",
              "| sink | sessions | generator | msgs/s | gen CPU µs/msg | sink busy | msgs/s ÷ smtp-source | CPU ÷ smtp-source |",
              "|---|---|---|---|---|---|---|---|"]
    for sink in ("smtp-sink", "smtpsink"):
        for sessions in sorted({r["sessions"] for r in rows}):
            med = {}
            for gen in ("smtp-source", "smtpbench"):
                sel = [r for r in rows if (r["sink"], r["sessions"], r["generator"]) ==
                       (sink, sessions, gen)]
                med[gen] = (statistics.median(r["msgs_per_s"] for r in sel),
                            statistics.median(r["gen_cpu_us_per_msg"] for r in sel),
                            statistics.median(r["sink_cpu_share"] for r in sel))
            base = med["smtp-source"]
            for gen, (rate, cpu, busy) in med.items():
                lines.append("| %s | %d | %s | %.0f | %.2f | %.2f | %.2f | %.3f |" %
                             (sink, sessions, gen, rate, cpu, busy, rate / base[0], cpu / base[1]))
    lines += ["", "Commands (first repeat):", ""]
    seen = set()
    for r in rows:
        for k in ("sink_cmd", "gen_cmd"):
            c = r[k].replace(str(r.get("port", "")), "PORT")
            if r["repeat"] == 0 and c not in seen:
                seen.add(c)
                lines.append("    " + c)
    with open(os.path.join(a.out, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
