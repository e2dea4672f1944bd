/*
 * proxy.c - PROXY protocol header parser and builders (see proxy.h)
 *
 * Spec: HAProxy's doc/proxy-protocol.txt, section 2.1 (v1, text) and 2.2
 * (v2, binary).  The parser re-reads p[0..n) from the start on every call
 * and walks it octet by octet; the first octet that no header could have at
 * that place ends the walk with BAD, running out of octets first gives MORE.
 * Each verdict therefore depends only on the octets up to the one that
 * decided it: a prefix that is refused stays refused whatever follows, and
 * one that is accepted is accepted with the same length whatever follows
 * (the fuzz target checks both).  The spec recommends it (2.1: "abort the
 * connection as soon as possible so that the sender gets a chance to notice
 * the anomaly"): a client that talks SMTP or TLS to a PROXY listener fails
 * at its first octet, not at the caller's timeout.
 *
 * Re-parsing costs at most PROXY_MAX octets per read, and a header arrives
 * in one segment in practice (2: it always fits a 536-octet MSS), so the
 * walk is normally done once.
 */
#include "sink/proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#define PROXY_X_NAME(e, name) [PROXY_R_##e] = (name),
static const char *const reason_names[PROXY_R_COUNT] = {[PROXY_R_NONE] = "none",
                                                        PROXY_REASONS(PROXY_X_NAME)};
#undef PROXY_X_NAME

const char *proxy_reason_name(enum proxy_reason r)
{
	return (unsigned)r < PROXY_R_COUNT ? reason_names[r] : "?";
}

/*
 * Shared
 */

/* ip_set6 - a 16-octet IPv6 address into *ip, IPv4-mapped (::ffff:a.b.c.d,
 * RFC 4291 2.5.5.2) as IPv4, as fault_ip_from_sockaddr does, so that
 * client=CIDR rules match a proxied client the way they match a direct one. */
static void ip_set6(struct fault_ip *ip, const uint8_t *a)
{
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

	memset(ip, 0, sizeof(*ip));
	if (!memcmp(a, mapped, sizeof(mapped))) {
		ip->family = 4;
		memcpy(ip->b, a + 12, 4);
	} else {
		ip->family = 6;
		memcpy(ip->b, a, 16);
	}
}

static void ip_set4(struct fault_ip *ip, const uint8_t *a)
{
	memset(ip, 0, sizeof(*ip));
	ip->family = 4;
	memcpy(ip->b, a, 4);
}

static enum proxy_status bad(enum proxy_reason r, enum proxy_reason *why)
{
	if (why)
		*why = r;
	return PROXY_BAD;
}

/*
 * Version 1 (spec 2.1): "PROXY" SP ( "TCP4" | "TCP6" ) SP addr SP addr SP
 * port SP port CRLF, or "PROXY" SP "UNKNOWN" anything CRLF; at most 107
 * octets with the CRLF.
 */

static const char v1_magic[] = "PROXY ";

/* The walk over a v1 line: octets p[0..n), next one at i. */
struct v1_cur {
	const uint8_t *p;
	size_t n, i;
};

/* Outcomes of one step of the walk. */
enum v1_step {
	V1_BAD_SYNTAX = -2,
	V1_BAD_LONG = -1,
	V1_MORE = 0,
	V1_OK = 1,
};

/* v1_get - the next octet.  MORE when none has arrived yet.  The line must
 * end in CRLF within 107 octets, so its CR is at index 105 at the latest:
 * any other octet there means no CRLF can come in time (2.1: "If the CRLF
 * sequence is not found in the first 107 characters, the receiver should
 * declare the line invalid") - refused there, not one or two octets later.
 * Every grammar below ends at a CRLF, so the walk never reads past 106. */
static enum v1_step v1_get(struct v1_cur *c, uint8_t *o)
{
	if (c->i >= c->n)
		return V1_MORE;
	*o = c->p[c->i];
	if (c->i == PROXY_V1_MAX - 2 && *o != '\r')
		return V1_BAD_LONG;
	c->i++;
	return V1_OK;
}

static bool is_digit(uint8_t o)
{
	return o >= '0' && o <= '9';
}

