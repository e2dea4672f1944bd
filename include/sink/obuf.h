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
/* Small on purpose: a pipelined group rarely produces more than a few KiB
 * of replies, and a client that pipelines without reading gets a fair,
 * small share of each loop turn (and costs little memory) when the I/O
 * layer pauses it at this mark. */
#define OBUF_SOFT_MAX (8u * 1024u)
#define OBUF_HARD_MAX (1024u * 1024u)

struct obuf {
	char *p;
	char *inflight; /* buffer an asynchronous send still reads, or NULL */
	uint32_t len;   /* bytes appended */
	uint32_t off;   /* bytes already sent (p[off..len) pending) */
	uint32_t cap;
	uint8_t overflow; /* an append hit OBUF_HARD_MAX: close the connection */
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
/* obuf_consume - n bytes were sent (synchronously); the pending tail is moved
 * to the front so a connection that never fully drains cannot creep up to
 * the hard cap. */
void obuf_consume(struct obuf *b, size_t n);

/* Asynchronous sends (io_uring): the kernel reads p[off..len) until the
 * completion arrives, so growth must not free that memory.  send_begin pins
 * the current buffer; a realloc meanwhile leaves the pinned one alive and
 * send_done frees it, then consumes n bytes. */
static inline const char *obuf_send_begin(struct obuf *b, size_t *n)
{
	b->inflight = b->p;
	*n = b->len - b->off;
	return b->p + b->off;
}
void obuf_send_done(struct obuf *b, size_t n);

#endif
