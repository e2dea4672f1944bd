/*
 * tls.c - OpenSSL 3 context and per-connection TLS on a tlsbio (see tls.h)
 */
#include "tls.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sink/tlsbio.h"

struct tls_conn {
	SSL *ssl;
	struct tlsbio bio; /* input read in place, output straight to wire */
};

static SSL_CTX *ctx;

bool tls_enabled(void)
{
	return ctx != NULL;
}

static void ssl_err(char *err, size_t n, const char *what)
{
	unsigned long e = ERR_get_error();
	char buf[256] = "";

	if (e)
		ERR_error_string_n(e, buf, sizeof(buf));
	snprintf(err, n, "%s%s%s", what, *buf ? ": " : "", buf);
	ERR_clear_error();
}

/* add_ext - one X509v3 extension by its config-style value. */
static int add_ext(X509 *x, int nid, const char *value)
{
	X509V3_CTX v3;
	X509_EXTENSION *ex;

	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	ex = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
	if (!ex)
		return -1;
	X509_add_ext(x, ex, -1);
	X509_EXTENSION_free(ex);
	return 0;
}

/* self_signed - an ECDSA P-256 key and a one-year certificate for host,
 * with SANs for it and the loopback names, made in memory at start. */
static int self_signed(const char *host, EVP_PKEY **pkey, X509 **cert)
{
	char san[600];
	X509_NAME *name;
	X509 *x;
	EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	unsigned char serial[16];

	if (!k)
		return -1;
	x = X509_new();
	if (!x) {
		EVP_PKEY_free(k);
		return -1;
	}
	X509_set_version(x, 2);
	/* a random serial, so a client caching certificates is not confused */
	FILE *f = fopen("/dev/urandom", "rb");
	if (!f || fread(serial, 1, sizeof(serial), f) != sizeof(serial))
		memset(serial, 0x5a, sizeof(serial));
	if (f)
		fclose(f);
	serial[0] &= 0x7f;
	BIGNUM *bn = BN_bin2bn(serial, sizeof(serial), NULL);
	BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
	BN_free(bn);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 365L * 24 * 3600);
	X509_set_pubkey(x, k);
	name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)host, -1, -1,
	                           0);
	X509_set_issuer_name(x, name);
	snprintf(san, sizeof(san), "DNS:%s,DNS:localhost,IP:127.0.0.1,IP:::1", host);
	if (add_ext(x, NID_subject_alt_name, san) ||
	    add_ext(x, NID_basic_constraints, "critical,CA:FALSE") ||
	    add_ext(x, NID_ext_key_usage, "serverAuth") || !X509_sign(x, k, EVP_sha256())) {
		X509_free(x);
		EVP_PKEY_free(k);
		return -1;
	}
	*pkey = k;
	*cert = x;
	return 0;
}

int tls_setup(const struct tls_opts *o, char *err, size_t errlen)
{
	EVP_PKEY *key = NULL;
	X509 *cert = NULL;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;

	ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx) {
		ssl_err(err, errlen, "SSL_CTX_new");
		return -1;
	}
	SSL_CTX_set_min_proto_version(ctx, o->min_version == 13 ? TLS1_3_VERSION : TLS1_2_VERSION);
	/* Small idle footprint: buffers are freed when a connection has
	 * nothing in flight (thousands of idle sessions). */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE);
	/* Session resumption: tickets (the default) plus a server-side cache. */
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"smtpsink", 8);
	/* Handshake cost (results/2026-11-29-tls): one TLS 1.3 ticket per
	 * handshake instead of OpenSSL's two (a mail client resumes with one),
	 * and AES-128-GCM with SHA-256 first, whose key schedule is cheaper than
	 * SHA-384's; together -12% sink CPU per full STARTTLS connection.  TLS
	 * 1.2 keeps OpenSSL's default list. */
	SSL_CTX_set_num_tickets(ctx, 1);
	SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
	                              "TLS_CHACHA20_POLY1305_SHA256");
	SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
	if (o->self_signed) {
		if (self_signed(o->hostname, &key, &cert)) {
			ssl_err(err, errlen, "generating a self-signed certificate");
			goto fail;
		}
		if (SSL_CTX_use_certificate(ctx, cert) != 1 ||
		    SSL_CTX_use_PrivateKey(ctx, key) != 1) {
			ssl_err(err, errlen, "using the self-signed certificate");
			goto fail;
		}
	} else {
		if (SSL_CTX_use_certificate_chain_file(ctx, o->cert_file) != 1) {
			ssl_err(err, errlen, "--tls-cert");
			goto fail;
		}
		if (SSL_CTX_use_PrivateKey_file(ctx, o->key_file, SSL_FILETYPE_PEM) != 1) {
			ssl_err(err, errlen, "--tls-key");
			goto fail;
		}
		if (SSL_CTX_check_private_key(ctx) != 1) {
			ssl_err(err, errlen, "--tls-key does not match --tls-cert");
			goto fail;
		}
		cert = SSL_CTX_get0_certificate(ctx);
		X509_up_ref(cert);
	}
	if (o->cert_out) {
		FILE *f = fopen(o->cert_out, "w");
		if (!f || !PEM_write_X509(f, cert)) {
			if (f)
				fclose(f);
			snprintf(err, errlen, "cannot write --tls-cert-out %s", o->cert_out);
			goto fail;
		}
		if (fclose(f)) {
			snprintf(err, errlen, "cannot write --tls-cert-out %s", o->cert_out);
			goto fail;
		}
	}
	if (X509_digest(cert, EVP_sha256(), md, &mdlen)) {
		printf("smtpsink: TLS certificate SHA-256 ");
		for (unsigned i = 0; i < mdlen; i++)
			printf("%02X%s", md[i], i + 1 < mdlen ? ":" : "\n");
		fflush(stdout);
	}
	X509_free(cert);
	EVP_PKEY_free(key);
	return 0;