/* v1_ipv4 - a dotted quad followed by end: exactly 4 decimal numbers 0..255
 * separated by single dots, no leading zeros ("heading zeroes are not
 * permitted ... to avoid any possible confusion with octal numbers", 2.1).
 * Checked octet by octet, so "1.2.3.400" is refused at its third digit. */
static enum v1_step v1_ipv4(struct v1_cur *c, uint8_t end, uint8_t out[4])
{
	unsigned parts = 0, val = 0, digits = 0;

	for (;;) {
		uint8_t o = 0;
		enum v1_step s = v1_get(c, &o);

		if (s != V1_OK)
			return s;
		if (is_digit(o)) {
			if (digits && !val)
				return V1_BAD_SYNTAX; /* "01" */
			val = val * 10 + (unsigned)(o - '0');
			if (val > 255)
				return V1_BAD_SYNTAX;
			digits++;
		} else if (o == '.' || o == end) {
			if (!digits || (o == '.') == (parts == 3))
				return V1_BAD_SYNTAX; /* empty number, or not 4 */
			out[parts++] = (uint8_t)val;
			if (o == end)
				return V1_OK;
			val = 0;
			digits = 0;
		} else {
			return V1_BAD_SYNTAX;
		}
	}
}

/* Longest text inet_pton(AF_INET6) accepts: 6 groups of 4 hex digits and a
 * dotted quad, 45 characters (INET6_ADDRSTRLEN less its NUL).  The spec's
 * 39 is the canonical form's; longer spellings of an address are accepted
 * as long as the line still fits 107 octets. */
#define V6_TEXT_MAX 45

static bool is_v6_char(uint8_t o)
{
	return is_digit(o) || (o >= 'a' && o <= 'f') || (o >= 'A' && o <= 'F') || o == ':' ||
	       o == '.';
}

/* v1_ipv6 - an IPv6 address followed by end.  Its characters are checked as
 * they arrive; the address itself, by inet_pton, once the end is seen (the
 * spec: "the receiver must wait for the CRLF ... before starting to decode
 * the addresses", we decode as soon as one is complete, which refuses
 * earlier and accepts the same lines). */
static enum v1_step v1_ipv6(struct v1_cur *c, uint8_t end, uint8_t out[16])
{
	char text[V6_TEXT_MAX + 1];
	size_t len = 0;

	for (;;) {
		uint8_t o = 0;
		enum v1_step s = v1_get(c, &o);

		if (s != V1_OK)
			return s;
		if (o == end)
			break;
		if (!is_v6_char(o) || len == V6_TEXT_MAX)
			return V1_BAD_SYNTAX;
		text[len++] = (char)o;
	}
	text[len] = '\0';
	if (!len || inet_pton(AF_INET6, text, out) != 1)
		return V1_BAD_SYNTAX;
	return V1_OK;
}

/* v1_port - a decimal 0..65535 followed by end, no sign, no leading zeros
 * (2.1): "0" is port zero, "00" and "0123" are refused. */
static enum v1_step v1_port(struct v1_cur *c, uint8_t end, uint16_t *out)
{
	unsigned val = 0, digits = 0;

	for (;;) {
		uint8_t o = 0;
		enum v1_step s = v1_get(c, &o);

		if (s != V1_OK)
			return s;
		if (is_digit(o)) {
			if (digits && !val)
				return V1_BAD_SYNTAX;
			val = val * 10 + (unsigned)(o - '0');
			if (val > 65535)
				return V1_BAD_SYNTAX;
			digits++;
		} else if (o == end && digits) {
			*out = (uint16_t)val;
			return V1_OK;
		} else {
			return V1_BAD_SYNTAX;
		}
	}
}

/* v1_lf - the LF after a CR: a CR followed by anything else does not end the
 * line (2.1: "must not tolerate a single CR or LF character"). */
static enum v1_step v1_lf(struct v1_cur *c)
{
	uint8_t o = 0;
	enum v1_step s = v1_get(c, &o);

	if (s != V1_OK)
		return s;
	return o == '\n' ? V1_OK : V1_BAD_SYNTAX;
}

