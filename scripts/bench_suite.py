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

The machine's ceiling is measured in the same run (issue 15): limitbench
ping-pong (a request of the message size, a 4-octet answer) with epoll and
with io_uring, and streaming, at every session count and size.  A message
costs round trips: smtpbench with PIPELINING and DATA 2 (envelope + DATA,
then the content), with BDAT 1, smtp-source 4 (it sends MAIL, RCPT, DATA and
the content one at a time, and HELO).  So every row's ceiling is the better
of the two ping-pong rates divided by its round trips per message, and never
more than the streaming rate divided by the message size; its "of ceiling"
column is msgs/s over that.  --depth N rows (many messages per round trip)
are set against the io_uring ping-pong rate itself, beside smtpsink's CPU
per message and the scanner's own cost per KiB (scanbench).

Writes results/<date>-<label>[-N]/ (never overwrites): meta.json, raw.csv,
raw.json (incl. smtpbench histogram counts), summary.md (medians, ratios to
smtp-sink and smtp-source, fractions of the ceiling), *.png (gnuplot).
Loopback only.
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
# round trips per message (see above); --depth rows are set apart
RTS = {"smtpbench": 2, "smtp-source": 4, "smtpbench-bdat": 1}


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


def time_generator(gen, port, sessions, size, secs, a, server_cpu, rate_key, extra=()):
    """Run one generator against 127.0.0.1:port, timed as every point is:
    the wall clock around the process, every message it delivered.
    smtpbench runs --duration secs; smtp-source a count sized from the rate
    seen at rate_key before (a guess the first time).  server_cpu() is read
    before and after.  Returns a dict with the figures and smtpbench's
    report (None for smtp-source)."""
    rep = None
    if gen == "smtpbench":
        jf = tempfile.NamedTemporaryFile(suffix=".json", delete=False).name
        gcmd = [a.smtpbench, "--target", "127.0.0.1:%d" % port, "--sessions", str(sessions),
                "--duration", "%gs" % secs, "--size", size, "--quiet", "--json", jf,
                "--timeout", "30s"] + list(extra)
        msgs = None
    else:
        rate = a.rate_seen.get(rate_key, a.rate_guess.get(size, 1000))
        msgs = max(3 * sessions, int(rate * secs))
        gcmd = ["/usr/sbin/smtp-source", "-d", "-s", str(sessions), "-m", str(msgs),
                "-l", str(SIZES[size]), "-f", "bench@client.test", "-t", "sink@server.test",
                "127.0.0.1:%d" % port]
    c0 = server_cpu()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    g = subprocess.run(gcmd, capture_output=True, timeout=600)
    wall = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    c1 = server_cpu()
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
        a.rate_seen[rate_key] = msgs / wall
    gen_cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {"messages": msgs, "wall_s": wall, "msgs_per_s": msgs / wall if msgs else 0.0,
            "server_cpu_us_per_msg": (c1 - c0) * 1e6 / msgs if msgs else None,
            "gen_cpu_us_per_msg": gen_cpu * 1e6 / msgs if msgs else None, "errors": errors,
            "generator_cmd": " ".join(gcmd), "report": rep}


def run_point(server, gen, sessions, size, secs, a, extra=()):
    p, port, scmd = start_server(server, sessions, a.smtpsink)
    try:
        t = time_generator(gen, port, sessions, size, secs, a, lambda: cpu_seconds(p.pid),
                           (server, sessions, size), extra)
        rss = rss_kib(p.pid)
    finally:
        p.terminate()
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    rep = t.pop("report")
    row = {"server": server, "generator": gen, "sessions": sessions, "size": size,
           "mode": " ".join(extra) or "data", **t,
           "mb_per_s": (t["messages"] or 0) * SIZES[size] / t["wall_s"] / 1e6,
           "server_peak_rss_kib": rss, "p50_ms": None, "p99_ms": None,
           "server_cmd": " ".join(scmd)}
    if rep:
        row["report_msgs_per_s"] = rep["msgs_per_s"]  # its own measured window
        h = rep["histograms"]["message"]
        row["p50_ms"], row["p99_ms"] = quantiles(h, (0.5, 0.99))
        row["histogram"] = h
    return row


