"""smtpbench --depth N (issue 15): many messages in flight per session,
checked from the other side of the wire.

Deep pipelining is only worth its numbers if nothing is lost or counted
twice: smtpsink --verify counts every stamped message it accepted, and its
counters say whether the client broke RFC 2920 (a command after DATA before
the 354).  So every test compares smtpbench's report with the sink's:
accepted == delivered == verified, no duplicates, no pipelining violation,
and with fault rules, failures by class == what the sink injected.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import sinklib  # noqa: E402
from sinklib import SLOW, Sink, backends  # noqa: E402

SMTPBENCH = os.environ.get("SMTPBENCH", "")
BACKENDS = backends()


def bench(port, io, *args, timeout=60):
    """Run smtpbench; returns (exit status, JSON report, stderr)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as j:
        r = subprocess.run([SMTPBENCH, "--target", "127.0.0.1:%d" % port, "--quiet",
                            "--io", io, "--timeout", "10s", "--json", j.name] + list(args),
                           capture_output=True, timeout=timeout * SLOW)
        err = r.stderr.decode(errors="replace")
        if any(m in err for m in sinklib.SANITIZER_MARKS):
            raise AssertionError("sanitizer report:\n" + err)
        with open(j.name) as f:
            return r.returncode, json.load(f), err


def injected(sink, prefix):
    rules = [f for f in sink.summary["faults"] if f["rule"].startswith(prefix)]
    assert len(rules) == 1, sink.summary["faults"]
    return rules[0]["injected"]