/* v1_unknown - after "UNKNOWN": anything up to the CRLF is ignored (2.1:
 * "the receiver must ignore anything presented before the CRLF is found"),
 * except a lone LF, and a CR that is not followed by LF. */
static enum v1_step v1_unknown(struct v1_cur *c)
{
	for (;;) {
		uint8_t o = 0;
		enum v1_step s = v1_get(c, &o);

		if (s != V1_OK)
			return s;
		if (o == '\n')
			return V1_BAD_SYNTAX;
		if (o == '\r')
			return v1_lf(c);
	}
}

/* The protocol words, each with the octet that must follow it (for UNKNOWN
 * anything may, so it is matched alone). */
enum v1_proto { V1_TCP4, V1_TCP6, V1_UNKNOWN, V1_NPROTO };
static const char *const v1_words[V1_NPROTO] = {"TCP4 ", "TCP6 ", "UNKNOWN"};

/* v1_word - which protocol word p[i..n) starts with; MORE while what has
 * arrived is a prefix of one of them ("TCP" of both TCP4 and TCP6). */
static enum v1_step v1_word(struct v1_cur *c, enum v1_proto *w)
{
	size_t avail = c->n - c->i;
	bool prefix = false;

	for (int k = 0; k < V1_NPROTO; k++) {
		size_t wl = strlen(v1_words[k]);
		size_t m = avail < wl ? avail : wl;

		if (memcmp(c->p + c->i, v1_words[k], m) != 0)
			continue;
		if (m == wl) {
			c->i += wl;
			*w = (enum v1_proto)k;
			return V1_OK;
		}
		prefix = true;
	}
	return prefix ? V1_MORE : V1_BAD_SYNTAX;
}

/* v1_body - everything after "PROXY ". */
static enum v1_step v1_body(struct v1_cur *c, struct proxy_hdr *h)
{
	uint8_t a[2][16];
	enum v1_proto w = V1_UNKNOWN;
	enum v1_step s = v1_word(c, &w);

	if (s != V1_OK)
		return s;
	if (w == V1_UNKNOWN) {
		h->local = true;
		return v1_unknown(c);
	}
	/* The family of both addresses is the protocol word's (2.1: "the
	 * advertised protocol family dictates what format to use"): TCP4 takes
	 * only dotted quads, TCP6 only what inet_pton(AF_INET6) reads. */
	for (int k = 0; k < 2; k++) {
		s = w == V1_TCP4 ? v1_ipv4(c, ' ', a[k]) : v1_ipv6(c, ' ', a[k]);
		if (s != V1_OK)
			return s;
	}
	if ((s = v1_port(c, ' ', &h->src_port)) != V1_OK ||
	    (s = v1_port(c, '\r', &h->dst_port)) != V1_OK || (s = v1_lf(c)) != V1_OK)
		return s;
	if (w == V1_TCP4) {
		ip_set4(&h->src, a[0]);
		ip_set4(&h->dst, a[1]);
	} else {
		ip_set6(&h->src, a[0]);
		ip_set6(&h->dst, a[1]);
	}
	return V1_OK;
}

static enum proxy_status parse_v1(const uint8_t *p, size_t n, struct proxy_hdr *h,
                                  enum proxy_reason *why)
{
	struct v1_cur c = {.p = p, .n = n, .i = sizeof(v1_magic) - 1};
	struct proxy_hdr t;
	size_t m = n < c.i ? n : c.i;

	if (memcmp(p, v1_magic, m) != 0)
		return bad(PROXY_R_NOT_PROXY, why);
	if (n < c.i)
		return PROXY_MORE;
	memset(&t, 0, sizeof(t));
	switch (v1_body(&c, &t)) {
	case V1_BAD_SYNTAX:
		return bad(PROXY_R_V1_SYNTAX, why);
	case V1_BAD_LONG:
		return bad(PROXY_R_V1_TOO_LONG, why);
	case V1_MORE:
		return PROXY_MORE;
	case V1_OK:
		break;
	}
	t.version = 1;
	t.len = c.i;
	*h = t;
	return PROXY_DONE;
}

/*
 * Version 2 (spec 2.2): 12-octet signature, version/command, family/
 * transport, 16-bit big-endian length of what follows (addresses, TLVs).
 */

