/*
 * test_tlsbio.c - the BIO both TLS layers run on: bytes in order across any
 * split, what is left unread kept, output the sink cannot take spilled in
 * order, bounds enforced; and a real TLS 1.3 handshake plus 100 KiB each
 * way through two of them, fed in pieces of 1 octet up to everything.
 */
#include <criterion/criterion.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

#include "sink/tlsbio.h"

/* a sink with a room limit: each call takes at most room octets */
struct sink {
	char *p;
	size_t len, cap;
	size_t room; /* per call; 0 = takes nothing */
	unsigned calls;
};

static size_t sink_take(void *arg, const char *p, size_t n)
{
	struct sink *s = arg;

	s->calls++;
	if (n > s->room)
		n = s->room;
	if (!n)
		return 0;
	if (s->len + n > s->cap) {
		s->cap = (s->len + n) * 2;
		s->p = realloc(s->p, s->cap);
		cr_assert_not_null(s->p);
	}
	memcpy(s->p + s->len, p, n);
	s->len += n;
	return n;
}

Test(tlsbio, reads_held_then_offered_in_order)
{
	struct tlsbio b;
	struct sink out = {.room = SIZE_MAX};
	BIO *bio = tlsbio_new(&b, sink_take, &out);
	char buf[16];

	cr_assert_not_null(bio);
	/* nothing offered: "no data yet", not end of file */
	cr_assert_leq(BIO_read(bio, buf, sizeof(buf)), 0);
	cr_assert(BIO_should_retry(bio) && BIO_should_read(bio));

	tlsbio_offer(&b, "abc", 3);
	cr_assert_eq(BIO_pending(bio), 3);
	cr_assert_eq(BIO_read(bio, buf, 1), 1);
	cr_assert_eq(buf[0], 'a');
	cr_assert_eq(tlsbio_keep(&b), 0); /* "bc" copied: the span goes back */
	cr_assert_null(b.in);
	cr_assert_eq(tlsbio_in_pending(&b), 2);

	tlsbio_offer(&b, "de", 2);
	cr_assert_eq(tlsbio_in_pending(&b), 4);
	cr_assert_eq(BIO_read(bio, buf, sizeof(buf)), 4);
	cr_assert_arr_eq(buf, "bcde", 4);
	cr_assert_eq(tlsbio_in_pending(&b), 0);
	cr_assert_eq(tlsbio_keep(&b), 0);
	cr_assert_eq(b.held.len, 0);
	cr_assert_eq(BIO_flush(bio), 1);
	BIO_free(bio);
	tlsbio_reset(&b);
	free(out.p);
}

Test(tlsbio, spill_keeps_order_until_drained)
{
	struct tlsbio b;
	struct sink out = {.room = 3};
	BIO *bio = tlsbio_new(&b, sink_take, &out);

	cr_assert_eq(BIO_write(bio, "hello", 5), 5); /* "hel" taken, "lo" spilled */
	cr_assert_eq(out.len, 3);
	cr_assert_eq(BIO_wpending(bio), 2);
	out.room = SIZE_MAX;
	/* a spill pending: the next write may not overtake it */
	cr_assert_eq(BIO_write(bio, " world", 6), 6);
	cr_assert_eq(out.len, 3);
	cr_assert_eq(tlsbio_drain(&b), 0);
	cr_assert_eq(out.len, 11);
	cr_assert_arr_eq(out.p, "hello world", 11);
	cr_assert_eq(BIO_wpending(bio), 0);
	/* behind an empty spill, writes go straight to the sink again */
	unsigned calls = out.calls;
	cr_assert_eq(BIO_write(bio, "!", 1), 1);
	cr_assert_eq(out.calls, calls + 1);
	cr_assert_eq(out.len, 12);
	BIO_free(bio);
	tlsbio_reset(&b);
	free(out.p);
}

Test(tlsbio, spill_is_bounded)
{
	struct tlsbio b;
	struct sink out = {.room = 0};
	BIO *bio = tlsbio_new(&b, sink_take, &out);
	char *big = calloc(1, TLSBIO_SPILL_MAX + 1);

	cr_assert_eq(BIO_write(bio, big, TLSBIO_SPILL_MAX), TLSBIO_SPILL_MAX);
	cr_assert_not(b.failed);
	cr_assert_leq(BIO_write(bio, big, 1), 0);
	cr_assert_not(BIO_should_retry(bio)); /* a failure, not "try again" */
	cr_assert(b.failed);
	tlsbio_reset(&b);
	cr_assert_not(b.failed);
	cr_assert_null(b.spill.p);
	BIO_free(bio);
	free(big);
}

/* --- a real TLS 1.3 connection over two tlsbios ------------------------ */

static SSL_CTX *server_ctx(void)
{
	EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	X509 *x = X509_new();
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	cr_assert(k && x && ctx);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -60);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, k);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
	                           (const unsigned char *)"test", -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	cr_assert(X509_sign(x, k, EVP_sha256()));
	cr_assert_eq(SSL_CTX_use_certificate(ctx, x), 1);
	cr_assert_eq(SSL_CTX_use_PrivateKey(ctx, k), 1);
	SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS); /* as both programs */
	X509_free(x);
	EVP_PKEY_free(k);
	return ctx;
}

