/*
 * tlsbio.c - an OpenSSL BIO over memory its owner already has (see tlsbio.h)
 */
#include "sink/tlsbio.h"

#include <openssl/bio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static BIO_METHOD *method;
static pthread_once_t method_once = PTHREAD_ONCE_INIT;

/* buf_add - append n octets, compacting or growing; -1 past max or OOM. */
static int buf_add(struct tlsbio_buf *q, const char *p, size_t n, size_t max)
{
	size_t live = q->len - q->off;

	if (live + n > max)
		return -1;
	if (q->off && q->len + n > q->cap) {
		memmove(q->p, q->p + q->off, live);
		q->off = 0;
		q->len = (uint32_t)live;
	}
	if (q->len + n > q->cap) {
		size_t cap = q->cap ? q->cap : 4096;
		while (cap < q->len + n)
			cap *= 2;
		char *np = realloc(q->p, cap);
		if (!np)
			return -1;
		q->p = np;
		q->cap = (uint32_t)cap;
	}
	memcpy(q->p + q->len, p, n);
	q->len += (uint32_t)n;
	return 0;
}

static size_t buf_take(struct tlsbio_buf *q, char *out, size_t n)
{
	size_t live = q->len - q->off;

	if (n > live)
		n = live;
	memcpy(out, q->p + q->off, n);
	q->off += (uint32_t)n;
	if (q->off == q->len)
		q->off = q->len = 0;
	return n;
}

static void buf_free(struct tlsbio_buf *q)
{
	free(q->p);
	memset(q, 0, sizeof(*q));
}

static int bio_read(BIO *bio, char *out, size_t n, size_t *got)
{
	struct tlsbio *b = BIO_get_data(bio);
	size_t k = 0;

	BIO_clear_retry_flags(bio);
	if (b->held.len > b->held.off)
		k = buf_take(&b->held, out, n);
	if (k < n && b->in_len) {
		size_t m = n - k < b->in_len ? n - k : b->in_len;
		memcpy(out + k, b->in, m);
		b->in += m;
		b->in_len -= m;
		k += m;
	}
	if (!k) {
		/* no data yet is not end of file: OpenSSL says WANT_READ */
		BIO_set_retry_read(bio);
		*got = 0;
		return 0;
	}
	*got = k;
	return 1;
}

static int bio_write(BIO *bio, const char *p, size_t n, size_t *put)
{
	struct tlsbio *b = BIO_get_data(bio);
	size_t k = 0;

	BIO_clear_retry_flags(bio);
	/* behind a spill nothing may overtake it */
	if (b->spill.len == b->spill.off)
		k = b->sink(b->arg, p, n);
	if (k < n && buf_add(&b->spill, p + k, n - k, TLSBIO_SPILL_MAX)) {
		b->failed = true;
		*put = 0;
		return 0; /* not retryable: SSL_write fails */
	}
	*put = n;
	return 1;
}

static long bio_ctrl(BIO *bio, int cmd, long num, void *ptr)
{
	struct tlsbio *b = BIO_get_data(bio);

	(void)num;
	(void)ptr;
	switch (cmd) {
	case BIO_CTRL_PENDING:
		return (long)tlsbio_in_pending(b);
	case BIO_CTRL_WPENDING:
		return (long)(b->spill.len - b->spill.off);
	case BIO_CTRL_FLUSH: /* the owner sends when its turn comes */
	case BIO_CTRL_DUP:
		return 1;
	default: /* no kTLS, no EOF, no push/pop */
		return 0;
	}
}

static int bio_create(BIO *bio)
{
	BIO_set_init(bio, 1);
	return 1;
}

static int bio_destroy(BIO *bio)
{
	BIO_set_data(bio, NULL); /* the struct tlsbio is its owner's */
	return 1;
}

static void method_init(void)
{
	BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "tlsbio");

	if (!m)
		return;
	if (!BIO_meth_set_read_ex(m, bio_read) || !BIO_meth_set_write_ex(m, bio_write) ||
	    !BIO_meth_set_ctrl(m, bio_ctrl) || !BIO_meth_set_create(m, bio_create) ||
	    !BIO_meth_set_destroy(m, bio_destroy)) {
		BIO_meth_free(m);
		return;
	}
	method = m;
}

BIO *tlsbio_new(struct tlsbio *b, tlsbio_sink_fn *sink, void *arg)
{
	BIO *bio;

	pthread_once(&method_once, method_init);
	if (!method || !(bio = BIO_new(method)))
		return NULL;
	memset(b, 0, sizeof(*b));
	b->sink = sink;
	b->arg = arg;
	BIO_set_data(bio, b);
	return bio;
}

void tlsbio_offer(struct tlsbio *b, const char *p, size_t n)
{
	b->in = p;
	b->in_len = n;
}

int tlsbio_keep(struct tlsbio *b)
{
	int r = 0;

	if (b->in_len && buf_add(&b->held, b->in, b->in_len, SIZE_MAX)) {
		b->failed = true;
		r = -1;
	}
	b->in = NULL;
	b->in_len = 0;
	return r;
}

size_t tlsbio_drain(struct tlsbio *b)
{
	struct tlsbio_buf *q = &b->spill;

	while (q->len > q->off) {
		size_t k = b->sink(b->arg, q->p + q->off, q->len - q->off);
		if (!k)
			break;
		q->off += (uint32_t)k;
	}
	if (q->off == q->len)
		q->off = q->len = 0;
	return q->len - q->off;
}

void tlsbio_reset(struct tlsbio *b)
{
	buf_free(&b->held);
	buf_free(&b->spill);
	b->in = NULL;
	b->in_len = 0;
	b->failed = false;
}