static const uint8_t v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

#define V2_FIXED     16
#define V2_CMD_LOCAL 0x0
#define V2_CMD_PROXY 0x1
#define V2_TCP4      0x11
#define V2_TCP6      0x21
#define V2_UNIX      0x31
#define V2_LEN_TCP4  12  /* 2 * 4 + 2 * 2 */
#define V2_LEN_TCP6  36  /* 2 * 16 + 2 * 2 */
#define V2_LEN_UNIX  216 /* 2 * 108 */

/* v2_need - address block octets of a family accepted with command PROXY,
 * or -1.  UDP (0x12, 0x22) and UNIX datagram (0x32) are valid in the spec
 * but not for an SMTP listener: a stream proxied as datagrams is a
 * misconfigured balancer, refused rather than guessed at. */
static int v2_need(uint8_t fam)
{
	switch (fam) {
	case 0x00:
		return 0; /* UNSPEC: "the receiver should ignore address information" */
	case V2_TCP4:
		return V2_LEN_TCP4;
	case V2_TCP6:
		return V2_LEN_TCP6;
	case V2_UNIX:
		return V2_LEN_UNIX;
	default:
		return -1;
	}
}

static uint16_t be16(const uint8_t *b)
{
	return (uint16_t)(b[0] << 8 | b[1]);
}

static enum proxy_status parse_v2(const uint8_t *p, size_t n, struct proxy_hdr *h,
                                  enum proxy_reason *why)
{
	struct proxy_hdr t;
	size_t m = n < sizeof(v2_sig) ? n : sizeof(v2_sig), len;
	uint8_t cmd, fam;
	int need = 0;

	if (memcmp(p, v2_sig, m) != 0)
		return bad(PROXY_R_NOT_PROXY, why);
	if (n <= 12)
		return PROXY_MORE;
	/* "The highest four bits contains the version ... the receiver must
	 * only accept this value"; commands other than LOCAL and PROXY:
	 * "Receivers must drop connections presenting unexpected values". */
	cmd = p[12] & 0x0f;
	if (p[12] >> 4 != 2 || (cmd != V2_CMD_LOCAL && cmd != V2_CMD_PROXY))
		return bad(PROXY_R_V2_VERSION, why);
	if (n <= 13)
		return PROXY_MORE;
	/* LOCAL: "discard the protocol block including the family which is
	 * ignored" - so an unknown family is only refused with PROXY. */
	fam = p[13];
	if (cmd == V2_CMD_PROXY && (need = v2_need(fam)) < 0)
		return bad(PROXY_R_V2_FAMILY, why);
	if (n < V2_FIXED)
		return PROXY_MORE;
	/* "the length of the protocol header in bytes is always exactly 16 +
	 * this value"; known as soon as the fixed part is in, and so is
	 * whether it fits our bound. */
	len = V2_FIXED + (size_t)be16(p + 14);
	if (len > PROXY_MAX)
		return bad(PROXY_R_TOO_LONG, why);
	if (len - V2_FIXED < (size_t)need)
		return bad(PROXY_R_V2_LENGTH, why);
	if (n < len)
		return PROXY_MORE;

	/* Whatever lies past the address block, up to len, is TLVs (2.2.1ff);
	 * none changes the endpoints, so they are skipped unread. */
	memset(&t, 0, sizeof(t));
	t.version = 2;
	t.len = len;
	p += V2_FIXED;
	if (cmd == V2_CMD_LOCAL || fam == 0x00 || fam == V2_UNIX) {
		/* A health check, an unspecified or a UNIX-socket client: no
		 * IP endpoints to take, the connection's own stand. */
		t.local = true;
	} else if (fam == V2_TCP4) {
		ip_set4(&t.src, p);
		ip_set4(&t.dst, p + 4);
		t.src_port = be16(p + 8);
		t.dst_port = be16(p + 10);
	} else {
		ip_set6(&t.src, p);
		ip_set6(&t.dst, p + 16);
		t.src_port = be16(p + 32);
		t.dst_port = be16(p + 34);
	}
	*h = t;
	return PROXY_DONE;
}