struct end {
	SSL *ssl;
	struct tlsbio b;
	struct sink wire; /* what this end sent */
	size_t peer_off;  /* how much of the peer's wire was offered here */
	char *got;        /* plaintext received */
	size_t got_len;
};

static void end_init(struct end *e, SSL_CTX *ctx, bool server, size_t room)
{
	memset(e, 0, sizeof(*e));
	e->wire.room = room;
	e->ssl = SSL_new(ctx);
	BIO *bio = tlsbio_new(&e->b, sink_take, &e->wire);
	cr_assert(e->ssl && bio);
	SSL_set_bio(e->ssl, bio, bio);
	if (server)
		SSL_set_accept_state(e->ssl);
	else
		SSL_set_connect_state(e->ssl);
	e->got = malloc(1 << 20);
}

/* step - offer up to chunk octets of the peer's wire, read what decrypts,
 * keep the rest, as a backend's receive would. */
static void step(struct end *e, const struct end *peer, size_t chunk)
{
	size_t n = peer->wire.len - e->peer_off;
	char tmp[16384];

	if (n > chunk)
		n = chunk;
	tlsbio_offer(&e->b, peer->wire.p + e->peer_off, n);
	e->peer_off += n;
	if (!SSL_is_init_finished(e->ssl))
		SSL_do_handshake(e->ssl);
	for (;;) {
		size_t got = 0;
		if (SSL_read_ex(e->ssl, tmp, sizeof(tmp), &got) != 1)
			break;
		memcpy(e->got + e->got_len, tmp, got);
		e->got_len += got;
	}
	cr_assert_eq(SSL_get_error(e->ssl, 0), SSL_ERROR_WANT_READ);
	ERR_clear_error();
	cr_assert_eq(tlsbio_keep(&e->b), 0);
	cr_assert_null(e->b.in);
	/* a sink with a small room leaves a spill: drain it as tls_pump does */
	tlsbio_drain(&e->b);
}

static void converse(size_t chunk, size_t room)
{
	SSL_CTX *sctx = server_ctx(), *cctx = SSL_CTX_new(TLS_client_method());
	struct end c, s;
	size_t total = 100 * 1024, sent_c = 0, sent_s = 0;
	char *data = malloc(total);

	for (size_t i = 0; i < total; i++)
		data[i] = (char)(i * 7 + i / 251);
	SSL_CTX_set_mode(cctx, SSL_MODE_RELEASE_BUFFERS);
	end_init(&c, cctx, false, room);
	end_init(&s, sctx, true, room);
	for (int round = 0; round < 2000000 && (c.got_len < total || s.got_len < total); round++) {
		if (!SSL_is_init_finished(c.ssl))
			SSL_do_handshake(c.ssl);
		/* once up, each end writes 1000 octets per round */
		if (SSL_is_init_finished(c.ssl) && sent_c < total) {
			size_t k = total - sent_c < 1000 ? total - sent_c : 1000, w = 0;
			cr_assert_eq(SSL_write_ex(c.ssl, data + sent_c, k, &w), 1);
			sent_c += w;
		}
		if (SSL_is_init_finished(s.ssl) && sent_s < total) {
			size_t k = total - sent_s < 1000 ? total - sent_s : 1000, w = 0;
			cr_assert_eq(SSL_write_ex(s.ssl, data + sent_s, k, &w), 1);
			sent_s += w;
		}
		tlsbio_drain(&c.b);
		tlsbio_drain(&s.b);
		step(&s, &c, chunk);
		step(&c, &s, chunk);
	}
	cr_assert_eq(SSL_version(c.ssl), TLS1_3_VERSION);
	cr_assert_eq(s.got_len, total, "chunk %zu room %zu", chunk, room);
	cr_assert_eq(c.got_len, total, "chunk %zu room %zu", chunk, room);
	cr_assert_arr_eq(s.got, data, total);
	cr_assert_arr_eq(c.got, data, total);
	cr_assert_not(c.b.failed || s.b.failed);
	for (struct end *e = &c; e; e = e == &c ? &s : NULL) {
		SSL_free(e->ssl);
		tlsbio_reset(&e->b);
		free(e->wire.p);
		free(e->got);
	}
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
	free(data);
}

Test(tlsbio, tls13_both_ways_whole_records)
{
	converse(SIZE_MAX, SIZE_MAX);
}

Test(tlsbio, tls13_fed_one_octet_at_a_time)
{
	converse(1, SIZE_MAX);
}

Test(tlsbio, tls13_fed_in_odd_pieces)
{
	converse(7, SIZE_MAX);
	converse(1500, SIZE_MAX);
}

Test(tlsbio, tls13_through_a_narrow_sink)
{
	converse(SIZE_MAX, 10); /* every record spills and drains in order */
}
