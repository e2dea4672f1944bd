/*
 * tls.h - smtpsink's TLS: one SSL_CTX for the process, and per connection an
 * SSL on a tlsbio (sink/tlsbio.h: ciphertext read in place, written into
 * the connection's send buffer), so TLS is a byte transform between the backend
 * (ciphertext) and the session (plaintext) - no backend knows about it, and
 * io_uring keeps its provided buffers and batched sends (conn.c drives it).
 *
 * OpenSSL 3 (Debian 12: 3.0).  TLS 1.2 and 1.3; session tickets on (the
 * library default); RFC 3207 STARTTLS and RFC 8314 implicit TLS use the
 * same context.  kTLS is not used: this kernel has no tls ULP, and OpenSSL
 * 3.0 would offload only TLS 1.3 transmit (see the README).
 */
#ifndef SINK_TLS_H
#define SINK_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sink/obuf.h"

struct tls_opts {
	const char *cert_file, *key_file; /* PEM */
	bool self_signed;                 /* generate ECDSA P-256 + cert for hostname */
	const char *cert_out;             /* write the certificate (PEM) here */
	const char *hostname;
	int min_version; /* 12 or 13 */
};

/* tls_setup - build the context; 0, or -1 with a reason in err.  Prints the
 * certificate's SHA-256 fingerprint to stdout (a test can pin it). */
int tls_setup(const struct tls_opts *o, char *err, size_t errlen);
void tls_teardown(void);
bool tls_enabled(void);

struct tls_conn;

/* tls_conn_new - server side; its ciphertext goes straight into wire, which
 * must outlive it.  NULL when out of memory. */
struct tls_conn *tls_conn_new(struct obuf *wire);
void tls_conn_free(struct tls_conn *t);

/* tls_in - ciphertext from the socket, read in place until tls_in_done. */
void tls_in(struct tls_conn *t, const char *p, size_t n);
/* tls_in_done - the socket's buffer goes back: keep a copy of what was not
 * read yet (keep), or forget it (the connection is closing).  0, or -1 when
 * out of memory. */
int tls_in_done(struct tls_conn *t, bool keep);
size_t tls_in_pending(const struct tls_conn *t);
/* tls_has_input - a record (or part of one) is buffered: tls_read may make
 * progress.  Lets the caller skip the SSL_read that would only say
 * WANT_READ, which in OpenSSL 3 costs about as much as a small record. */
bool tls_has_input(const struct tls_conn *t);

enum tls_res { TLS_AGAIN = 0, TLS_DONE = 1, TLS_FAIL = -1, TLS_CLOSED = -2 };

/* tls_handshake - advance the handshake: TLS_DONE, TLS_AGAIN (needs input)
 * or TLS_FAIL. */
enum tls_res tls_handshake(struct tls_conn *t);

/* tls_read - plaintext out: > 0 octets, or TLS_AGAIN, TLS_CLOSED
 * (close_notify) or TLS_FAIL. */
long tls_read(struct tls_conn *t, char *buf, size_t cap);

/* tls_write - encrypt up to n octets; returns octets taken (all or a
 * record's worth), -1 on failure. */
long tls_write(struct tls_conn *t, const char *p, size_t n);

/* tls_close_notify - queue the close_notify alert (RFC 8446 6.1). */
void tls_close_notify(struct tls_conn *t);

/* tls_out - ciphertext is written into wire as it is made; this moves what
 * wire had no room for.  0, or -1 when wire cannot grow. */
int tls_out(struct tls_conn *t, struct obuf *wire);

/* Facts about an established connection, for counters. */
int tls_version(const struct tls_conn *t); /* 12, 13, or 0 */
bool tls_resumed(const struct tls_conn *t);

#endif