enum proxy_status proxy_parse(const void *p, size_t n, struct proxy_hdr *h, enum proxy_reason *why)
{
	const uint8_t *b = p;

	if (why)
		*why = PROXY_R_NONE;
	if (!n)
		return PROXY_MORE;
	/* The two versions differ at the first octet ('P' against CR), so it
	 * picks the grammar (2.2, "identifying the protocol version"). */
	if (b[0] == (uint8_t)v1_magic[0])
		return parse_v1(b, n, h, why);
	if (b[0] == v2_sig[0])
		return parse_v2(b, n, h, why);
	return bad(PROXY_R_NOT_PROXY, why);
}

/*
 * Builders (smtpbench --proxy): command PROXY, TCP over the family both
 * endpoints share.
 */

/* same_family - 4 or 6 when src and dst have it both, else 0. */
static int same_family(const struct fault_ip *src, const struct fault_ip *dst)
{
	if (!src || !dst || src->family != dst->family)
		return 0;
	return src->family == 4 || src->family == 6 ? src->family : 0;
}

/* The header is not NUL-terminated: its octets are the count returned. */
size_t proxy_build_v1(char *buf, size_t cap, const struct fault_ip *src, uint16_t src_port,
                      const struct fault_ip *dst, uint16_t dst_port)
{
	char sa[INET6_ADDRSTRLEN], da[INET6_ADDRSTRLEN], line[2 * INET6_ADDRSTRLEN + 32];
	int fam = same_family(src, dst), af = fam == 4 ? AF_INET : AF_INET6, len;

	if (!fam || !inet_ntop(af, src->b, sa, sizeof(sa)) ||
	    !inet_ntop(af, dst->b, da, sizeof(da)))
		return 0;
	/* inet_ntop writes the canonical forms the spec asks for: dotted
	 * quads without leading zeros, IPv6 compressed (RFC 5952), which
	 * keeps a TCP6 line within the spec's 104 octets. */
	len = snprintf(line, sizeof(line), "PROXY TCP%d %s %s %u %u\r\n", fam, sa, da,
	               (unsigned)src_port, (unsigned)dst_port);
	if (len < 0 || (size_t)len > PROXY_V1_MAX || (size_t)len > cap)
		return 0;
	memcpy(buf, line, (size_t)len);
	return (size_t)len;
}

size_t proxy_build_v2(char *buf, size_t cap, const struct fault_ip *src, uint16_t src_port,
                      const struct fault_ip *dst, uint16_t dst_port)
{
	int fam = same_family(src, dst);
	size_t alen = fam == 4 ? 4 : 16, blk = 2 * alen + 4, len = V2_FIXED + blk;
	uint8_t *o = (uint8_t *)buf;

	if (!fam || cap < len)
		return 0;
	memcpy(o, v2_sig, sizeof(v2_sig));
	o[12] = 0x20 | V2_CMD_PROXY;
	o[13] = fam == 4 ? V2_TCP4 : V2_TCP6;
	o[14] = (uint8_t)(blk >> 8);
	o[15] = (uint8_t)blk;
	o += V2_FIXED;
	memcpy(o, src->b, alen);
	memcpy(o + alen, dst->b, alen);
	o += 2 * alen;
	o[0] = (uint8_t)(src_port >> 8);
	o[1] = (uint8_t)src_port;
	o[2] = (uint8_t)(dst_port >> 8);
	o[3] = (uint8_t)dst_port;
	return len;
}

/* map4 - a.b.c.d as ::ffff:a.b.c.d. */
static void map4(struct fault_ip *ip)
{
	uint8_t a[4];

	memcpy(a, ip->b, 4);
	memset(ip->b, 0, 10);
	ip->b[10] = ip->b[11] = 0xff;
	memcpy(ip->b + 12, a, 4);
	ip->family = 6;
}

int proxy_same_family(struct fault_ip *src, struct fault_ip *dst)
{
	if ((src->family != 4 && src->family != 6) || (dst->family != 4 && dst->family != 6))
		return -EINVAL;
	if (src->family == dst->family)
		return 0;
	map4(src->family == 6 ? dst : src);
	return 0;
}
