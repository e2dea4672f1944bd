"""smtpsink --capture: messages stored byte-exact in a Maildir with an index,
sampling and caps, and what happens when the disk is full - by default
accepted and counted, with --capture-strict refused with 452 4.3.1.
"""
import json
import os
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import sinklib  # noqa: E402
from sinklib import SLOW, Sink, backends, chat, recv_until  # noqa: E402

BACKENDS = backends()


def open_in(pid, directory):
    """How many of the process's descriptors are files in directory."""
    n = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)).startswith(directory + "/"):
                n += 1
        except OSError:
            pass
    return n


def stored(d):
    """{file name: bytes} in d/new, and the index lines."""
    new = os.path.join(d, "new")
    files = {}
    for n in sorted(os.listdir(new)):
        with open(os.path.join(new, n), "rb") as f:
            files[n] = f.read()
    with open(os.path.join(d, "index.jsonl")) as f:
        index = [json.loads(line) for line in f]
    return files, index


class Capture(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="sinkcap.")

    def tearDown(self):
        subprocess.run(["umount", os.path.join(self.dir, "fs")], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def capdir(self, name):
        return os.path.join(self.dir, name)

    def test_byte_exact_data_and_bdat(self):
        long_header = b"X-Long: " + b"h" * 3000 + b"\r\n"
        body = (long_header + b"Subject: exact\r\n\r\n.leading dot\r\n..two dots\r\n"
                b"bare\rCR and\x00NUL\r\n.\r\nnot the end\r\n")
        for be in BACKENDS:
            d = self.capdir("cap-" + be)
            with self.subTest(backend=be), Sink(["--capture", d], backend=be) as s:
                c = smtplib.SMTP("127.0.0.1", s.port, timeout=10 * SLOW)
                c.ehlo("client.test")
                c.sendmail("a@client.test", ["b@server.test", "c@server.test"], body)
                c.quit()
                raw = s.connect()
                chat(raw, b"")
                chat(raw, b"EHLO bdat.test\r\n")
                raw.sendall(b"MAIL FROM:<z@y.test>\r\nRCPT TO:<q@w.test>\r\nBDAT 6\r\nhello,"
                            b"BDAT 7 LAST\r\n world!")
                recv_until(raw, lambda x: x.count(b"\r\n") == 4)
                raw.close()
                s.stop()
                files, index = stored(d)
                self.assertEqual(len(files), 2)
                by_helo = {e["helo"]: e for e in index}
                smtp_file = files[by_helo["client.test"]["file"]]
                # smtplib stuffs dots and sends CRLF line ends; we store what it meant
                self.assertEqual(smtp_file, body)
                self.assertEqual(files[by_helo["bdat.test"]["file"]], b"hello, world!")
                e = by_helo["client.test"]
                self.assertEqual(e["mail_from"], "a@client.test")
                self.assertEqual(e["rcpt_to"], ["b@server.test", "c@server.test"])
                self.assertEqual(e["size"], len(body))
                self.assertEqual(e["client"], "127.0.0.1")
                self.assertFalse(e["tls"])
                self.assertEqual(os.listdir(os.path.join(d, "tmp")), [])
                self.assertEqual(s.counters()["captured"], 2)

    def test_tls_fact_and_http_api(self):
        d = self.capdir("cap-tls")
        cert = os.path.join(self.dir, "cert.pem")
        with Sink(["--capture", d, "--tls-self-signed", "--tls-cert-out", cert, "--auth", "any",
                   "--http", "127.0.0.1:0"]) as s:
            http = next(a for a in s.extra_lines if "http on" in a).split("http on ")[1].strip()
            c = smtplib.SMTP("127.0.0.1", s.port, timeout=10 * SLOW)
            c.starttls(context=ssl.create_default_context(cafile=cert))
            c.login("u", "p")
            c.sendmail("a@b.test", ["c@d.test"], b"Subject: tls\r\n\r\nsecret\r\n")
            c.quit()
            time.sleep(0.3)
            r = subprocess.run(["curl", "-s", "http://%s/api/v1/messages" % http],
                               capture_output=True, timeout=10)
            lst = json.loads(r.stdout)
            self.assertEqual(len(lst), 1)
            self.assertTrue(lst[0]["tls"])
            self.assertTrue(lst[0]["auth"])
            r = subprocess.run(["curl", "-s", "http://%s/api/v1/messages/%s" % (http,
                                                                               lst[0]["file"])],
                               capture_output=True, timeout=10)
            self.assertEqual(r.stdout, b"Subject: tls\r\n\r\nsecret\r\n")
            r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                "http://%s/api/v1/messages/..%%2Findex.jsonl" % http],
                               capture_output=True, timeout=10)
            self.assertEqual(r.stdout, b"404")

    def test_index_bounds_many_recipients(self):
        # the index keeps at most 60 KiB of envelope per message, whatever
        # --max-rcpt allows; the rest is counted
        d = self.capdir("many")
        rcpts = ["r%04d-%s@example.test" % (i, "x" * 40) for i in range(1200)]
        with Sink(["--capture", d, "--max-rcpt", "5000"]) as s:
            c = smtplib.SMTP("127.0.0.1", s.port, timeout=30 * SLOW)
            c.sendmail("a@b.test", rcpts, b"Subject: many\r\n\r\nx\r\n")
            c.quit()
            s.stop()
        files, index = stored(d)
        self.assertEqual(len(index), 1)
        e = index[0]
        self.assertEqual(e["rcpt_to"], rcpts[:len(e["rcpt_to"])])
        self.assertGreater(len(e["rcpt_to"]), 900)
        self.assertEqual(len(e["rcpt_to"]) + e["rcpt_to_omitted"], 1200)
        self.assertEqual(e["mail_from"], "a@b.test")
        self.assertEqual(e["file"], list(files)[0])

    def test_hangup_mid_data_leaves_nothing(self):
        # clients that hang up (or reset) inside DATA: their files are
        # removed at once, not held open by the writer until shutdown
        for be in BACKENDS:
            d = self.capdir("hangup-" + be)
            with self.subTest(backend=be), Sink(["--capture", d], backend=be) as s:
                for i in range(50):
                    c = s.connect()
                    chat(c, b"")
                    chat(c, b"EHLO x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n")
                    chat(c, b"DATA\r\n")
                    c.sendall(b"Subject: cut\r\n\r\n" + b"z" * 5000)
                    if i % 2:  # half with a reset
                        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                     b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    c.close()
                tmp = os.path.join(d, "tmp")
                deadline = time.monotonic() + 5 * SLOW
                while time.monotonic() < deadline and (os.listdir(tmp) or open_in(s.proc.pid, tmp)):
                    time.sleep(0.05)
                self.assertEqual(os.listdir(tmp), [], "partial files removed while running")
                self.assertEqual(open_in(s.proc.pid, tmp), 0, "no file left open by the writer")
                c = smtplib.SMTP("127.0.0.1", s.port, timeout=10 * SLOW)
                c.sendmail("a@b.test", ["c@d.test"], b"Subject: whole\r\n\r\nok\r\n")
                c.quit()
                s.stop()
                files, index = stored(d)
                self.assertEqual(list(files.values()), [b"Subject: whole\r\n\r\nok\r\n"])
                self.assertEqual(s.counters()["captured"], 1)

    def test_sample_first_max(self):
        for args, want in ((["--capture-sample", "1/3"], 3), (["--capture-first", "4"], 4),
                           (["--capture-max-bytes", "250"], 2)):
            d = self.capdir("cap-" + args[0].strip("-"))
            with self.subTest(args=args), Sink(["--capture", d] + args) as s:
                c = smtplib.SMTP("127.0.0.1", s.port, timeout=10 * SLOW)
                for i in range(10):
                    c.sendmail("a@b.test", ["c@d.test"], b"Subject: %d\r\n\r\n%s\r\n" % (i, b"x" * 80))
                c.quit()
                s.stop()
                files, index = stored(d)
                self.assertEqual(len(files), want)
                self.assertEqual(len(index), want)
                ctr = s.counters()
                self.assertEqual(ctr["messages"], 10)
                self.assertEqual(ctr["captured"], want)
                self.assertEqual(ctr["capture_skipped"], 10 - want)

    def disk_full(self, d, wrapper, strict):
        args = ["--capture", d] + (["--capture-strict"] if strict else [])
        with Sink(args, wrapper=wrapper) as s:
            c = smtplib.SMTP("127.0.0.1", s.port, timeout=10 * SLOW)
            results = []
            for size in (100, 200000, 100):
                try:
                    c.sendmail("a@b.test", ["c@d.test"], b"Subject: s\r\n\r\n" + b"y" * size + b"\r\n")
                    results.append(250)
                except smtplib.SMTPDataError as e:
                    results.append(e.smtp_code)
            c.quit()
            s.stop()
            return results, s.counters()

    def test_disk_full_rlimit_fsize(self):
        # RLIMIT_FSIZE: writes past 64 KiB fail with EFBIG, as on a full disk
        for strict in (False, True):
            d = self.capdir("fsize-%s" % strict)
            with self.subTest(strict=strict):
                res, ctr = self.disk_full(d, ["prlimit", "--fsize=65536"], strict)
                if strict:
                    self.assertEqual(res, [250, 452, 250])
                    self.assertEqual(ctr["messages"], 2)
                    self.assertEqual(ctr["err_storage"], 1)
                else:
                    self.assertEqual(res, [250, 250, 250])  # accepted anyway...
                    self.assertEqual(ctr["messages"], 3)
                self.assertEqual(ctr["capture_dropped"], 1)  # ...and counted
                self.assertEqual(ctr["captured"], 2)
                files, index = stored(d)
                self.assertEqual(len(files), 2)
                self.assertEqual(os.listdir(os.path.join(d, "tmp")), [], "no partial files")

    def test_disk_full_tmpfs(self):
        # a real full file system: a 128 KiB tmpfs, smaller than the 200 KB message
        if os.geteuid() != 0:
            self.skipTest("mounting a tmpfs needs root")
        fs = os.path.join(self.dir, "fs")
        os.makedirs(fs)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", fs],
                           capture_output=True)
        if r.returncode:
            self.skipTest("cannot mount a tmpfs: %s" % r.stderr.decode().strip())
        for strict in (True, False):
            d = os.path.join(fs, "strict" if strict else "lenient")
            with self.subTest(strict=strict):
                res, ctr = self.disk_full(d, [], strict)
                self.assertEqual(res[1], 452 if strict else 250)
                self.assertGreaterEqual(ctr["capture_dropped"], 1)
                self.assertEqual(os.listdir(os.path.join(d, "tmp")), [])
                shutil.rmtree(d)


if __name__ == "__main__":
    sinklib.main()
