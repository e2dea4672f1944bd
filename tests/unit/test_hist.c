/* test_hist.c - histogram against a sorted-array oracle */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "sink/hist.h"

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static uint64_t s = 0x2545F4914F6CDD1Dull;
static uint64_t rnd(void)
{
	s ^= s << 13;
	s ^= s >> 7;
	s ^= s << 17;
	return s;
}

Test(hist, index_and_bucket_bounds_agree)
{
	/* every value lies inside its bucket and buckets are contiguous */
	for (int k = 0; k < 200000; k++) {
		uint64_t v = rnd() >> (rnd() % 64);
		unsigned i = hist_index(v);
		cr_assert_lt(i, HIST_BUCKETS);
		cr_assert_leq(v, hist_bucket_high(i), "v=%llu i=%u", (unsigned long long)v, i);
		if (i)
			cr_assert_gt(v, hist_bucket_high(i - 1));
	}
	cr_assert_eq(hist_index(UINT64_MAX), HIST_BUCKETS - 1);
	for (uint64_t v = 0; v < 256; v++)
		cr_assert_eq(hist_bucket_high(hist_index(v)), v); /* exact below 2^S */
}

Test(hist, quantiles_within_one_percent_of_oracle)
{
	enum { N = 100000 };
	static uint64_t vals[N];
	static const double qs[] = {0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0};
	struct hist *h = malloc(sizeof(*h));

	for (int dist = 0; dist < 3; dist++) {
		hist_init(h);
		for (int k = 0; k < N; k++) {
			uint64_t v = dist == 0   ? 1000 + rnd() % 1000000           /* uniform */
			             : dist == 1 ? (uint64_t)1 << (10 + rnd() % 30) /* octaves */
			                         : 50000 + (rnd() % 100 == 0 ? rnd() % 1000000000
			                                                     : rnd() % 2000);
			vals[k] = v;
			hist_record(h, v);
		}
		qsort(vals, N, sizeof(vals[0]), cmp_u64);
		for (size_t j = 0; j < sizeof(qs) / sizeof(qs[0]); j++) {
			size_t rank = (size_t)(qs[j] * N + 0.5);
			uint64_t want = vals[(rank ? rank : 1) - 1];
			uint64_t got = hist_quantile(h, qs[j]);
			cr_assert_geq(got, want, "q=%g", qs[j]);
			cr_assert_leq((double)(got - want), (double)want * 0.01,
			              "q=%g got %llu want %llu", qs[j], (unsigned long long)got,
			              (unsigned long long)want);
		}
		cr_assert_eq(hist_quantile(h, 1.0), vals[N - 1]);
	}
	free(h);
}

Test(hist, merge_adds_counts)
{
	struct hist *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b)), *all = malloc(sizeof(*all));

	hist_init(a);
	hist_init(b);
	hist_init(all);
	for (int k = 0; k < 10000; k++) {
		uint64_t v = rnd() % 10000000;
		hist_record(k % 3 ? a : b, v);
		hist_record(all, v);
	}
	hist_merge(a, b);
	cr_assert_eq(a->count, all->count);
	cr_assert_eq(a->max, all->max);
	cr_assert_eq(a->min, all->min);
	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		cr_assert_eq(a->c[i], all->c[i]);
	cr_assert_eq(hist_quantile(a, 0.99), hist_quantile(all, 0.99));
	free(a);
	free(b);
	free(all);
}
