#!/usr/bin/python3
"""bench_proxy.py - two sinks behind HAProxy vs one sink direct, in one run.

    scripts/bench_proxy.py [--out results/DATE-haproxy] [--reps 3] [--sessions 100,1000] [--quick]

Points (1 KiB messages, reused sessions, smtpbench --threads 1 as the
generator, every point timed the same way: smtpbench's measured window after
the same --warmup):
  direct     smtpbench -> one sink
  haproxy    smtpbench -> HAProxy (mode tcp, nbthread 1, roundrobin) -> two
             sinks; smtpsink gets send-proxy-v2 and --proxy-protocol, Postfix
             smtp-sink (no PROXY support) a plain TCP hop
for smtpsink (--threads 1 per instance) and Postfix smtp-sink, side by side.
CPU per message is utime+stime from /proc around the generator run, per
process group (sinks, HAProxy, generator), divided by delivered messages.
Each repetition runs every point once in the same order; ratios are taken
within a repetition and the summary gives medians (min-max).

Writes OUT/raw.csv, OUT/meta.json, OUT/summary.md.  Loopback only.
"""
import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from bench_server import cpu_seconds, free_port, meta, results_dir, wait_port  # noqa: E402

SERVERS = ("smtpsink", "smtp-sink")
TOPOLOGIES = ("direct", "haproxy")


def start_sink(server, port, sessions, a, proxied):
    if server == "smtpsink":
        cmd = [a.smtpsink, "--threads", "1", "--quiet", "--max-size", "0",
               "--max-conns", str(sessions * 2 + 100), "--listen", "127.0.0.1:%d" % port]
        if proxied:
            cmd += ["--proxy-protocol", "127.0.0.1"]
    else:
        cmd = ["/usr/sbin/smtp-sink", "-u", "nobody", "-m", str(sessions * 2 + 100),
               "127.0.0.1:%d" % port, str(max(1024, min(sessions * 2, 4096)))]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, timeout=20)
    return p, cmd


