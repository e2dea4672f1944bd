#!/usr/bin/python3
"""postfix_private.py - a private Postfix smtpd instance on a loopback port,
for the benchmark suite's "real server" point and for tests.

    with PrivatePostfix(port) as pf:          # started; 220 seen on the port
        pf.prespawn(100)                      # optional: warm daemons (see there)
        ...generator against 127.0.0.1:port...
        c = pf.cpu_seconds()                  # CPU of the whole instance
    # stopped: no process of the instance is left, its directory is gone

The instance lives entirely in its own directory (a fresh temp dir):
etc/ (main.cf, master.cf = config_directory), spool/ (queue_directory),
data/ (data_directory) and maillog (maillog_file, written by postlogd).
It listens on 127.0.0.1:PORT only, accepts mail for any domain from
127.0.0.0/8 and hands every message to the discard(8) transport.  The
system's Postfix (/etc/postfix/main.cf, /var/spool/postfix, the default
master) is never started, stopped, read for its queue or written.

How it is started, and why that way
-----------------------------------
`postfix -c DIR start`, run as root.  postfix(1) accepts a configuration
directory that the default main.cf does not list in
alternate_config_directories when the caller is root (the check exists
for unprivileged callers only), so nothing in /etc/postfix is needed.
`start` runs postfix-script, which creates the queue subdirectories with
the owners and modes Postfix expects (post-install create-missing: only
'create' directories, and all of those are under queue_directory and
data_directory), checks the queue (postsuper), and then runs `master -w`,
which exits non-zero when the master fails to initialise (a busy port,
a config error) - so a failed start is reported by the start command, not
discovered by a timeout.  The master then runs as a daemon in its own
session; stop is `postfix -c DIR stop` (SIGTERM to the master, which
passes it on to its process group), then a bounded wait until no
process of the instance is left, then SIGKILL for any that are.

Which processes belong to the instance: every Postfix daemon keeps
MAIL_CONFIG=<our etc dir> in its environment (import_environment), so
/proc/PID/environ identifies them even after they lost their parent;
descendants of the master (from /proc/PID/stat) are included as well.

CPU accounting (cpu_seconds)
----------------------------
For every live process of the instance: its own CPU time plus the
cutime+cstime of the children it has reaped.  Postfix daemons are
short-lived by design (max_use, max_idle), and a process that exits
between two samples would lose its CPU from a plain sum over live
processes (and, if it was alive at the first sample, even make the
difference too small).  The kernel adds a child's CPU to its parent's
cutime/cstime when the parent reaps it, and the master reaps every
daemon, so this total only grows and covers daemons that came and went.
A live process's own time is read from /proc/PID/schedstat (nanoseconds)
rather than utime+stime from /proc/PID/stat, which are truncated to whole
clock ticks per process: with hundreds of smtpd processes that each use a
few ms, the truncation would lose most of their CPU (stat is the fallback
where schedstat is missing).  Remaining limitations: a daemon that has
exited but is not yet reaped at the instant of a sample can be counted
twice or not at all (a few ms, rare); schedstat is per thread, which is
exact for Postfix's single-threaded daemons; cutime is in whole ticks
(10 ms at HZ=100, for the sum, not per process); CPU used before the
master existed (postfix-script, post-install) is not counted.  max_use
and max_idle are set high so the smtpd and cleanup processes live
through a run anyway.

Settings that differ from a stock Postfix, on purpose: no anvil limits
(smtpd_client_*_limit = 0, so 1000 sessions from one client are not
throttled), in_flow_delay = 0 (no arrival-rate pauses in cleanup: the
point is the receiving side), no DNS or reverse lookups, no chroot,
default_process_limit and the smtpd process limit = `processes`.

Needs root and Debian's postfix package.  Stdlib only; /usr/bin/python3.

    postfix_private.py --self-test [--port N] [--keep]
    postfix_private.py --serve PORT [--processes N]   (until SIGINT/SIGTERM)
"""
import argparse
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_server import free_port  # noqa: E402  (one helper for every script)

