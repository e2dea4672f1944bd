/*
 * tls.c - smtpbench's TLS layer: OpenSSL on a tlsbio (sink/tlsbio.h) between the
 * backends and the client core
 *
 * One byte transform, the same for both backends: ciphertext the backend
 * received is read by OpenSSL in place (tlsbio_offer), plaintext that comes
 * out of SSL_read goes to the client core (drv_feed), the client core's
 * output is encrypted with SSL_write straight into the slot's obuf
 * (obuf_sink), which is what the backend sends (drv_out).  The
 * backends never see a plaintext octet of a TLS connection and contain no
 * TLS code; the client core never sees ciphertext.
 *
 * Where it starts: at connect with implicit TLS (RFC 8314 3.3), or after
 * the 220 to STARTTLS (RFC 3207 4); the client core asks with
 * CLIENT_ACT_TLS and hears back through client_tls_up()/client_tls_failed().
 *
 * Memory: one SSL_CTX per run, shared by the threads (OpenSSL 3 allows it);
 * one SSL and one tlsbio per connection, with SSL_MODE_RELEASE_BUFFERS
 * so an idle connection holds no record buffers; obuf is allocated once per
 * session slot, on its first TLS connection, and reused by every reconnect.
 * Plaintext is gathered into one record per SSL_write from the client's
 * iovecs (the envelope, stamp and body of a small message become one
 * record) in a per-thread scratch buffer.  Nothing is allocated per message.
 *
 * obuf only grows at its end while a send may be in flight (io_uring keeps a
 * pointer into it), and is compacted only in tls_wrote(), when the backend
 * has just reported its one send done: the same append-only contract as the
 * client core's command buffer.
 *
 * Names: SNI (RFC 6066 3) is the target's host name, never an address
 * literal; with --tls-verify the certificate must chain to --tls-ca (or the
 * system store) and match the name or address (RFC 6125 via SSL_set1_host /
 * X509_VERIFY_PARAM_set1_ip_asc).  Without it nothing is verified, like
 * swaks: a load generator is pointed at test servers with throwaway certs.
 *
 * --tls-resume keeps the last session (TLS 1.3 NewSessionTicket or TLS 1.2
 * session) per slot from OpenSSL's new-session callback and offers it on the
 * slot's next connection; SSL_session_reused() says whether the server took
 * it, and the handshake time is recorded in the full or resumed histogram.
 */
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "bench.h"
#include "sink/tlsbio.h"

#define TLS_OBUF 17408 /* a full 16 KiB record plus the records queued behind it */
#define TLS_REC  16384 /* RFC 8446 5.1: plaintext per record at most 2^14 */
#define TLS_OVH  256   /* room kept for one record's header, tag and padding */

enum { TLS_UP = 0, TLS_HANDSHAKE, TLS_DEAD }; /* csess.tls_hs */

void bench_names_add(struct bench_names *t, const char *name, uint64_t k)
{
	int i;

	for (i = 0; i < t->n; i++)
		if (!strcmp(t->e[i].name, name))
			break;
	if (i == t->n) {
		if (t->n == BENCH_NAMES) { /* full: the last entry is "other" */
			i = BENCH_NAMES - 1;
			snprintf(t->e[i].name, sizeof(t->e[i].name), "other");
		} else {
			snprintf(t->e[i].name, sizeof(t->e[i].name), "%s", name);
			t->n++;
		}
	}
	t->e[i].count += k;
}

/* new_session - OpenSSL hands over a resumable session (a TLS 1.3 ticket
 * arrives after the handshake, while SSL_read runs): keep the newest one
 * for the slot's next connection. */
static int new_session(SSL *ssl, SSL_SESSION *sess)
{
	struct csess *s = SSL_get_app_data(ssl);

	if (!s)
		return 0;
	if (s->resume)
		SSL_SESSION_free(s->resume);
	s->resume = sess;
	return 1; /* we keep the reference */
}

