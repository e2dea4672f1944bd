"""scripts/postfix_private.py: a private Postfix smtpd instance on a
loopback port, the benchmark suite's real-server point.

Real mail through a real Postfix (its own config, queue and log under a
temp dir): every MAIL/RCPT/DATA reply must be 250, every message must
reach the discard transport and leave the queue, and after stop no
process of the instance may remain, the port must be closed and the
directory gone.  Two instances at once must not share anything.  Skips
(exit 77) only when /usr/sbin/postfix is missing.  The whole file is
bounded to 60 s.
"""
import os
import re
import signal
import smtplib
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import sinklib  # noqa: E402
from sinklib import SLOW, free_port, listening  # noqa: E402

SRC = os.environ.get("SINK_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(SRC, "scripts"))
from postfix_private import PostfixError, PrivatePostfix  # noqa: E402

HAVE_POSTFIX = os.path.exists("/usr/sbin/postfix")
BUDGET_S = 60


def send(smtp, i):
    """One transaction on an open smtplib connection; returns the replies
    [(code, text)] of MAIL, RCPT and DATA."""
    return [smtp.mail("a@client.test"), smtp.rcpt("b%d@server.test" % i),
            smtp.data(b"Subject: private postfix %d\r\n\r\nbody %d\r\n" % (i, i))]


def queue_id(data_reply):
    m = re.search(rb"queued as ([0-9A-Za-z]+)", data_reply[1])
    assert m, data_reply
    return m.group(1).decode()


def instance_procs(etc):
    """Processes anywhere on the machine that carry this instance's
    MAIL_CONFIG (independent of PrivatePostfix.pids)."""
    mark = b"MAIL_CONFIG=" + etc.encode()
    out = []
    for n in os.listdir("/proc"):
        if not n.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % n, "rb") as f:
                if mark in f.read().split(b"\0"):
                    out.append(int(n))
        except OSError:
            pass
    return out