def postfix_point(gen, sessions, secs, a):
    """smtpbench or smtp-source against a private Postfix smtpd (its own
    config and queue under /tmp, a loopback port, everything to the discard
    transport; never the system's postfix), timed like every other point.
    The instance is warmed first (prespawn: as many smtpd processes as
    sessions, as a running server has), so the point measures Postfix
    taking mail, not the master forking 100 processes one by one."""
    from postfix_private import PrivatePostfix
    port = free_port()
    with PrivatePostfix(port, processes=max(100, sessions * 2 + 50)) as pf:
        pf.prespawn(sessions)
        t = time_generator(gen, port, sessions, "1k", secs, a, pf.cpu_seconds,
                           ("postfix", sessions))
    t.pop("report")
    return {"server": "postfix-smtpd", "generator": gen, "sessions": sessions, "size": "1k",
            "mode": "data", **t}


def limit_point(a, mode, io, sessions, size, secs):
    """One limitbench run: round trips/s (pingpong) or octets/s (stream)."""
    jf = tempfile.NamedTemporaryFile(suffix=".json", delete=False).name
    cmd = [a.limitbench, "--mode", mode, "--io", io, "--sessions", str(sessions), "--size", size,
           "--duration", "%gs" % secs, "--quiet", "--json", jf]
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=secs + 60)
        if r.returncode != 0:
            raise RuntimeError("limitbench: " + r.stderr.decode(errors="replace").strip())
        with open(jf) as f:
            j = json.load(f)
    finally:
        os.unlink(jf)
    rate = j["round_trips_per_s"] if mode == "pingpong" else j["bytes_per_s"]
    return {"mode": mode, "io": io, "sessions": sessions, "size": size, "rate": rate,
            "cpu_us_per_unit": j["cpu_us_per_unit"], "unit": j["cpu_unit"],
            "command": " ".join(cmd[:-2])}


def ceiling_runs(a, sessions, sizes, repeats, secs):
    """The machine's loopback ceiling, in this run: ping-pong at every size
    and streaming, each with epoll and io_uring, at every session count."""
    runs = []
    if not os.path.exists(a.limitbench):
        print("no %s: ceilings left out" % a.limitbench)
        return runs
    for s in sessions:
        for size in sizes:
            for rep in range(repeats):
                for mode in ("pingpong", "stream"):
                    for io in ("epoll", "uring"):
                        try:
                            r = limit_point(a, mode, io, s, size, secs)
                        except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
                            print("ceiling failed: %s %s %d %s: %s" % (mode, io, s, size, e))
                            continue
                        r["repeat"] = rep
                        runs.append(r)
                        print("ceiling %-8s %-5s s=%-5d %-4s %12.0f %s/s" % (
                            mode, io, s, size, r["rate"],
                            "rt" if mode == "pingpong" else "octets"), flush=True)
    return runs


def ceil_med(runs, mode, io, sessions, size):
    v = [r["rate"] for r in runs if (r["mode"], r["io"], r["sessions"], r["size"]) ==
         (mode, io, sessions, size)]
    return statistics.median(v) if v else None


def ceiling_msgs(runs, sessions, size, rts):
    """msgs/s this machine's loopback allows a message of `rts` round trips:
    the better ping-pong rate / rts, at most the streaming rate / size."""
    pp = [v for v in (ceil_med(runs, "pingpong", io, sessions, size) for io in ("epoll", "uring"))
          if v]
    st = [v for v in (ceil_med(runs, "stream", io, sessions, size) for io in ("epoll", "uring"))
          if v]
    if not pp:
        return None
    c = max(pp) / rts
    if st:
        c = min(c, max(st) / SIZES[size])
    return c


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


# one colour per server on every plot
COLOURS = {"smtpsink-uring": "#1f77b4", "smtpsink-epoll": "#2ca02c", "smtp-sink": "#d62728",
           "aiosmtpd": "#9467bd"}


