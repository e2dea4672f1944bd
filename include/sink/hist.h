/*
 * hist.h - log-linear latency histogram (HdrHistogram's layout, simplified)
 *
 * Values are nanoseconds (uint64).  With S = 8 sub-bucket bits, values below
 * 2^8 are exact and every further power of two is split into 128 linear
 * buckets, so a bucket's width is at most 1/128 of its lower bound: the
 * relative error of any reported quantile is below 0.8 %.  Recording is a
 * clz, a shift and an add - no float, no lock: one histogram per thread,
 * merged by adding counts (never by averaging percentiles).
 */
#ifndef SINK_HIST_H
#define SINK_HIST_H

#include <stdint.h>
#include <stdio.h>

#define HIST_SUB_BITS 8
#define HIST_HALF     (1u << (HIST_SUB_BITS - 1))
#define HIST_BUCKETS  ((64 - HIST_SUB_BITS + 2) * HIST_HALF)

struct hist {
	uint64_t count;
	uint64_t max;
	uint64_t min;
	uint64_t sum;
	uint64_t c[HIST_BUCKETS];
};

void hist_init(struct hist *h);

/* hist_index - bucket of value v (exposed for tests). */
static inline unsigned hist_index(uint64_t v)
{
	unsigned msb = 63u - (unsigned)__builtin_clzll(v | 1);
	unsigned shift = msb >= HIST_SUB_BITS - 1 ? msb - (HIST_SUB_BITS - 1) : 0;

	return shift * HIST_HALF + (unsigned)(v >> shift);
}

static inline void hist_record(struct hist *h, uint64_t v)
{
	h->c[hist_index(v)]++;
	h->count++;
	h->sum += v;
	if (v > h->max)
		h->max = v;
	if (v < h->min)
		h->min = v;
}

/* hist_bucket_high - largest value that lands in bucket i. */
uint64_t hist_bucket_high(unsigned i);
/* hist_quantile - value at quantile q (0..1): the upper bound of the bucket
 * holding that rank (clamped to the recorded max); 0 when empty. */
uint64_t hist_quantile(const struct hist *h, double q);
void hist_merge(struct hist *dst, const struct hist *src);
/* hist_write_json - {"count":..,"min":..,"max":..,"sum":..,"sub_bits":8,
 * "unit":"ns","buckets":[[index,count],...]} (non-zero buckets only). */
void hist_write_json(const struct hist *h, FILE *f);

#endif
