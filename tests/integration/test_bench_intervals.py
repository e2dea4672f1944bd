"""smtpbench --interval-log and merging interval logs, against oracles
computed here.

Two smtpbench instances run at the same time against one smtpsink, each
writing an interval log; every log must be whole (consecutive intervals at
wall-clock multiples of the interval, first and last marked partial, the end
line equal to the sum of the lines and to the run's own report, the buckets
of the intervals adding up to the report's message histogram).  merge must
add them: delivered == the sum of the runs == what the sink accepted and
verified; the CSV rows aligned, their msgs/s adding up to the total, and
p50/p99/max per row equal to what this test computes from the raw bucket
counts of the logs itself.  Damaged, foreign and incompatible logs give exit
2 naming the file and the key; an unwritable --interval-log path is exit 2
before any connection.  Loopback only; every run is bounded.
"""
import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from decimal import Decimal

sys.path.insert(0, os.path.dirname(__file__))
import sinklib  # noqa: E402
from sinklib import SLOW, Sink, hist_quantile  # noqa: E402

SMTPBENCH = os.environ.get("SMTPBENCH", "")
def check(r):
    err = r.stderr.decode(errors="replace")
    if any(m in err for m in sinklib.SANITIZER_MARKS):
        raise AssertionError("sanitizer report:\n" + err)
    return err


def merge(*args, stdin=None):
    r = subprocess.run([SMTPBENCH, "merge"] + list(args), capture_output=True, input=stdin,
                       timeout=60 * SLOW)
    return r.returncode, check(r), r.stdout


def read_log(path=None, text=None):
    if text is None:
        with open(path) as f:
            text = f.read()
    lines = [json.loads(x) for x in text.splitlines() if x.strip()]
    return lines[0], lines[1:-1], lines[-1]


def ns_of(ms_text):
    """'0.106495' (milliseconds, as the CSV writes them) -> 106495 ns, exactly."""
    return int(Decimal(ms_text) * 1000000)