class Depth(unittest.TestCase):
    def setUp(self):
        if not SMTPBENCH:
            self.skipTest("SMTPBENCH not set")

    def agree(self, s, rep, n):
        """The sink took exactly the n messages smtpbench says it delivered."""
        m = rep["messages"]
        self.assertEqual(m["attempted"], m["delivered"] + m["partial"] + m["failed"], m)
        self.assertEqual(m["delivered"], n, (m, rep["first_errors"]))
        c = s.counters()
        self.assertEqual(c["messages"], n)
        self.assertEqual(s.summary["verify"]["ok"], n, s.summary["verify"])
        self.assertEqual(s.summary["verify"]["duplicate"], 0)
        self.assertEqual(s.summary["verify"]["corrupt"], 0)
        self.assertEqual(c["pipelining_violations"], 0)

    def test_bdat_depth_16_every_message_once(self):
        for be in BACKENDS:
            with self.subTest(backend=be):
                with Sink(["--verify"], backend=be) as s:
                    rc, rep, err = bench(s.port, be, "--bdat", "--depth", "16", "--sessions",
                                         "4", "--messages", "3000", "--size", "1k,100k:1")
                    s.stop()
                self.assertEqual(rc, 0, err)
                self.assertEqual(rep["options"]["depth"], 16)
                self.agree(s, rep, 3000)
                # one BDAT LAST per message, no RSET: nothing failed
                self.assertEqual(rep["replies"]["bdat"]["ok"], 3000)
                self.assertEqual(rep["replies"]["rset"]["ok"], 0)
                # deep: 3000 messages over 4 connections, 16 in flight on
                # each, fewer round trips than messages
                self.assertEqual(rep["connections"]["established"], 4)
                self.assertLess(rep["histograms"]["command"]["count"], 3000)

    def test_data_depth_sends_the_next_envelope_behind_the_content(self):
        for be in BACKENDS:
            with self.subTest(backend=be):
                with Sink(["--verify"], backend=be) as s:
                    rc, rep, err = bench(s.port, be, "--depth", "8", "--sessions", "3",
                                         "--messages", "1500", "--rcpts", "2")
                    s.stop()
                self.assertEqual(rc, 0, err)
                self.agree(s, rep, 1500)
                self.assertEqual(rep["replies"]["end"]["ok"], 1500)

    def test_depth_with_reconnects(self):
        with Sink(["--verify"]) as s:
            rc, rep, err = bench(s.port, "epoll", "--bdat", "--depth", "5", "--sessions", "3",
                                 "--messages", "1000", "--msgs-per-session", "7")
            s.stop()
        self.assertEqual(rc, 0, err)
        self.agree(s, rep, 1000)
        # 7 per connection, the last one of each thread's share may be short
        self.assertGreaterEqual(rep["connections"]["established"], 1000 // 7)

    def test_faults_under_depth_are_counted_as_the_sink_injected_them(self):
        """Refusals in the middle of a deep pipeline: a MAIL refused (the
        RCPT and BDAT behind it get 503), every RCPT refused (the server's
        transaction stays open: the next group gets 503 nested MAIL and goes
        into it), BDAT LAST refused.  Whatever the sink accepted, smtpbench
        counts as delivered; every 5xx is the rule's."""
        rules = ["--fault", "rcpt reply='550 5.1.1 No such user' every=7",
                 "--fault", "eod reply='451 4.3.0 Try later' every=11",
                 "--fault", "mail reply='452 4.3.1 Full' every=13"]
        for be in BACKENDS:
            with self.subTest(backend=be):
                with Sink(["--verify"] + rules, backend=be) as s:
                    rc, rep, err = bench(s.port, be, "--bdat", "--depth", "16", "--sessions",
                                         "4", "--messages", "2000")
                    s.stop()
                self.assertEqual(rc, 1, err)
                m = rep["messages"]
                self.agree(s, rep, m["delivered"])
                self.assertGreater(m["delivered"], 1000)
                self.assertEqual(m["failed_by"]["5xx"], injected(s, "rcpt"))
                # 4xx: the rules', plus 421 when the sink's error limit
                # closes a session (and the messages lost behind it)
                self.assertGreaterEqual(m["failed_by"]["4xx"],
                                        injected(s, "eod") + injected(s, "mail"))
                self.assertEqual(m["failed_by"]["protocol"], 0, rep["first_errors"])
                self.assertEqual(m["partial"], 0)

    def test_dropped_mid_pipeline_is_retried_and_delivered_once(self):
        """The sink drops the connection at a message's end of data: that
        message and every one behind it in the pipeline have no reply; all
        are retried, and the sink ends up with each exactly once."""
        for be in BACKENDS:
            with self.subTest(backend=be):
                with Sink(["--verify", "--fault", "eod drop every=40"], backend=be) as s:
                    rc, rep, err = bench(s.port, be, "--bdat", "--depth", "16", "--sessions",
                                         "2", "--messages", "1000", "--retry", "5",
                                         "--retry-delay", "0")
                    s.stop()
                self.assertEqual(rc, 0, err)
                self.agree(s, rep, 1000)
                r = rep["retries"]
                # more attempts failed than the sink dropped: the lost ones
                self.assertGreater(r["attempt_failed_by"]["dropped"],
                                   injected(s, "eod drop"))
                self.assertEqual(r["attempt_failed_by"]["dropped"], r["sent"])

    def test_against_postfix_smtp_sink(self):
        """Interop: Postfix smtp-sink (PIPELINING, no CHUNKING) with DATA."""
        if not os.path.exists("/usr/sbin/smtp-sink"):
            self.skipTest("Postfix smtp-sink not installed")
        port = sinklib.free_port()
        p = subprocess.Popen(["/usr/sbin/smtp-sink", "-u", "nobody", "127.0.0.1:%d" % port,
                              "64"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10 * SLOW
            while not sinklib.listening(port) and time.monotonic() < deadline:
                time.sleep(0.05)
            rc, rep, err = bench(port, "epoll", "--depth", "4", "--sessions", "3",
                                 "--messages", "600")
            self.assertEqual(rc, 0, err)
            self.assertEqual(rep["messages"]["delivered"], 600)
            # --bdat is a demand: smtp-sink does not offer CHUNKING
            rc, rep, err = bench(port, "epoll", "--bdat", "--depth", "4", "--sessions", "1",
                                 "--messages", "5", "--max-attempts", "1")
            self.assertEqual(rc, 1)
            self.assertEqual(rep["messages"]["delivered"], 0)
        finally:
            p.kill()
            p.wait()

    def test_bad_depth_is_a_usage_error(self):
        for args in (["--depth", "0"], ["--depth", "65"], ["--depth", "x"],
                     ["--depth", "4", "--pipelining", "off"], ["--depth", "2", "--helo"]):
            with self.subTest(args=args):
                r = subprocess.run([SMTPBENCH, "--target", "127.0.0.1:1"] + args,
                                   capture_output=True, timeout=10 * SLOW)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertTrue(r.stderr.startswith(b"smtpbench: "), r.stderr)


if __name__ == "__main__":
    if not SMTPBENCH or not os.path.exists(SMTPBENCH) or not os.environ.get("SMTPSINK"):
        print("skipped: the SMTPBENCH / SMTPSINK binary is not set (run through ctest)")
        sys.exit(77)
    sinklib.main()
