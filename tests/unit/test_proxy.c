/*
 * test_proxy.c - PROXY protocol v1/v2 parser and builders (proxy.c)
 *
 * Every valid header is checked whole, at every strict prefix (MORE: the
 * caller's timeout deals with a truncated header, not the parser) and with
 * SMTP bytes after it (not counted in len).  Every bad header names the
 * octet at which it must be refused: all shorter prefixes are MORE, that
 * prefix and every longer one BAD with the expected reason.  Expected
 * addresses come from inet_pton here, not from the code under test.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sink/proxy.h"

static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
static const char smtp[] = "EHLO x\r\n";

/* ip - "a.b.c.d" or an IPv6 text as a struct fault_ip; family as given (so
 * a test can say that an IPv4-mapped address must come out as family 4). */
static struct fault_ip ip(const char *s)
{
	struct fault_ip r;

	memset(&r, 0, sizeof(r));
	if (inet_pton(AF_INET, s, r.b) == 1) {
		r.family = 4;
	} else {
		cr_assert_eq(inet_pton(AF_INET6, s, r.b), 1, "test address %s", s);
		r.family = 6;
	}
	return r;
}

static void assert_ip(const struct fault_ip *got, const struct fault_ip *want, const char *what)
{
	cr_assert_eq(got->family, want->family, "%s: family %u, want %u", what, got->family,
	             want->family);
	cr_assert_eq(memcmp(got->b, want->b, want->family == 4 ? 4 : 16), 0, "%s: address", what);
}

static struct proxy_hdr want_local(size_t len, uint8_t version)
{
	struct proxy_hdr w;

	memset(&w, 0, sizeof(w));
	w.len = len;
	w.version = version;
	w.local = true;
	return w;
}

static struct proxy_hdr want_tcp(size_t len, uint8_t version, const char *src, uint16_t sp,
                                 const char *dst, uint16_t dp)
{
	struct proxy_hdr w;

	memset(&w, 0, sizeof(w));
	w.len = len;
	w.version = version;
	w.src = ip(src);
	w.dst = ip(dst);
	w.src_port = sp;
	w.dst_port = dp;
	return w;
}

static void assert_hdr(const struct proxy_hdr *h, const struct proxy_hdr *w, const char *what)
{
	cr_assert_eq(h->len, w->len, "%s: len %zu, want %zu", what, h->len, w->len);
	cr_assert_eq(h->version, w->version, "%s: version", what);
	cr_assert_eq(h->local, w->local, "%s: local %d", what, h->local);
	if (w->local)
		return;
	assert_ip(&h->src, &w->src, what);
	assert_ip(&h->dst, &w->dst, what);
	cr_assert_eq(h->src_port, w->src_port, "%s: src port %u", what, h->src_port);
	cr_assert_eq(h->dst_port, w->dst_port, "%s: dst port %u", what, h->dst_port);
}

/* valid - p[0..n) is exactly one header equal to *w: every strict prefix is
 * MORE, the whole is DONE, and so is the whole followed by SMTP bytes. */
static void valid(const void *p, size_t n, const struct proxy_hdr *w, const char *what)
{
	uint8_t buf[PROXY_MAX + sizeof(smtp)];
	struct proxy_hdr h;
	enum proxy_reason why;

	cr_assert_eq(n, w->len, "%s: test header is %zu octets, want %zu", what, n, w->len);
	cr_assert_leq(n, PROXY_MAX);
	for (size_t k = 0; k < n; k++) {
		why = PROXY_R_COUNT;
		enum proxy_status st = proxy_parse(p, k, &h, &why);
		cr_assert_eq(st, PROXY_MORE, "%s: prefix of %zu octets gave %d (%s)", what, k, st,
		             proxy_reason_name(why));
		cr_assert_eq(why, PROXY_R_NONE);
	}
	memset(&h, 0xa5, sizeof(h));
	why = PROXY_R_COUNT;
	cr_assert_eq(proxy_parse(p, n, &h, &why), PROXY_DONE, "%s: whole gave %s", what,
	             proxy_reason_name(why));
	cr_assert_eq(why, PROXY_R_NONE);
	assert_hdr(&h, w, what);

	memcpy(buf, p, n);
	memcpy(buf + n, smtp, sizeof(smtp) - 1);
	for (size_t extra = 1; extra < sizeof(smtp); extra++) {
		memset(&h, 0, sizeof(h));
		cr_assert_eq(proxy_parse(buf, n + extra, &h, &why), PROXY_DONE,
		             "%s + %zu octets of SMTP: %s", what, extra, proxy_reason_name(why));
		assert_hdr(&h, w, what);
	}
	/* A TLS-on-connect ClientHello after the header, likewise. */
	buf[n] = 0x16;
	memset(&h, 0, sizeof(h));
	cr_assert_eq(proxy_parse(buf, n + 1, &h, &why), PROXY_DONE);
	assert_hdr(&h, w, what);
}

static void valid_str(const char *s, const struct proxy_hdr *w)
{
	valid(s, strlen(s), w, s);
}

/* bad_at - p[0..n) is refused with reason r first at prefix length at:
 * shorter prefixes are MORE, that one and every longer one up to n (and n
 * followed by SMTP bytes) BAD with r. */