def start_haproxy(front, backs, send, sessions, d):
    cfg = os.path.join(d, "haproxy.cfg")
    servers = "".join("    server s%d 127.0.0.1:%d %s\n" % (i, p, send)
                      for i, p in enumerate(backs))
    with open(cfg, "w") as f:
        f.write("global\n    nbthread 1\n    maxconn %d\n"
                "defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 60s\n"
                "    timeout server 60s\n"
                "frontend smtp\n    bind 127.0.0.1:%d\n    default_backend sinks\n"
                "backend sinks\n    balance roundrobin\n%s"
                % (sessions * 4 + 100, front, servers))
    p = subprocess.Popen(["haproxy", "-db", "-f", cfg], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    wait_port(front, timeout=20)
    return p, cfg


def stop(procs):
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run_point(server, topo, sessions, a):
    d = tempfile.mkdtemp(prefix="bproxy.")
    sinks, hp, cmds = [], None, []
    try:
        n = 1 if topo == "direct" else 2
        ports = [free_port() for _ in range(n)]
        for port in ports:
            p, cmd = start_sink(server, port, sessions, a, topo == "haproxy")
            sinks.append(p)
            cmds.append(" ".join(cmd))
        target = ports[0]
        if topo == "haproxy":
            target = free_port()
            hp, cfg = start_haproxy(target, ports,
                                    "send-proxy-v2" if server == "smtpsink" else "",
                                    sessions, d)
            with open(cfg) as f:
                cmds.append("haproxy -f cfg: " + f.read().replace("\n", "; "))
        time.sleep(0.2)
        bj = os.path.join(d, "bench.json")
        gcmd = [a.smtpbench, "--target", "127.0.0.1:%d" % target, "--threads", "1",
                "--sessions", str(sessions), "--size", "1k", "--duration", a.duration,
                "--warmup", a.warmup, "--quiet", "--json", bj, "--timeout", "10s"]
        s0 = [cpu_seconds(p.pid) for p in sinks]
        h0 = cpu_seconds(hp.pid) if hp else 0.0
        r = subprocess.run(gcmd, capture_output=True, timeout=120)
        sink_cpu = sum(cpu_seconds(p.pid) - c for p, c in zip(sinks, s0))
        hp_cpu = (cpu_seconds(hp.pid) - h0) if hp else 0.0
    finally:
        stop(([hp] if hp else []) + sinks)
    with open(bj) as f:
        b = json.load(f)
    m = b["messages"]
    done = max(m["delivered"] + m["partial"], 1)
    shutil.rmtree(d, ignore_errors=True)
    return {"server": server, "topology": topo, "sessions": sessions,
            "msgs_per_s": b["msgs_per_s"], "messages": done, "failed": m["failed"],
            "sink_cpu_us": sink_cpu * 1e6 / done, "haproxy_cpu_us": hp_cpu * 1e6 / done,
            "gen_cpu_us": b["cpu_seconds"] * 1e6 / done, "bench_rc": r.returncode,
            "p50_ms": b.get("latency_ms", {}).get("message", {}).get("p50"),
            "p99_ms": b.get("latency_ms", {}).get("message", {}).get("p99"),
            "server_cmds": " | ".join(cmds),
            "generator_cmd": " ".join(gcmd[:2] + ["127.0.0.1:PORT"] + gcmd[3:])}


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt_ms(v):
    return "-" if v is None else "%.2f" % v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smtpsink", default="build/server/smtpsink")
    ap.add_argument("--smtpbench", default="build/bench/smtpbench")
    ap.add_argument("--out", help="default results/DATE-haproxy[-N], never overwritten")
    ap.add_argument("--quick", action="store_true", help="1 repetition, 100 sessions, 1 s")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", default="3s")
    ap.add_argument("--warmup", default="0.5s")
    ap.add_argument("--sessions", default="100,1000")
    a = ap.parse_args()
    if a.quick:
        a.reps, a.sessions, a.duration = 1, "100", "1s"
    if not a.out:
        a.out = results_dir("haproxy-quick" if a.quick else "haproxy")
    if not shutil.which("haproxy"):
        sys.exit("bench_proxy: haproxy not installed (scripts/deps.sh installs it)")
    import resource
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.makedirs(a.out, exist_ok=False)
    info = meta(a.smtpsink)
    info["smtpbench_version"] = subprocess.run([a.smtpbench, "--version"], capture_output=True,
                                               text=True).stdout.strip()
    info["haproxy"] = subprocess.run(["haproxy", "-v"], capture_output=True,
                                     text=True).stdout.splitlines()[0]
    info.update(reps=a.reps, duration=a.duration, warmup=a.warmup)
    rows = []
    sessions = [int(x) for x in a.sessions.split(",")]
    for rep in range(a.reps):
        for s in sessions:
            for server in SERVERS:
                for topo in TOPOLOGIES:
                    r = run_point(server, topo, s, a)
                    r["rep"] = rep
                    rows.append(r)
                    print("rep %d %-9s %-7s %5d: %8.0f msgs/s  sinks %6.1f us  haproxy %6.1f us"
                          "  gen %6.1f us  rc %d" % (rep, server, topo, s, r["msgs_per_s"],
                                                     r["sink_cpu_us"], r["haproxy_cpu_us"],
                                                     r["gen_cpu_us"], r["bench_rc"]),
                          flush=True)
    with open(os.path.join(a.out, "raw.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    with open(os.path.join(a.out, "meta.json"), "w") as f:
        json.dump(info, f, indent=2)

    def pick(server, topo, s, rep):
        return next(r for r in rows if (r["server"], r["topology"], r["sessions"], r["rep"]) ==
                    (server, topo, s, rep))

    L = ["# Two sinks behind HAProxy vs one sink direct", "", "| key | value |", "|---|---|"]
    L += ["| %s | %s |" % (k, v) for k, v in info.items()]
    L += ["", "Medians of %d repetitions; 1 KiB, reused sessions, smtpbench --threads 1; each "
          "sink --threads 1. Ratios are per repetition, median (min-max)." % a.reps, "",
          "| server | sessions | topology | msgs/s | ÷ direct | ÷ smtp-sink same topology | "
          "sinks µs/msg | HAProxy µs/msg | generator µs/msg | p50 / p99 ms | failed |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in sessions:
        for server in SERVERS:
            for topo in TOPOLOGIES:
                rs = [pick(server, topo, s, k) for k in range(a.reps)]
                vs_direct = [pick(server, topo, s, k)["msgs_per_s"] /
                             max(pick(server, "direct", s, k)["msgs_per_s"], 1)
                             for k in range(a.reps)]
                vs_pf = [pick(server, topo, s, k)["msgs_per_s"] /
                         max(pick("smtp-sink", topo, s, k)["msgs_per_s"], 1)
                         for k in range(a.reps)]
                L.append("| %s | %d | %s | %.0f | %.2f (%.2f-%.2f) | %.2f | %.1f | %.1f | %.1f "
                         "| %s / %s | %d |" % (server, s, topo, med(r["msgs_per_s"] for r in rs),
                                     med(vs_direct), min(vs_direct), max(vs_direct), med(vs_pf),
                                     med(r["sink_cpu_us"] for r in rs),
                                     med(r["haproxy_cpu_us"] for r in rs),
                                     med(r["gen_cpu_us"] for r in rs),
                                     fmt_ms(med(r["p50_ms"] for r in rs)),
                                     fmt_ms(med(r["p99_ms"] for r in rs)),
                                     sum(r["failed"] for r in rs)))
    with open(os.path.join(a.out, "summary.md"), "w") as f:
        f.write("\n".join(L) + "\n")
    print("\n".join(L))


if __name__ == "__main__":
    main()
