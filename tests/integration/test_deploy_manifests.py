"""deploy/kubernetes/ and docs/distributed.md, without a cluster.

No cluster is reachable from the tests, so this checks what can be checked
offline: every YAML file parses and every object has apiVersion, kind and
metadata.name; the generator Job is Indexed with completions == parallelism
== the N of its --segment, and its command has --segment, --start-at and
--interval-log; every Service selects the pods of a Deployment and targets
ports they have; every Deployment has readiness and liveness probes; the
sinks require PROXY from a valid CIDR and are probed with `smtpsink check`;
HAProxy's configuration sends PROXY v2 on connections and checks (and
`haproxy -c` accepts it where haproxy is installed).  Every smtpbench and
smtpsink option used in the manifests and in docs/distributed.md must exist
in the programs' --help.
"""
import ipaddress
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import sinklib  # noqa: E402

try:
    import yaml
except ImportError:  # python3-yaml is in scripts/deps.sh
    yaml = None

SRC = os.environ.get("SINK_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
DEPLOY = os.path.join(SRC, "deploy", "kubernetes")
DOC = os.path.join(SRC, "docs", "distributed.md")
BIN = {"smtpsink": os.environ.get("SMTPSINK", ""), "smtpbench": os.environ.get("SMTPBENCH", "")}

PROGRAMS = ("smtpbench", "smtpsink")
SEPARATORS = {";", "&&", "||", "|", "&", "(", ")", ";;", "|&", "<", ">"}
# words after which a word is a command: kubectl run ... --command -- CMD, exec CMD
COMMAND_WORDS = {"exec", "--", "do", "then", "else", "time", "!", "sudo", "nice"}


def yaml_files():
    out = []
    for root, _, files in os.walk(DEPLOY):
        out += [os.path.join(root, f) for f in files if f.endswith((".yaml", ".yml"))]
    return sorted(out)


def shell_commands(text):
    """(program, [options]) for every smtpbench/smtpsink command in shell text:
    continuation lines joined; a command is the program's name (or a path to
    it) at the start of a command (line start, after ; && | & ( or exec, --);
    its options are the --words up to the end of that command; a quoted word
    that is itself a command line (ssh host "smtpbench ...") is read too."""
    text = text.replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = re.sub(r"^\s*[\w.-]*\$\s+", "", line)  # a prompt: "host1$ "
        try:
            lex = shlex.shlex(line, posix=True, punctuation_chars=True)
            lex.whitespace_split = True
            lex.commenters = "#"
            words = list(lex)
        except ValueError:  # unbalanced quotes in a fragment
            words = line.split()
        prev, cur = None, None  # prev None: at the start of a command
        for w in words:
            if w in SEPARATORS:
                prev, cur = None, None
                continue
            if " " in w.strip():
                out += shell_commands(w)
            name = w.rsplit("/", 1)[-1]
            if cur is None and name in PROGRAMS and (prev is None or prev in COMMAND_WORDS):
                cur = (name, [])
                out.append(cur)
            elif cur is not None and re.match(r"^--[a-z][a-z0-9-]*", w):
                cur[1].append(w.split("=", 1)[0])
            prev = w
    return out


def container_commands(container):
    """Commands of a container and its exec probes."""
    out = []
    argv = list(container.get("command", [])) + list(container.get("args", []))
    probes = [container.get(p, {}).get("exec", {}).get("command", [])
              for p in ("readinessProbe", "livenessProbe", "startupProbe")]
    for v in [argv] + probes:
        if not v:
            continue
        name = str(v[0]).rsplit("/", 1)[-1]
        if name in PROGRAMS:
            out.append((name, [str(a).split("=", 1)[0] for a in v[1:]
                               if str(a).startswith("--")]))
        elif name in ("sh", "bash") and "-c" in v:
            out += shell_commands(str(v[v.index("-c") + 1]))
    return out


def doc_code(text):
    """The fenced code blocks of a Markdown text, and its inline code spans."""
    fenced = re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
    rest = re.sub(r"```[a-z]*\n.*?```", "", text, flags=re.S)
    return fenced + re.findall(r"`([^`\n]+)`", rest)


def pod_spec(obj):
    if obj["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
        return obj["spec"]["template"]["spec"]
    if obj["kind"] == "Pod":
        return obj["spec"]
    return None


@unittest.skipIf(yaml is None, "PyYAML missing: install python3-yaml (scripts/deps.sh)")
class Manifests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.files = yaml_files()
        cls.objs = []
        for f in cls.files:
            with open(f) as fh:
                for d in yaml.safe_load_all(fh):
                    if d is not None:
                        cls.objs.append((f, d))

    def of_kind(self, kind):
        return [o for _, o in self.objs if o.get("kind") == kind]

    def test_every_file_parses_and_names_its_objects(self):
        self.assertGreaterEqual(len(self.files), 5, self.files)
        for f, o in self.objs:
            with self.subTest(file=os.path.relpath(f, SRC), kind=o.get("kind")):
                self.assertIsInstance(o, dict)
                for k in ("apiVersion", "kind", "metadata"):
                    self.assertIn(k, o)
                self.assertTrue(o["metadata"].get("name"))
                if o["kind"] != "Namespace":
                    self.assertEqual(o["metadata"].get("namespace"), "smtpbench")
        kinds = {o["kind"] for _, o in self.objs}
        for k in ("Namespace", "Deployment", "Service", "ConfigMap", "Job",
                  "PersistentVolumeClaim"):
            self.assertIn(k, kinds)

    def test_generator_job_is_indexed_and_its_segments_cover_it(self):
        jobs = [j for j in self.of_kind("Job") if any(
            "--segment" in opts for c in pod_spec(j)["containers"]
            for _, opts in container_commands(c))]
        self.assertEqual(len(jobs), 1, "one Job runs smtpbench --segment")
        job = jobs[0]
        spec = job["spec"]
        self.assertEqual(spec["completionMode"], "Indexed")
        n = spec["completions"]
        self.assertIsInstance(n, int)
        self.assertGreater(n, 1)
        self.assertEqual(spec["parallelism"], n)
        self.assertEqual(pod_spec(job)["restartPolicy"], "Never")
        (c,) = pod_spec(job)["containers"]
        script = " ".join(map(str, c.get("command", []) + c.get("args", [])))
        m = re.search(r"--segment\s+\"?\$\(\(\s*JOB_COMPLETION_INDEX\s*\+\s*1\s*\)\)/(\d+)", script)
        self.assertTrue(m, "--segment $((JOB_COMPLETION_INDEX+1))/N: " + script)
        self.assertEqual(int(m.group(1)), n, "N in --segment == completions == parallelism")
        for opt in ("--start-at", "--interval-log", "--target"):
            self.assertIn(opt, script)
        # the start time is one value shared by every pod
        env = {e["name"]: e for e in c.get("env", [])}
        self.assertIn("START_AT", env)
        self.assertIn('--start-at "$START_AT"', script)
        self.assertIn("configMapKeyRef", env["START_AT"]["valueFrom"])
        # each pod its own files, on a volume every pod mounts
        self.assertIn("$JOB_COMPLETION_INDEX.jsonl", script)
        mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
        self.assertTrue(any(re.search(r"--interval-log\s+" + re.escape(p) + "/", script)
                            for p in mounts), "the interval log goes to a mounted volume")
        claims = [v["persistentVolumeClaim"]["claimName"] for v in pod_spec(job)["volumes"]
                  if "persistentVolumeClaim" in v]
        pvcs = {p["metadata"]["name"]: p for p in self.of_kind("PersistentVolumeClaim")}
        for cl in claims:
            self.assertIn(cl, pvcs)
            self.assertIn("ReadWriteMany", pvcs[cl]["spec"]["accessModes"])
        # and a merge step reads that volume
        merges = [j for j in self.of_kind("Job") if any(
            p == "smtpbench" and "--csv" in opts for c in pod_spec(j)["containers"]
            for p, opts in container_commands(c))]
        self.assertEqual(len(merges), 1, "a Job runs smtpbench merge --csv")
        mv = [v["persistentVolumeClaim"]["claimName"] for v in pod_spec(merges[0])["volumes"]]
        self.assertEqual(mv, claims)

    def test_services_select_deployments_and_their_ports(self):
        deps = self.of_kind("Deployment")
        self.assertTrue(deps)
        for svc in self.of_kind("Service"):
            with self.subTest(service=svc["metadata"]["name"]):
                sel = svc["spec"]["selector"]
                matched = [d for d in deps
                           if sel.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
                self.assertEqual(len(matched), 1, "selects the pods of one Deployment")
                d = matched[0]
                self.assertTrue(d["spec"]["selector"]["matchLabels"].items()
                                <= d["spec"]["template"]["metadata"]["labels"].items())
                ports = {}
                for c in pod_spec(d)["containers"]:
                    for p in c.get("ports", []):
                        ports[p.get("name")] = p["containerPort"]
                for p in svc["spec"]["ports"]:
                    t = p.get("targetPort", p["port"])
                    self.assertTrue(t in ports or t in ports.values(),
                                    "targetPort %r is a container port" % t)

    def test_deployments_have_probes(self):
        for d in self.of_kind("Deployment"):
            for c in pod_spec(d)["containers"]:
                with self.subTest(deployment=d["metadata"]["name"], container=c["name"]):
                    self.assertIn("readinessProbe", c)
                    self.assertIn("livenessProbe", c)
                    ports = {p.get("name") for p in c.get("ports", [])} | \
                        {p["containerPort"] for p in c.get("ports", [])}
                    for probe in (c["readinessProbe"], c["livenessProbe"]):
                        for kind in ("httpGet", "tcpSocket"):
                            if kind in probe:
                                self.assertIn(probe[kind]["port"], ports)

    def test_sink_takes_proxy_from_the_balancer_and_is_probed(self):
        sinks = [d for d in self.of_kind("Deployment")
                 if any(p == "smtpsink" for c in pod_spec(d)["containers"]
                        for p, _ in container_commands(c))]
        self.assertEqual(len(sinks), 1)
        (c,) = pod_spec(sinks[0])["containers"]
        argv = c["command"] + c["args"]
        for opt in ("--proxy-protocol", "--verify", "--http", "--listen"):
            self.assertIn(opt, argv)
        cidrs = argv[argv.index("--proxy-protocol") + 1].split(",")
        for cidr in cidrs:
            net = ipaddress.ip_network(cidr)  # raises on garbage
            # the exec probe connects from 127.0.0.1: it must stay a direct client
            self.assertNotIn(ipaddress.ip_address("127.0.0.1"), net)
        http = argv[argv.index("--http") + 1]
        http_port = int(http.rsplit(":", 1)[1])
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        self.assertEqual(ports[c["readinessProbe"]["httpGet"]["port"]], http_port)
        self.assertEqual(c["readinessProbe"]["httpGet"]["path"], "/readyz")
        self.assertEqual(c["livenessProbe"]["exec"]["command"][:2], ["smtpsink", "check"])

    def test_haproxy_sends_proxy_v2_and_checks_with_it(self):
        cms = [cm for cm in self.of_kind("ConfigMap") if "haproxy.cfg" in cm.get("data", {})]
        self.assertEqual(len(cms), 1)
        cfg = cms[0]["data"]["haproxy.cfg"]
        self.assertRegex(cfg, r"(?m)^\s*mode tcp")
        self.assertRegex(cfg, r"(?m)^\s*(default-server|server|server-template)\b.*\bsend-proxy-v2\b")
        self.assertRegex(cfg, r"(?m)^\s*(default-server|server|server-template)\b.*\bcheck-send-proxy\b")
        self.assertRegex(cfg, r"(?m)^\s*option smtpchk")
        # the Deployment that mounts it, where the image reads it
        hap = [d for d in self.of_kind("Deployment")
               if any(v.get("configMap", {}).get("name") == cms[0]["metadata"]["name"]
                      for v in pod_spec(d).get("volumes", []))]
        self.assertEqual(len(hap), 1)
        (c,) = pod_spec(hap[0])["containers"]
        mount = [m["mountPath"] for m in c["volumeMounts"]][0]
        self.assertIn(mount.rstrip("/") + "/haproxy.cfg", " ".join(c.get("args", [])))
        # what it resolves is the headless Service of the sinks
        m = re.search(r"server-template\s+\S+\s+\d+\s+([\w.-]+):(\d+)", cfg)
        self.assertTrue(m)
        svc = {s["metadata"]["name"]: s for s in self.of_kind("Service")}
        name = m.group(1).split(".")[0]
        self.assertIn(name, svc)
        self.assertEqual(svc[name]["spec"].get("clusterIP"), "None")
        haproxy = shutil.which("haproxy") or ("/usr/sbin/haproxy"
                                              if os.path.exists("/usr/sbin/haproxy") else None)
        if haproxy:
            with tempfile.NamedTemporaryFile("w", suffix=".cfg") as f:
                f.write(cfg)
                f.flush()
                r = subprocess.run([haproxy, "-c", "-f", f.name], capture_output=True,
                                   timeout=30)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_shell_command_parser(self):
        # the parser the option check below relies on
        got = shell_commands(
            "kubectl -n smtpbench delete job smtpbench --ignore-not-found\n"
            "exec smtpbench --target a:1 \\\n  --segment $((I+1))/4 --start-at \"$S\"\n"
            "ssh \"$h\" \"smtpbench --rate 5 --duration 1s\" &\n"
            "kubectl run x --image=smtpsink:latest --command -- smtpbench --messages 3\n"
            "smtpsink --verify --http=0.0.0.0:8025; smtpbench merge --csv x a.jsonl\n"
            "host1$ build/bench/smtpbench --json r.json\n")
        self.assertEqual(got, [("smtpbench", ["--target", "--segment", "--start-at"]),
                               ("smtpbench", ["--rate", "--duration"]),
                               ("smtpbench", ["--messages"]),
                               ("smtpsink", ["--verify", "--http"]),
                               ("smtpbench", ["--csv"]),
                               ("smtpbench", ["--json"])])


@unittest.skipIf(yaml is None, "PyYAML missing: install python3-yaml (scripts/deps.sh)")
class Options(unittest.TestCase):
    """Every option the manifests and docs/distributed.md use exists."""

    @classmethod
    def setUpClass(cls):
        cls.help = {}
        for prog, path in BIN.items():
            if not path or not os.path.exists(path):
                raise unittest.SkipTest("SMTPSINK / SMTPBENCH not set")
            r = subprocess.run([path, "--help"], capture_output=True, timeout=30)
            assert r.returncode == 0, r.stderr
            cls.help[prog] = r.stdout.decode()

    def used(self):
        uses = []
        for f in yaml_files():
            with open(f) as fh:
                for o in yaml.safe_load_all(fh):
                    spec = pod_spec(o) if o else None
                    for c in (spec or {}).get("containers", []):
                        uses += [(os.path.relpath(f, SRC), p, opts)
                                 for p, opts in container_commands(c)]
        with open(DOC) as fh:
            for block in doc_code(fh.read()):
                uses += [("docs/distributed.md", p, opts) for p, opts in shell_commands(block)]
        return uses

    def test_every_option_used_exists(self):
        uses = self.used()
        seen = {(p, o) for _, p, opts in uses for o in opts}
        # the parser found the commands (an empty list would pass anything)
        for want in (("smtpbench", "--interval-log"), ("smtpbench", "--segment"),
                     ("smtpbench", "--start-at"), ("smtpbench", "--csv"),
                     ("smtpsink", "--proxy-protocol"), ("smtpsink", "--verify"),
                     ("smtpbench", "--proxy"), ("smtpbench", "--proxy-source")):
            self.assertIn(want, seen)
        for where, prog, opts in uses:
            for o in opts:
                with self.subTest(where=where, program=prog, option=o):
                    listed = re.search(r"(?<![\w-])" + re.escape(o) + r"(?![\w-])",
                                       self.help[prog])
                    self.assertTrue(listed, "%s uses %s %s, which %s --help does not list"
                                    % (where, prog, o, prog))


if __name__ == "__main__":
    sinklib.main()