static void bad_at(const void *p, size_t n, size_t at, enum proxy_reason r, const char *what)
{
	uint8_t buf[PROXY_MAX + 64];
	struct proxy_hdr h;
	enum proxy_reason why;

	cr_assert(at >= 1 && at <= n && n + sizeof(smtp) <= sizeof(buf), "%s: test itself", what);
	for (size_t k = 0; k < at; k++) {
		why = PROXY_R_COUNT;
		enum proxy_status st = proxy_parse(p, k, &h, &why);
		cr_assert_eq(st, PROXY_MORE,
		             "%s: prefix of %zu (refusal expected at %zu) gave %d (%s)", what, k,
		             at, st, proxy_reason_name(why));
	}
	memcpy(buf, p, n);
	memcpy(buf + n, smtp, sizeof(smtp) - 1);
	for (size_t k = at; k <= n + sizeof(smtp) - 1; k++) {
		why = PROXY_R_NONE;
		enum proxy_status st = proxy_parse(buf, k, &h, &why);
		cr_assert_eq(st, PROXY_BAD, "%s: prefix of %zu (refusal expected at %zu) gave %d",
		             what, k, at, st);
		cr_assert_eq(why, r, "%s: prefix of %zu: %s, want %s", what, k,
		             proxy_reason_name(why), proxy_reason_name(r));
	}
}

/* BAD(s, prefix, r): string s is refused at the last octet of prefix. */
static void bad_str(const char *s, const char *prefix, enum proxy_reason r)
{
	size_t at = strlen(prefix);

	cr_assert_eq(strncmp(s, prefix, at), 0, "test: '%s' does not start with '%s'", s, prefix);
	bad_at(s, strlen(s), at, r, s);
}
#define BAD1(s, prefix) bad_str(s, prefix, PROXY_R_V1_SYNTAX)

/* v2 - a v2 header: fixed part with len as given, then body (blen octets). */
static size_t v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, uint16_t len, const void *body,
                 size_t blen)
{
	memcpy(out, sig, 12);
	out[12] = ver_cmd;
	out[13] = fam;
	out[14] = (uint8_t)(len >> 8);
	out[15] = (uint8_t)len;
	if (blen)
		memcpy(out + 16, body, blen);
	return 16 + blen;
}

/* v2_tcp - a PROXY TCP4 / TCP6 header with its address block and extra
 * octets (TLVs) after it, len counting both. */
static size_t v2_tcp(uint8_t *out, const char *src, uint16_t sp, const char *dst, uint16_t dp,
                     const void *tlv, size_t tlen)
{
	struct fault_ip s = ip(src), d = ip(dst);
	uint8_t body[PROXY_MAX];
	size_t a = s.family == 4 ? 4 : 16, bl = 0;

	memcpy(body, s.b, a);
	memcpy(body + a, d.b, a);
	bl = 2 * a;
	body[bl++] = (uint8_t)(sp >> 8);
	body[bl++] = (uint8_t)sp;
	body[bl++] = (uint8_t)(dp >> 8);
	body[bl++] = (uint8_t)dp;
	if (tlen)
		memcpy(body + bl, tlv, tlen);
	bl += tlen;
	return v2(out, 0x21, s.family == 4 ? 0x11 : 0x21, (uint16_t)bl, body, bl);
}

/*
 * Version 1, valid
 */

Test(proxy_v1, tcp4)
{
	const char *s = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
	struct proxy_hdr w = want_tcp(strlen(s), 1, "192.168.0.1", 56324, "192.168.0.11", 443);

	valid_str(s, &w);
	s = "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
	w = want_tcp(56, 1, "255.255.255.255", 65535, "255.255.255.255", 65535);
	valid_str(s, &w); /* the spec's longest TCP4 line, 56 octets */
	s = "PROXY TCP4 0.0.0.0 10.0.100.1 0 25\r\n";
	w = want_tcp(strlen(s), 1, "0.0.0.0", 0, "10.0.100.1", 25);
	valid_str(s, &w); /* single zeros are numbers, not leading zeros */
}

