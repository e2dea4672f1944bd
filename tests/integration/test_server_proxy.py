"""smtpsink --proxy-protocol on the real binary, per I/O backend: PROXY v1 and
v2 headers (built here independently of the C builder) give the client
address that fault rules see; LOCAL keeps the real one; every malformed
header and an untrusted one close only that connection, counted by reason;
the header timeout; TLS-on-connect after the header; swaks's own PROXY
support; and real HAProxy with send-proxy / send-proxy-v2 and
check-send-proxy health checks in front of the sink.
"""
import json
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import sinklib  # noqa: E402
from sinklib import SLOW, Sink, backends, chat, free_port, recv_until  # noqa: E402

BACKENDS = backends()
SIG = b"\r\n\r\n\x00\r\nQUIT\n"
SEEN = "550 5.7.1 Seen as %s"
EXPECT_AS = ["--fault", "mail client=192.0.2.7 reply='550 5.7.1 Seen as 192.0.2.7'",
             "--fault", "mail client=2001:db8::7 reply='550 5.7.1 Seen as 2001:db8::7'",
             "--fault", "mail client=127.0.0.1 reply='550 5.7.1 Seen as 127.0.0.1'"]


def v2(cmd=0x21, fam=0x11, addrs=None, tlvs=b""):
    if addrs is None:
        addrs = (socket.inet_aton("192.0.2.7") + socket.inet_aton("127.0.0.1") +
                 struct.pack("!HH", 40000, 25))
    body = addrs + tlvs
    return SIG + bytes([cmd, fam]) + struct.pack("!H", len(body)) + body


def v2_tcp6(src="2001:db8::7", dst="::1"):
    return v2(fam=0x21, addrs=socket.inet_pton(socket.AF_INET6, src) +
              socket.inet_pton(socket.AF_INET6, dst) + struct.pack("!HH", 40000, 25))


V1 = b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 25\r\n"


def seen_as(sock, first=b""):
    """After the header: greeting, EHLO, MAIL; returns MAIL's reply."""
    if first:
        sock.sendall(first)
    greet = recv_until(sock, lambda d: d.endswith(b"\r\n"), timeout=5 * SLOW)
    assert greet.startswith(b"220 "), greet
    chat(sock, b"EHLO c.test\r\n")
    return chat(sock, b"MAIL FROM:<a@b.test>\r\n").decode().strip()