int tls_ctx_new(struct bench_cfg *c, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (!ctx) {
		snprintf(err, errlen, "SSL_CTX_new failed");
		return -1;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	/* an idle connection (between messages, thousands of them) keeps no
	 * 17 KiB record buffers */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	/* a renegotiation (TLS 1.2) would make SSL_write wait for a read */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
	if (c->tls_verify) {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
		if (c->tls_ca ? SSL_CTX_load_verify_locations(ctx, c->tls_ca, NULL) != 1
		              : SSL_CTX_set_default_verify_paths(ctx) != 1) {
			unsigned long e = ERR_get_error();
			snprintf(err, errlen, "cannot load %s: %s",
			         c->tls_ca ? c->tls_ca : "the default CA store",
			         e ? ERR_reason_error_string(e) : "unknown error");
			ERR_clear_error();
			SSL_CTX_free(ctx);
			return -1;
		}
	} else {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	}
	if (c->tls_resume) {
		/* sessions live in the slots, not in an internal cache that
		 * every thread would share */
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
		                                        SSL_SESS_CACHE_NO_INTERNAL_STORE);
		SSL_CTX_sess_set_new_cb(ctx, new_session);
	}
	c->tls_ctx = ctx;
	return 0;
}

void tls_ctx_free(struct bench_cfg *c)
{
	SSL_CTX_free(c->tls_ctx);
	c->tls_ctx = NULL;
}

/* ssl_reason - one line for a failed TLS operation: the verification
 * result when that was it, else OpenSSL's reason. */
static void ssl_reason(SSL *ssl, char *out, size_t n, const char *what)
{
	unsigned long e = ERR_peek_last_error();
	long vr = SSL_get_verify_result(ssl);

	if (vr != X509_V_OK)
		snprintf(out, n, "%s: certificate verify failed: %s", what,
		         X509_verify_cert_error_string(vr));
	else if (e)
		snprintf(out, n, "%s: %s", what, ERR_reason_error_string(e));
	else
		snprintf(out, n, "%s failed", what);
	ERR_clear_error();
}

/* flush - move queued ciphertext to the backend. */
static void flush(struct loop *L, struct csess *s)
{
	uint32_t gen = s->gen;

	tls_pump(L, s);
	if (s->gen == gen && s->olen)
		L->io->send(L, s);
}

/* obuf_sink - ciphertext from OpenSSL into the slot's send buffer, as much
 * as fits; tlsbio keeps the rest (a handshake flight behind queued
 * records) until tls_pump drains it. */
static size_t obuf_sink(void *arg, const char *p, size_t n)
{
	struct csess *s = arg;
	size_t room = TLS_OBUF - s->ooff - s->olen;

	if (n > room)
		n = room;
	memcpy(s->obuf + s->ooff + s->olen, p, n);
	s->olen += (uint32_t)n;
	return n;
}

unsigned tls_begin(struct loop *L, struct csess *s, uint64_t now)
{
	const struct bench_cfg *c = &L->b->cfg;
	const char *host = c->target_host[s->target];
	bool ip = c->target_ip[s->target];
	SSL *ssl = NULL;
	BIO *bio = NULL;
	int r;

	if (!s->obuf && !(s->obuf = malloc(TLS_OBUF)))
		return client_tls_failed(&s->cl, "TLS: out of memory");
	s->ooff = s->olen = 0;
	ERR_clear_error();
	ssl = SSL_new(c->tls_ctx);
	bio = tlsbio_new(&s->tb, obuf_sink, s);
	if (!ssl || !bio) {
		SSL_free(ssl);
		BIO_free(bio);
		ERR_clear_error();
		return client_tls_failed(&s->cl, "TLS: out of memory");
	}
	SSL_set_bio(ssl, bio, bio); /* one reference, owned by ssl */
	SSL_set_connect_state(ssl);
	SSL_set_app_data(ssl, s);
	/* RFC 6066 3: HostName is a DNS name; literal addresses are not sent */
	if (!ip && host[0])
		SSL_set_tlsext_host_name(ssl, host);
	if (c->tls_verify && host[0]) {
		if (ip)
			X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host);
		else
			SSL_set1_host(ssl, host);
	}
	if (c->tls_resume && s->resume && SSL_SESSION_is_resumable(s->resume))
		SSL_set_session(ssl, s->resume);
	s->ssl = ssl;
	s->tls_hs = TLS_HANDSHAKE;
	/* the handshake is not a command round trip; the whole of it must
	 * finish within one --timeout */
	s->t_rt = 0;
	s->deadline = now + c->timeout_ns;
	r = SSL_do_handshake(ssl); /* writes the ClientHello */
	if (r <= 0 && SSL_get_error(ssl, r) != SSL_ERROR_WANT_READ) {
		char why[REPLY_TEXT_MAX];
		ssl_reason(ssl, why, sizeof(why), "TLS handshake");
		s->tls_hs = TLS_DEAD;
		return client_tls_failed(&s->cl, why);
	}
	flush(L, s);
	return 0;
}

