/*
 * reply.h - client-side SMTP reply parser (RFC 5321 4.2), incremental
 *
 * Replies arrive split across reads at any byte.  A reply is one or more
 * lines "CCC-text" ending with "CCC text" (or "CCC" alone); every line must
 * carry the same code.  Anything else - a non-digit code, a changed code,
 * a missing separator, a line over 2048 octets, a bare LF - marks the reply
 * as a protocol violation, which the load generator counts separately from
 * 4xx/5xx answers.
 */
#ifndef SINK_REPLY_H
#define SINK_REPLY_H

#include <stddef.h>
#include <stdint.h>

#define REPLY_TEXT_MAX 160
#define REPLY_LINE_MAX 2048

struct reply {
	uint16_t code; /* 0 when unparseable */
	uint8_t bad;   /* protocol violation */
	uint8_t lines;
	char text[REPLY_TEXT_MAX]; /* first line, NUL-terminated, for error reports */
};

struct reply_parser {
	struct reply cur;
	uint32_t pos;  /* octets of the current line so far */
	uint16_t code; /* code of the current line */
	uint8_t sep;   /* 4th octet of the current line */
	uint8_t prev_cr;
	uint32_t tlen;
};

void reply_init(struct reply_parser *rp);
/* reply_feed - consume input up to the end of one complete reply.  Returns
 * octets consumed and sets *done when *out holds a complete reply. */
size_t reply_feed(struct reply_parser *rp, const char *p, size_t n, struct reply *out, int *done);

#endif