def connect(port, src="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(10 * SLOW)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    return s


def closed_with(sock):
    """Everything until the server closes."""
    data = b""
    sock.settimeout(8 * SLOW)
    while True:
        try:
            k = sock.recv(4096)
        except ConnectionResetError:
            break
        if not k:
            break
        data += k
    sock.close()
    return data


class Proxy(unittest.TestCase):
    def sink(self, be, extra=(), trust="127.0.0.1"):
        return Sink(["--proxy-protocol", trust] + EXPECT_AS + list(extra), backend=be)

    def test_v1_v2_addresses_reach_fault_rules(self):
        cases = [("v1", V1), ("v1-tcp6", b"PROXY TCP6 2001:db8::7 ::1 40000 25\r\n"),
                 ("v2", v2()), ("v2-tcp6", v2_tcp6()),
                 ("v2-mapped", v2_tcp6("::ffff:192.0.2.7", "::ffff:127.0.0.1")),
                 ("v2-tlvs", v2(addrs=socket.inet_aton("192.0.2.7") * 2 + b"\0\0\0\0",
                                tlvs=b"\x01\x00\x02h2" + b"\x05\x00\x03abc")),
                 ("v2-local", v2(cmd=0x20, fam=0x00, addrs=b"")),
                 ("v2-local-with-addrs", v2(cmd=0x20)),
                 ("v1-unknown", b"PROXY UNKNOWN\r\n"),
                 ("v1-unknown-addrs", b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"),
                 ("v2-unspec", v2(fam=0x00, addrs=b""))]
        want = {"v1": "192.0.2.7", "v1-tcp6": "2001:db8::7", "v2": "192.0.2.7",
                "v2-tcp6": "2001:db8::7", "v2-mapped": "192.0.2.7", "v2-tlvs": "192.0.2.7"}
        for be in BACKENDS:
            with self.subTest(backend=be), self.sink(be) as s:
                for name, hdr in cases:
                    c = connect(s.port)
                    got = seen_as(c, hdr)
                    c.close()
                    self.assertEqual(got, SEEN % want.get(name, "127.0.0.1"), name)
                # header and pipelined SMTP in one write; header byte by byte
                c = connect(s.port)
                c.sendall(V1 + b"EHLO c.test\r\n")
                data = recv_until(c, lambda d: b"250 " in d, timeout=5 * SLOW)
                self.assertTrue(data.startswith(b"220 "), data)
                self.assertEqual(chat(c, b"MAIL FROM:<a@b>\r\n"), b"550 5.7.1 Seen as 192.0.2.7\r\n")
                c.close()
                c = connect(s.port)
                for b in v2_tcp6():
                    c.sendall(bytes([b]))
                    time.sleep(0.001)
                self.assertEqual(seen_as(c), SEEN % "2001:db8::7")
                c.close()
                self.assertEqual(s.stop(), 0)
                k = s.counters()
                self.assertEqual(k["proxy_headers"], len(cases) + 2)
                self.assertEqual(k["proxy_local"], 5)
                self.assertEqual(k["proxy_proxied"], len(cases) + 2 - 5)
                self.assertEqual(k["proxy_untrusted"] + k["proxy_timeouts"] +
                                 k["proxy_bad_v1_syntax"], 0)

    def test_bad_headers_close_only_their_connection(self):
        bad = [("not_proxy", b"EHLO c.test\r\n"),
               ("not_proxy", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"),  # ClientHello
               ("not_proxy", b"GET / HTTP/1.0\r\n\r\n"),
               ("v1_syntax", b"PROXY TCP4 192.0.2.300 127.0.0.1 1 2\r\n"),
               ("v1_syntax", b"PROXY TCP4 2001:db8::1 127.0.0.1 1 2\r\n"),
               ("v1_syntax", b"PROXY TCP4 192.0.2.1 127.0.0.1 70000 2\r\n"),
               ("v1_syntax", b"PROXY TCP5 192.0.2.1 127.0.0.1 1 2\r\n"),
               ("v1_syntax", b"PROXY TCP4  192.0.2.1 127.0.0.1 1 2\r\n"),
               ("v1_syntax", b"PROXY TCP4 192.0.2.1 127.0.0.1 1 2\n"),
               ("v1_too_long", b"PROXY UNKNOWN " + b"x" * 120 + b"\r\n"),
               ("v2_version", v2(cmd=0x11)),
               ("v2_version", v2(cmd=0x22)),
               ("v2_family", v2(fam=0x12)),
               ("v2_family", v2(fam=0x44)),
               ("v2_length", v2(addrs=b"\x01\x02\x03")),
               ("v2_length", v2(fam=0x21)),  # TCP6 with a TCP4-sized block
               ("too_long", v2(tlvs=b"\x04\x10\x00" + b"\0" * 4096))]
        for be in BACKENDS:
            with self.subTest(backend=be), self.sink(be) as s:
                for reason, data in bad:
                    c = connect(s.port)
                    c.sendall(data)
                    out = closed_with(c)
                    self.assertEqual(
                        out, b"421 4.7.0 smtpsink.localhost Error: PROXY protocol header "
                        b"expected\r\n", (reason, data))
                # truncated: the balancer leaves inside its header
                c = connect(s.port)
                c.sendall(v2()[:20])
                c.close()
                # and the sink still serves
                c = connect(s.port)
                self.assertEqual(seen_as(c, V1), SEEN % "192.0.2.7")
                c.close()
                time.sleep(0.2 * SLOW)
                self.assertEqual(s.stop(), 0)
                k = s.counters()
                for reason in set(r for r, _ in bad):
                    self.assertEqual(k["proxy_bad_" + reason],
                                     sum(1 for r, _ in bad if r == reason), reason)
                self.assertEqual(k["proxy_truncated"], 1)
                self.assertEqual(k["proxy_headers"], 1)

    def test_untrusted_sources_are_served_and_may_not_claim_an_address(self):
        for be in BACKENDS:
            with self.subTest(backend=be), self.sink(be, trust="127.0.0.9/32") as s:
                for hdr in (V1, v2()):
                    c = connect(s.port)
                    c.sendall(hdr + b"EHLO c.test\r\n")
                    out = closed_with(c)
                    self.assertTrue(out.startswith(b"220 "), out)
                    self.assertTrue(out.endswith(
                        b"421 4.7.0 smtpsink.localhost Error: PROXY protocol header from an "
                        b"untrusted address\r\n"), out)
                    self.assertNotIn(b"250", out)
                c = connect(s.port)
                self.assertEqual(seen_as(c), SEEN % "127.0.0.1")
                c.close()
                self.assertEqual(s.stop(), 0)
                self.assertEqual(s.counters()["proxy_untrusted"], 2)
                self.assertEqual(s.counters()["proxy_headers"], 0)

    def test_timeout_and_shutdown(self):
        for be in BACKENDS:
            with self.subTest(backend=be), self.sink(be, ["--proxy-timeout", "1s"]) as s:
                c = connect(s.port)
                t0 = time.monotonic()
                out = closed_with(c)
                took = time.monotonic() - t0
                self.assertEqual(out, b"421 4.4.2 smtpsink.localhost Error: timeout exceeded "
                                 b"waiting for the PROXY protocol header\r\n")
                self.assertGreater(took, 0.9)
                self.assertLess(took, 3 * SLOW)
                # a connection still waiting for its header does not hold up a stop
                c = connect(s.port)
                c.sendall(b"PROXY TCP4 ")
                time.sleep(0.2 * SLOW)
                t0 = time.monotonic()
                self.assertEqual(s.stop(), 0)
                self.assertLess(time.monotonic() - t0, 3 * SLOW)
                c.close()
                self.assertEqual(s.counters()["proxy_timeouts"], 1)

    def test_header_before_implicit_tls(self):
        for be in BACKENDS:
            with self.subTest(backend=be), self.sink(
                    be, ["--tls-self-signed", "--listen-tls", "127.0.0.1:0"]) as s:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                raw = connect(s.tls_port)
                raw.sendall(v2())
                t = ctx.wrap_socket(raw, server_hostname="localhost")
                self.assertEqual(seen_as(t), SEEN % "192.0.2.7")
                t.close()
                # a bad header on a TLS port: closed without plaintext
                raw = connect(s.tls_port)
                raw.sendall(b"\x16\x03\x01\x00\x10")
                self.assertEqual(closed_with(raw), b"")
                self.assertEqual(s.stop(), 0)
                self.assertEqual(s.counters()["tls_handshakes"], 1)
                self.assertEqual(s.counters()["proxy_bad_not_proxy"], 1)

    def test_capture_index_and_conn_limit_use_the_proxied_address(self):
        cap = tempfile.mkdtemp(prefix="sinkproxycap.")
        try:
            with Sink(["--proxy-protocol", "127.0.0.1", "--capture", cap,
                       "--max-conns-per-ip", "1"], backend=BACKENDS[0]) as s:
                held = connect(s.port)
                held.sendall(b"PROXY TCP4 192.0.2.8 127.0.0.1 1 25\r\n")
                recv_until(held, lambda d: d.endswith(b"\r\n"))
                # a second connection "from" 192.0.2.8 is over the limit; one
                # from 192.0.2.7 (same balancer socket address) is not
                c = connect(s.port)
                c.sendall(b"PROXY TCP4 192.0.2.8 127.0.0.1 2 25\r\n")
                self.assertIn(b"421 4.7.0", closed_with(c))
                c = connect(s.port)
                c.sendall(V1)
                recv_until(c, lambda d: d.endswith(b"\r\n"))
                for cmd in (b"EHLO c.test\r\n", b"MAIL FROM:<a@b.test>\r\n",
                            b"RCPT TO:<r@x.test>\r\n", b"DATA\r\n", b"hi\r\n.\r\n",
                            b"QUIT\r\n"):
                    chat(c, cmd)
                c.close()
                held.close()
                self.assertEqual(s.stop(), 0)
                self.assertEqual(s.counters()["conns_rejected_per_ip"], 1)
            with open(os.path.join(cap, "index.jsonl")) as f:
                rows = [json.loads(line) for line in f]
            self.assertEqual([r["client"] for r in rows], ["192.0.2.7"])
        finally:
            shutil.rmtree(cap, ignore_errors=True)

    def test_usage_errors(self):
        from sinklib import SMTPSINK
        for args, msg in ((["--proxy-protocol", "10.1.2.3/8"], "did you mean 10.0.0.0/8"),
                          (["--proxy-protocol", "127.0.0.1,,"], "ADDR or ADDR/PREFIX"),
                          (["--proxy-protocol", "localhost"], "ADDR or ADDR/PREFIX"),
                          (["--proxy-timeout", "0"], "more than 0")):
            r = subprocess.run([SMTPSINK, "--listen", "127.0.0.1:0"] + args,
                               capture_output=True, text=True, timeout=10)
            self.assertEqual(r.returncode, 2, args)
            self.assertIn(msg, r.stderr)

    def test_swaks_proxy(self):
        for be in BACKENDS:
            with self.subTest(backend=be), self.sink(be) as s:
                for ver, src, fam in (("1", "192.0.2.7", "TCP4"), ("1", "2001:db8::7", "TCP6"),
                                      ("2", "192.0.2.7", "AF_INET"),
                                      ("2", "2001:db8::7", "AF_INET6")):
                    dst = "::1" if ":" in src else "127.0.0.1"
                    r = subprocess.run(
                        ["swaks", "--server", "127.0.0.1:%d" % s.port, "--to", "b@x.test",
                         "--proxy-version", ver, "--proxy-family", fam, "--proxy-source", src,
                         "--proxy-source-port", "4000", "--proxy-dest", dst,
                         "--proxy-dest-port", "25"],
                        capture_output=True, text=True, timeout=30 * SLOW)
                    self.assertIn(SEEN % src, r.stdout, (ver, fam, r.stdout, r.stderr))
                self.assertEqual(s.stop(), 0)
                self.assertEqual(s.counters()["proxy_headers"], 4)


@unittest.skipUnless(shutil.which("haproxy"), "haproxy not installed (scripts/deps.sh installs it)")
class HAProxy(unittest.TestCase):
    """Real HAProxy in front: mode tcp, send-proxy or send-proxy-v2, with
    check-send-proxy SMTP health checks (which arrive as LOCAL headers)."""

    def haproxy(self, sink_port, send):
        """HAProxy in front of one sink, SMTP health checks with a header."""
        front = free_port()
        return front, sinklib.HAProxy(
            front, [(sink_port, send + " check check-send-proxy inter 200ms")],
            "    option smtpchk EHLO haproxy.test\n")

    def test_haproxy_send_proxy_v1_and_v2(self):
        for be in BACKENDS:
            for send in ("send-proxy", "send-proxy-v2"):
                with self.subTest(backend=be, send=send), Sink(
                        ["--proxy-protocol", "127.0.0.1", "--fault",
                         "mail client=127.0.0.5 reply='550 5.7.1 Seen as 127.0.0.5'"],
                        backend=be) as s:
                    front, hp = self.haproxy(s.port, send)
                    with hp:
                        time.sleep(0.6)  # a few health checks
                        c = connect(front, "127.0.0.5")
                        self.assertEqual(seen_as(c), SEEN % "127.0.0.5")
                        c.close()
                        c = connect(front, "127.0.0.6")
                        self.assertEqual(seen_as(c), "250 2.1.0 Ok")
                        c.close()
                    self.assertEqual(s.stop(), 0)
                    k = s.counters()
                    # check-send-proxy: v2 health checks say LOCAL; v1 ones carry
                    # the check connection's own addresses
                    if send == "send-proxy-v2":
                        self.assertGreaterEqual(k["proxy_local"], 1)
                        self.assertEqual(k["proxy_proxied"], 2)  # the two clients
                    else:
                        self.assertEqual(k["proxy_local"], 0)
                        self.assertGreaterEqual(k["proxy_headers"], 3)
                    bad = sum(v for n, v in k.items() if n.startswith("proxy_bad_"))
                    self.assertEqual(bad, 0)
                    self.assertEqual(k["proxy_untrusted"], 0)

    def test_direct_clients_beside_haproxy(self):
        """Trusting only the balancer's address leaves everyone else direct."""
        for be in BACKENDS:
            with self.subTest(backend=be), Sink(
                    ["--listen", "127.0.0.2:0", "--proxy-protocol", "127.0.0.1",
                     "--fault", "mail client=127.0.0.5 reply='550 5.7.1 Seen as 127.0.0.5'",
                     "--fault", "mail client=127.0.0.3 reply='550 5.7.1 Seen as 127.0.0.3'"],
                    backend=be) as s:
                front, hp = self.haproxy(s.port, "send-proxy-v2")
                with hp:
                    c = connect(front, "127.0.0.5")
                    self.assertEqual(seen_as(c), SEEN % "127.0.0.5")
                    c.close()
                    direct_port = int(s.addrs[1].rsplit(":", 1)[1])
                    c = socket.socket()
                    c.settimeout(10 * SLOW)
                    c.bind(("127.0.0.3", 0))
                    c.connect(("127.0.0.2", direct_port))
                    self.assertEqual(seen_as(c), SEEN % "127.0.0.3")
                    c.close()
                self.assertEqual(s.stop(), 0)


if __name__ == "__main__":
    unittest.main()