fail:
	X509_free(cert);
	EVP_PKEY_free(key);
	SSL_CTX_free(ctx);
	ctx = NULL;
	return -1;
}

void tls_teardown(void)
{
	SSL_CTX_free(ctx);
	ctx = NULL;
}

/* wire_sink - ciphertext straight into the connection's send buffer;
 * nothing once it has hit its hard cap (tls_out then reports it). */
static size_t wire_sink(void *arg, const char *p, size_t n)
{
	struct obuf *wire = arg;
	char *w = obuf_reserve(wire, n);

	if (!w)
		return 0;
	memcpy(w, p, n);
	wire->len += (uint32_t)n;
	return n;
}

struct tls_conn *tls_conn_new(struct obuf *wire)
{
	struct tls_conn *t = calloc(1, sizeof(*t));
	BIO *bio;

	if (!t)
		return NULL;
	t->ssl = SSL_new(ctx);
	bio = tlsbio_new(&t->bio, wire_sink, wire);
	if (!t->ssl || !bio) {
		SSL_free(t->ssl);
		BIO_free(bio);
		free(t);
		ERR_clear_error();
		return NULL;
	}
	SSL_set_bio(t->ssl, bio, bio); /* one reference, owned by ssl */
	SSL_set_accept_state(t->ssl);
	return t;
}

void tls_conn_free(struct tls_conn *t)
{
	if (!t)
		return;
	SSL_free(t->ssl); /* frees the BIO */
	tlsbio_reset(&t->bio);
	free(t);
	ERR_clear_error(); /* per-thread error queue: leave nothing behind */
}

void tls_in(struct tls_conn *t, const char *p, size_t n)
{
	tlsbio_offer(&t->bio, p, n);
}

int tls_in_done(struct tls_conn *t, bool keep)
{
	if (keep)
		return tlsbio_keep(&t->bio);
	tlsbio_offer(&t->bio, NULL, 0);
	return 0;
}

size_t tls_in_pending(const struct tls_conn *t)
{
	return tlsbio_in_pending(&t->bio);
}

bool tls_has_input(const struct tls_conn *t)
{
	return tlsbio_in_pending(&t->bio) || SSL_has_pending(t->ssl);
}

enum tls_res tls_handshake(struct tls_conn *t)
{
	int r = SSL_do_handshake(t->ssl);

	if (r == 1)
		return TLS_DONE;
	switch (SSL_get_error(t->ssl, r)) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		return TLS_AGAIN;
	default:
		ERR_clear_error();
		return TLS_FAIL;
	}
}

long tls_read(struct tls_conn *t, char *buf, size_t cap)
{
	size_t got = 0;

	if (SSL_read_ex(t->ssl, buf, cap, &got) == 1)
		return (long)got;
	switch (SSL_get_error(t->ssl, 0)) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		return TLS_AGAIN;
	case SSL_ERROR_ZERO_RETURN:
		return TLS_CLOSED;
	default:
		ERR_clear_error();
		return TLS_FAIL;
	}
}

long tls_write(struct tls_conn *t, const char *p, size_t n)
{
	size_t done = 0;

	if (SSL_write_ex(t->ssl, p, n, &done) == 1)
		return (long)done;
	ERR_clear_error();
	return -1;
}

void tls_close_notify(struct tls_conn *t)
{
	SSL_shutdown(t->ssl);
	ERR_clear_error();
}

int tls_out(struct tls_conn *t, struct obuf *wire)
{
	return t->bio.failed || tlsbio_drain(&t->bio) || wire->overflow ? -1 : 0;
}

int tls_version(const struct tls_conn *t)
{
	switch (SSL_version(t->ssl)) {
	case TLS1_3_VERSION:
		return 13;
	case TLS1_2_VERSION:
		return 12;
	default:
		return 0;
	}
}

bool tls_resumed(const struct tls_conn *t)
{
	return SSL_session_reused(t->ssl) == 1;
}
