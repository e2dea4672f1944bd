#!/usr/bin/python3
"""bench_suite.py - `make bench`: smtpsink and smtpbench against the incumbents,
side by side in one run.

Servers {smtpsink io_uring, smtpsink epoll, Postfix smtp-sink, Python aiosmtpd
Sink} x generators {smtpbench, Postfix smtp-source} x sessions x sizes, each
point repeated; plus the scanner benchmark, a connection-scale point (idle
RSS per connection) and an open-loop point (smtpbench --rate against a sink
with injected delays: corrected vs uncorrected latency).

Every point starts a fresh server.  Both generators are timed the same way
(issue 15): the wall clock around the generator process, divided into every
message it delivered, so start-up, connecting all sessions and the ramp-down
count for both (neither has a warm-up).  smtpbench runs --duration S;
smtp-source runs a message count sized to take about S at the rate it showed
in the previous repetition of the same point (a guess for the first).  Server CPU = utime+stime of its process
(/proc/PID/stat, all threads) over the generator run; generator CPU =
getrusage(RUSAGE_CHILDREN) around it; server peak RSS = VmHWM.

Writes results/<date>-<label>[-N]/ (never overwrites): meta.json, raw.csv,
raw.json (incl. smtpbench histogram counts), summary.md (medians, ratios to
smtp-sink and smtp-source), *.png (gnuplot).  Loopback only.
"""
import argparse
import csv
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from bench_server import cpu_seconds, free_port, meta, rss_kib, wait_port  # noqa: E402

SIZES = {"1k": 1024, "10k": 10240, "100k": 102400}


def start_server(kind, sessions, smtpsink):
    port = free_port()
    if kind.startswith("smtpsink"):
        cmd = [smtpsink, "--listen", "127.0.0.1:%d" % port, "--io", kind.split("-")[1],
               "--quiet", "--max-size", "0"]
    elif kind == "smtp-sink":
        cmd = ["/usr/sbin/smtp-sink", "-u", "nobody", "-m", str(sessions * 2 + 100),
               "127.0.0.1:%d" % port, str(max(1024, min(sessions * 2, 4096)))]
    else:  # aiosmtpd's Sink handler discards mail, like the others
        cmd = ["/usr/bin/python3", "-m", "aiosmtpd", "-n", "-c", "aiosmtpd.handlers.Sink",
               "-l", "127.0.0.1:%d" % port]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, timeout=20)
    time.sleep(0.2)
    return p, port, cmd


def run_point(server, gen, sessions, size, secs, a):
    p, port, scmd = start_server(server, sessions, a.smtpsink)
    rep = None
    try:
        if gen == "smtpbench":
            jf = tempfile.NamedTemporaryFile(suffix=".json", delete=False).name
            gcmd = [a.smtpbench, "--target", "127.0.0.1:%d" % port, "--sessions", str(sessions),
                    "--duration", "%gs" % secs, "--size", size, "--quiet", "--json", jf,
                    "--timeout", "30s"]
            msgs = None
        else:
            rate = a.rate_seen.get((server, sessions, size), a.rate_guess[size])
            msgs = max(3 * sessions, int(rate * secs))
            gcmd = ["/usr/sbin/smtp-source", "-d", "-s", str(sessions), "-m", str(msgs),
                    "-l", str(SIZES[size]), "-f", "bench@client.test", "-t", "sink@server.test",
                    "127.0.0.1:%d" % port]
        c0 = cpu_seconds(p.pid)
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        g = subprocess.run(gcmd, capture_output=True, timeout=600)
        wall = time.monotonic() - t0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        c1 = cpu_seconds(p.pid)
        rss = rss_kib(p.pid)
        gen_cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        errors = 0
        if gen == "smtpbench":
            with open(jf) as f:
                rep = json.load(f)
            os.unlink(jf)
            # every message, timed by the process's wall clock like smtp-source
            msgs = rep["messages"]["delivered"] + rep["messages"]["partial"]
            errors = rep["messages"]["failed"] + rep["connections"]["failed"]
        elif g.returncode != 0:
            errors = msgs
        else:
            a.rate_seen[(server, sessions, size)] = msgs / wall
    finally:
        p.terminate()
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    row = {"server": server, "generator": gen, "sessions": sessions, "size": size,
           "messages": msgs, "wall_s": wall, "msgs_per_s": msgs / wall if msgs else 0.0,
           "mb_per_s": (msgs or 0) * SIZES[size] / wall / 1e6,
           "server_cpu_us_per_msg": (c1 - c0) * 1e6 / msgs if msgs else None,
           "gen_cpu_us_per_msg": gen_cpu * 1e6 / msgs if msgs else None,
           "server_peak_rss_kib": rss, "errors": errors,
           "p50_ms": None, "p99_ms": None,
           "server_cmd": " ".join(scmd), "generator_cmd": " ".join(gcmd)}
    if rep:
        h = rep["histograms"]["message"]
        row["p50_ms"], row["p99_ms"] = quantiles(h, (0.5, 0.99))
        row["histogram"] = h
    return row