/* handshake_done - count it and tell the client core. */
static void handshake_done(struct loop *L, struct csess *s, uint64_t now)
{
	struct bench_stats *st = &L->t->st;
	bool resumed = SSL_session_reused(s->ssl);

	s->tls_hs = TLS_UP;
	if (resumed) {
		st->tls_resumed++;
		hist_record(&st->tls_hs_resumed, now - s->t_connect);
	} else {
		st->tls_full++;
		hist_record(&st->tls_hs_full, now - s->t_connect);
	}
	bench_names_add(&st->tls_versions, SSL_get_version(s->ssl), 1);
	bench_names_add(&st->tls_ciphers, SSL_get_cipher_name(s->ssl), 1);
	drv_act(L, s, client_tls_up(&s->cl), now);
}

/* err_reset - empty this thread's OpenSSL error queue.  ERR_clear_error
 * walks all 16 slots and frees each one's data even when the queue is
 * empty, which it nearly always is here: 5.6 % of smtpbench's CPU at 100
 * STARTTLS sessions (perf; results/2026-11-30-tls).  Peeking first
 * costs one thread-local lookup. */
static void err_reset(void)
{
	if (ERR_peek_error())
		ERR_clear_error();
}

/* broken - the TLS layer failed after the handshake (a fatal alert, a bad
 * record): the connection is dropped, with OpenSSL's reason. */
static void broken(struct loop *L, struct csess *s, uint64_t now)
{
	char why[REPLY_TEXT_MAX];
	unsigned act;

	ssl_reason(s->ssl, why, sizeof(why), "TLS");
	s->tls_hs = TLS_DEAD;
	act = client_eof(&s->cl);
	if (s->cl.fail == CLIENT_FAIL_DROPPED)
		snprintf(s->cl.text, sizeof(s->cl.text), "%s", why);
	drv_act(L, s, act | CLIENT_ACT_CLOSE, now);
}

/* input_loop - handshake, then records to the client core, until OpenSSL
 * wants more input or the connection ends (s->gen moves on). */
static void input_loop(struct loop *L, struct csess *s, uint32_t gen, uint64_t now)
{
	/* SSL_get_error needs an empty error queue; only a failed call adds to
	 * it, and a failed call ends this loop, so once per batch is enough. */
	err_reset();
	for (;;) {
		int r, e;
		if (s->tls_hs) {
			r = SSL_do_handshake(s->ssl);
			if (r == 1) {
				handshake_done(L, s, now);
				if (s->gen != gen || s->want_close)
					return;
				continue;
			}
			e = SSL_get_error(s->ssl, r);
			if (e == SSL_ERROR_WANT_READ)
				return;
			char why[REPLY_TEXT_MAX];
			ssl_reason(s->ssl, why, sizeof(why), "TLS handshake");
			s->tls_hs = TLS_DEAD;
			drv_act(L, s, client_tls_failed(&s->cl, why), now);
			return;
		}
		/* nothing buffered: SSL_read would only say WANT_READ, at about
		 * the cost of decrypting a small record in OpenSSL 3 */
		if (!tlsbio_in_pending(&s->tb) && !SSL_has_pending(s->ssl))
			return;
		r = SSL_read(s->ssl, L->tls_in, sizeof(L->tls_in));
		if (r > 0) {
			drv_feed(L, s, L->tls_in, (size_t)r, now);
			if (s->gen != gen || s->want_close)
				return;
			continue;
		}
		e = SSL_get_error(s->ssl, r);
		if (e == SSL_ERROR_WANT_READ)
			return;
		if (e == SSL_ERROR_ZERO_RETURN) { /* close_notify: the server is done */
			ERR_clear_error();
			drv_act(L, s, client_eof(&s->cl) | CLIENT_ACT_CLOSE, now);
			return;
		}
		broken(L, s, now);
		return;
	}
}