POSTFIX = "/usr/sbin/postfix"
POSTQUEUE = "/usr/sbin/postqueue"
TICK = os.sysconf("SC_CLK_TCK")
# queue directories that hold messages (bounce/defer/trace hold per-message
# logs that are removed with the message)
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold", "corrupt")

MAIN_CF = """\
# Written by scripts/postfix_private.py: a private, throwaway instance.
# Nothing here refers to /etc/postfix or /var/spool/postfix.
compatibility_level = 3.6
config_directory = {etc}
queue_directory = {spool}
data_directory = {data}
syslog_name = {syslog_name}
maillog_file = {maillog}
maillog_file_prefixes = {dir}
myhostname = pfprivate.test
smtpd_banner = $myhostname ESMTP private Postfix
biff = no
append_dot_mydomain = no

# loopback only, accept anything from loopback, deliver nothing
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
relay_domains = test, .test
relay_recipient_maps =
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
default_transport = discard
relay_transport = discard
local_transport = discard:

# no DNS: no reverse lookup of clients, no MX lookups (nothing is sent anyway)
smtpd_peername_lookup = no
disable_dns_lookups = yes
smtp_dns_support_level = disabled
smtp_host_lookup = native
lmtp_host_lookup = native

# a load generator with {processes} sessions from one address is not throttled:
# no anvil limits (smtpd then does not talk to anvil at all), no flow-control
# pauses, enough processes, and daemons that live through a run
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
smtpd_client_recipient_rate_limit = 0
smtpd_client_new_tls_session_rate_limit = 0
smtpd_client_auth_rate_limit = 0
smtpd_client_event_limit_exceptions = 127.0.0.0/8
in_flow_delay = 0
default_process_limit = {processes}
max_use = 10000000
max_idle = 3600s
"""

# service type private unpriv chroot wakeup maxproc command
MASTER_CF = """\
# Written by scripts/postfix_private.py: only what a receive-and-discard
# instance needs.  No chroot (no copies of /etc files to maintain).
127.0.0.1:{port} inet n - n - {processes} smtpd
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
showq     unix  n - n - - showq
discard   unix  - - n - - discard
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


class PostfixError(RuntimeError):
    pass


def _stat(pid):
    """(ppid, utime+stime, cutime+cstime) in ticks, or None if gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def _own_cpu(pid):
    """CPU seconds of a live process: /proc/PID/schedstat (ns, not truncated
    to ticks), else utime+stime from /proc/PID/stat; None if gone."""
    try:
        with open("/proc/%d/schedstat" % pid) as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        st = _stat(pid)
        return st[1] / TICK if st else None


def _all_pids():
    return [int(n) for n in os.listdir("/proc") if n.isdigit()]


