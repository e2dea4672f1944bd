/*
 * tlsbio.h - an OpenSSL BIO over memory its owner already has
 *
 * Both programs run TLS as a byte transform between the backend and the
 * protocol core (server/tls.c, bench/tls.c).  OpenSSL's memory BIO costs a
 * copy in, a copy out, a BUF_MEM resize (with a memset of the tail) and a
 * BIO_ctrl call for every "how much is pending" question - about a tenth of
 * the TLS work for small records.  This BIO instead:
 *
 *   reads ciphertext in place from the span the backend received
 *   (tlsbio_offer), and copies only what is left unread when the caller
 *   stops (tlsbio_keep: a paused session, a record cut by the segment);
 *
 *   writes ciphertext straight to the owner's sink (its send buffer); what
 *   the sink has no room for waits in a spill buffer, in order, until
 *   tlsbio_drain.
 *
 * Both side buffers are allocated only when used and are bounded
 * (TLSBIO_SPILL_MAX; held input is bounded by the caller, who sees it in
 * tlsbio_in_pending).  Not thread-safe: one connection, one thread.
 */
#ifndef SINK_TLSBIO_H
#define SINK_TLSBIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TLSBIO_SPILL_MAX (64u * 1024) /* handshake flights fit many times over */

/* tlsbio_sink_fn - take up to n octets; returns how many were taken. */
typedef size_t tlsbio_sink_fn(void *arg, const char *p, size_t n);

struct tlsbio_buf {
	char *p;
	uint32_t off, len, cap;
};

struct tlsbio {
	const char *in; /* the offered span, read in place; not owned */
	size_t in_len;
	struct tlsbio_buf held;  /* input left unread by an earlier call */
	struct tlsbio_buf spill; /* output the sink had no room for */
	tlsbio_sink_fn *sink;
	void *arg;
	bool failed; /* a side buffer could not take what it had to */
};

typedef struct bio_st BIO;

/* tlsbio_new - a BIO on b (SSL_set_bio(ssl, bio, bio) owns it); b must
 * outlive it.  NULL when out of memory. */
BIO *tlsbio_new(struct tlsbio *b, tlsbio_sink_fn *sink, void *arg);

/* tlsbio_offer - ciphertext for the next reads, after whatever is held.
 * The span must stay valid until tlsbio_keep. */
void tlsbio_offer(struct tlsbio *b, const char *p, size_t n);

/* tlsbio_keep - the caller is done reading for now: copy the unread rest of
 * the span.  0, or -1 when out of memory (b->failed). */
int tlsbio_keep(struct tlsbio *b);

/* tlsbio_in_pending - ciphertext not yet read by OpenSSL. */
static inline size_t tlsbio_in_pending(const struct tlsbio *b)
{
	return b->held.len - b->held.off + b->in_len;
}

/* tlsbio_drain - give spilled output to the sink; returns what is left. */
size_t tlsbio_drain(struct tlsbio *b);

/* tlsbio_reset - forget all input and output and free the side buffers. */
void tlsbio_reset(struct tlsbio *b);

#endif
