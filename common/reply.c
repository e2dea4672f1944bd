/*
 * reply.c - incremental SMTP reply parser (see reply.h)
 */
#include "sink/reply.h"

#include <string.h>

void reply_init(struct reply_parser *rp)
{
	memset(rp, 0, sizeof(*rp));
}

/* line_end - one reply line is complete; returns 1 when the reply is. */
static int line_end(struct reply_parser *rp, int bare_lf)
{
	struct reply *r = &rp->cur;
	int last;

	if (bare_lf || rp->pos < 3 || rp->pos > REPLY_LINE_MAX)
		r->bad = 1;
	if (rp->pos == 3)
		rp->sep = ' '; /* "250" alone is a complete last line */
	if (rp->sep != ' ' && rp->sep != '-')
		r->bad = 1;
	if (r->lines == 0)
		r->code = rp->code;
	else if (r->code != rp->code)
		r->bad = 1; /* RFC 5321 4.2.1: every line of a reply has the same code */
	r->lines++;
	last = rp->sep != '-';
	rp->pos = 0;
	rp->code = 0;
	rp->sep = 0;
	return last;
}

size_t reply_feed(struct reply_parser *rp, const char *p, size_t n, struct reply *out, int *done)
{
	struct reply *r = &rp->cur;

	*done = 0;
	for (size_t i = 0; i < n; i++) {
		char c = p[i];
		if (c == '\n') {
			int bare = !rp->prev_cr;
			rp->prev_cr = 0;
			if (line_end(rp, bare)) {
				r->text[rp->tlen < REPLY_TEXT_MAX ? rp->tlen : REPLY_TEXT_MAX - 1] =
				    0;
				*out = *r;
				memset(r, 0, sizeof(*r));
				rp->tlen = 0;
				*done = 1;
				return i + 1;
			}
			continue;
		}
		if (rp->prev_cr) /* CR not followed by LF */
			r->bad = 1;
		rp->prev_cr = c == '\r';
		if (c == '\r')
			continue;
		if (rp->pos < 3) {
			if (c < '0' || c > '9')
				r->bad = 1;
			rp->code = (uint16_t)(rp->code * 10 + (uint16_t)(c - '0'));
		} else if (rp->pos == 3) {
			rp->sep = (uint8_t)c;
		}
		rp->pos++;
		if (r->lines == 0 && rp->tlen < REPLY_TEXT_MAX - 1)
			r->text[rp->tlen++] = c;
	}
	return n;
}