class Intervals(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not SMTPBENCH:
            raise unittest.SkipTest("SMTPBENCH not set")
        cls.dir = tempfile.mkdtemp(prefix="ivltest.")
        cls.logs = [os.path.join(cls.dir, "a.jsonl"), os.path.join(cls.dir, "b.jsonl")]
        cls.reps = [os.path.join(cls.dir, "a.json"), os.path.join(cls.dir, "b.json")]
        # two generators at once, different shapes (two threads, DATA; one
        # thread, BDAT), the second started 0.4 s later
        shapes = [["--threads", "2", "--sessions", "4", "--rate", "3000"],
                  ["--threads", "1", "--sessions", "3", "--rate", "1500", "--bdat"]]
        with Sink(["--verify"]) as s:
            procs = []
            for i, shape in enumerate(shapes):
                procs.append(subprocess.Popen(
                    [SMTPBENCH, "--target", "127.0.0.1:%d" % s.port, "-q", "--duration", "3s",
                     "--interval-log", cls.logs[i], "--json", cls.reps[i]] + shape,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE))
                time.sleep(0.4)
            for p in procs:
                out, err = p.communicate(timeout=60 * SLOW)
                err = err.decode(errors="replace")
                assert p.returncode == 0, err
                assert not any(m in err for m in sinklib.SANITIZER_MARKS), err
            s.stop()
            cls.sink_messages = s.counters()["messages"]
            cls.verify = s.summary["verify"]
        cls.report = []
        for f in cls.reps:
            with open(f) as fh:
                cls.report.append(json.load(fh))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def write(self, name, text):
        p = os.path.join(self.dir, name)
        with open(p, "w") as f:
            f.write(text)
        return p

    def test_each_log_is_whole_aligned_and_agrees_with_its_report(self):
        for log, rep in zip(self.logs, self.report):
            with self.subTest(log=log):
                head, lines, end = read_log(log)
                self.assertEqual((head["program"], head["kind"], head["format"]),
                                 ("smtpbench", "interval-log", 1))
                self.assertEqual(head["run_id"], rep["run_id"])
                self.assertEqual(head["version"], rep["version"])
                self.assertEqual(head["interval_ms"], 1000)
                self.assertEqual(head["histogram"], {"value": "message", "sub_bits": 8,
                                                     "unit": "ns"})
                # 3 s not starting on a second: 4 intervals, sometimes 5
                # when the start is late (threads start, connect)
                self.assertIn(len(lines), (4, 5))
                starts = [x["start_ms"] for x in lines]
                self.assertTrue(all(s % 1000 == 0 for s in starts), starts)
                self.assertEqual(starts, list(range(starts[0], starts[0] + 1000 * len(starts),
                                                    1000)))
                self.assertLessEqual(starts[0], end["start_ms"])
                self.assertLess(end["start_ms"], starts[0] + 1000)
                self.assertLessEqual(starts[-1], end["end_ms"])
                self.assertLess(end["end_ms"], starts[-1] + 1000)
                for i, x in enumerate(lines):
                    self.assertFalse(x["warmup"])
                    self.assertEqual(x["length_ms"], 1000)
                    inner = 0 < i < len(lines) - 1
                    self.assertEqual(x["partial"], not inner or x["covered_ms"] < 1000, x)
                    if inner:
                        self.assertEqual(x["covered_ms"], 1000)
                    m = x["messages"]
                    self.assertEqual(x["count"], m["delivered"] + m["partial"])
                    self.assertEqual(sum(c for _, c in x["buckets"]), x["count"])
                # the first and last are partial: the run covered only part
                self.assertTrue(lines[0]["partial"] and lines[-1]["partial"])
                # (the run's start in whole ms, the coverage from ns: +-1)
                self.assertAlmostEqual(lines[0]["covered_ms"],
                                       lines[0]["start_ms"] + 1000 - end["start_ms"], delta=1)
                self.assertEqual(lines[-1]["covered_ms"], end["end_ms"] - lines[-1]["start_ms"])
                # the end line and the run's report say the same as the lines
                self.assertTrue(end["end"])
                self.assertIsNone(end["stopped"])
                self.assertEqual(end["intervals"], len(lines))
                for k in ("delivered", "partial", "failed"):
                    total = sum(x["messages"][k] for x in lines)
                    self.assertEqual(end["messages"][k], total, k)
                    self.assertEqual(rep["messages"][k], total, k)
                self.assertAlmostEqual((end["end_ms"] - end["start_ms"]) / 1000, rep["seconds"],
                                       delta=0.01)
                # no warm-up: the intervals' buckets are the report's message
                # histogram, recorded separately in the same thread
                b = {}
                for x in lines:
                    for i, c in x["buckets"]:
                        b[i] = b.get(i, 0) + c
                h = rep["histograms"]["message"]
                self.assertEqual(b, {i: c for i, c in h["buckets"]})
                self.assertEqual(max(x["max"] for x in lines), h["max"])
                self.assertEqual(sum(x["sum"] for x in lines), h["sum"])

    def test_merge_adds_logs_per_window(self):
        heads = [read_log(f) for f in self.logs]
        csv = os.path.join(self.dir, "m.csv")
        rc, err, out = merge("--json", "-", "--csv", csv, *self.logs)
        self.assertEqual(rc, 0, err)
        merged = json.loads(out)["intervals"]
        delivered = [r["messages"]["delivered"] for r in self.report]
        # total delivered == the sum of the runs == what the sink took
        self.assertEqual(merged["messages"]["delivered"], sum(delivered))
        self.assertEqual(merged["messages"]["delivered"], self.sink_messages)
        self.assertEqual((self.verify["ok"], self.verify["duplicate"], self.verify["corrupt"]),
                         (self.sink_messages, 0, 0))
        self.assertEqual(merged["messages"]["failed"], 0)
        self.assertEqual(merged["logs"], 2)
        self.assertIn("%d delivered" % sum(delivered), err)
        # the oracle: per start, the raw buckets of both logs added here
        by = {}
        for _, lines, _ in heads:
            for x in lines:
                o = by.setdefault(x["start_ms"], {"b": {}, "n": 0, "max": 0, "inputs": 0,
                                                  "partial": False})
                o["n"] += x["messages"]["delivered"] + x["messages"]["partial"]
                o["max"] = max(o["max"], x["max"])
                o["inputs"] += 1
                o["partial"] |= x["partial"]
                for i, c in x["buckets"]:
                    o["b"][i] = o["b"].get(i, 0) + c
        with open(csv) as f:
            rows = [r.split(",") for r in f.read().splitlines()]
        self.assertEqual(rows[0], ["start", "length_s", "msgs_per_s", "p50_ms", "p99_ms",
                                   "max_ms", "inputs", "delivered", "partial", "failed",
                                   "warmup", "partial_interval"])
        rows = rows[1:]
        self.assertEqual([int(Decimal(r[0]) * 1000) for r in rows], sorted(by))
        self.assertEqual(merged["aligned"], len(rows))
        # both ran at once: most windows have both
        self.assertGreaterEqual(sum(1 for r in rows if r[6] == "2"), 2)
        rate_sum = Decimal(0)
        for r in rows:
            o = by[int(Decimal(r[0]) * 1000)]
            self.assertEqual(r[1], "1.000")
            self.assertEqual(Decimal(r[2]), o["n"], r)  # 1 s windows: msgs/s = messages
            rate_sum += Decimal(r[2]) * Decimal(r[1])
            self.assertEqual(int(r[6]), o["inputs"])
            self.assertEqual(int(r[7]) + int(r[8]), o["n"])
            self.assertEqual(r[11], "1" if o["partial"] else "0")
            if not o["n"]:
                self.assertEqual(r[3:6], ["", "", ""])
                continue
            for col, q in ((3, 0.5), (4, 0.99)):
                self.assertEqual(ns_of(r[col]), hist_quantile(o["b"], o["max"], q), (r, q))
            self.assertEqual(ns_of(r[5]), o["max"])
        self.assertEqual(rate_sum, sum(delivered))
        # the totals: every window's buckets, quantiles from the sum
        allb = {}
        for o in by.values():
            for i, c in o["b"].items():
                allb[i] = allb.get(i, 0) + c
        mx = max(o["max"] for o in by.values())
        self.assertEqual({i: c for i, c in merged["histogram"]["buckets"]}, allb)
        for key, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)):
            self.assertAlmostEqual(merged["latency_ms"][key] * 1e6, hist_quantile(allb, mx, q),
                                   delta=1, msg=key)
        # and the same as merging the two runs' reports (no warm-up)
        rc, err, out = merge("--json", "-", *self.reps)
        self.assertEqual(rc, 0, err)
        rep = json.loads(out)
        self.assertEqual(rep["latency_ms"]["message"], merged["latency_ms"])

    def test_reports_and_logs_in_one_merge(self):
        rc, err, out = merge("--json", "-", self.reps[0], self.logs[0], self.reps[1],
                             self.logs[1])
        self.assertEqual(rc, 0, err)
        m = json.loads(out)
        delivered = sum(r["messages"]["delivered"] for r in self.report)
        self.assertEqual(m["merged"], 2)
        self.assertEqual(m["messages"]["delivered"], delivered)
        self.assertEqual(m["intervals"]["messages"]["delivered"], delivered)
        self.assertIn("2 runs", err)
        self.assertIn("2 interval logs", err)
        # a log from a pipe
        with open(self.logs[0], "rb") as f:
            rc, err, out = merge("--json", "-", "-", stdin=f.read())
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["intervals"]["messages"]["delivered"],
                         self.report[0]["messages"]["delivered"])
        # --csv without a log is a usage error
        rc, err, _ = merge("--csv", os.path.join(self.dir, "x.csv"), self.reps[0])
        self.assertEqual(rc, 2, err)
        self.assertIn("--csv", err)

    def test_refuses_damaged_and_incompatible_logs(self):
        with open(self.logs[0]) as f:
            text = f.read()
        head, lines, end = read_log(text=text)

        def dump(h, ls, e):
            return "".join(json.dumps(x) + "\n" for x in [h] + ls + ([e] if e else []))

        def variant(fn):
            h, ls, e = copy.deepcopy(head), copy.deepcopy(lines), copy.deepcopy(end)
            return fn(h, ls, e) or dump(h, ls, e)

        def with_(obj, path, value):
            *p, k = path
            for x in p:
                obj = obj[x]
            obj[k] = value

        raw = text.splitlines(True)
        cases = {
            "sub_bits": (variant(lambda h, ls, e: with_(h, ["histogram", "sub_bits"], 7)),
                         ["histogram.sub_bits", "incompatible histogram layout", "line 1"]),
            "unit": (variant(lambda h, ls, e: with_(h, ["histogram", "unit"], "us")),
                     ["histogram.unit", "incompatible histogram layout"]),
            "format": (variant(lambda h, ls, e: with_(h, ["format"], 2)), ['"format"']),
            "garbage-line": ("".join(raw[:2] + ["{\"start_ms\": 17, \x00garbage\n"] + raw[3:]),
                             ["line 3", "not valid JSON"]),
            "truncated": (text[:len(text) - len(raw[-1]) - 40], ["not valid JSON"]),
            "no-end": ("".join(raw[:-1]), ["no end line"]),
            "count": (variant(lambda h, ls, e: with_(ls[1], ["count"], ls[1]["count"] + 1)),
                      ['"count"', "line 3"]),
            "bucket": (variant(lambda h, ls, e: ls[1]["buckets"].append([99999, 1])),
                       ['"buckets"', "line 3"]),
            "negative": (variant(lambda h, ls, e: with_(ls[0], ["messages", "delivered"], -1)),
                         ["messages.delivered", "line 2"]),
            "unaligned": (variant(lambda h, ls, e: with_(ls[1], ["start_ms"],
                                                         ls[1]["start_ms"] + 1)),
                          ['"start_ms"', "line 3"]),
            "repeated": (variant(lambda h, ls, e: ls.insert(1, copy.deepcopy(ls[0]))),
                         ['"start_ms"', "line 3"]),
            "end-total": (variant(lambda h, ls, e: with_(e, ["messages", "delivered"],
                                                         e["messages"]["delivered"] + 1)),
                          ["messages.delivered", "line %d" % (len(lines) + 2)]),
            "length": (variant(lambda h, ls, e: with_(ls[0], ["length_ms"], 500)),
                       ['"length_ms"']),
        }
        for name, (content, msgs) in cases.items():
            with self.subTest(case=name):
                p = self.write("bad-%s.jsonl" % name, content)
                rc, err, _ = merge(self.logs[1], p)
                self.assertEqual(rc, 2, err)
                self.assertIn(p, err)
                for m in msgs:
                    self.assertIn(m, err)
        # another interval length: named, with the log that set the first
        p = self.write("half.jsonl", variant(lambda h, ls, e: with_(h, ["interval_ms"], 500)))
        rc, err, _ = merge(self.logs[1], p)
        self.assertEqual(rc, 2, err)
        self.assertIn(p, err)
        self.assertIn('"interval_ms" is 500', err)
        self.assertIn(self.logs[1], err)
        # a report with a bad layout is still refused as before, in a mixed merge
        with open(self.reps[0]) as f:
            rep = json.load(f)
        rep["histograms"]["message"]["sub_bits"] = 7
        p = self.write("bad-report.json", json.dumps(rep))
        rc, err, _ = merge(self.logs[0], p)
        self.assertEqual(rc, 2, err)
        self.assertIn(p, err)
        self.assertIn("incompatible layout", err)

    def test_unwritable_path_is_exit_2_before_the_run(self):
        with Sink() as s:
            for args, msg in (
                    (["--interval-log", "/nonexistent-dir/x.jsonl"], "/nonexistent-dir/x.jsonl"),
                    (["--interval-log", self.dir], self.dir),  # a directory
                    (["--interval-log", os.path.join(self.dir, "i.jsonl"), "--interval", "50ms"],
                     "--interval"),
                    (["--interval-log", os.path.join(self.dir, "i.jsonl"), "--interval", "1.5ms"],
                     "--interval"),
                    (["--interval", "1s"], "--interval-log"),
                    (["--interval-log", "-", "--json", "-"], "stdout")):
                with self.subTest(args=args):
                    t0 = time.monotonic()
                    r = subprocess.run([SMTPBENCH, "--target", "127.0.0.1:%d" % s.port, "-q",
                                        "--messages", "100"] + args,
                                       capture_output=True, timeout=30 * SLOW)
                    err = check(r)
                    self.assertEqual(r.returncode, 2, err)
                    self.assertIn(msg, err)
                    self.assertLess(time.monotonic() - t0, 5 * SLOW)
            s.stop()
            # not one connection was made
            self.assertEqual(s.counters()["sessions"], 0)
            self.assertEqual(s.counters()["messages"], 0)

    def test_warmup_intervals_are_marked(self):
        log = os.path.join(self.dir, "w.jsonl")
        with Sink() as s:
            r = subprocess.run([SMTPBENCH, "--target", "127.0.0.1:%d" % s.port, "-q",
                                "--threads", "1", "--sessions", "2", "--rate", "500",
                                "--warmup", "1s", "--duration", "1500ms",
                                "--interval-log", log, "--interval", "500ms"],
                               capture_output=True, timeout=60 * SLOW)
            self.assertEqual(r.returncode, 0, check(r))
        head, lines, end = read_log(log)
        self.assertEqual((head["interval_ms"], head["warmup_ms"]), (500, 1000))
        warm_end = end["start_ms"] + 1000
        for x in lines:
            self.assertEqual(x["length_ms"], 500)
            self.assertEqual(x["start_ms"] % 500, 0)
            if x["start_ms"] != warm_end:  # on the boundary to the ms: either
                self.assertEqual(x["warmup"], x["start_ms"] < warm_end, x)
        self.assertGreaterEqual(sum(x["warmup"] for x in lines), 2)
        self.assertGreaterEqual(sum(not x["warmup"] for x in lines), 2)
        rc, err, out = merge("--json", "-", log)
        self.assertEqual(rc, 0, err)
        m = json.loads(out)["intervals"]
        # the warm-up counts in the outcomes, not in the latency totals
        self.assertEqual(m["messages"]["delivered"],
                         sum(x["messages"]["delivered"] for x in lines))
        self.assertEqual(m["measured"], sum(x["count"] for x in lines if not x["warmup"]))
        self.assertEqual(m["histogram"]["count"], m["measured"])
        self.assertEqual(m["measured_intervals"], sum(not x["warmup"] for x in lines))

    def test_stopped_run_and_stdout(self):
        log = os.path.join(self.dir, "stop.jsonl")
        with Sink() as s:
            p = subprocess.Popen([SMTPBENCH, "--target", "127.0.0.1:%d" % s.port, "-q",
                                  "--threads", "1", "--rate", "400", "--duration", "60s",
                                  "--interval-log", log],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            time.sleep(1.5)
            # the first whole second is on disk while the run goes on
            head, lines = None, []
            with open(log) as f:
                got = [json.loads(x) for x in f.read().splitlines()]
            self.assertEqual(got[0]["kind"], "interval-log")
            self.assertGreaterEqual(len(got), 2, got)
            p.send_signal(signal.SIGINT)
            _, err = p.communicate(timeout=30 * SLOW)
            self.assertEqual(p.returncode, 1, err)
            self.assertFalse(any(m.encode() in err for m in sinklib.SANITIZER_MARKS), err)
            head, lines, end = read_log(log)
            self.assertEqual(end["stopped"], "interrupted by SIGINT")
            self.assertTrue(lines[-1]["partial"])
            rc, err, _ = merge(log)
            self.assertEqual(rc, 0, err)
            # to standard output, and merged from a pipe
            r = subprocess.run([SMTPBENCH, "--target", "127.0.0.1:%d" % s.port, "-q",
                                "--messages", "200", "--interval-log", "-"],
                               capture_output=True, timeout=60 * SLOW)
            self.assertEqual(r.returncode, 0, check(r))
            head, lines, end = read_log(text=r.stdout.decode())
            self.assertEqual(end["messages"]["delivered"], 200)
            rc, err, out = merge("--json", "-", "-", stdin=r.stdout)
            self.assertEqual(rc, 0, err)
            self.assertEqual(json.loads(out)["intervals"]["messages"]["delivered"], 200)


if __name__ == "__main__":
    if not SMTPBENCH or not os.path.exists(SMTPBENCH) or not os.environ.get("SMTPSINK"):
        print("skipped: the SMTPBENCH / SMTPSINK binary is not set (run through ctest)")
        sys.exit(77)
    sinklib.main()