def plots(out, rows, servers, sizes, ceil=()):
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
                                                   r["sessions"], r["mode"]) ==
                               (srv, gen, size, s, "data")]
                        if sel:
                            f.write("%d %f\n" % (s, med(sel, "msgs_per_s")))
                    f.write("\n\n")
                # the ceiling for this generator's round trips per message
                f.write("# ceiling\n")
                for s in sorted({r["sessions"] for r in rows}):
                    c = ceiling_msgs(ceil, s, size, RTS[gen])
                    if c:
                        f.write("%d %f\n" % (s, c))
                f.write("\n\n")
            png = "tput-%s-%s.png" % (gen, size)
            plot = ", ".join("'%s' index %d with linespoints lw 2 lc rgb '%s' title '%s'"
                             % (dat, i, COLOURS.get(srv, "#7f7f7f"), srv)
                             for i, srv in enumerate(servers))
            if ceil:
                plot += (", '%s' index %d with lines lw 2 dt 2 lc rgb 'black' title "
                         "'loopback ceiling (%d round trips/msg)'"
                         % (dat, len(servers), RTS[gen]))
            script = ("set terminal pngcairo size 800,500 font \",10\"; set output '%s'; set logscale x; "
                      "set title 'Throughput vs sessions, %s bodies, generator %s'; "
                      "set xlabel 'concurrent sessions'; set ylabel 'messages per second'; "
                      "set yrange [0:*]; set offsets 0, 0, graph 0.1, 0; set key top left; plot %s"
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
                sel = [r for r in rows if (r["server"], r["generator"], r["size"], r["sessions"],
                                           r["mode"]) == (srv, "smtpbench", sizes[0], s, "data")]
                if sel and med(sel, "p99_ms") is not None:
                    f.write("%d %f %f\n" % (s, med(sel, "p50_ms"), med(sel, "p99_ms")))
            f.write("\n\n")
    # colour = server, dash = percentile (p99 solid, p50 dashed)
    plot = ", ".join("'%s' index %d using 1:3 with linespoints lw 2 dt 1 lc rgb '%s' "
                     "title '%s p99', '%s' index %d using 1:2 with linespoints lw 2 dt 2 "
                     "lc rgb '%s' title '%s p50'"
                     % (dat, i, COLOURS.get(s, "#7f7f7f"), s, dat, i,
                        COLOURS.get(s, "#7f7f7f"), s)
                     for i, s in enumerate(servers))
    script = ("set terminal pngcairo size 800,500 font \",10\"; set output '%s'; set logscale xy; "
              "set title 'Message latency, MAIL to final reply (smtpbench, %s bodies)'; "
              "set xlabel 'concurrent sessions'; "
              "set ylabel 'latency (ms)'; set key top left; plot %s"
              % (os.path.join(out, "latency.png"), sizes[0], plot))
    subprocess.run(["gnuplot", "-e", script], capture_output=True)
    if os.path.exists(os.path.join(out, "latency.png")):
        made.append("latency.png")
    return made


def scan_ns_per_kib(scan_text):
    """The scanner's cost per KiB of plain text (ns) from scanbench's table:
    the AVX2 scanner where this CPU has it (what smtpsink uses), else SSE2."""
    gbps = {}
    for line in (scan_text or "").splitlines():
        f = line.split()
        if len(f) >= 4 and f[0] == "plain" and f[1] == "text":
            try:
                gbps[f[2]] = float(f[3])
            except ValueError:
                pass
    for impl in ("avx2", "sse2", "scalar"):
        if gbps.get(impl):
            return impl, 1024 / gbps[impl]
    return None, None


def ceiling_section(ceil, deep, sessions, sizes, scan_text):
    L = ["", "## The machine's ceiling (this run)", "",
         "limitbench, both ends in one process, as many threads as smtpsink + smtpbench "
         "use: ping-pong = a request of the message size and a 4-octet answer (round trips/s); "
         "stream = continuous sends (MB/s). Medians.", "",
         "| size | sessions | ping-pong epoll rt/s | ping-pong io_uring rt/s | stream epoll MB/s "
         "| stream io_uring MB/s |", "|---|---|---|---|---|---|"]
    for size in sizes:
        for s in sessions:
            v = [ceil_med(ceil, m, io, s, size) for m, io in
                 (("pingpong", "epoll"), ("pingpong", "uring"), ("stream", "epoll"),
                  ("stream", "uring"))]
            if any(v):
                L.append("| %s | %d | %s | %s | %s | %s |" % (
                    size, s, fmt(v[0]), fmt(v[1]), fmt(v[2] / 1e6 if v[2] else None, "%.0f"),
                    fmt(v[3] / 1e6 if v[3] else None, "%.0f")))
    if deep:
        pp = ceil_med(ceil, "pingpong", "uring", 100, "1k")
        L += ["", "## Deep pipelining: parsing, not the round trip (100 sessions, 1 KiB)", "",
              "`smtpbench --depth 16` keeps 16 messages in flight per session (BDAT "
              "transactions back to back; with DATA the next envelope behind each content, "
              "so 2). 'x io_uring ping-pong' = msgs/s ÷ the io_uring ping-pong round trips/s "
              "at 100 sessions, 1 KiB, in this run (%s rt/s)." % fmt(pp), "",
              "| server | smtpbench | msgs/s | × io_uring ping-pong | server µs/msg | "
              "gen µs/msg | p99 ms | err |", "|---|---|---|---|---|---|---|---|"]
        for srv in ("smtpsink-uring", "smtpsink-epoll", "smtp-sink"):
            for mode in sorted({r["mode"] for r in deep}):
                sel = [r for r in deep if (r["server"], r["mode"]) == (srv, mode)]
                if not sel:
                    continue
                rate = med(sel, "msgs_per_s")
                L.append("| %s | %s | %s | %s | %s | %s | %s | %d |" % (
                    srv, mode, fmt(rate), fmt(rate / pp if pp else None, "%.2f"),
                    fmt(med(sel, "server_cpu_us_per_msg"), "%.2f"),
                    fmt(med(sel, "gen_cpu_us_per_msg"), "%.2f"),
                    fmt(med(sel, "p99_ms"), "%.2f"), sum(r["errors"] for r in sel)))
        impl, ns = scan_ns_per_kib(scan_text)
        if ns:
            L += ["", "Beside the server's CPU per message: the scanner alone (scanbench, this "
                  "run, %s, plain text) costs %.0f ns per KiB, i.e. %.3f µs of a 1 KiB "
                  "message's body; the rest of smtpsink's µs/msg is the session (commands, "
                  "replies) and the kernel (receive, send)." % (impl, ns, ns / 1000)]
        if scan_text:
            L += ["", "```", scan_text.rstrip(), "```"]
    return L


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--label", default=None)
    ap.add_argument("--smtpsink", default="build/server/smtpsink")
    ap.add_argument("--smtpbench", default="build/bench/smtpbench")
    ap.add_argument("--scanbench", default="build/bench/scanbench")
    ap.add_argument("--limitbench", default="build/bench/limitbench")
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
    # deep pipelining (--depth): parsing, not the round trip, is what is
    # measured; smtp-sink has no CHUNKING, so DATA there
    deep = []
    depth_modes = [("--bdat",), ("--bdat", "--depth", "16"), ("--depth", "16")]
    for rep in range(repeats):
        for srv in ("smtpsink-uring", "smtpsink-epoll", "smtp-sink"):
            for mode in depth_modes:
                if srv == "smtp-sink" and "--bdat" in mode:
                    continue
                try:
                    r = run_point(srv, "smtpbench", 100, "1k", secs, a, mode)
                except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
                    print("point failed: %s %s: %s" % (srv, " ".join(mode), e))
                    continue
                r["repeat"] = rep
                deep.append(r)
                print("%-15s smtpbench %-22s s=100 1k %9.0f msg/s srv %8s us/msg gen %8s us/msg"
                      % (srv, r["mode"], r["msgs_per_s"], fmt(r["server_cpu_us_per_msg"], "%.1f"),
                         fmt(r["gen_cpu_us_per_msg"], "%.1f")), flush=True)
    # steady state at scale: 1,000 vs 10,000 sessions, each timed by
    # smtpbench's own window after a warm-up (connecting 10,000 sessions
    # and closing them take ~1 s that a 2 s wall-clock point would count)
    scale = []
    if not a.quick:
        for rep in range(repeats):
            for srv in ("smtpsink-uring", "smtpsink-epoll"):
                for s in (1000, 10000):
                    try:
                        r = run_point(srv, "smtpbench", s, "1k", 8, a, ("--warmup", "3s"))
                    except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
                        print("scale point failed: %s %d: %s" % (srv, s, e))
                        continue
                    r["repeat"] = rep
                    r["window_msgs_per_s"] = r["report_msgs_per_s"]
                    scale.append(r)
                    print("scale %-15s s=%-5d %9.0f msg/s (window) srv %s us/msg RSS %.0f MiB"
                          % (srv, s, r["window_msgs_per_s"],
                             fmt(r["server_cpu_us_per_msg"], "%.1f"),
                             r["server_peak_rss_kib"] / 1024), flush=True)
    # a real server: a private Postfix smtpd, both generators
    pfx = []
    if os.path.exists("/usr/sbin/postfix") and os.geteuid() == 0:
        for rep in range(repeats):
            for s in ([10] if a.quick else [10, 100]):
                for gen in ("smtpbench", "smtp-source"):
                    try:
                        r = postfix_point(gen, s, secs, a)
                    except Exception as e:  # noqa: BLE001 - a point, not the run
                        print("postfix point failed: %s %d: %s" % (gen, s, e))
                        continue
                    r["repeat"] = rep
                    pfx.append(r)
                    print("postfix-smtpd   %-11s s=%-5d 1k   %9.0f msg/s srv %8s us/msg gen %8s "
                          "us/msg err %d" % (gen, s, r["msgs_per_s"],
                                             fmt(r["server_cpu_us_per_msg"], "%.1f"),
                                             fmt(r["gen_cpu_us_per_msg"], "%.1f"), r["errors"]),
                          flush=True)
    # the machine's ceiling, measured in this run like everything else
    ceil = ceiling_runs(a, sorted(set(sessions + big)), sizes, repeats, secs)
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
        json.dump({"meta": m, "runs": rows, "deep": deep, "scale": scale, "postfix": pfx,
                   "ceiling": ceil,
                   "open_loop": ol,
                   "idle_rss": extra["idle_rss"]}, f, indent=1)
    keys = ["server", "generator", "mode", "sessions", "size", "repeat", "messages", "wall_s",
            "msgs_per_s", "mb_per_s", "server_cpu_us_per_msg", "gen_cpu_us_per_msg",
            "server_peak_rss_kib", "p50_ms", "p99_ms", "errors"]
    with open(os.path.join(out, "raw.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(keys)
        for r in rows + deep + scale + pfx:
            w.writerow([r.get(k) for k in keys])
    with open(os.path.join(out, "ceiling.csv"), "w", newline="") as f:
        w = csv.writer(f)
        ck = ["mode", "io", "sessions", "size", "repeat", "rate", "cpu_us_per_unit", "unit"]
        w.writerow(ck)
        for r in ceil:
            w.writerow([r.get(k) for k in ck])
    pngs = plots(out, rows, servers, sizes, ceil)
    L = ["# smtpsink / smtpbench side-by-side run: %s" % label, "",
         "| key | value |", "|---|---|"] + ["| %s | %s |" % (k, v) for k, v in m.items()]
    L += ["", "Medians of %d repeat(s), %g s per point. Ratios: msgs/s and server CPU against "
          "Postfix smtp-sink with the same generator; generator CPU against Postfix "
          "smtp-source with the same server. Both generators are timed the same way: wall "
          "clock around the generator process, every message it delivered (start-up and "
          "connecting included for both). Ceiling: the loopback ceiling measured in this "
          "run (below) for the row's round trips per message (smtpbench 2, smtp-source 4); "
          "'of ceiling' = msgs/s ÷ that." % (repeats, secs), "",
          "| size | sessions | server | generator | msgs/s | MB/s | server µs/msg | gen µs/msg | "
          "RSS MiB | p50 ms | p99 ms | err | msgs/s ÷ smtp-sink | srv CPU ÷ smtp-sink | "
          "gen CPU ÷ smtp-source | ceiling msgs/s | of ceiling |", "|" + "---|" * 17]
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
                    cm = ceiling_msgs(ceil, s, size, RTS[gen])
                    L.append("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d | %s | %s | %s "
                             "| %s | %s |" % (
                        size, s, srv, gen, fmt(rate), fmt(med(sel, "mb_per_s"), "%.1f"),
                        fmt(cpu, "%.1f"), fmt(gcpu, "%.1f"),
                        fmt(max(r["server_peak_rss_kib"] for r in sel) / 1024, "%.1f"),
                        fmt(med(sel, "p50_ms"), "%.2f"), fmt(med(sel, "p99_ms"), "%.2f"),
                        sum(r["errors"] for r in sel), fmt(rr, "%.2f"), fmt(cr, "%.2f"),
                        fmt(gr, "%.2f"), fmt(cm), fmt(rate / cm if cm else None, "%.2f")))
    L += ceiling_section(ceil, deep, sorted(set(sessions + big)), sizes, extra.get("scanbench"))
    if scale:
        L += ["", "## Steady state at scale (1 KiB, smtpbench)", "",
              "Timed by smtpbench's own window after --warmup 3s, 8 s each, 1,000 and 10,000 "
              "sessions the same way (connecting and closing 10,000 sessions take about a second "
              "that a 2 s wall-clock point above counts). Server CPU is over the whole run.", "",
              "| server | msgs/s 1,000 | msgs/s 10,000 | 10,000 ÷ 1,000 | server µs/msg 1,000 | "
              "server µs/msg 10,000 | RSS MiB 10,000 | p99 ms 10,000 |",
              "|---|---|---|---|---|---|---|---|"]
        for srv in ("smtpsink-uring", "smtpsink-epoll"):
            k1 = [r for r in scale if (r["server"], r["sessions"]) == (srv, 1000)]
            k10 = [r for r in scale if (r["server"], r["sessions"]) == (srv, 10000)]
            if k1 and k10:
                r1, r10 = med(k1, "window_msgs_per_s"), med(k10, "window_msgs_per_s")
                L.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                    srv, fmt(r1), fmt(r10), fmt(r10 / r1 if r1 else None, "%.2f"),
                    fmt(med(k1, "server_cpu_us_per_msg"), "%.1f"),
                    fmt(med(k10, "server_cpu_us_per_msg"), "%.1f"),
                    fmt(max(r["server_peak_rss_kib"] for r in k10) / 1024, "%.1f"),
                    fmt(med(k10, "p99_ms"), "%.0f")))
    if pfx:
        L += ["", "## A real server: private Postfix smtpd (1 KiB)", "",
              "scripts/postfix_private.py: its own config and queue directories, a loopback "
              "port, every message to the discard transport (queued, synced to disk, then "
              "discarded), warmed with one smtpd per session; CPU = every process of the "
              "instance. Timed like the rows above.", "",
              "| sessions | generator | msgs/s | Postfix µs/msg | gen µs/msg | err | msgs/s ÷ "
              "smtp-source's |", "|---|---|---|---|---|---|---|"]
        for s in sorted({r["sessions"] for r in pfx}):
            ref = [r for r in pfx if (r["sessions"], r["generator"]) == (s, "smtp-source")]
            for gen in ("smtpbench", "smtp-source"):
                sel = [r for r in pfx if (r["sessions"], r["generator"]) == (s, gen)]
                if sel:
                    rate = med(sel, "msgs_per_s")
                    L.append("| %d | %s | %s | %s | %s | %d | %s |" % (
                        s, gen, fmt(rate), fmt(med(sel, "server_cpu_us_per_msg"), "%.0f"),
                        fmt(med(sel, "gen_cpu_us_per_msg"), "%.1f"),
                        sum(r["errors"] for r in sel),
                        fmt(rate / med(ref, "msgs_per_s") if ref else None, "%.2f")))
    L += ["", "## Open loop vs closed loop", "",
          "`%s` against %s: delivered %d." % (ol["command"], ol["sink"], ol["delivered"]), "",
          "| latency | p50 | p90 | p99 | p99.9 |", "|---|---|---|---|---|",
          "| corrected (from intended start) | %s |" % " | ".join(fmt(v, "%.1f ms") for v in ol["corrected_ms"]),
          "| uncorrected (from actual send) | %s |" % " | ".join(fmt(v, "%.1f ms") for v in ol["uncorrected_ms"]),
          "", "## Connection scale", "", "    " + extra["idle_rss"], ""]
    if "scanbench" in extra and not deep:
        L += ["## Scanner", "", "```", extra["scanbench"].rstrip(), "```", ""]
    if pngs:
        L += ["## Plots", ""] + ["![%s](%s)" % (p, p) for p in pngs] + [""]
    L += ["Reproduce: `make bench%s` (raw data in raw.csv / raw.json)." % (" QUICK=1" if a.quick else "")]
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(L) + "\n")
    print("\nwrote %s (%.0f s)" % (out, time.monotonic() - t_start))


if __name__ == "__main__":
    main()
