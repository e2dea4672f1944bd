#!/usr/bin/python3
"""bench_server.py - smtpsink vs Postfix smtp-sink, same generator, same run.

Generator: Postfix smtp-source (reused sessions, -d), which waits for every
reply.  For each point (server x sessions x size) and repeat, a fresh server
is started, its CPU time (all threads: utime+stime from /proc/PID/stat) is
read before and after the smtp-source run, and msgs/s = messages / wall time.
Reported: medians over repeats, and ratios smtpsink / smtp-sink.

Usage: bench_server.py --out DIR [--quick] [--repeats N] [--smtpsink PATH]
Never starts the postfix daemon; only its smtp-sink/smtp-source tools.
"""
import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14, 15)


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not listen on %d" % port)


def start_server(kind, port, sessions, smtpsink):
    if kind.startswith("smtpsink"):
        io = kind.split("-")[1]
        cmd = [smtpsink, "--listen", "127.0.0.1:%d" % port, "--io", io, "--quiet",
               "--max-size", "0"]
    else:
        cmd = ["/usr/sbin/smtp-sink", "-u", "nobody", "-m", str(sessions * 2 + 100),
               "127.0.0.1:%d" % port, str(max(1024, sessions * 2))]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_port(port)
    # the probe connection counts nothing that matters; let it settle
    time.sleep(0.1)
    return p, cmd


def run_point(kind, sessions, size, msgs, smtpsink):
    port = free_port()
    srv, scmd = start_server(kind, port, sessions, smtpsink)
    try:
        gcmd = ["/usr/sbin/smtp-source", "-d", "-s", str(sessions), "-m", str(msgs),
                "-l", str(size), "-f", "bench@client.test", "-t", "sink@server.test",
                "127.0.0.1:%d" % port]
        c0 = cpu_seconds(srv.pid)
        t0 = time.monotonic()
        g = subprocess.run(gcmd, capture_output=True, timeout=600)
        wall = time.monotonic() - t0
        c1 = cpu_seconds(srv.pid)
        rss = rss_kib(srv.pid)
        if g.returncode != 0:
            raise RuntimeError("smtp-source failed: %s" % g.stderr.decode()[-500:])
    finally:
        srv.terminate()
        try:
            srv.wait(timeout=15)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()
    return {"server": kind, "sessions": sessions, "size": size, "messages": msgs,
            "wall_s": wall, "msgs_per_s": msgs / wall, "server_cpu_s": c1 - c0,
            "server_cpu_us_per_msg": (c1 - c0) * 1e6 / msgs, "server_peak_rss_kib": rss,
            "server_cmd": " ".join(scmd), "generator_cmd": " ".join(gcmd)}


def results_dir(label):
    """results/DATE-label, or -2, -3 ...: a run never overwrites another."""
    base = os.path.join("results", time.strftime("%Y-%m-%d") + "-" + label)
    out, n = base, 2
    while os.path.exists(out):
        out = "%s-%d" % (base, n)
        n += 1
    return out


def meta(smtpsink):
    def sh(cmd):
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "git_rev": sh("git rev-parse HEAD"),
            "git_dirty": bool(sh("git status --porcelain --untracked-files=no")),
            "kernel": platform.release(), "cpu": cpu, "cores": os.cpu_count(),
            "smtpsink_version": sh(smtpsink + " --version"),
            "postfix": sh("dpkg-query -W -f='${Version}' postfix"),
            "liburing": sh("dpkg-query -W -f='${Version}' liburing-dev"),
            "io_uring_disabled": sh("cat /proc/sys/kernel/io_uring_disabled"),
            "command": " ".join(sys.argv)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--smtpsink", default="build/server/smtpsink")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--servers", default="smtp-sink,smtpsink-uring,smtpsink-epoll")
    ap.add_argument("--sessions", default="100,1000")
    ap.add_argument("--sizes", default="1024,102400")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    servers = a.servers.split(",")
    rows = []
    for size in [int(x) for x in a.sizes.split(",")]:
        for sessions in [int(x) for x in a.sessions.split(",")]:
            msgs = (20000 if size <= 4096 else 4000) // (4 if a.quick else 1)
            msgs = max(msgs, sessions * 4)
            for rep in range(a.repeats):
                # interleave servers inside each repeat so drift hits all alike
                for kind in servers:
                    r = run_point(kind, sessions, size, msgs, a.smtpsink)
                    r["repeat"] = rep
                    rows.append(r)
                    print("%-15s s=%-5d size=%-6d rep=%d  %8.0f msg/s  %7.2f us/msg cpu" %
                          (kind, sessions, size, rep, r["msgs_per_s"], r["server_cpu_us_per_msg"]),
                          flush=True)
    m = meta(a.smtpsink)
    with open(os.path.join(a.out, "raw.json"), "w") as f:
        json.dump({"meta": m, "runs": rows}, f, indent=1)
    with open(os.path.join(a.out, "raw.csv"), "w") as f:
        keys = ["server", "sessions", "size", "repeat", "messages", "wall_s", "msgs_per_s",
                "server_cpu_s", "server_cpu_us_per_msg", "server_peak_rss_kib"]
        f.write(",".join(keys) + "\n")
        for r in rows:
            f.write(",".join(str(r[k]) for k in keys) + "\n")
    # summary with medians and ratios against smtp-sink
    lines = ["# smtpsink vs Postfix smtp-sink (generator: Postfix smtp-source -d)", "",
             "| key | value |", "|---|---|"]
    lines += ["| %s | %s |" % (k, v) for k, v in m.items()]
    lines += ["", "Medians of %d repeats. CPU = server process, all threads (/proc/PID/stat)." %
              a.repeats, "",
              "| sessions | size | server | msgs/s | CPU µs/msg | peak RSS MiB | msgs/s ÷ smtp-sink | CPU ÷ smtp-sink |",
              "|---|---|---|---|---|---|---|---|"]
    for size in sorted({r["size"] for r in rows}):
        for sessions in sorted({r["sessions"] for r in rows}):
            med = {}
            for kind in servers:
                sel = [r for r in rows if r["server"] == kind and r["size"] == size
                       and r["sessions"] == sessions]
                if sel:
                    med[kind] = (statistics.median(x["msgs_per_s"] for x in sel),
                                 statistics.median(x["server_cpu_us_per_msg"] for x in sel),
                                 max(x["server_peak_rss_kib"] for x in sel) / 1024)
            base = med.get("smtp-sink")
            for kind, (rate, cpu, rss) in med.items():
                rr = "%.2f" % (rate / base[0]) if base else "-"
                cr = "%.3f" % (cpu / base[1]) if base and base[1] else "-"
                lines.append("| %d | %d | %s | %.0f | %.2f | %.1f | %s | %s |" %
                             (sessions, size, kind, rate, cpu, rss, rr, cr))
    lines += ["", "Commands (one point):", ""]
    seen = set()
    for r in rows:
        for k in ("server_cmd", "generator_cmd"):
            if r[k] not in seen and r["repeat"] == 0:
                seen.add(r[k])
                lines.append("    " + r[k])
    with open(os.path.join(a.out, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
