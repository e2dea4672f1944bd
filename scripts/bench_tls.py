#!/usr/bin/python3
"""bench_tls.py - plaintext vs STARTTLS vs implicit TLS, side by side in one run.

    scripts/bench_tls.py --smtpsink build/server/smtpsink --smtpbench build/bench/smtpbench \
        --out results/DATE-tls [--reps 3] [--duration 3s] [--sessions 100,1000]

Servers: smtpsink (plain, STARTTLS, implicit TLS), Python aiosmtpd (the same
three; the TLS sink users know), Postfix smtp-sink (plaintext only: it has
no TLS; the in-run reference).  Generator: smtpbench for every point, 1 KiB
messages, closed loop, --threads 1, and every server on one core too
(smtpsink --threads 1), so on a 2-core machine each side has a core.

Two kinds of points:
  reused    sessions send messages until the run ends (TLS set up once)
  one-msg   --msgs-per-session 1: every message is a new connection, i.e. a
            full handshake, or with --tls-resume a resumed one

Every point is timed the same way: smtpbench's measured window (after the
same --warmup) gives msgs/s; the server's CPU is utime+stime of its process
(/proc/PID/stat) around the generator run, warm-up included on all sides,
divided by the messages (reused) or connections (one-msg) the generator saw.
Each repetition runs every point once, in the same order, so drift hits all
points of a repetition alike; ratios are taken pair by pair within a
repetition, and the summary gives medians (min-max) of the repetitions.

Writes OUT/raw.csv, OUT/meta.json, OUT/summary.md.  Loopback only.
"""
import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from bench_server import cpu_seconds, free_port, meta, results_dir, wait_port  # noqa: E402

MODES = ("plain", "starttls", "tls")


def make_cert(d):
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


def start(server, mode, sessions, a, cert, key):
    """Start a server for one point; returns (process, port, command)."""
    port = free_port()
    if server == "smtpsink":
        cmd = [a.smtpsink, "--threads", "1", "--quiet", "--max-size", "0",
               "--max-conns", str(sessions * 2 + 100), "--tls-cert", cert, "--tls-key", key]
        cmd += ["--listen-tls" if mode == "tls" else "--listen", "127.0.0.1:%d" % port]
    elif server == "aiosmtpd":
        cmd = ["/usr/bin/python3", "-m", "aiosmtpd", "-n", "-c", "aiosmtpd.handlers.Sink",
               "-l", "127.0.0.1:%d" % port]
        if mode == "starttls":
            cmd += ["--tlscert", cert, "--tlskey", key, "--no-requiretls"]
        elif mode == "tls":
            cmd += ["--smtpscert", cert, "--smtpskey", key]
    else:  # Postfix smtp-sink: one process, no TLS
        cmd = ["/usr/sbin/smtp-sink", "-u", "nobody", "-m", str(sessions * 2 + 100),
               "127.0.0.1:%d" % port, str(max(1024, min(sessions * 2, 4096)))]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, timeout=20)
    time.sleep(0.2)
    return p, port, cmd


def run_point(server, mode, kind, sessions, a, cert, key):
    p, port, scmd = start(server, mode, sessions, a, cert, key)
    d = tempfile.mkdtemp(prefix="btls.")
    bj = os.path.join(d, "bench.json")
    gcmd = [a.smtpbench, "--target", "127.0.0.1:%d" % port, "--threads", "1",
            "--sessions", str(sessions), "--size", "1k", "--duration", a.duration,
            "--warmup", a.warmup, "--quiet", "--json", bj, "--timeout", "10s"]
    if mode == "starttls":
        gcmd.append("--starttls")
    elif mode == "tls":
        gcmd.append("--tls")
    if kind != "reused":
        gcmd += ["--msgs-per-session", "1"]
    if kind == "one-msg-resumed":
        gcmd.append("--tls-resume")
    try:
        c0 = cpu_seconds(p.pid)
        r = subprocess.run(gcmd, capture_output=True, timeout=120)
        srv_cpu = cpu_seconds(p.pid) - c0
    finally:
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    with open(bj) as f:
        b = json.load(f)
    m = b["messages"]
    done = m["delivered"] + m["partial"]
    conns = b["connections"]["established"]
    tls = b.get("tls", {})
    per = done if kind == "reused" else max(conns, 1)
    return {"server": server, "mode": mode, "kind": kind, "sessions": sessions,
            "msgs_per_s": b["msgs_per_s"], "messages": done, "failed": m["failed"],
            "connections": conns, "tls_full": tls.get("full", 0),
            "tls_resumed": tls.get("resumed", 0),
            "server_cpu_us": srv_cpu * 1e6 / max(per, 1),
            "gen_cpu_us": b["cpu_seconds"] * 1e6 / max(per, 1),
            "bench_rc": r.returncode, "server_cmd": " ".join(scmd),
            "generator_cmd": " ".join(gcmd[:2] + ["127.0.0.1:PORT"] + gcmd[3:])}


