"""smtpbench merge against an independent oracle.

Three real reports are re-formatted as any JSON tool might (as written,
compact, indent=4, keys sorted) and merged; every count and every histogram
bucket must equal the sum this test computes itself, and the merged
quantiles must equal the ones this test computes from the summed buckets.
Malformed, truncated, foreign and incompatible input must give exit 2 with
a message, never a crash; reports are also read from pipes.  Keys added
within schema 1 (TLS, AUTH, retries) add up too, and a report written
before them still merges (as zeros).
"""
import copy
import json
import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import sinklib  # noqa: E402
from sinklib import SLOW, Sink, hist_quantile  # noqa: E402

SMTPBENCH = os.environ.get("SMTPBENCH", "")
def oracle(reports):
    """Sum the raw counts of reports (dicts) the way the docs say merge does."""
    out = {"messages": {}, "bytes": {}, "connections": {}, "tls": {}, "auth": {}, "retries": {},
           "replies": {}, "hist": {}}
    for r in reports:
        for sec in ("messages", "bytes", "connections", "tls", "auth", "retries"):
            for k, v in r.get(sec, {}).items():
                if isinstance(v, dict):
                    d = out[sec].setdefault(k, {})
                    for kk, vv in v.items():
                        d[kk] = d.get(kk, 0) + vv
                else:
                    out[sec][k] = out[sec].get(k, 0) + v
        for cmd, d in r["replies"].items():
            o = out["replies"].setdefault(cmd, {})
            for k, v in d.items():
                o[k] = o.get(k, 0) + v
        for name, h in r["histograms"].items():
            o = out["hist"].setdefault(name, {"count": 0, "max": 0, "sum": 0, "b": {}})
            o["count"] += h["count"]
            o["sum"] += h["sum"]
            o["max"] = max(o["max"], h["max"])
            for i, c in h["buckets"]:
                o["b"][i] = o["b"].get(i, 0) + c
    out["seconds"] = max(r["seconds"] for r in reports)
    out["cpu_seconds"] = sum(r["cpu_seconds"] for r in reports)
    return out


def merge(*args, stdin=None):
    r = subprocess.run([SMTPBENCH, "merge"] + list(args), capture_output=True, input=stdin,
                       timeout=30 * SLOW)
    err = r.stderr.decode(errors="replace")
    if any(m in err for m in sinklib.SANITIZER_MARKS):
        raise AssertionError("sanitizer report:\n" + err)
    return r.returncode, err, r.stdout


FORMATS = {
    "as-written": None,
    "compact": lambda d: json.dumps(d, separators=(",", ":")),
    "indent4": lambda d: json.dumps(d, indent=4),
    "sorted": lambda d: json.dumps(d, indent=1, sort_keys=True),
    "sorted-compact": lambda d: json.dumps(d, sort_keys=True, separators=(",", ":")),
}


