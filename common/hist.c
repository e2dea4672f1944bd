/*
 * hist.c - log-linear histogram: quantiles, merge, JSON (see hist.h)
 */
#include "sink/hist.h"

#include <string.h>

void hist_init(struct hist *h)
{
	memset(h, 0, sizeof(*h));
	h->min = UINT64_MAX;
}

uint64_t hist_bucket_high(unsigned i)
{
	/* inverse of hist_index: below 2^S buckets are exact; above, bucket
	 * i = (shift + 1) * HALF + (mantissa - HALF) covers mantissa << shift
	 * and the (1 << shift) - 1 values after it */
	if (i < 2 * HIST_HALF)
		return i;
	unsigned shift = i / HIST_HALF - 1;
	uint64_t lo = (uint64_t)(HIST_HALF + i % HIST_HALF) << shift;
	return lo + (((uint64_t)1 << shift) - 1);
}

uint64_t hist_quantile(const struct hist *h, double q)
{
	uint64_t rank, seen = 0;

	if (!h->count)
		return 0;
	if (q <= 0)
		return h->min;
	rank = (uint64_t)(q * (double)h->count + 0.5);
	if (rank < 1)
		rank = 1;
	if (rank > h->count)
		rank = h->count;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += h->c[i];
		if (seen >= rank) {
			uint64_t v = hist_bucket_high(i);
			return v > h->max ? h->max : v;
		}
	}
	return h->max;
}

void hist_merge(struct hist *dst, const struct hist *src)
{
	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		dst->c[i] += src->c[i];
	dst->count += src->count;
	dst->sum += src->sum;
	if (src->max > dst->max)
		dst->max = src->max;
	if (src->min < dst->min)
		dst->min = src->min;
}

void hist_write_json(const struct hist *h, FILE *f)
{
	int first = 1;

	fprintf(f,
	        "{\"count\": %llu, \"min\": %llu, \"max\": %llu, \"sum\": %llu, \"sub_bits\": %d, "
	        "\"unit\": \"ns\", \"buckets\": [",
	        (unsigned long long)h->count, (unsigned long long)(h->count ? h->min : 0),
	        (unsigned long long)h->max, (unsigned long long)h->sum, HIST_SUB_BITS);
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		if (!h->c[i])
			continue;
		fprintf(f, "%s[%u, %llu]", first ? "" : ", ", i, (unsigned long long)h->c[i]);
		first = 0;
	}
	fprintf(f, "]}");
}