def points(sessions):
    out = []
    for s in sessions:
        for server in ("smtpsink", "aiosmtpd", "smtp-sink"):
            for mode in MODES:
                if server == "smtp-sink" and mode != "plain":
                    continue
                kinds = ["reused", "one-msg"]
                if mode != "plain":
                    kinds.append("one-msg-resumed")
                for kind in kinds:
                    out.append((server, mode, kind, s))
    return out


def med(xs):
    xs = list(xs)
    return statistics.median(xs) if xs else None


def fmt(v, f="%.0f"):
    return "-" if v is None else f % v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smtpsink", default="build/server/smtpsink")
    ap.add_argument("--smtpbench", default="build/bench/smtpbench")
    ap.add_argument("--out", help="default results/DATE-tls[-N], never overwritten")
    ap.add_argument("--quick", action="store_true", help="1 repetition, 100 sessions, 1 s")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", default="3s")
    # long enough for 1000 full handshakes (~0.3 s of each side's CPU) to
    # finish before a reused-sessions window opens; the same for every point
    ap.add_argument("--warmup", default="2s")
    ap.add_argument("--sessions", default="100,1000")
    ap.add_argument("--servers", default="smtpsink,aiosmtpd,smtp-sink")
    a = ap.parse_args()
    if a.quick:
        a.reps, a.sessions, a.duration = 1, "100", "1s"
    if not a.out:
        a.out = results_dir("tls-quick" if a.quick else "tls")
    os.makedirs(a.out, exist_ok=True)
    d = tempfile.mkdtemp(prefix="btls-cert.")
    cert, key = make_cert(d)
    pts = [p for p in points([int(x) for x in a.sessions.split(",")])
           if p[0] in a.servers.split(",")]
    rows = []
    for rep in range(a.reps):
        for server, mode, kind, s in pts:
            r = run_point(server, mode, kind, s, a, cert, key)
            r["rep"] = rep
            rows.append(r)
            print("rep %d %-9s %-8s %-15s %5d: %8.0f msgs/s  server %7.1f us  gen %7.1f us  "
                  "rc %d" % (rep, server, mode, kind, s, r["msgs_per_s"], r["server_cpu_us"],
                             r["gen_cpu_us"], r["bench_rc"]), flush=True)
    keys = ["rep", "server", "mode", "kind", "sessions", "msgs_per_s", "messages", "failed",
            "connections", "tls_full", "tls_resumed", "server_cpu_us", "gen_cpu_us",
            "bench_rc", "server_cmd", "generator_cmd"]
    with open(os.path.join(a.out, "raw.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(keys)
        for r in rows:
            w.writerow([r[k] for k in keys])
    m = meta(a.smtpsink)
    m.update(smtpbench_version=subprocess.run([a.smtpbench, "--version"], capture_output=True,
                                              text=True).stdout.strip(),
             openssl=subprocess.run(["openssl", "version"], capture_output=True,
                                    text=True).stdout.strip(),
             reps=a.reps, duration=a.duration, warmup=a.warmup)
    with open(os.path.join(a.out, "meta.json"), "w") as f:
        json.dump(m, f, indent=1)

    def sel(**kw):
        return sorted((r for r in rows if all(r[k] == v for k, v in kw.items())),
                      key=lambda r: r["rep"])

    L = ["# Plaintext vs STARTTLS vs implicit TLS", "",
         "| key | value |", "|---|---|"] + ["| %s | %s |" % (k, v) for k, v in m.items()]
    L += ["", "Medians of %d repetitions, %s measured after %s warm-up, 1 KiB messages; "
          "generator and server one thread each. Ratios are per repetition (same run, "
          "adjacent points), median (min-max)." % (a.reps, a.duration, a.warmup), "",
          "## Reused sessions: msgs/s and TLS / plaintext", "",
          "| server | sessions | mode | msgs/s | ÷ same server plaintext | ÷ Postfix smtp-sink "
          "plaintext | server µs/msg | generator µs/msg |", "|---|---|---|---|---|---|---|---|"]
    for s in sorted({p[3] for p in pts}):
        for server in [x for x in ("smtpsink", "aiosmtpd", "smtp-sink") if x in a.servers]:
            base = sel(server=server, mode="plain", kind="reused", sessions=s)
            ref = sel(server="smtp-sink", mode="plain", kind="reused", sessions=s)
            for mode in MODES:
                cur = sel(server=server, mode=mode, kind="reused", sessions=s)
                if not cur:
                    continue
                rr = [x["msgs_per_s"] / y["msgs_per_s"] for x, y in zip(cur, base)
                      if y["msgs_per_s"]]
                rp = [x["msgs_per_s"] / y["msgs_per_s"] for x, y in zip(cur, ref)
                      if y["msgs_per_s"]]
                L.append("| %s | %d | %s | %s | %s | %s | %s | %s |" % (
                    server, s, mode, fmt(med(x["msgs_per_s"] for x in cur)),
                    "%.2f (%.2f-%.2f)" % (med(rr), min(rr), max(rr)) if rr else "-",
                    "%.2f" % med(rp) if rp else "-",
                    fmt(med(x["server_cpu_us"] for x in cur), "%.1f"),
                    fmt(med(x["gen_cpu_us"] for x in cur), "%.1f")))
    L += ["", "## One message per connection: handshakes", "",
          "Server µs/conn is the server's CPU per connection (accept, greeting, EHLO, "
          "handshake, one message, QUIT); handshakes/s per core = 10^6 / that.", "",
          "| server | sessions | mode | handshake | conns/s | server µs/conn | server conns/s per "
          "core | generator µs/conn | resumed |", "|---|---|---|---|---|---|---|---|---|"]
    for s in sorted({p[3] for p in pts}):
        for server in [x for x in ("smtpsink", "aiosmtpd", "smtp-sink") if x in a.servers]:
            for mode in MODES:
                for kind in ("one-msg", "one-msg-resumed"):
                    cur = sel(server=server, mode=mode, kind=kind, sessions=s)
                    if not cur:
                        continue
                    cpu = med(x["server_cpu_us"] for x in cur)
                    L.append("| %s | %d | %s | %s | %s | %s | %s | %s | %s |" % (
                        server, s, mode,
                        "-" if mode == "plain" else ("resumed" if kind.endswith("resumed")
                                                     else "full"),
                        fmt(med(x["msgs_per_s"] for x in cur)), fmt(cpu, "%.1f"),
                        fmt(1e6 / cpu if cpu else None), fmt(med(x["gen_cpu_us"] for x in cur),
                                                              "%.1f"),
                        fmt(med(x["tls_resumed"] for x in cur))))
    bad = [r for r in rows if r["bench_rc"] != 0 or r["failed"]]
    L += ["", "Points with failures or a non-zero generator exit: %d of %d." % (len(bad),
                                                                               len(rows))]
    with open(os.path.join(a.out, "summary.md"), "w") as f:
        f.write("\n".join(L) + "\n")
    print("\n".join(L))


if __name__ == "__main__":
    main()