class Merge(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not SMTPBENCH:
            raise unittest.SkipTest("SMTPBENCH not set")
        cls.dir = tempfile.mkdtemp(prefix="mergetest.")
        cls.files, cls.reps = [], []
        with Sink() as s:
            for i, args in enumerate((["--sessions", "4", "--messages", "300"],
                                      ["--sessions", "16", "--messages", "500", "--rcpts", "2"],
                                      ["--sessions", "2", "--messages", "100", "--bdat"])):
                f = os.path.join(cls.dir, "r%d.json" % i)
                r = subprocess.run([SMTPBENCH, "--target", "127.0.0.1:%d" % s.port, "-q",
                                    "--threads", "2", "--json", f] + args,
                                   capture_output=True, timeout=60 * SLOW)
                assert r.returncode == 0, r.stderr
                cls.files.append(f)
                with open(f) as fh:
                    cls.reps.append(json.load(fh))

    def write(self, name, text):
        p = os.path.join(self.dir, name)
        with open(p, "w" if isinstance(text, str) else "wb") as f:
            f.write(text)
        return p

    def check_against_oracle(self, merged, want, n=3):
        for sec in ("messages", "bytes", "connections", "replies", "tls", "auth", "retries"):
            self.assertEqual(merged[sec], want[sec], sec)
        self.assertEqual(merged["seconds"], want["seconds"])
        self.assertAlmostEqual(merged["cpu_seconds"], want["cpu_seconds"], places=5)
        self.assertEqual(merged["schema"], 1)
        self.assertEqual(merged["merged"], n)
        for name, h in want["hist"].items():
            m = merged["histograms"][name]
            self.assertEqual((m["count"], m["sum"], m["max"]), (h["count"], h["sum"], h["max"]))
            self.assertEqual({i: c for i, c in m["buckets"]}, h["b"], name)
            if not h["count"]:
                continue
            for key, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)):
                self.assertAlmostEqual(merged["latency_ms"][name][key] * 1e6,
                                       hist_quantile(h["b"], h["max"], q, h["count"]), delta=1,
                                       msg=(name, key))
            # the bug this guards against: every quantile equal to the max
            if name == "message":
                self.assertLess(merged["latency_ms"][name]["p50"] * 1e6, h["max"])

    def test_any_valid_formatting_merges_exactly(self):
        want = oracle(self.reps)
        self.assertEqual(want["messages"]["delivered"], 900)
        for fmt, fn in FORMATS.items():
            with self.subTest(fmt=fmt):
                files = self.files if fn is None else [
                    self.write("%s-%d.json" % (fmt, i), fn(r)) for i, r in enumerate(self.reps)]
                out = os.path.join(self.dir, "merged-%s.json" % fmt)
                rc, err, _ = merge("--json", out, *files)
                self.assertEqual(rc, 0, err)
                with open(out) as f:
                    merged = json.load(f)
                self.check_against_oracle(merged, want)
                self.assertIn("900 delivered", err)
        # mixed formats in one merge, and a merged report merges again
        mixed = [self.files[0], self.write("m1.json", FORMATS["compact"](self.reps[1])),
                 self.write("m2.json", FORMATS["sorted"](self.reps[2]))]
        rc, err, out = merge("--json", "-", *mixed)
        self.assertEqual(rc, 0, err)
        self.check_against_oracle(json.loads(out), want)

    def test_tls_auth_keys_add_and_older_reports_merge(self):
        tls = copy.deepcopy(self.reps[0])
        tls["tls"] = {"full": 3, "resumed": 2, "versions": {"TLSv1.3": 4, "TLSv1.2": 1},
                      "ciphers": {"TLS_AES_256_GCM_SHA384": 4, "ECDHE-ECDSA-AES128-GCM-SHA256": 1}}
        tls["auth"] = {"attempts": 7, "plain": 5, "login": 2, "ok": 5, "failed": 1}
        tls["replies"]["starttls"] = {"ok": 5, "4xx": 1, "5xx": 0, "other": 0}
        tls["replies"]["auth"] = {"ok": 7, "4xx": 0, "5xx": 1, "other": 0}
        tls["connections"]["failed_by"]["auth"] = 1
        tls["connections"]["failed_by"]["tls"] = 2
        tls["connections"]["failed"] += 3
        tls["histograms"]["tls_handshake_full"] = copy.deepcopy(tls["histograms"]["connect"])
        # a report of an smtpbench from before TLS: none of the new keys
        old = copy.deepcopy(self.reps[1])
        for k in ("tls", "auth"):
            del old[k]
        for k in ("starttls", "auth"):
            del old["replies"][k]
        for sec in ("messages", "connections"):
            for k in ("tls", "auth"):
                del old[sec]["failed_by"][k]
        for k in ("tls_handshake_full", "tls_handshake_resumed"):
            del old["histograms"][k]
            del old["latency_ms"][k]
        reps = [tls, old, tls]
        files = [self.write("tls-%d.json" % i, json.dumps(r)) for i, r in enumerate(reps)]
        rc, err, out = merge("--json", "-", *files)
        self.assertEqual(rc, 0, err)
        merged = json.loads(out)
        want = oracle(reps)
        self.check_against_oracle(merged, want)
        self.assertEqual(merged["tls"], {"full": 6, "resumed": 4,
                                         "versions": {"TLSv1.3": 8, "TLSv1.2": 2},
                                         "ciphers": {"TLS_AES_256_GCM_SHA384": 8,
                                                     "ECDHE-ECDSA-AES128-GCM-SHA256": 2}})
        self.assertEqual(merged["auth"]["attempts"], 14)
        self.assertEqual(merged["connections"]["failed_by"]["tls"], 4)
        self.assertEqual(merged["replies"]["starttls"]["4xx"], 2)
        self.assertEqual(merged["histograms"]["tls_handshake_full"]["count"],
                         2 * tls["histograms"]["connect"]["count"])
        self.assertIn("tls       10 handshakes: 6 full, 4 resumed", err)
        # present but wrong is still refused
        bad = copy.deepcopy(tls)
        bad["tls"]["versions"]["TLSv1.3"] = -1
        bad2 = copy.deepcopy(tls)
        bad2["auth"]["ok"] = "five"
        for b, msg in ((bad, "tls.versions"), (bad2, "auth.ok")):
            rc, err, _ = merge(self.files[0], self.write("bad-tls.json", json.dumps(b)))
            self.assertEqual(rc, 2, err)
            self.assertIn(msg, err)

    def test_retry_keys_add_and_older_reports_merge(self):
        ret = copy.deepcopy(self.reps[0])
        ret["retries"] = {"sent": 12, "first_attempt_failed": 10, "recovered": 8, "exhausted": 1,
                          "queue_full": 1, "aborted": 0,
                          "attempt_failed_by": dict(ret["retries"]["attempt_failed_by"])}
        ret["retries"]["attempt_failed_by"].update({"4xx": 9, "dropped": 3, "5xx": 2})
        # a delivery histogram unlike the message one, so a mix-up shows
        ret["histograms"]["delivery"] = copy.deepcopy(ret["histograms"]["connect"])
        # a report of an smtpbench from before --retry: no retry keys at all
        old = copy.deepcopy(self.reps[1])
        del old["retries"]
        del old["histograms"]["delivery"]
        del old["latency_ms"]["delivery"]
        for k in ("retry", "retry_delay_s", "retry_queue"):
            del old["options"][k]
        reps = [ret, old, ret]
        files = [self.write("retry-%d.json" % i, json.dumps(r)) for i, r in enumerate(reps)]
        rc, err, out = merge("--json", "-", *files)
        self.assertEqual(rc, 0, err)
        merged = json.loads(out)
        want = oracle(reps)
        self.check_against_oracle(merged, want)
        r = merged["retries"]
        self.assertEqual((r["sent"], r["first_attempt_failed"], r["recovered"], r["exhausted"],
                          r["queue_full"], r["aborted"]), (24, 20, 16, 2, 2, 0))
        self.assertEqual((r["attempt_failed_by"]["4xx"], r["attempt_failed_by"]["dropped"],
                          r["attempt_failed_by"]["5xx"]), (18, 6, 4))
        self.assertEqual(merged["histograms"]["delivery"]["count"],
                         2 * ret["histograms"]["connect"]["count"])
        self.assertIn("retries   24 sent; 20 messages failed a first attempt: 16 recovered, "
                      "2 exhausted, 2 queue full, 0 aborted", err)
        self.assertIn("failed attempts: 4xx 18, 5xx 4, dropped 6", err)
        # only old reports: the retry keys are there, as zeros, and no retry lines
        rc, err, out = merge("--json", "-", files[1])
        self.assertEqual(rc, 0, err)
        merged = json.loads(out)
        self.assertEqual(merged["retries"]["sent"], 0)
        self.assertEqual(sum(merged["retries"]["attempt_failed_by"].values()), 0)
        self.assertEqual(merged["histograms"]["delivery"]["count"], 0)
        self.assertNotIn("retries", err)
        # present but wrong is still refused
        bad = copy.deepcopy(ret)
        bad["retries"]["sent"] = "twelve"
        bad2 = copy.deepcopy(ret)
        bad2["retries"]["attempt_failed_by"]["4xx"] = -1
        bad3 = copy.deepcopy(ret)
        bad3["histograms"]["delivery"]["count"] += 1
        for b, msg in ((bad, "retries.sent"), (bad2, "retries.attempt_failed_by.4xx"),
                       (bad3, "delivery")):
            rc, err, _ = merge(self.files[0], self.write("bad-retry.json", json.dumps(b)))
            self.assertEqual(rc, 2, err)
            self.assertIn(msg, err)

    def test_reads_pipes(self):
        with open(self.files[0], "rb") as f:
            data = f.read()
        rc, err, out = merge("--json", "-", "-", stdin=data)
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["messages"], self.reps[0]["messages"])
        rc, err, out = merge("/dev/stdin", stdin=FORMATS["indent4"](self.reps[0]).encode())
        self.assertEqual(rc, 0, err)
        self.assertIn("300 delivered", err)

    def test_refuses_bad_input_with_exit_2(self):
        rep = self.reps[0]
        with open(self.files[0]) as f:
            text = f.read()
        other_schema = copy.deepcopy(rep)
        other_schema["schema"] = 2
        no_schema = copy.deepcopy(rep)
        del no_schema["schema"]
        bad_layout = copy.deepcopy(rep)
        bad_layout["histograms"]["message"]["sub_bits"] = 7
        bad_unit = copy.deepcopy(rep)
        bad_unit["histograms"]["command"]["unit"] = "us"
        bad_bucket = copy.deepcopy(rep)
        bad_bucket["histograms"]["message"]["buckets"].append([10 ** 9, 1])
        bad_sum = copy.deepcopy(rep)
        bad_sum["histograms"]["message"]["count"] += 1
        neg = copy.deepcopy(rep)
        neg["messages"]["delivered"] = -1
        missing = copy.deepcopy(rep)
        del missing["replies"]["rcpt"]
        cases = {
            "truncated": (text[:len(text) // 2], "not valid JSON"),
            "empty": ("", "not valid JSON"),
            "garbage": ("\x00\xff not json", "not valid JSON"),
            "program-only": ('{"program":"smtpbench"}', "schema"),
            "array": ("[1, 2]", "not a JSON object"),
            "other-program": ('{"program":"smtpsink","schema":1}', "not a smtpbench report"),
            "other-schema": (json.dumps(other_schema), "schema 2"),
            "no-schema": (json.dumps(no_schema), "schema"),
            "layout": (json.dumps(bad_layout), "incompatible layout"),
            "unit": (json.dumps(bad_unit), "incompatible layout"),
            "bucket": (json.dumps(bad_bucket), "bucket"),
            "count": (json.dumps(bad_sum), "add up"),
            "negative": (json.dumps(neg), "messages.delivered"),
            "missing": (json.dumps(missing), "replies.rcpt"),
        }
        for name, (content, msg) in cases.items():
            with self.subTest(case=name):
                p = self.write("bad-%s.json" % name,
                               content.encode("latin-1") if name == "garbage" else content)
                rc, err, _ = merge(self.files[1], p)
                self.assertEqual(rc, 2, err)
                self.assertIn(p, err)
                self.assertIn(msg, err)
        rc, err, _ = merge(os.path.join(self.dir, "does-not-exist.json"))
        self.assertEqual(rc, 2, err)
        rc, err, _ = merge()
        self.assertEqual(rc, 2, err)
        rc, err, _ = merge("--json", "/nonexistent-dir/m.json", self.files[0])
        self.assertEqual(rc, 2, err)


if __name__ == "__main__":
    if not SMTPBENCH or not os.path.exists(SMTPBENCH) or not os.environ.get("SMTPSINK"):
        # CTest counts exit 77 as skipped (SKIP_RETURN_CODE)
        print("skipped: the SMTPBENCH / SMTPSINK binary is not set (run through ctest)")
        sys.exit(77)
    sinklib.main()