class PrivatePostfix:
    """A private Postfix on 127.0.0.1:port.  Context manager: started on
    entry, stopped (and its directory removed unless keep) on exit.

    workdir: parent directory for the instance's temp dir (default: the
    system temp dir).  processes: smtpd process limit, also
    default_process_limit (cleanup etc.); set it above the number of
    concurrent sessions the generator opens."""

    def __init__(self, port, workdir=None, processes=1100, keep=False, start_timeout=30,
                 stop_timeout=15):
        port = int(port)
        if not 0 < port < 65536:
            raise ValueError("port %r" % port)
        self.port = port
        self.processes = max(1, int(processes))
        self.keep = keep
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.workdir = workdir
        self.dir = None
        self.master_pid = None
        self.greeting = None
        self.start_seconds = None
        self.running = False
        self.stopped = False

    # -- paths ---------------------------------------------------------
    @property
    def etc(self):
        return os.path.join(self.dir, "etc")

    @property
    def spool(self):
        return os.path.join(self.dir, "spool")

    @property
    def maillog(self):
        return os.path.join(self.dir, "maillog")

    # -- life cycle ----------------------------------------------------
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def _prepare(self):
        if os.geteuid() != 0:
            raise PostfixError("a private Postfix instance needs root (postfix start)")
        if not os.path.exists(POSTFIX):
            raise PostfixError("%s not found (Debian package postfix)" % POSTFIX)
        d = tempfile.mkdtemp(prefix="pfprivate.", dir=self.workdir)
        self.dir = os.path.realpath(d)
        # Postfix daemons run as the postfix user: every ancestor must be
        # searchable by others, and the paths must not need quoting in main.cf
        if not re.fullmatch(r"[A-Za-z0-9_./-]+", self.dir):
            raise PostfixError("unusable directory name for Postfix: %r" % self.dir)
        p = self.dir
        while p != "/":
            p = os.path.dirname(p)
            if not os.stat(p).st_mode & 0o001:
                raise PostfixError("%s is not searchable by the postfix user: choose another "
                                   "workdir" % p)
        os.chmod(self.dir, 0o755)
        for sub in ("etc", "spool"):
            os.mkdir(os.path.join(self.dir, sub), 0o755)
        name = "pfprivate-" + os.path.basename(self.dir).split(".", 1)[1]
        self.syslog_name = re.sub(r"[^A-Za-z0-9_-]", "_", name)
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            f.write(MAIN_CF.format(etc=self.etc, spool=self.spool,
                                   data=os.path.join(self.dir, "data"),
                                   syslog_name=self.syslog_name, maillog=self.maillog,
                                   dir=self.dir, processes=self.processes))
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(port=self.port, processes=self.processes))
        # Postfix re-reads a main.cf modified in the last second or so,
        # pausing 300 ms each time, until it "settles" (dict_load_file):
        # about 2 s for every command of a fresh instance.  Backdate them.
        old = time.time() - 60
        for name in ("main.cf", "master.cf"):
            os.utime(os.path.join(self.etc, name), (old, old))

    def _postfix(self, cmd, timeout):
        return subprocess.run([POSTFIX, "-c", self.etc, cmd], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)

    def start(self):
        t0 = time.monotonic()
        try:
            self._prepare()
            try:
                r = self._postfix("start", self.start_timeout)
            except subprocess.TimeoutExpired:
                raise PostfixError("postfix start did not finish in %ss\n%s"
                                   % (self.start_timeout, self.log_tail()))
            self.master_pid = self._read_master_pid()
            if r.returncode != 0 or self.master_pid is None:
                out = (r.stdout + r.stderr).strip()
                raise PostfixError("postfix -c %s start failed (exit %d)%s\n--- maillog tail:\n%s"
                                   % (self.etc, r.returncode, ": " + out if out else "",
                                      self.log_tail()))
            self.running = True
            self.greeting = self._wait_greeting(t0 + self.start_timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def _read_master_pid(self):
        try:
            with open(os.path.join(self.spool, "pid", "master.pid")) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _wait_greeting(self, deadline):
        last = None
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                    data = b""
                    while b"\r\n" not in data:
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    line = data.split(b"\r\n", 1)[0].decode(errors="replace")
                    if line.startswith("220"):
                        s.sendall(b"QUIT\r\n")
                        return line
                    last = "unexpected greeting %r" % line
            except OSError as e:
                last = str(e)
            if time.monotonic() > deadline:
                raise PostfixError("no 220 greeting on 127.0.0.1:%d (%s)\n--- maillog tail:\n%s"
                                   % (self.port, last, self.log_tail()))
            if self.master_pid and _stat(self.master_pid) is None:
                raise PostfixError("the master (pid %d) died\n--- maillog tail:\n%s"
                                   % (self.master_pid, self.log_tail()))
            time.sleep(0.05)

    def stop(self):
        """Stop the instance; wait until none of its processes is left
        (SIGKILL after stop_timeout); remove its directory unless keep."""
        if self.dir is None or self.stopped:
            return
        try:
            if self.master_pid and _stat(self.master_pid) is not None:
                try:
                    self._postfix("stop", self.stop_timeout)
                except subprocess.TimeoutExpired:
                    pass
            left = self._wait_gone(time.monotonic() + self.stop_timeout, signal.SIGTERM)
            if left:
                for pid in left:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
                left = self._wait_gone(time.monotonic() + 5, None)
                if left:
                    raise PostfixError("instance processes survived SIGKILL: %s" % left)
        finally:
            self.running = False
            self.stopped = True
            if not self.keep:
                shutil.rmtree(self.dir, ignore_errors=True)

    def _wait_gone(self, deadline, sig):
        """Wait for all instance processes to go; one nudge with sig halfway
        (a master that missed `postfix stop`).  Returns the survivors."""
        nudged = False
        while True:
            left = self.pids()
            if not left or time.monotonic() > deadline:
                return left
            if sig and not nudged and time.monotonic() > deadline - self.stop_timeout / 2:
                nudged = True
                for pid in left:
                    try:
                        os.kill(pid, sig)
                    except OSError:
                        pass
            time.sleep(0.05)

    # -- inspection ----------------------------------------------------
    def pids(self):
        """Live processes of the instance: the master, its descendants, and
        any process whose environment names this instance's MAIL_CONFIG.
        Zombies (exited, not yet reaped) are excluded."""
        mark = b"MAIL_CONFIG=" + self.etc.encode()
        parents, out = {}, set()
        for pid in _all_pids():
            try:
                with open("/proc/%d/stat" % pid) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[0] == "Z":
                continue
            parents[pid] = int(fields[1])
            try:
                with open("/proc/%d/environ" % pid, "rb") as f:
                    if mark in f.read().split(b"\0"):
                        out.add(pid)
            except OSError:
                pass
        if self.master_pid in parents:
            out.add(self.master_pid)
        grew = True
        while grew:  # descendants of anything already in the set
            grew = False
            for pid, ppid in parents.items():
                if ppid in out and pid not in out:
                    out.add(pid)
                    grew = True
        return sorted(out)

    def cpu_seconds(self):
        """CPU seconds (user+system) used by the instance so far: live
        processes plus what their reaped children used (see the module doc
        for why this survives daemons exiting, and its limits)."""
        total = 0.0
        for pid in self.pids():
            st = _stat(pid)
            own = _own_cpu(pid)
            if st and own is not None:
                total += own + st[2] / TICK
        return total

    def queued(self):
        """Number of messages in the instance's queue (files in its queue dirs)."""
        n = 0
        for q in QUEUES:
            for _root, _dirs, files in os.walk(os.path.join(self.spool, q)):
                n += len(files)
        return n

    def prespawn(self, n, timeout=120):
        """Have n smtpd and n cleanup processes running and idle: hold n
        sessions open at once through MAIL and RCPT (smtpd opens its
        cleanup stream at the first accepted RCPT), then RSET and QUIT.

        Why: the master spawns a daemon only when none is idle and the
        listener is readable, one at a time, each counted as available
        until it has accepted a connection - so a cold instance ramps up
        serially, at one fork+exec+init per new session (here ~30 ms:
        100 sessions waited up to 3 s for their greeting).  Daemons stay
        (max_use, max_idle), so after this the generator meets warm
        processes, as on a server that has been under load.  Returns the
        seconds it took."""
        import selectors
        t0 = time.monotonic()
        deadline = t0 + timeout
        steps = [None, b"EHLO prespawn.test\r\n", b"MAIL FROM:<prespawn@client.test>\r\n",
                 b"RCPT TO:<prespawn@server.test>\r\n"]
        socks = []
        try:
            for _ in range(n):
                s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
                s.setblocking(False)
                socks.append(s)
            for cmd in steps:
                if cmd:
                    for s in socks:
                        s.sendall(cmd)
                sel = selectors.DefaultSelector()
                buf = {}
                for s in socks:
                    sel.register(s, selectors.EVENT_READ)
                    buf[s] = b""
                waiting = set(socks)
                while waiting:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise PostfixError("prespawn: %d of %d sessions got no reply to %r in %ss"
                                           % (len(waiting), n, cmd, timeout))
                    for key, _ in sel.select(min(left, 1)):
                        s = key.fileobj
                        chunk = s.recv(65536)
                        if not chunk:
                            raise PostfixError("prespawn: connection closed: %r" % buf[s][-200:])
                        buf[s] += chunk
                        lines = buf[s].split(b"\r\n")
                        if len(lines) >= 2 and lines[-2][3:4] == b" ":
                            if not lines[-2][:1] in (b"2",):
                                raise PostfixError("prespawn: %r got %r" % (cmd, lines[-2]))
                            waiting.discard(s)
                            sel.unregister(s)
                sel.close()
            for s in socks:
                s.setblocking(True)
                s.sendall(b"RSET\r\nQUIT\r\n")
        finally:
            for s in socks:
                s.close()
        return time.monotonic() - t0

    def wait_queue_empty(self, timeout=10):
        """True once the queue is empty (bounded wait)."""
        deadline = time.monotonic() + timeout
        while self.queued():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def postqueue(self):
        """`postqueue -c DIR -p` output (via this instance's showq)."""
        r = subprocess.run([POSTQUEUE, "-c", self.etc, "-p"], capture_output=True, text=True,
                           timeout=15)
        return (r.stdout + r.stderr).strip()

    def log_text(self):
        try:
            with open(self.maillog, errors="replace") as f:
                return f.read()
        except (OSError, TypeError):
            return ""

    def log_tail(self, n=30):
        return "\n".join(self.log_text().splitlines()[-n:]) or "(no maillog)"


def self_test(port, keep):
    t0 = time.monotonic()
    pf = PrivatePostfix(port, keep=keep, processes=50)
    with pf:
        print("started %s on 127.0.0.1:%d in %.2f s (master pid %d)"
              % (pf.dir, port, pf.start_seconds, pf.master_pid))
        print("greeting: %s" % pf.greeting)
        s = smtplib.SMTP("127.0.0.1", port, timeout=10)
        s.ehlo("client.test")
        for i in range(3):
            codes = [s.mail("a@client.test")[0], s.rcpt("b%d@server.test" % i)[0],
                     s.data(b"Subject: self-test %d\r\n\r\nbody\r\n" % i)[0]]
            print("message %d: MAIL/RCPT/DATA %s" % (i + 1, codes))
            if codes != [250, 250, 250]:
                raise PostfixError("expected 250s, got %s" % codes)
        s.quit()
        if not pf.wait_queue_empty(10):
            raise PostfixError("%d message(s) still queued:\n%s" % (pf.queued(), pf.postqueue()))
        print("queue: %s" % pf.postqueue().splitlines()[-1])
        print("processes: %d, cpu %.2f s" % (len(pf.pids()), pf.cpu_seconds()))
        t1 = time.monotonic()
    left = pf.pids()
    print("stopped in %.2f s; processes left: %s; port listening: %s; dir %s"
          % (time.monotonic() - t1, left or "none", _listening(port),
             "kept" if keep else ("removed" if not os.path.exists(pf.dir) else "STILL THERE")))
    if left or _listening(port):
        raise PostfixError("instance not fully stopped")
    print("self-test ok (%.2f s)" % (time.monotonic() - t0))


def _listening(port):
    with open("/proc/net/tcp") as f:
        return any(ln.split()[3] == "0A" and ln.split()[1] == "0100007F:%04X" % port
                   for ln in f.readlines()[1:])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--self-test", action="store_true")
    g.add_argument("--serve", type=int, metavar="PORT",
                   help="run an instance on PORT until SIGINT/SIGTERM")
    ap.add_argument("--port", type=int, default=0, help="self-test port (default: a free one)")
    ap.add_argument("--processes", type=int, default=1100)
    ap.add_argument("--keep", action="store_true", help="keep the instance directory")
    a = ap.parse_args()
    if a.self_test:
        self_test(a.port or free_port(), a.keep)
        return
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    with PrivatePostfix(a.serve, processes=a.processes, keep=a.keep) as pf:
        print("private Postfix on 127.0.0.1:%d, dir %s, master pid %d (Ctrl-C stops)"
              % (a.serve, pf.dir, pf.master_pid), flush=True)
        try:
            while not stop:
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
    print("stopped")


if __name__ == "__main__":
    try:
        main()
    except PostfixError as e:
        sys.exit("postfix_private: %s" % e)
