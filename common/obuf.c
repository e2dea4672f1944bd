/*
 * obuf.c - growable per-connection reply buffer (see obuf.h)
 */
#include "sink/obuf.h"

#include <stdlib.h>
#include <string.h>

void obuf_init(struct obuf *b)
{
	memset(b, 0, sizeof(*b));
}

void obuf_free(struct obuf *b)
{
	if (b->inflight && b->inflight != b->p)
		free(b->inflight);
	free(b->p);
	memset(b, 0, sizeof(*b));
}

/* obuf_reserve - room for n more bytes, growing by doubling (sticky). */
char *obuf_reserve(struct obuf *b, size_t n)
{
	size_t need = (size_t)b->len + n;

	if (b->overflow)
		return NULL;
	if (need > b->cap) {
		size_t cap = b->cap ? b->cap : OBUF_INIT_CAP;
		char *p;

		while (cap < need)
			cap *= 2;
		if (cap > OBUF_HARD_MAX) {
			b->overflow = 1;
			return NULL;
		}
		if (b->inflight == b->p && b->p) {
			/* A send still reads the old memory: copy, keep it. */
			p = malloc(cap);
			if (p)
				memcpy(p, b->p, b->len);
		} else {
			p = realloc(b->p, cap);
		}
		if (!p) {
			b->overflow = 1;
			return NULL;
		}
		b->p = p;
		b->cap = (uint32_t)cap;
	}
	return b->p + b->len;
}

void obuf_append(struct obuf *b, const void *data, size_t n)
{
	char *w = obuf_reserve(b, n);

	if (w) {
		memcpy(w, data, n);
		b->len += (uint32_t)n;
	}
}

void obuf_consume(struct obuf *b, size_t n)
{
	b->off += (uint32_t)n;
	if (b->off >= b->len) {
		b->off = b->len = 0;
	} else if (b->off) {
		memmove(b->p, b->p + b->off, b->len - b->off);
		b->len -= b->off;
		b->off = 0;
	}
}

void obuf_send_done(struct obuf *b, size_t n)
{
	if (b->inflight && b->inflight != b->p)
		free(b->inflight);
	b->inflight = NULL;
	obuf_consume(b, n);
}
