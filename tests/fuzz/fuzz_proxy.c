/*
 * fuzz_proxy.c - libFuzzer target: PROXY protocol header parser (proxy.c)
 *
 * The input is what a peer sent first.  Whatever it is, the parser's
 * verdicts must fit together the way the incremental caller relies on:
 *
 *  - DONE: the header fits what was received and PROXY_MAX; parsing only
 *    its own octets gives the same header (nothing past len was looked
 *    at), and prefixes of it are MORE (it was not complete earlier);
 *  - BAD: one more octet, whatever it is, does not make it acceptable
 *    again (the refusal was decided by octets already received);
 *  - MORE: a reason is not set.
 *
 * Any violation aborts.
 */
#include <stdlib.h>
#include <string.h>

#include "sink/proxy.h"

static int same(const struct proxy_hdr *a, const struct proxy_hdr *b)
{
	if (a->len != b->len || a->version != b->version || a->local != b->local)
		return 0;
	if (a->local)
		return 1;
	return !memcmp(&a->src, &b->src, sizeof(a->src)) &&
	       !memcmp(&a->dst, &b->dst, sizeof(a->dst)) && a->src_port == b->src_port &&
	       a->dst_port == b->dst_port;
}

static void check_done(const uint8_t *d, size_t n, const struct proxy_hdr *h)
{
	struct proxy_hdr g;
	enum proxy_reason why;
	/* a few prefixes, not all: the shortest ones, the longest ones and
	 * one in the middle, so a long header costs ~10 parses */
	size_t pre[] = {0, 1, h->len / 2, h->len - 3, h->len - 2, h->len - 1};

	if (h->len == 0 || h->len > n || h->len > PROXY_MAX)
		abort();
	if (h->version != 1 && h->version != 2)
		abort();
	memset(&g, 0, sizeof(g));
	if (proxy_parse(d, h->len, &g, &why) != PROXY_DONE || !same(&g, h))
		abort(); /* looked past the header */
	for (size_t i = 0; i < sizeof(pre) / sizeof(pre[0]); i++) {
		if (pre[i] >= h->len)
			continue; /* h->len - 3 of a tiny header wraps */
		if (proxy_parse(d, pre[i], &g, &why) != PROXY_MORE || why != PROXY_R_NONE)
			abort(); /* complete or refused before its end */
	}
}

static void check_bad(const uint8_t *d, size_t n, enum proxy_reason why)
{
	uint8_t buf[PROXY_MAX + 2];
	struct proxy_hdr g;
	enum proxy_reason w2;

	if (why <= PROXY_R_NONE || why >= PROXY_R_COUNT)
		abort();
	if (n > PROXY_MAX)
		return; /* appended octets beyond any header cannot matter */
	memcpy(buf, d, n);
	for (unsigned v = 0; v < 256; v += 37) {
		buf[n] = (uint8_t)v;
		if (proxy_parse(buf, n + 1, &g, &w2) != PROXY_BAD || w2 != why)
			abort(); /* a refusal undone by a later octet */
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	struct proxy_hdr h;
	enum proxy_reason why = PROXY_R_COUNT;

	memset(&h, 0, sizeof(h));
	switch (proxy_parse(d, n, &h, &why)) {
	case PROXY_DONE:
		if (why != PROXY_R_NONE)
			abort();
		check_done(d, n, &h);
		break;
	case PROXY_BAD:
		check_bad(d, n, why);
		break;
	case PROXY_MORE:
		if (why != PROXY_R_NONE || n >= PROXY_MAX)
			abort(); /* nothing is incomplete at PROXY_MAX octets */
		break;
	default:
		abort();
	}
	return 0;
}
