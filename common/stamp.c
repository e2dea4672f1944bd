/*
 * stamp.c - integrity stamp: build and verify (see stamp.h)
 */
#include "sink/stamp.h"

#include <string.h>

#define K1 0x9E3779B97F4A7C15ull
#define K2 0xBF58476D1CE4E5B9ull

static inline uint64_t fmix(uint64_t x)
{
	x ^= x >> 31;
	x *= K2;
	x ^= x >> 29;
	return x;
}

void stamp_hash_init(struct stamp_hash *h)
{
	memset(h, 0, sizeof(*h));
	h->acc = K1;
}

static inline void absorb(struct stamp_hash *h, uint64_t w)
{
	h->acc = fmix((h->acc ^ w) * K1 + 0x632BE59BD9B4E019ull);
}

void stamp_hash_feed(struct stamp_hash *h, const void *p, size_t n)
{
	const unsigned char *b = p;

	h->total += n;
	while (n && h->nbytes) { /* finish a word split across segments */
		h->word |= (uint64_t)*b++ << (8 * h->nbytes);
		n--;
		if (++h->nbytes == 8) {
			absorb(h, h->word);
			h->word = 0;
			h->nbytes = 0;
		}
	}
	while (n >= 8) {
		uint64_t w;
		memcpy(&w, b, 8); /* little-endian hosts; the value only has to agree
		                     between generator and sink on one machine class */
		absorb(h, w);
		b += 8;
		n -= 8;
	}
	while (n--) {
		h->word |= (uint64_t)*b++ << (8 * h->nbytes);
		h->nbytes++;
	}
}

uint64_t stamp_hash_final(const struct stamp_hash *h)
{
	struct stamp_hash t = *h;

	if (t.nbytes)
		absorb(&t, t.word);
	return fmix(t.acc ^ t.total * K2);
}

uint64_t stamp_mix(uint64_t run, uint64_t seq)
{
	return fmix(run * K1 ^ fmix(seq + K2));
}

static void hex16(char *o, uint64_t v)
{
	static const char hx[] = "0123456789abcdef";

	for (int i = 15; i >= 0; i--) {
		o[i] = hx[v & 15];
		v >>= 4;
	}
}

void stamp_format(char *out, uint64_t run, uint64_t seq, uint64_t body_hash)
{
	size_t p = sizeof(STAMP_PREFIX) - 1;

	memcpy(out, STAMP_PREFIX, p);
	hex16(out + p, run);
	out[p + 16] = ' ';
	hex16(out + p + 17, seq);
	out[p + 33] = ' ';
	hex16(out + p + 34, stamp_mix(run, seq) ^ body_hash);
	out[p + 50] = '\r';
	out[p + 51] = '\n';
}

void stamp_verify_begin(struct stamp_verifier *v)
{
	v->have = 0;
	v->none = 0;
	stamp_hash_init(&v->h);
}

void stamp_verify_feed(struct stamp_verifier *v, const char *p, size_t n)
{
	if (v->none)
		return;
	if (v->have < STAMP_LINE_LEN) {
		size_t k = STAMP_LINE_LEN - v->have;
		if (k > n)
			k = n;
		memcpy(v->line + v->have, p, k);
		v->have += (unsigned)k;
		p += k;
		n -= k;
		if (v->have >= sizeof(STAMP_PREFIX) - 1 &&
		    memcmp(v->line, STAMP_PREFIX, sizeof(STAMP_PREFIX) - 1) != 0) {
			v->none = 1;
			return;
		}
	}
	if (n)
		stamp_hash_feed(&v->h, p, n);
}

static int unhex16(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	for (int i = 0; i < 16; i++) {
		char c = s[i];
		unsigned d = c >= '0' && c <= '9'   ? (unsigned)(c - '0')
		             : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
		                                    : 16;
		if (d == 16)
			return -1;
		v = v << 4 | d;
	}
	*out = v;
	return 0;
}

enum stamp_result stamp_verify_end(struct stamp_verifier *v, uint64_t *run, uint64_t *seq)
{
	size_t p = sizeof(STAMP_PREFIX) - 1;
	uint64_t sum;

	if (v->none || v->have < STAMP_LINE_LEN)
		return STAMP_NONE;
	if (unhex16(v->line + p, run) || v->line[p + 16] != ' ' || unhex16(v->line + p + 17, seq) ||
	    v->line[p + 33] != ' ' || unhex16(v->line + p + 34, &sum) || v->line[p + 50] != '\r' ||
	    v->line[p + 51] != '\n')
		return STAMP_CORRUPT; /* a stamp header, but mangled */
	return (stamp_mix(*run, *seq) ^ stamp_hash_final(&v->h)) == sum ? STAMP_OK : STAMP_CORRUPT;
}
