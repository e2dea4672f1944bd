/*
 * proxy.h - the PROXY protocol header (HAProxy's doc/proxy-protocol.txt,
 * versions 1 and 2), read by smtpsink from trusted balancers before the
 * greeting and before TLS-on-connect, written by smtpbench --proxy.
 *
 * Pure: no I/O, no allocation.  The parser is incremental by re-parsing: the
 * caller passes every octet received so far and gets MORE while those are a
 * valid prefix of some header, so a bad header is refused at the first octet
 * that cannot belong to one (a plaintext "EHLO" from a trusted address fails
 * at its first byte, not at the timeout).  The header is never longer than
 * PROXY_MAX, so the caller's buffer is bounded.
 */
#ifndef SINK_PROXY_H
#define SINK_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sink/fault.h" /* struct fault_ip */

/* v1: "PROXY ... \r\n" is at most 107 octets, CRLF included (spec 2.1). */
#define PROXY_V1_MAX 107
/* v2: 16-octet fixed part + address block + TLVs.  The spec lets the length
 * go to 65535; HAProxy's own TLVs (ALPN, authority, unique id, SSL facts)
 * stay well under 1 KiB, and a bound keeps a trusted-but-broken peer from
 * making the sink buffer 64 KiB per connection.  Longer → PROXY_R_TOO_LONG. */
#define PROXY_MAX 1024

enum proxy_status {
	PROXY_BAD = -1, /* not a valid header; *why says which rule broke */
	PROXY_MORE = 0, /* a valid prefix: more octets needed */
	PROXY_DONE = 1, /* *h filled, h->len octets to strip */
};

/* Why a header was refused; counted per reason (proxy_bad{reason}). */
#define PROXY_REASONS(X)                                                                 \
	X(NOT_PROXY, "not_proxy")       /* neither the v1 "PROXY " nor the v2 signature */ \
	X(V1_TOO_LONG, "v1_too_long")   /* no CRLF within 107 octets */                    \
	X(V1_SYNTAX, "v1_syntax")       /* protocol, address or port malformed */         \
	X(V2_VERSION, "v2_version")     /* version not 2, or command not LOCAL/PROXY */   \
	X(V2_FAMILY, "v2_family")       /* unknown address family / transport (UDP) */    \
	X(V2_LENGTH, "v2_length")       /* address block shorter than the family needs */ \
	X(TOO_LONG, "too_long")         /* v2 header longer than PROXY_MAX */

enum proxy_reason {
	PROXY_R_NONE = 0,
#define PROXY_X_ENUM(e, name) PROXY_R_##e,
	PROXY_REASONS(PROXY_X_ENUM)
#undef PROXY_X_ENUM
	    PROXY_R_COUNT,
};

/* proxy_reason_name - "not_proxy", ... ("none" for PROXY_R_NONE). */
const char *proxy_reason_name(enum proxy_reason r);

struct proxy_hdr {
	size_t len;      /* octets the header occupies (strip them) */
	uint8_t version; /* 1 or 2 */
	/* true: v2 LOCAL (a balancer's own health check), v1 "UNKNOWN", or a v2
	 * PROXY with family UNSPEC or AF_UNIX: no client address is given, the
	 * connection's real endpoints stand (spec 2.1, 2.2). */
	bool local;
	struct fault_ip src, dst; /* when !local; IPv4-mapped IPv6 is IPv4 */
	uint16_t src_port, dst_port;
};

/* proxy_parse - p[0..n) is everything received so far on the connection.
 * DONE: *h is filled (octets past h->len belong to SMTP or TLS).  MORE: a
 * valid prefix, shorter than a header.  BAD: *why is set.  n may exceed the
 * header; only h->len octets are looked at once the header is complete. */
enum proxy_status proxy_parse(const void *p, size_t n, struct proxy_hdr *h,
                              enum proxy_reason *why);

/* proxy_build_v1 / proxy_build_v2 - write a PROXY (command PROXY, TCP)
 * header for src -> dst into buf; the octets written, or 0 when cap is too
 * small or the families differ / are unknown (neither version can mix them;
 * smtpbench calls proxy_same_family() first). */
size_t proxy_build_v1(char *buf, size_t cap, const struct fault_ip *src, uint16_t src_port,
                      const struct fault_ip *dst, uint16_t dst_port);
size_t proxy_build_v2(char *buf, size_t cap, const struct fault_ip *src, uint16_t src_port,
                      const struct fault_ip *dst, uint16_t dst_port);

/* proxy_same_family - give src and dst one family, as a header needs: the
 * destination takes the source's family (an IPv4 destination beside an IPv6
 * source becomes ::ffff:a.b.c.d, RFC 4291 2.5.5.2); only an IPv6
 * destination beside an IPv4 source, which has no IPv4 form, makes the
 * source ::ffff:a.b.c.d instead.  Either way a receiver that reads mapped
 * addresses as IPv4 (smtpsink, Postfix) sees the IPv4 address it was given.
 * 0, or -EINVAL when a family is unknown (nothing changed then). */
int proxy_same_family(struct fault_ip *src, struct fault_ip *dst);

#endif