void tls_input(struct loop *L, struct csess *s, const char *p, size_t n, uint64_t now)
{
	uint32_t gen = s->gen, olen = s->olen;

	if (s->tls_hs == TLS_DEAD)
		return; /* closing already */
	/* OpenSSL reads the backend's buffer in place; what it leaves (a
	 * record cut by the segment) is copied before the buffer goes back */
	tlsbio_offer(&s->tb, p, n);
	input_loop(L, s, gen, now);
	if (s->gen != gen || !s->ssl)
		return; /* closed: tls_close forgot the span */
	if (tlsbio_keep(&s->tb)) {
		broken(L, s, now);
		return;
	}
	/* handshake flights, the client's Finished, post-handshake replies */
	if (s->tls_hs != TLS_DEAD && !s->want_close && (s->olen > olen || s->tb.spill.len))
		flush(L, s);
}

void tls_pump(struct loop *L, struct csess *s)
{
	err_reset(); /* see tls_input */
	/* spilled ciphertext first, so the stream keeps its order */
	if (tlsbio_drain(&s->tb))
		return;
	for (;;) {
		size_t room = TLS_OBUF - s->ooff - s->olen;
		if (s->tls_hs || !client_has_output(&s->cl) || room <= TLS_OVH)
			return;
		/* gather up to one record of plaintext: a small message (envelope,
		 * stamp, body in three iovecs) goes out as one record */
		size_t max = room - TLS_OVH < TLS_REC ? room - TLS_OVH : TLS_REC, k = 0;
		int n;
		const struct iovec *iov = client_out(&s->cl, &n);
		const char *src = iov[0].iov_base;
		if (n == 1 || iov[0].iov_len >= max) {
			k = iov[0].iov_len < max ? iov[0].iov_len : max;
		} else {
			for (int i = 0; i < n && k < max; i++) {
				size_t m = iov[i].iov_len < max - k ? iov[i].iov_len : max - k;
				memcpy(L->tls_out + k, iov[i].iov_base, m);
				k += m;
			}
			src = L->tls_out;
		}
		/* the record goes straight into obuf (room was checked) */
		int w = SSL_write(s->ssl, src, (int)k);
		if (w <= 0) {
			/* tlsbio never asks to retry and there is no
			 * renegotiation: the session is broken */
			broken(L, s, bench_now());
			return;
		}
		client_wrote(&s->cl, (size_t)w);
	}
}

void tls_wrote(struct loop *L, struct csess *s, size_t n)
{
	s->ooff += (uint32_t)n;
	s->olen -= (uint32_t)n;
	/* no send is in flight now (one per session, just completed): the
	 * rest may move to the front */
	if (!s->olen)
		s->ooff = 0;
	else if (s->ooff > TLS_OBUF / 2) {
		memmove(s->obuf, s->obuf + s->ooff, s->olen);
		s->ooff = 0;
	}
	tls_pump(L, s);
}

/* tls_close - the connection ends: say close_notify (RFC 8446 6.1) when the
 * handshake was done and nothing else is queued, then free the SSL.  The
 * alert is a few dozen octets on an idle socket; it is written here, best
 * effort, because the connection is closed right after. */
void tls_close(struct loop *L, struct csess *s)
{
	if (!s->ssl)
		return;
	/* SSL_shutdown is not allowed after a fatal error */
	if (s->tls_hs == TLS_UP && !s->olen && s->fd >= 0 && !s->send_busy) {
		ERR_clear_error();
		SSL_shutdown(s->ssl); /* the alert lands in the empty obuf */
		if (s->olen &&
		    send(s->fd, s->obuf + s->ooff, s->olen, MSG_DONTWAIT | MSG_NOSIGNAL) > 0)
			L->t->st.sent_bytes += s->olen;
	}
	ERR_clear_error();
	SSL_free(s->ssl);
	s->ssl = NULL;
	tlsbio_reset(&s->tb);
	s->ooff = s->olen = 0;
	s->tls_hs = 0;
}

void tls_slot_free(struct csess *s)
{
	if (s->resume)
		SSL_SESSION_free(s->resume);
	s->resume = NULL;
	tlsbio_reset(&s->tb);
	free(s->obuf);
	s->obuf = NULL;
}