def wait_for(pred, timeout):
    deadline = time.monotonic() + timeout * SLOW
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@unittest.skipUnless(HAVE_POSTFIX, "/usr/sbin/postfix not installed (Debian package postfix)")
class PrivatePostfixTest(unittest.TestCase):

    def assert_gone(self, pf):
        self.assertEqual(pf.pids(), [])
        self.assertEqual(instance_procs(pf.etc), [])
        self.assertFalse(listening(pf.port))
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", pf.port), timeout=2).close()
        self.assertFalse(os.path.exists(pf.dir))

    def test_deliver_to_discard_and_stop(self):
        port = free_port()
        with PrivatePostfix(port, processes=50) as pf:
            self.assertTrue(pf.greeting.startswith("220 "), pf.greeting)
            self.assertIn(pf.master_pid, pf.pids())
            cpu0 = pf.cpu_seconds()
            ids = []
            with smtplib.SMTP("127.0.0.1", port, timeout=10 * SLOW) as s:
                self.assertEqual(s.ehlo("client.test")[0], 250)
                for i in range(20):
                    replies = send(s, i)
                    self.assertEqual([c for c, _ in replies], [250, 250, 250], replies)
                    ids.append(queue_id(replies[2]))
            for i in range(20, 25):
                with smtplib.SMTP("127.0.0.1", port, timeout=10 * SLOW) as s:
                    self.assertEqual(s.ehlo("client.test")[0], 250)
                    replies = send(s, i)
                    self.assertEqual([c for c, _ in replies], [250, 250, 250], replies)
                    ids.append(queue_id(replies[2]))
            self.assertEqual(len(set(ids)), 25)
            # every message went to discard and left the queue
            self.assertTrue(pf.wait_queue_empty(10 * SLOW),
                            "%d queued\n%s" % (pf.queued(), pf.postqueue()))
            self.assertIn("Mail queue is empty", pf.postqueue())
            discarded = lambda: {m.group(1) for m in re.finditer(
                r"/discard\[\d+\]: ([0-9A-Za-z]+): to=<b\d+@server.test>.*status=sent",
                pf.log_text())}
            self.assertTrue(wait_for(lambda: discarded() >= set(ids), 10),
                            "not discarded: %s\n%s" % (set(ids) - discarded(), pf.log_tail()))
            self.assertNotRegex(pf.log_text(), r"(warning|error|fatal|panic):")
            # all of the instance's processes are found, and its CPU only grows
            procs = set(pf.pids())
            self.assertTrue(procs >= set(instance_procs(pf.etc)))
            comms = set()
            for pid in procs:
                with open("/proc/%d/comm" % pid) as f:
                    comms.add(f.read().strip())
            self.assertTrue({"master", "smtpd", "cleanup", "qmgr"} <= comms, comms)
            cpu1 = pf.cpu_seconds()
            self.assertGreater(cpu1, cpu0)
        self.assert_gone(pf)

    def test_prespawn_leaves_idle_daemons_and_no_mail(self):
        with PrivatePostfix(free_port(), processes=20) as pf:
            pf.prespawn(8)
            comms = []
            for pid in pf.pids():
                with open("/proc/%d/comm" % pid) as f:
                    comms.append(f.read().strip())
            self.assertGreaterEqual(comms.count("smtpd"), 8, comms)
            self.assertGreaterEqual(comms.count("cleanup"), 8, comms)
            self.assertTrue(pf.wait_queue_empty(10 * SLOW))
            self.assertNotIn("status=sent", pf.log_text())
            # the idle daemons take the next sessions: no new smtpd appears
            before = set(pf.pids())
            with smtplib.SMTP("127.0.0.1", pf.port, timeout=10 * SLOW) as s:
                s.ehlo("client.test")
                self.assertEqual([c for c, _ in send(s, 0)], [250, 250, 250])
            new = set(pf.pids()) - before
            names = set()
            for pid in new:
                try:
                    with open("/proc/%d/comm" % pid) as f:
                        names.add(f.read().strip())
                except OSError:
                    pass
            self.assertNotIn("smtpd", names)
        self.assert_gone(pf)

    def test_two_instances_at_once(self):
        a_port = free_port()
        with PrivatePostfix(a_port, processes=20) as a:
            b_port = free_port()
            while b_port == a_port:
                b_port = free_port()
            with PrivatePostfix(b_port, processes=20) as b:
                self.assertNotEqual(a.dir, b.dir)
                self.assertNotEqual(a.syslog_name, b.syslog_name)
                self.assertNotEqual(a.master_pid, b.master_pid)
                self.assertFalse(set(a.pids()) & set(b.pids()))
                qid = {}
                for pf in (a, b):
                    with smtplib.SMTP("127.0.0.1", pf.port, timeout=10 * SLOW) as s:
                        s.ehlo("client.test")
                        replies = send(s, 0)
                        self.assertEqual([c for c, _ in replies], [250, 250, 250], replies)
                        qid[pf.port] = queue_id(replies[2])
                for pf, other in ((a, b), (b, a)):
                    self.assertTrue(pf.wait_queue_empty(10 * SLOW))
                    self.assertTrue(wait_for(lambda: qid[pf.port] in pf.log_text(), 10))
                    self.assertNotIn(qid[pf.port], other.log_text())
                    self.assertIn(pf.syslog_name + "/smtpd[", pf.log_text())
                    self.assertNotIn(other.syslog_name, pf.log_text())
            self.assert_gone(b)
            # stopping b left a alone
            self.assertTrue(listening(a_port))
            with smtplib.SMTP("127.0.0.1", a_port, timeout=10 * SLOW) as s:
                s.ehlo("client.test")
                self.assertEqual([c for c, _ in send(s, 1)], [250, 250, 250])
        self.assert_gone(a)

    def test_busy_port_fails_with_the_log(self):
        held = socket.socket()
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        try:
            pf = PrivatePostfix(port, processes=5, start_timeout=20)
            with self.assertRaises(PostfixError) as cm:
                pf.start()
            self.assertIn("Address already in use", str(cm.exception))
            self.assertEqual(pf.pids(), [])
            self.assertEqual(instance_procs(pf.etc), [])
            self.assertFalse(os.path.exists(pf.dir))
        finally:
            held.close()


def on_budget(*_):
    raise TimeoutError("test_postfix_private exceeded %d s" % BUDGET_S)


if __name__ == "__main__":
    # an exception, not a kill: the with blocks still stop the instances
    signal.signal(signal.SIGALRM, on_budget)
    signal.alarm(BUDGET_S)
    sinklib.main()
