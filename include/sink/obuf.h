/*
 * obuf.h - per-connection output buffer for SMTP replies
 *
 * Replies are appended here and sent in one batch per read (RFC 2920 3.2:
 * "send all pending responses immediately whenever the local TCP input buffer
 * is emptied").  The buffer grows by doubling up to OBUF_HARD_MAX; growth is
 * sticky for the connection, so steady-state traffic never allocates.  A
 * client that pipelines without reading replies trips the hard cap and loses
 * its connection (obuf.overflow) instead of growing server memory; the I/O
 * layer stops reading above OBUF_SOFT_MAX until the backlog drains.
 */
#ifndef SINK_OBUF_H
#define SINK_OBUF_H

#include <stddef.h>
#include <stdint.h>

#define OBUF_INIT_CAP 512u
#define OBUF_SOFT_MAX (64u * 1024u)
#define OBUF_HARD_MAX (1024u * 1024u)

struct obuf {
	char *p;
	uint32_t len;      /* bytes appended */
	uint32_t off;      /* bytes already sent (p[off..len) pending) */
	uint32_t cap;
	uint8_t overflow;  /* an append hit OBUF_HARD_MAX: close the connection */
};

void obuf_init(struct obuf *b);
void obuf_free(struct obuf *b);
/* obuf_reserve - make room for n more bytes; returns a pointer to write them
 * or NULL (overflow set) when the hard cap would be exceeded. */
char *obuf_reserve(struct obuf *b, size_t n);
void obuf_append(struct obuf *b, const void *data, size_t n);
static inline size_t obuf_pending(const struct obuf *b)
{
	return b->len - b->off;
}
/* obuf_consume - n bytes were sent; resets to empty once all are sent. */
void obuf_consume(struct obuf *b, size_t n);

#endif