def bucket_high(i, sub_bits=8):
    half = 1 << (sub_bits - 1)
    if i < 2 * half:
        return i
    shift = i // half - 1
    return ((half + i % half) << shift) + (1 << shift) - 1


def quantiles(h, qs):
    out = []
    for q in qs:
        rank = max(1, min(h["count"], int(q * h["count"] + 0.5)))
        seen, v = 0, 0
        for i, c in h["buckets"]:
            seen += c
            if seen >= rank:
                v = min(bucket_high(i, h["sub_bits"]), h["max"])
                break
        out.append(v / 1e6 if h["count"] else None)
    return out


def med(rows, key):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def fmt(v, f="%.0f"):
    return "-" if v is None else f % v


def open_loop_point(a, out):
    """smtpbench --rate against smtp-sink with 5% of DATA replies delayed 1 s.

    One session per thread at 20 msgs/s each: a 1 s stall holds up the ~20
    messages due behind it.  Their latency from the intended start shows
    the wait; measured from the actual send (what a closed-loop tool
    reports) it vanishes."""
    port = free_port()
    p = subprocess.Popen(["/usr/sbin/smtp-sink", "-u", "nobody", "-W", "DATA:1:5",
                          "127.0.0.1:%d" % port, "256"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        jf = os.path.join(out, "open-loop.json")
        cmd = [a.smtpbench, "--target", "127.0.0.1:%d" % port, "--sessions", "2", "--threads", "2", "--rate", "40",
               "--duration", "%ds" % (4 if a.quick else 10), "--quiet", "--json", jf]
        subprocess.run(cmd, capture_output=True, timeout=120)
        with open(jf) as f:
            rep = json.load(f)
    finally:
        p.kill()
        p.wait()
    c = quantiles(rep["histograms"]["message"], (0.5, 0.9, 0.99, 0.999))
    u = quantiles(rep["histograms"]["message_uncorrected"], (0.5, 0.9, 0.99, 0.999))
    return {"command": " ".join(cmd), "sink": "smtp-sink -W DATA:1:5 (5% of DATA delayed 1 s)",
            "corrected_ms": c, "uncorrected_ms": u, "delivered": rep["messages"]["delivered"]}


def plots(out, rows, servers, sizes):
    if not shutil.which("gnuplot"):
        return []
    made = []
    for size in sizes:
        for gen in ("smtpbench", "smtp-source"):
            dat = os.path.join(out, "tput-%s-%s.dat" % (gen, size))
            with open(dat, "w") as f:
                for srv in servers:
                    f.write("# %s\n" % srv)
                    for s in sorted({r["sessions"] for r in rows}):
                        sel = [r for r in rows if (r["server"], r["generator"], r["size"],
                                                   r["sessions"]) == (srv, gen, size, s)]
                        if sel:
                            f.write("%d %f\n" % (s, med(sel, "msgs_per_s")))
                    f.write("\n\n")
            png = "tput-%s-%s.png" % (gen, size)
            plot = ", ".join("'%s' index %d with linespoints title '%s'" % (dat, i, srv)
                             for i, srv in enumerate(servers))
            script = ("set terminal png size 800,500; set output '%s'; set logscale x; "
                      "set title 'msgs/s vs sessions, %s bodies, generator %s'; "
                      "set xlabel 'sessions'; set ylabel 'msgs/s'; set key top left; plot %s"
                      % (os.path.join(out, png), size, gen, plot))
            subprocess.run(["gnuplot", "-e", script], capture_output=True)
            if os.path.exists(os.path.join(out, png)):
                made.append(png)
    # latency percentiles with smtpbench, first size
    dat = os.path.join(out, "latency.dat")
    with open(dat, "w") as f:
        for srv in servers:
            f.write("# %s\n" % srv)
            for s in sorted({r["sessions"] for r in rows}):
                sel = [r for r in rows if (r["server"], r["generator"], r["size"], r["sessions"])
                       == (srv, "smtpbench", sizes[0], s)]
                if sel and med(sel, "p99_ms") is not None:
                    f.write("%d %f %f\n" % (s, med(sel, "p50_ms"), med(sel, "p99_ms")))
            f.write("\n\n")
    plot = ", ".join("'%s' index %d using 1:3 with linespoints title '%s p99', '%s' index %d "
                     "using 1:2 with lines dt 2 title '%s p50'" % (dat, i, s, dat, i, s)
                     for i, s in enumerate(servers))
    script = ("set terminal png size 800,500; set output '%s'; set logscale xy; "
              "set title 'message latency (smtpbench, %s), ms'; set xlabel 'sessions'; "
              "set ylabel 'ms'; set key top left; plot %s"
              % (os.path.join(out, "latency.png"), sizes[0], plot))
    subprocess.run(["gnuplot", "-e", script], capture_output=True)
    if os.path.exists(os.path.join(out, "latency.png")):
        made.append("latency.png")
    return made


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--label", default=None)
    ap.add_argument("--smtpsink", default="build/server/smtpsink")
    ap.add_argument("--smtpbench", default="build/bench/smtpbench")
    ap.add_argument("--scanbench", default="build/bench/scanbench")
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    label = a.label or ("quick" if a.quick else "full")
    base = os.path.join("results", time.strftime("%Y-%m-%d") + "-" + label)
    out, n = base, 2
    while os.path.exists(out):  # old runs are never overwritten
        out = "%s-%d" % (base, n)
        n += 1
    os.makedirs(out)
    servers = ["smtpsink-uring", "smtpsink-epoll", "smtp-sink", "aiosmtpd"]
    if a.quick:
        sessions, sizes, repeats, secs = [10, 100], ["1k"], 1, 1.0
        big = []
    else:
        sessions, sizes, repeats, secs = [10, 100, 1000], ["1k", "10k", "100k"], 3, 2.0
        big = [10000]
    a.rate_guess = {"1k": 9000, "10k": 6000, "100k": 2000}
    a.rate_seen = {}
    rows = []
    t_start = time.monotonic()
    for size in sizes:
        for s in sessions + big:
            for rep in range(repeats):
                for srv in servers:
                    for gen in ("smtpbench", "smtp-source"):
                        if s in big and (gen != "smtpbench" or srv == "aiosmtpd"):
                            continue  # 10k sessions: smtpbench only; aiosmtpd not at that scale
                        if srv == "aiosmtpd" and s > 100:
                            continue  # a Python asyncio server: kept to small points
                        try:
                            r = run_point(srv, gen, s, size, secs, a)
                        except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
                            print("point failed: %s %s %d %s: %s" % (srv, gen, s, size, e))
                            continue
                        r["repeat"] = rep
                        rows.append(r)
                        print("%-15s %-11s s=%-5d %-4s %9.0f msg/s srv %8s us/msg gen %8s us/msg "
                              "p99 %s ms err %d" % (srv, gen, s, size, r["msgs_per_s"],
                                                    fmt(r["server_cpu_us_per_msg"], "%.1f"),
                                                    fmt(r["gen_cpu_us_per_msg"], "%.1f"),
                                                    fmt(r["p99_ms"], "%.2f"), r["errors"]),
                              flush=True)
    extra = {}
    if os.path.exists(a.scanbench):
        sb = subprocess.run([a.scanbench], capture_output=True, text=True, timeout=300)
        with open(os.path.join(out, "scanbench.txt"), "w") as f:
            f.write(sb.stdout)
        extra["scanbench"] = sb.stdout
    idle = subprocess.run(["/usr/bin/python3", os.path.join(os.path.dirname(__file__), "idle_rss.py"),
                           "--smtpsink", a.smtpsink, "--conns", "2000" if a.quick else "10000",
                           "--active", "100", "--smtpbench", a.smtpbench],
                          capture_output=True, text=True, timeout=300)
    extra["idle_rss"] = idle.stdout.strip()
    ol = open_loop_point(a, out)
    m = meta(a.smtpsink)
    m["label"] = label
    m["quick"] = a.quick
    m["elapsed_s"] = round(time.monotonic() - t_start, 1)
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(m, f, indent=1)
    with open(os.path.join(out, "raw.json"), "w") as f:
        json.dump({"meta": m, "runs": rows, "open_loop": ol, "idle_rss": extra["idle_rss"]}, f,
                  indent=1)
    keys = ["server", "generator", "sessions", "size", "repeat", "messages", "wall_s",
            "msgs_per_s", "mb_per_s", "server_cpu_us_per_msg", "gen_cpu_us_per_msg",
            "server_peak_rss_kib", "p50_ms", "p99_ms", "errors"]
    with open(os.path.join(out, "raw.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(keys)
        for r in rows:
            w.writerow([r.get(k) for k in keys])
    pngs = plots(out, rows, servers, sizes)
    L = ["# smtpsink / smtpbench side-by-side run: %s" % label, "",
         "| key | value |", "|---|---|"] + ["| %s | %s |" % (k, v) for k, v in m.items()]
    L += ["", "Medians of %d repeat(s), %g s per point. Ratios: msgs/s and server CPU against "
          "Postfix smtp-sink with the same generator; generator CPU against Postfix "
          "smtp-source with the same server. Both generators are timed the same way: wall "
          "clock around the generator process, every message it delivered (start-up and "
          "connecting included for both)." % (repeats, secs), "",
          "| size | sessions | server | generator | msgs/s | MB/s | server µs/msg | gen µs/msg | "
          "RSS MiB | p50 ms | p99 ms | err | msgs/s ÷ smtp-sink | srv CPU ÷ smtp-sink | "
          "gen CPU ÷ smtp-source |", "|" + "---|" * 15]
    for size in sizes:
        for s in sessions + big:
            for srv in servers:
                for gen in ("smtpbench", "smtp-source"):
                    sel = [r for r in rows if (r["server"], r["generator"], r["size"],
                                               r["sessions"]) == (srv, gen, size, s)]
                    if not sel:
                        continue
                    ref = [r for r in rows if (r["server"], r["generator"], r["size"],
                                               r["sessions"]) == ("smtp-sink", gen, size, s)]
                    gref = [r for r in rows if (r["server"], r["generator"], r["size"],
                                                r["sessions"]) == (srv, "smtp-source", size, s)]
                    rate, cpu, gcpu = med(sel, "msgs_per_s"), med(sel, "server_cpu_us_per_msg"), \
                        med(sel, "gen_cpu_us_per_msg")
                    rr = rate / med(ref, "msgs_per_s") if ref and med(ref, "msgs_per_s") else None
                    cr = cpu / med(ref, "server_cpu_us_per_msg") \
                        if ref and cpu and med(ref, "server_cpu_us_per_msg") else None
                    gr = gcpu / med(gref, "gen_cpu_us_per_msg") \
                        if gref and gcpu and med(gref, "gen_cpu_us_per_msg") else None
                    L.append("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d | %s | %s | %s |" % (
                        size, s, srv, gen, fmt(rate), fmt(med(sel, "mb_per_s"), "%.1f"),
                        fmt(cpu, "%.1f"), fmt(gcpu, "%.1f"),
                        fmt(max(r["server_peak_rss_kib"] for r in sel) / 1024, "%.1f"),
                        fmt(med(sel, "p50_ms"), "%.2f"), fmt(med(sel, "p99_ms"), "%.2f"),
                        sum(r["errors"] for r in sel), fmt(rr, "%.2f"), fmt(cr, "%.2f"),
                        fmt(gr, "%.2f")))
    L += ["", "## Open loop vs closed loop", "",
          "`%s` against %s: delivered %d." % (ol["command"], ol["sink"], ol["delivered"]), "",
          "| latency | p50 | p90 | p99 | p99.9 |", "|---|---|---|---|---|",
          "| corrected (from intended start) | %s |" % " | ".join(fmt(v, "%.1f ms") for v in ol["corrected_ms"]),
          "| uncorrected (from actual send) | %s |" % " | ".join(fmt(v, "%.1f ms") for v in ol["uncorrected_ms"]),
          "", "## Connection scale", "", "    " + extra["idle_rss"], ""]
    if "scanbench" in extra:
        L += ["## Scanner", "", "```", extra["scanbench"].rstrip(), "```", ""]
    if pngs:
        L += ["## Plots", ""] + ["![%s](%s)" % (p, p) for p in pngs] + [""]
    L += ["Reproduce: `make bench%s` (raw data in raw.csv / raw.json)." % (" QUICK=1" if a.quick else "")]
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(L) + "\n")
    print("\nwrote %s (%.0f s)" % (out, time.monotonic() - t_start))


if __name__ == "__main__":
    main()