Test(proxy_v1, tcp6)
{
	const char *s = "PROXY TCP6 2001:db8::1 2001:DB8::A:2 56324 25\r\n";
	struct proxy_hdr w = want_tcp(strlen(s), 1, "2001:db8::1", 56324, "2001:db8::a:2", 25);

	valid_str(s, &w);
	s = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
	w = want_tcp(104, 1, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535,
	             "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);
	valid_str(s, &w); /* the spec's longest TCP6 line, 104 octets */
	s = "PROXY TCP6 :: ::1 1 2\r\n";
	w = want_tcp(strlen(s), 1, "::", 1, "::1", 2);
	valid_str(s, &w);
}

Test(proxy_v1, ipv4_mapped_is_ipv4)
{
	const char *s = "PROXY TCP6 ::ffff:192.0.2.1 ::FFFF:c633:6402 1025 587\r\n";
	struct proxy_hdr w = want_tcp(strlen(s), 1, "192.0.2.1", 1025, "198.51.100.2", 587);

	valid_str(s, &w);
	/* mapped on one side only: each address is normalised on its own */
	s = "PROXY TCP6 2001:db8::1 ::ffff:10.0.0.1 1 2\r\n";
	w = want_tcp(strlen(s), 1, "2001:db8::1", 1, "10.0.0.1", 2);
	valid_str(s, &w);
}

Test(proxy_v1, unknown)
{
	const char *s = "PROXY UNKNOWN\r\n";
	struct proxy_hdr w = want_local(15, 1);

	valid_str(s, &w);
	/* the spec's worst case, 107 octets: the rest is ignored */
	s = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
	w = want_local(107, 1);
	valid_str(s, &w);
	s = "PROXY UNKNOWN garbage 1.2.3.400 :::: -1 +\tx\r\n";
	w = want_local(strlen(s), 1);
	valid_str(s, &w);
	s = "PROXY UNKNOWNX\r\n"; /* anything before the CRLF, not only " ..." */
	w = want_local(strlen(s), 1);
	valid_str(s, &w);
	/* a NUL is "anything" too */
	static const char nul[] = "PROXY UNKNOWN \0\x01\xff\r\n";
	w = want_local(sizeof(nul) - 1, 1);
	valid(nul, sizeof(nul) - 1, &w, "UNKNOWN with NUL");
}

/* unknown_padded - "PROXY UNKNOWN" + filler + CRLF, total octets. */
static void unknown_padded(char *out, size_t total)
{
	memcpy(out, "PROXY UNKNOWN", 13);
	memset(out + 13, 'x', total - 15);
	memcpy(out + total - 2, "\r\n", 2);
}

Test(proxy_v1, length_limit_is_107_with_crlf)
{
	char buf[200];
	struct proxy_hdr w = want_local(PROXY_V1_MAX, 1);

	unknown_padded(buf, PROXY_V1_MAX);
	valid(buf, PROXY_V1_MAX, &w, "107 octets");
	/* 108: the CR should have been at index 105 and is not */
	unknown_padded(buf, PROXY_V1_MAX + 1);
	bad_at(buf, PROXY_V1_MAX + 1, PROXY_V1_MAX - 1, PROXY_R_V1_TOO_LONG, "108 octets");
	unknown_padded(buf, 150);
	bad_at(buf, 150, PROXY_V1_MAX - 1, PROXY_R_V1_TOO_LONG, "150 octets");
	/* CR at 105, then not LF: the line cannot end there, syntax */
	unknown_padded(buf, PROXY_V1_MAX);
	buf[PROXY_V1_MAX - 1] = 'x';
	bad_at(buf, PROXY_V1_MAX, PROXY_V1_MAX, PROXY_R_V1_SYNTAX, "CR x at 105");
	/* a TCP6 line in long (valid) address spellings: 116 octets */
	const char *s = "PROXY TCP6 0000:0000:0000:0000:0000:ffff:255.255.255.255 "
	                "0000:0000:0000:0000:0000:ffff:255.255.255.255 65535 65535\r\n";
	cr_assert_eq(strlen(s), 116);
	bad_at(s, strlen(s), PROXY_V1_MAX - 1, PROXY_R_V1_TOO_LONG, s);
	/* one long spelling still fits */
	s = "PROXY TCP6 0000:0000:0000:0000:0000:ffff:255.255.255.255 ::1 65535 65535\r\n";
	w = want_tcp(strlen(s), 1, "255.255.255.255", 65535, "::1", 65535);
	valid_str(s, &w);
}

/*
 * Version 1, refused
 */

Test(proxy_v1, not_proxy)
{
	bad_str("PRoXY TCP4", "PRo", PROXY_R_NOT_PROXY);
	bad_str("PROXY\r\n", "PROXY\r", PROXY_R_NOT_PROXY);
	bad_str("PROXYTCP4", "PROXYT", PROXY_R_NOT_PROXY);
	bad_str("POST / HTTP/1.1\r\n", "PO", PROXY_R_NOT_PROXY);
}

Test(proxy_v1, protocol_word)
{
	BAD1("PROXY X", "PROXY X");
	BAD1("PROXY tcp4 1.2.3.4", "PROXY t");
	BAD1("PROXY  TCP4 1.2.3.4", "PROXY  ");
	BAD1("PROXY TCP5 1.2.3.4", "PROXY TCP5");
	BAD1("PROXY TCP41.2.3.4", "PROXY TCP41");
	BAD1("PROXY TCP4\r\n", "PROXY TCP4\r");
	BAD1("PROXY UDP4 1.2.3.4", "PROXY UD");
	BAD1("PROXY UNKNOWX\r\n", "PROXY UNKNOWX");
	BAD1("PROXY \r\n", "PROXY \r");
}

Test(proxy_v1, ipv4_addresses)
{
	BAD1("PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "PROXY TCP4  ");
	BAD1("PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n", "PROXY TCP4 1.2.3.400");
	BAD1("PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n", "PROXY TCP4 256");
	BAD1("PROXY TCP4 1.2.3.4 5.6.7.1000 1 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.1000");
	BAD1("PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "PROXY TCP4 01");
	BAD1("PROXY TCP4 1.2.3.00 5.6.7.8 1 2\r\n", "PROXY TCP4 1.2.3.00");
	BAD1("PROXY TCP4 1.2.3.4 5.6.07.8 1 2\r\n", "PROXY TCP4 1.2.3.4 5.6.07");
	BAD1("PROXY TCP4 1..3.4 5.6.7.8 1 2\r\n", "PROXY TCP4 1..");
	BAD1("PROXY TCP4 .1.2.3 5.6.7.8 1 2\r\n", "PROXY TCP4 .");
	BAD1("PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "PROXY TCP4 1.2.3 ");
	BAD1("PROXY TCP4 1.2.3. 5.6.7.8 1 2\r\n", "PROXY TCP4 1.2.3. ");
	BAD1("PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n", "PROXY TCP4 1.2.3.4.");
	BAD1("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "PROXY TCP4 1.2.3.4  ");
	BAD1("PROXY TCP4 0x1.2.3.4 5.6.7.8 1 2\r\n", "PROXY TCP4 0x");
	BAD1("PROXY TCP4 -1.2.3.4 5.6.7.8 1 2\r\n", "PROXY TCP4 -");
	BAD1("PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", "PROXY TCP4 1.2.3.4\t");
	BAD1("PROXY TCP4 1.2.3.4 5.6.7.8\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8\r");
	/* the family is the protocol word's */
	BAD1("PROXY TCP4 ::1 ::1 1 2\r\n", "PROXY TCP4 :");
	BAD1("PROXY TCP4 1.2.3.4 ::ffff:1.2.3.4 1 2\r\n", "PROXY TCP4 1.2.3.4 :");
}

Test(proxy_v1, ipv6_addresses)
{
	BAD1("PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", "PROXY TCP6 1.2.3.4 ");
	BAD1("PROXY TCP6 ::1 1.2.3.4 1 2\r\n", "PROXY TCP6 ::1 1.2.3.4 ");
	BAD1("PROXY TCP6  ::1 ::1 1 2\r\n", "PROXY TCP6  ");
	BAD1("PROXY TCP6 ::g ::1 1 2\r\n", "PROXY TCP6 ::g");
	BAD1("PROXY TCP6 :::1 ::1 1 2\r\n", "PROXY TCP6 :::1 ");
	BAD1("PROXY TCP6 1::2::3 ::1 1 2\r\n", "PROXY TCP6 1::2::3 ");
	BAD1("PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n", "PROXY TCP6 1:2:3:4:5:6:7:8:9 ");
	BAD1("PROXY TCP6 1:2:3:4:5:6:7 ::1 1 2\r\n", "PROXY TCP6 1:2:3:4:5:6:7 ");
	BAD1("PROXY TCP6 00001::1 ::1 1 2\r\n", "PROXY TCP6 00001::1 ");
	BAD1("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "PROXY TCP6 fe80::1%");
	BAD1("PROXY TCP6 [::1] ::1 1 2\r\n", "PROXY TCP6 [");
	BAD1("PROXY TCP6 ::1 ::1\r\n", "PROXY TCP6 ::1 ::1\r");
	/* 46 address characters can be no address inet_pton reads */
	BAD1("PROXY TCP6 0000:0000:0000:0000:0000:0000:0000:0000:0000:00 ::1 1 2\r\n",
	     "PROXY TCP6 0000:0000:0000:0000:0000:0000:0000:0000:0000:0");
}

Test(proxy_v1, ports)
{
	BAD1("PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 +");
	BAD1("PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 -");
	BAD1("PROXY TCP4 1.2.3.4 5.6.7.8  2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8  ");
	BAD1("PROXY TCP4 1.2.3.4 5.6.7.8 1 \r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 \r");
	BAD1("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 65536");
	BAD1("PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 99999");
	BAD1("PROXY TCP4 1.2.3.4 5.6.7.8 1 655350\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 655350");
	BAD1("PROXY TCP4 1.2.3.4 5.6.7.8 00 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 00");
	BAD1("PROXY TCP4 1.2.3.4 5.6.7.8 1 0123\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 01");
	BAD1("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ");
	BAD1("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ");
	BAD1("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r");
	BAD1("PROXY TCP4 1.2.3.4 5.6.7.8 0x19 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 0x");
}

Test(proxy_v1, line_end)
{
	BAD1("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n");
	BAD1("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX");
	BAD1("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r");
	BAD1("PROXY UNKNOWN\n", "PROXY UNKNOWN\n");
	BAD1("PROXY UNKNOWN foo\nbar\r\n", "PROXY UNKNOWN foo\n");
	BAD1("PROXY UNKNOWN foo\rbar\r\n", "PROXY UNKNOWN foo\rb");
	BAD1("PROXY UNKNOWN\r\r\n", "PROXY UNKNOWN\r\r");
}

/*
 * Version 2, valid
 */

Test(proxy_v2, tcp4)
{
	uint8_t b[PROXY_MAX];
	size_t n = v2_tcp(b, "192.0.2.1", 56324, "198.51.100.2", 25, NULL, 0);
	struct proxy_hdr w = want_tcp(28, 2, "192.0.2.1", 56324, "198.51.100.2", 25);

	valid(b, n, &w, "v2 tcp4");
	n = v2_tcp(b, "0.0.0.0", 0, "255.255.255.255", 65535, NULL, 0);
	w = want_tcp(28, 2, "0.0.0.0", 0, "255.255.255.255", 65535);
	valid(b, n, &w, "v2 tcp4 extremes");
}

Test(proxy_v2, tcp6)
{
	uint8_t b[PROXY_MAX];
	size_t n = v2_tcp(b, "2001:db8::1", 1, "2001:db8:ffff::2", 465, NULL, 0);
	struct proxy_hdr w = want_tcp(52, 2, "2001:db8::1", 1, "2001:db8:ffff::2", 465);

	valid(b, n, &w, "v2 tcp6");
}

Test(proxy_v2, ipv4_mapped_is_ipv4)
{
	uint8_t b[PROXY_MAX];
	size_t n = v2_tcp(b, "::ffff:192.0.2.7", 40000, "::ffff:10.1.2.3", 25, NULL, 0);
	struct proxy_hdr w = want_tcp(52, 2, "192.0.2.7", 40000, "10.1.2.3", 25);

	cr_assert_eq(b[13], 0x21); /* sent as TCP6 */
	valid(b, n, &w, "v2 tcp6 mapped");
}

Test(proxy_v2, unspec_and_unix_are_local)
{
	uint8_t b[PROXY_MAX], body[300];
	size_t n;
	struct proxy_hdr w;

	memset(body, 0x5a, sizeof(body));
	n = v2(b, 0x21, 0x00, 0, NULL, 0);
	w = want_local(16, 2);
	valid(b, n, &w, "v2 PROXY UNSPEC");
	n = v2(b, 0x21, 0x00, 12, body, 12); /* addresses of an unknown kind: ignored */
	w = want_local(28, 2);
	valid(b, n, &w, "v2 PROXY UNSPEC with 12 octets");
	n = v2(b, 0x21, 0x31, 216, body, 216);
	w = want_local(16 + 216, 2);
	valid(b, n, &w, "v2 PROXY UNIX stream");
	n = v2(b, 0x21, 0x31, 230, body, 230); /* with a TLV area */
	w = want_local(16 + 230, 2);
	valid(b, n, &w, "v2 PROXY UNIX stream + 14");
}

Test(proxy_v2, local)
{
	uint8_t b[PROXY_MAX], body[64];
	size_t n;
	struct proxy_hdr w = want_local(16, 2);

	memset(body, 0xee, sizeof(body));
	n = v2(b, 0x20, 0x00, 0, NULL, 0);
	valid(b, n, &w, "v2 LOCAL");
	/* with addresses: "discard the protocol block including the family" */
	n = v2_tcp(b, "192.0.2.1", 1, "192.0.2.2", 2, NULL, 0);
	b[12] = 0x20;
	w = want_local(28, 2);
	valid(b, n, &w, "v2 LOCAL TCP4");
	/* any family, even an undefined or UDP one, any length */
	static const uint8_t fams[] = {0x12, 0x22, 0x32, 0x41, 0xff, 0x13};
	for (size_t i = 0; i < sizeof(fams); i++) {
		n = v2(b, 0x20, fams[i], 3, body, 3);
		w = want_local(19, 2);
		valid(b, n, &w, "v2 LOCAL odd family");
	}
	n = v2(b, 0x20, 0x11, 0, NULL, 0); /* TCP4, no addresses: fine for LOCAL */
	w = want_local(16, 2);
	valid(b, n, &w, "v2 LOCAL TCP4 len 0");
}

Test(proxy_v2, tlvs_are_skipped)
{
	uint8_t b[PROXY_MAX];
	/* ALPN "smtp", AUTHORITY "mx.example", NOOP with 3 zero octets, and a
	 * TLV whose own length lies (skipped unread, so it does not matter) */
	static const uint8_t tlv[] = {0x01, 0x00, 0x04, 's', 'm', 't', 'p',  0x02, 0x00, 0x0a,
	                              'm',  'x',  '.',  'e', 'x', 'a', 'm',  'p',  'l',  'e',
	                              0x04, 0x00, 0x03, 0,   0,   0,   0xe0, 0xff, 0xff};
	size_t n = v2_tcp(b, "192.0.2.1", 2525, "192.0.2.2", 25, tlv, sizeof(tlv));
	struct proxy_hdr w = want_tcp(28 + sizeof(tlv), 2, "192.0.2.1", 2525, "192.0.2.2", 25);

	valid(b, n, &w, "v2 tcp4 + TLVs");
	n = v2_tcp(b, "2001:db8::5", 2525, "::1", 25, tlv, sizeof(tlv));
	w = want_tcp(52 + sizeof(tlv), 2, "2001:db8::5", 2525, "::1", 25);
	valid(b, n, &w, "v2 tcp6 + TLVs");
}

Test(proxy_v2, length_limit)
{
	uint8_t b[PROXY_MAX + 64], pad[PROXY_MAX];
	size_t n;
	struct proxy_hdr w;

	memset(pad, 0, sizeof(pad));
	/* 16 + len = PROXY_MAX exactly: accepted */
	n = v2_tcp(b, "192.0.2.1", 1, "192.0.2.2", 2, pad, PROXY_MAX - 28);
	w = want_tcp(PROXY_MAX, 2, "192.0.2.1", 1, "192.0.2.2", 2);
	valid(b, n, &w, "v2 of PROXY_MAX");
	/* one more: refused as soon as the length field is in */
	n = v2_tcp(b, "192.0.2.1", 1, "192.0.2.2", 2, pad, PROXY_MAX - 27);
	cr_assert_eq(n, PROXY_MAX + 1);
	bad_at(b, n, 16, PROXY_R_TOO_LONG, "v2 of PROXY_MAX + 1");
	n = v2(b, 0x20, 0x00, 0xffff, pad, 16);
	bad_at(b, n, 16, PROXY_R_TOO_LONG, "v2 LOCAL len 65535");
	n = v2(b, 0x21, 0x00, (uint16_t)(PROXY_MAX - 15), pad, 16);
	bad_at(b, n, 16, PROXY_R_TOO_LONG, "v2 UNSPEC of PROXY_MAX + 1");
}

/*
 * Version 2, refused
 */

Test(proxy_v2, signature)
{
	uint8_t b[64];
	size_t n = v2_tcp(b, "192.0.2.1", 1, "192.0.2.2", 2, NULL, 0);

	for (size_t i = 0; i < 12; i++) {
		uint8_t c[64];
		memcpy(c, b, n);
		c[i] ^= 0x20;
		bad_at(c, n, i + 1, PROXY_R_NOT_PROXY, "v2 signature");
	}
	/* a v1 header's octet inside a v2 signature, and the reverse */
	memcpy(b, "\r\nPROXY", 7);
	bad_at(b, 7, 3, PROXY_R_NOT_PROXY, "CRLF PROXY");
}

Test(proxy_v2, version_and_command)
{
	uint8_t b[64];
	static const uint8_t vc[] = {0x00, 0x01, 0x10, 0x11, 0x31, 0xf1, 0x22, 0x2f, 0x23, 0x02};

	for (size_t i = 0; i < sizeof(vc); i++) {
		size_t n = v2_tcp(b, "192.0.2.1", 1, "192.0.2.2", 2, NULL, 0);
		b[12] = vc[i];
		bad_at(b, n, 13, PROXY_R_V2_VERSION, "v2 version/command");
	}
}

Test(proxy_v2, family)
{
	uint8_t b[300], body[300];
	static const uint8_t fam[] = {0x12, 0x22, 0x32, 0x01, 0x02, 0x10, 0x20,
	                              0x30, 0x13, 0x41, 0x40, 0xff, 0x33};

	memset(body, 0, sizeof(body));
	for (size_t i = 0; i < sizeof(fam); i++) {
		size_t n = v2(b, 0x21, fam[i], 216, body, 216);
		bad_at(b, n, 14, PROXY_R_V2_FAMILY, "v2 PROXY family");
	}
}

Test(proxy_v2, address_block_too_short)
{
	uint8_t b[300], body[300];
	size_t n;

	memset(body, 0, sizeof(body));
	n = v2(b, 0x21, 0x11, 11, body, 11);
	bad_at(b, n, 16, PROXY_R_V2_LENGTH, "TCP4 len 11");
	n = v2(b, 0x21, 0x11, 0, NULL, 0);
	bad_at(b, n, 16, PROXY_R_V2_LENGTH, "TCP4 len 0");
	n = v2(b, 0x21, 0x21, 35, body, 35);
	bad_at(b, n, 16, PROXY_R_V2_LENGTH, "TCP6 len 35");
	n = v2(b, 0x21, 0x21, 12, body, 12); /* a TCP4 block under a TCP6 family */
	bad_at(b, n, 16, PROXY_R_V2_LENGTH, "TCP6 len 12");
	n = v2(b, 0x21, 0x31, 215, body, 215);
	bad_at(b, n, 16, PROXY_R_V2_LENGTH, "UNIX len 215");
}

/*
 * Neither
 */

Test(proxy, other_protocols_fail_at_first_octet)
{
	static const uint8_t hello[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01};
	struct proxy_hdr h;
	enum proxy_reason why = PROXY_R_COUNT;

	cr_assert_eq(proxy_parse("", 0, &h, &why), PROXY_MORE);
	cr_assert_eq(why, PROXY_R_NONE);
	bad_str("EHLO client.example\r\n", "E", PROXY_R_NOT_PROXY);
	bad_str("HELO x\r\n", "H", PROXY_R_NOT_PROXY);
	bad_str("GET / HTTP/1.1\r\n", "G", PROXY_R_NOT_PROXY);
	bad_str("proxy TCP4", "p", PROXY_R_NOT_PROXY);
	bad_str("\nPROXY", "\n", PROXY_R_NOT_PROXY);
	bad_at(hello, sizeof(hello), 1, PROXY_R_NOT_PROXY, "TLS ClientHello");
	for (int c = 0; c < 256; c++) {
		uint8_t o = (uint8_t)c;
		enum proxy_status st = proxy_parse(&o, 1, &h, &why);
		if (c == 'P' || c == '\r')
			cr_assert_eq(st, PROXY_MORE);
		else
			cr_assert(st == PROXY_BAD && why == PROXY_R_NOT_PROXY, "first octet %d", c);
	}
}

Test(proxy, reason_names)
{
	cr_assert_str_eq(proxy_reason_name(PROXY_R_NONE), "none");
	cr_assert_str_eq(proxy_reason_name(PROXY_R_NOT_PROXY), "not_proxy");
	cr_assert_str_eq(proxy_reason_name(PROXY_R_V1_TOO_LONG), "v1_too_long");
	cr_assert_str_eq(proxy_reason_name(PROXY_R_V1_SYNTAX), "v1_syntax");
	cr_assert_str_eq(proxy_reason_name(PROXY_R_V2_VERSION), "v2_version");
	cr_assert_str_eq(proxy_reason_name(PROXY_R_V2_FAMILY), "v2_family");
	cr_assert_str_eq(proxy_reason_name(PROXY_R_V2_LENGTH), "v2_length");
	cr_assert_str_eq(proxy_reason_name(PROXY_R_TOO_LONG), "too_long");
	cr_assert_str_eq(proxy_reason_name(PROXY_R_COUNT), "?");
	cr_assert_str_eq(proxy_reason_name((enum proxy_reason) - 1), "?");
}

/*
 * Builders
 */

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static struct fault_ip rand_ip(int family)
{
	struct fault_ip r;

	memset(&r, 0, sizeof(r));
	r.family = (uint8_t)family;
	for (int i = 0; i < (family == 4 ? 4 : 16); i++)
		r.b[i] = (uint8_t)next();
	if (family == 6 && !(next() % 4)) {
		/* runs of zero groups, so "::" compression is exercised */
		size_t at = next() % 8 * 2, len = next() % (16 - at) + 1;
		memset(r.b + at, 0, len);
	}
	if (family == 6 && r.b[0] == 0)
		r.b[0] = 0x20; /* never IPv4-mapped: that parses back as family 4 */
	return r;
}

/* roundtrip - build v1 and v2 for src -> dst, parse each back. */
static void roundtrip(const struct fault_ip *s, uint16_t sp, const struct fault_ip *d, uint16_t dp)
{
	char buf[PROXY_MAX];
	struct proxy_hdr h, w;
	enum proxy_reason why;
	size_t n;

	memset(&w, 0, sizeof(w));
	w.src = *s;
	w.dst = *d;
	w.src_port = sp;
	w.dst_port = dp;
	n = proxy_build_v1(buf, sizeof(buf), s, sp, d, dp);
	cr_assert(n > 0 && n <= PROXY_V1_MAX, "v1 built %zu octets", n);
	w.len = n;
	w.version = 1;
	cr_assert_eq(proxy_parse(buf, n, &h, &why), PROXY_DONE, "v1 '%.*s': %s", (int)n, buf,
	             proxy_reason_name(why));
	assert_hdr(&h, &w, "v1 roundtrip");
	n = proxy_build_v2(buf, sizeof(buf), s, sp, d, dp);
	cr_assert_eq(n, s->family == 4 ? 28u : 52u);
	w.len = n;
	w.version = 2;
	cr_assert_eq(proxy_parse(buf, n, &h, &why), PROXY_DONE);
	assert_hdr(&h, &w, "v2 roundtrip");
}

Test(proxy_build, exact_v1)
{
	struct fault_ip s = ip("192.0.2.1"), d = ip("198.51.100.20");
	char buf[PROXY_MAX];
	size_t n = proxy_build_v1(buf, sizeof(buf), &s, 56324, &d, 25);
	const char *want = "PROXY TCP4 192.0.2.1 198.51.100.20 56324 25\r\n";

	cr_assert_eq(n, strlen(want));
	cr_assert_eq(memcmp(buf, want, n), 0, "'%.*s'", (int)n, buf);
	s = ip("2001:db8:0:0:0:0:0:1");
	d = ip("2001:db8::a:0");
	n = proxy_build_v1(buf, sizeof(buf), &s, 0, &d, 65535);
	want = "PROXY TCP6 2001:db8::1 2001:db8::a:0 0 65535\r\n";
	cr_assert_eq(n, strlen(want));
	cr_assert_eq(memcmp(buf, want, n), 0, "'%.*s'", (int)n, buf);
	s = ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
	n = proxy_build_v1(buf, sizeof(buf), &s, 65535, &s, 65535);
	cr_assert_eq(n, 104); /* the spec's longest TCP6 line */
}

Test(proxy_build, exact_v2)
{
	struct fault_ip s = ip("192.0.2.1"), d = ip("198.51.100.20");
	char buf[PROXY_MAX];
	size_t n = proxy_build_v2(buf, sizeof(buf), &s, 0x1234, &d, 25);
	static const uint8_t want[28] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49,
	                                 0x54, 0x0A, 0x21, 0x11, 0x00, 0x0C, 192,  0,    2,    1,
	                                 198,  51,   100,  20,   0x12, 0x34, 0x00, 25};

	cr_assert_eq(n, sizeof(want));
	cr_assert_eq(memcmp(buf, want, n), 0);
	s = ip("2001:db8::1");
	d = ip("::1");
	n = proxy_build_v2(buf, sizeof(buf), &s, 1, &d, 2);
	cr_assert_eq(n, 52);
	cr_assert_eq((uint8_t)buf[12], 0x21);
	cr_assert_eq((uint8_t)buf[13], 0x21);
	cr_assert_eq((uint8_t)buf[14], 0);
	cr_assert_eq((uint8_t)buf[15], 36);
	cr_assert_eq(memcmp(buf + 16, s.b, 16), 0);
	cr_assert_eq(memcmp(buf + 32, d.b, 16), 0);
	cr_assert_eq((uint8_t)buf[49], 1);
	cr_assert_eq((uint8_t)buf[51], 2);
}

Test(proxy_build, roundtrip)
{
	struct fault_ip s = ip("127.0.0.1"), d = ip("10.255.0.1");

	roundtrip(&s, 1, &d, 25);
	s = ip("::1");
	d = ip("fe80::1:2");
	roundtrip(&s, 65535, &d, 0);
	for (int i = 0; i < 20000; i++) {
		int fam = i % 2 ? 4 : 6;
		struct fault_ip a = rand_ip(fam), b = rand_ip(fam);
		roundtrip(&a, (uint16_t)next(), &b, (uint16_t)next());
	}
}

Test(proxy_build, refuses)
{
	struct fault_ip v4 = ip("192.0.2.1"), v6 = ip("2001:db8::1"), none;
	char buf[PROXY_MAX];
	size_t n1, n2;

	memset(&none, 0, sizeof(none));
	cr_assert_eq(proxy_build_v1(buf, sizeof(buf), &v4, 1, &v6, 2), 0);
	cr_assert_eq(proxy_build_v1(buf, sizeof(buf), &v6, 1, &v4, 2), 0);
	cr_assert_eq(proxy_build_v2(buf, sizeof(buf), &v4, 1, &v6, 2), 0);
	cr_assert_eq(proxy_build_v2(buf, sizeof(buf), &v6, 1, &v4, 2), 0);
	cr_assert_eq(proxy_build_v1(buf, sizeof(buf), &none, 1, &none, 2), 0);
	cr_assert_eq(proxy_build_v2(buf, sizeof(buf), &none, 1, &none, 2), 0);
	none.family = 5;
	cr_assert_eq(proxy_build_v1(buf, sizeof(buf), &none, 1, &none, 2), 0);
	cr_assert_eq(proxy_build_v2(buf, sizeof(buf), &none, 1, &none, 2), 0);

	/* cap: exactly enough works, one less writes nothing past cap */
	struct fault_ip *fams[] = {&v4, &v6};
	for (int f = 0; f < 2; f++) {
		n1 = proxy_build_v1(buf, sizeof(buf), fams[f], 1, fams[f], 2);
		n2 = proxy_build_v2(buf, sizeof(buf), fams[f], 1, fams[f], 2);
		cr_assert(n1 > 0 && n2 > 0);
		memset(buf, '#', sizeof(buf));
		cr_assert_eq(proxy_build_v1(buf, n1 - 1, fams[f], 1, fams[f], 2), 0);
		cr_assert_eq(proxy_build_v2(buf, n2 - 1, fams[f], 1, fams[f], 2), 0);
		cr_assert_eq(proxy_build_v1(buf, 0, fams[f], 1, fams[f], 2), 0);
		for (size_t i = 0; i < sizeof(buf); i++)
			cr_assert_eq(buf[i], '#', "octet %zu written on refusal", i);
		cr_assert_eq(proxy_build_v1(buf, n1, fams[f], 1, fams[f], 2), n1);
		cr_assert_eq(buf[n1], '#', "v1 writes past its length");
		memset(buf, '#', sizeof(buf));
		cr_assert_eq(proxy_build_v2(buf, n2, fams[f], 1, fams[f], 2), n2);
		cr_assert_eq(buf[n2], '#');
	}
}

/*
 * Byte flips: every octet of valid headers set to every value
 */

static void sweep(const uint8_t *p, size_t n)
{
	uint8_t b[PROXY_MAX + 16];
	struct proxy_hdr h;
	enum proxy_reason why;

	for (size_t i = 0; i < n; i++) {
		for (int v = 0; v < 256; v++) {
			memcpy(b, p, n);
			memcpy(b + n, smtp, 8);
			b[i] = (uint8_t)v;
			for (size_t len = n; len <= n + 8; len += 8) {
				why = PROXY_R_COUNT;
				enum proxy_status st = proxy_parse(b, len, &h, &why);
				if (st == PROXY_DONE) {
					cr_assert(h.len > 0 && h.len <= len && h.len <= PROXY_MAX,
					          "flip %zu=%d: len %zu of %zu", i, v, h.len, len);
					cr_assert(h.version == 1 || h.version == 2);
					cr_assert_eq(why, PROXY_R_NONE);
				} else if (st == PROXY_BAD) {
					cr_assert(why > PROXY_R_NONE && why < PROXY_R_COUNT,
					          "flip %zu=%d: reason %d", i, v, why);
				} else {
					cr_assert_eq(st, PROXY_MORE, "flip %zu=%d: status %d", i, v,
					             st);
					cr_assert_eq(why, PROXY_R_NONE);
				}
			}
		}
	}
}

Test(proxy, byte_flip_sweep)
{
	static const char *v1s[] = {
	    "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
	    "PROXY TCP6 2001:db8::1 ::ffff:10.0.0.1 0 25\r\n",
	    "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
	    "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
	    "PROXY UNKNOWN\r\n",
	};
	static const uint8_t tlv[] = {0x01, 0x00, 0x04, 's', 'm', 't', 'p'};
	uint8_t b[PROXY_MAX + 16], body[216];
	size_t n;

	for (size_t i = 0; i < sizeof(v1s) / sizeof(v1s[0]); i++)
		sweep((const uint8_t *)v1s[i], strlen(v1s[i]));
	n = v2_tcp(b, "192.0.2.1", 1, "192.0.2.2", 2, tlv, sizeof(tlv));
	sweep(b, n);
	n = v2_tcp(b, "2001:db8::1", 1, "::ffff:1.2.3.4", 2, NULL, 0);
	sweep(b, n);
	n = v2(b, 0x20, 0x00, 0, NULL, 0);
	sweep(b, n);
	memset(body, 0x41, sizeof(body));
	n = v2(b, 0x21, 0x31, 216, body, 216);
	sweep(b, n);
}
