/* test_ivl.c - smtpbench --interval-log core (bench/ivl.c): wall-clock
 * alignment, the per-thread queues and their collection, and merge's
 * alignment of several logs, against oracles computed here from the raw
 * samples (sorted arrays, not the histogram code under test). */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ivl.h"

#define MS  1000000ll
#define SEC 1000000000ll

static uint64_t rs = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void)
{
	rs ^= rs << 13;
	rs ^= rs >> 7;
	rs ^= rs << 17;
	return rs;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* check_quantiles - the histogram's quantiles against the sorted samples
 * v[0..n): never below the true value, above it by at most one bucket's
 * width (1/128 of it: sub_bits 8), and the maximum exact. */
static void check_quantiles(const struct hist *h, uint64_t *v, size_t n, const char *what)
{
	static const double qs[] = {0.01, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0};

	cr_assert_eq(h->count, n, "%s: count %llu, %zu samples", what, (unsigned long long)h->count,
	             n);
	if (!n)
		return;
	qsort(v, n, sizeof(*v), cmp_u64);
	for (size_t j = 0; j < sizeof(qs) / sizeof(qs[0]); j++) {
		size_t rank = (size_t)(qs[j] * (double)n + 0.5);
		uint64_t want = v[(rank ? rank : 1) - 1], got = hist_quantile(h, qs[j]);
		cr_assert_geq(got, want, "%s q=%g: %llu < %llu", what, qs[j],
		              (unsigned long long)got, (unsigned long long)want);
		cr_assert_leq((double)(got - want), (double)want / 128.0 + 1,
		              "%s q=%g: %llu, true %llu", what, qs[j], (unsigned long long)got,
		              (unsigned long long)want);
	}
	cr_assert_eq(hist_quantile(h, 1.0), v[n - 1], "%s: max", what);
	cr_assert_eq(h->max, v[n - 1]);
	cr_assert_eq(h->min, v[0]);
}

/* --- alignment ------------------------------------------------------------------- */

Test(ivl, index_is_floor_of_wall_time_over_length)
{
	static const int64_t lens[] = {100 * MS, 250 * MS, SEC, 7 * SEC, 3600 * SEC};

	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		int64_t len = lens[i];
		for (int64_t k = -3; k < 3; k++) {
			int64_t b = (1795998469 * SEC / len + k) * len; /* a boundary in 2026 */
			int64_t q = b / len;
			cr_assert_eq(ivl_index(b, len), q);
			cr_assert_eq(ivl_index(b + 1, len), q);
			cr_assert_eq(ivl_index(b + len - 1, len), q);
			cr_assert_eq(ivl_index(b - 1, len), q - 1);
		}
		/* floor, not truncation, before the epoch */
		cr_assert_eq(ivl_index(-1, len), -1);
		cr_assert_eq(ivl_index(-len, len), -1);
		cr_assert_eq(ivl_index(-len - 1, len), -2);
		cr_assert_eq(ivl_index(0, len), 0);
	}
	/* 12:00:01.295 with 1 s intervals: the one starting at 12:00:01.000 */
	cr_assert_eq(ivl_index(1795998469295123456ll, SEC), 1795998469);
	cr_assert_eq(ivl_index(1795998469295123456ll, 250 * MS), 1795998469ll * 4 + 1);
}

Test(ivl, end_of_interval_on_the_monotonic_clock)
{
	for (int it = 0; it < 100000; it++) {
		int64_t len = (int64_t)(100 + rnd() % 5000) * MS;
		uint64_t now = rnd() % (1ull << 50);                              /* since boot */
		int64_t off = 1700000000 * SEC + (int64_t)(rnd() % (1ull << 50)); /* wall - mono */
		int64_t k = ivl_index((int64_t)now + off, len);
		uint64_t end = ivl_end_mono(k, len, off);

		cr_assert_gt(end, now);
		cr_assert_leq(end - now, (uint64_t)len);
		cr_assert_eq(ivl_index((int64_t)end + off, len), k + 1);
		cr_assert_eq(ivl_index((int64_t)end - 1 + off, len), k);
		/* another host, booted at another time (another offset), reading
		 * the same wall-clock time, is in the same interval */
		int64_t off2 = off - (int64_t)(rnd() % (1ull << 40));
		uint64_t now2 = (uint64_t)((int64_t)now + off - off2);
		cr_assert_eq(ivl_index((int64_t)now2 + off2, len), k);
		cr_assert_eq(ivl_end_mono(k, len, off2) - now2, end - now);
	}
}

/* --- recording and collection ------------------------------------------------------ */

#define MAXK 128

struct got {
	int64_t first, last; /* emitted k range */
	int calls;
	uint64_t n[MAXK][IVL_N];
	struct hist *h[MAXK];
	bool seen[MAXK];
	int64_t base;
};

static int record_emit(void *ctx, int64_t k, const struct ivl_slot *s)
{
	struct got *g = ctx;
	int64_t i = k - g->base;

	cr_assert(i >= 0 && i < MAXK, "k %lld out of range", (long long)k);
	if (g->calls++)
		cr_assert_eq(k, g->last + 1, "emitted %lld after %lld", (long long)k,
		             (long long)g->last);
	else
		g->first = k;
	cr_assert(!g->seen[i], "k %lld emitted twice", (long long)k);
	g->seen[i] = true;
	g->last = k;
	g->h[i] = malloc(sizeof(struct hist));
	hist_init(g->h[i]);
	if (s) {
		cr_assert_eq(s->k, k);
		memcpy(g->n[i], s->n, sizeof(s->n));
		hist_merge(g->h[i], &s->h);
	}
	return 0;
}

static void got_free(struct got *g)
{
	for (int i = 0; i < MAXK; i++)
		free(g->h[i]);
}

/* the samples of a simulated run: thread, time, outcome, latency */
struct sample {
	int th;
	uint64_t t;
	unsigned outcome;
	uint64_t lat;
};

/* oracle_check - every interval's counts and histogram against the raw
 * samples that fall in it (by wall-clock time) */
static void oracle_check(const struct got *g, const struct sample *sm, size_t n, int64_t len,
                         int64_t off)
{
	uint64_t *v = malloc(n * sizeof(*v));
	uint64_t tot[IVL_N] = {0}, gtot[IVL_N] = {0};

	for (int64_t k = g->first; k <= g->last; k++) {
		size_t m = 0;
		uint64_t want[IVL_N] = {0};
		struct hist *u = malloc(sizeof(*u));
		char what[64];

		hist_init(u);
		for (size_t i = 0; i < n; i++) {
			if (ivl_index((int64_t)sm[i].t + off, len) != k)
				continue;
			want[sm[i].outcome]++;
			if (sm[i].outcome != IVL_FAILED) {
				v[m++] = sm[i].lat;
				hist_record(u, sm[i].lat);
			}
		}
		for (int j = 0; j < IVL_N; j++) {
			cr_assert_eq(g->n[k - g->base][j], want[j], "k %lld outcome %d",
			             (long long)k, j);
			tot[j] += want[j];
			gtot[j] += g->n[k - g->base][j];
		}
		/* the sum of the threads' slots is the histogram of the union */
		cr_assert_eq(memcmp(u->c, g->h[k - g->base]->c, sizeof(u->c)), 0, "k %lld",
		             (long long)k);
		snprintf(what, sizeof(what), "interval %lld", (long long)k);
		check_quantiles(g->h[k - g->base], v, m, what);
		free(u);
	}
	for (int j = 0; j < IVL_N; j++)
		cr_assert_eq(gtot[j], tot[j]);
	/* nothing fell outside the emitted intervals */
	size_t inside = 0;
	for (size_t i = 0; i < n; i++) {
		int64_t k = ivl_index((int64_t)sm[i].t + off, len);
		inside += k >= g->first && k <= g->last;
	}
	cr_assert_eq(inside, n);
	free(v);
}

Test(ivl, threads_slots_add_up_to_the_union_per_interval)
{
	enum { NTH = 3, N = 60000 };
	const int64_t len = SEC, off = 1795998469 * SEC + 123456789;
	const uint64_t t0 = 5 * SEC + 777; /* monotonic start: mid-interval */
	struct ivl_thread th[NTH];
	struct ivl_thread *tp[NTH];
	struct ivl_coll c = {.th = tp, .nth = NTH, .next = IVL_NONE};
	struct sample *sm = calloc(N, sizeof(*sm));
	uint64_t clock[NTH];
	struct got g = {.base = ivl_index((int64_t)t0 + off, len)};
	int64_t first = g.base;

	memset(th, 0, sizeof(th));
	for (int i = 0; i < NTH; i++) {
		tp[i] = &th[i];
		ivl_thread_init(&th[i], len, off);
	}
	for (int i = 0; i < NTH; i++) {
		/* before every thread started, nothing can be emitted */
		cr_assert_eq(ivl_collect(&c, first, first, false, record_emit, &g), 0);
		cr_assert_eq(g.calls, 0);
		clock[i] = t0 + (uint64_t)i * 1000;
		ivl_thread_start(&th[i], clock[i]);
	}
	for (size_t i = 0; i < N; i++) {
		int t = (int)(rnd() % NTH);
		struct sample *s = &sm[i];
		/* thread 2 sleeps for 3 s in the middle: intervals with
		 * nothing from it, and its queue held back meanwhile */
		if (i == N / 2)
			clock[2] += 3 * SEC;
		clock[t] += rnd() % (400 * 1000);
		s->th = t;
		s->t = clock[t];
		s->outcome = rnd() % 10 == 0   ? IVL_FAILED
		             : rnd() % 10 == 0 ? IVL_PARTIAL
		                               : IVL_DELIVERED;
		/* latencies over several octaves, and a slow tail */
		s->lat = s->outcome == IVL_FAILED ? 0
		         : rnd() % 100 == 0       ? 1000000 + rnd() % 2000000000
		                                  : 20000 + (rnd() % 200000 >> (rnd() % 8));
		ivl_msg(&th[t], s->t, s->outcome, s->lat);
		if (i % 997 == 0) /* the reporter, now and then, while recording goes on */
			cr_assert_eq(ivl_collect(&c, first, first, false, record_emit, &g), 0);
		if (i % 5003 == 0) { /* a thread's own tick, with its own clock */
			int u = (int)(rnd() % NTH);
			ivl_tick(&th[u], clock[u]);
		}
	}
	/* what was emitted while running is complete: below every mark */
	cr_assert_eq(ivl_collect(&c, first, first, false, record_emit, &g), 0);
	int64_t mark = IVL_OVER;
	for (int i = 0; i < NTH; i++) {
		int64_t d = atomic_load(&th[i].done);
		mark = d < mark ? d : mark;
	}
	cr_assert_eq(g.last, mark - 1, "emitted up to %lld, marks at %lld", (long long)g.last,
	             (long long)mark);
	uint64_t end = 0;
	for (int i = 0; i < NTH; i++) {
		end = clock[i] > end ? clock[i] : end;
		ivl_thread_end(&th[i]);
	}
	/* every thread over: only the final call may emit the rest */
	int before = g.calls;
	cr_assert_eq(ivl_collect(&c, first, first, false, record_emit, &g), 0);
	cr_assert_eq(g.calls, before);
	int64_t last = ivl_index((int64_t)end + off, len);
	cr_assert_eq(ivl_collect(&c, first, last, true, record_emit, &g), 0);
	cr_assert_eq(g.first, first);
	cr_assert_eq(g.last, last);
	cr_assert_eq(c.npend, 0);
	cr_assert_eq(c.emitted, (uint64_t)(last - first + 1));
	oracle_check(&g, sm, N, len, off);
	for (int i = 0; i < NTH; i++)
		ivl_thread_free(&th[i]);
	ivl_coll_free(&c);
	got_free(&g);
	free(sm);
}

Test(ivl, idle_intervals_are_emitted_empty_and_the_last_one_too)
{
	const int64_t len = 100 * MS, off = 1000 * SEC;
	struct ivl_thread th = {0}, *tp = &th;
	struct ivl_coll c = {.th = &tp, .nth = 1, .next = IVL_NONE};
	struct got g = {.base = ivl_index(1 * SEC + off, len)};
	int64_t first = g.base;

	ivl_thread_init(&th, len, off);
	ivl_thread_start(&th, 1 * SEC + 50 * MS);
	ivl_msg(&th, 1 * SEC + 60 * MS, IVL_DELIVERED, 1000);
	/* 1 s of silence: the tick closes intervals, nothing is allocated */
	for (uint64_t t = 1 * SEC + 70 * MS; t < 2 * SEC; t += 10 * MS)
		ivl_tick(&th, t);
	cr_assert_eq(ivl_collect(&c, first, first, false, record_emit, &g), 0);
	cr_assert_eq(g.first, first);
	cr_assert_eq(g.last, first + 8, "closed through %lld", (long long)(g.last - first));
	ivl_msg(&th, 2 * SEC + 5 * MS, IVL_FAILED, 0);
	ivl_thread_end(&th);
	cr_assert_eq(ivl_collect(&c, first, first + 10, true, record_emit, &g), 0);
	cr_assert_eq(g.last, first + 10);
	cr_assert_eq(g.n[0][IVL_DELIVERED], 1);
	cr_assert_eq(g.n[10][IVL_FAILED], 1);
	for (int i = 1; i < 10; i++)
		cr_assert_eq(g.n[i][IVL_DELIVERED] + g.n[i][IVL_FAILED], 0);
	cr_assert_eq(c.n[IVL_DELIVERED], 1);
	cr_assert_eq(c.n[IVL_FAILED], 1);
	ivl_thread_free(&th);
	ivl_coll_free(&c);
	got_free(&g);
}

/* A collector that stops collecting (its writer blocked) costs at most
 * IVL_QUEUE_MAX slots per worker; the rest are dropped and counted, and
 * queueing resumes once the collector catches up. */
static int count_emit(void *ctx, int64_t k, const struct ivl_slot *s)
{
	uint64_t *delivered = ctx;

	(void)k;
	if (s)
		*delivered += s->n[IVL_DELIVERED];
	return 0;
}

Test(ivl, backlog_is_bounded_when_the_collector_stalls)
{
	const int64_t len = 100 * MS, off = 0;
	struct ivl_thread th = {0}, *tp = &th;
	struct ivl_coll c = {.th = &tp, .nth = 1, .next = IVL_NONE};
	uint64_t t = 1 * SEC, delivered = 0;
	int64_t first = ivl_index(1 * SEC, len);

	ivl_thread_init(&th, len, off);
	ivl_thread_start(&th, t);
	for (int i = 0; i < IVL_QUEUE_MAX + 10; i++, t += (uint64_t)len)
		ivl_msg(&th, t, IVL_DELIVERED, 1000);
	ivl_msg(&th, t, IVL_DELIVERED, 1000); /* closes the last of them */
	cr_assert_eq(th.pushed, IVL_QUEUE_MAX);
	cr_assert_eq(th.dropped, 10);
	cr_assert_eq(ivl_collect(&c, first, first, false, count_emit, &delivered), 0);
	cr_assert_eq(atomic_load(&th.popped), IVL_QUEUE_MAX);
	cr_assert_eq(delivered, IVL_QUEUE_MAX, "the queued intervals are whole");
	ivl_msg(&th, t + (uint64_t)len, IVL_DELIVERED, 1000); /* queued again */
	cr_assert_eq(th.pushed, IVL_QUEUE_MAX + 1);
	cr_assert_eq(th.dropped, 10);
	ivl_thread_end(&th);
	ivl_thread_free(&th);
	ivl_coll_free(&c);
}

/* Real threads: each records with its own made-up clock while this thread
 * collects, as main's live loop does. */
struct worker {
	struct ivl_thread *v;
	struct sample *sm;
	size_t n;
	uint64_t seed;
};

static void *work(void *arg)
{
	struct worker *w = arg;
	uint64_t t = 7 * SEC, x = w->seed;

	ivl_thread_start(w->v, t);
	for (size_t i = 0; i < w->n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		t += x % (50 * 1000);
		w->sm[i].t = t;
		w->sm[i].outcome = x % 7 == 0 ? IVL_FAILED : IVL_DELIVERED;
		w->sm[i].lat = w->sm[i].outcome == IVL_FAILED ? 0 : 10000 + (x >> 20) % 5000000;
		ivl_msg(w->v, t, w->sm[i].outcome, w->sm[i].lat);
	}
	ivl_thread_end(w->v);
	return NULL;
}

Test(ivl, concurrent_recording_and_collection)
{
	enum { NTH = 2, N = 200000 };
	const int64_t len = 100 * MS, off = 3 * SEC;
	struct ivl_thread th[NTH];
	struct ivl_thread *tp[NTH];
	struct ivl_coll c = {.th = tp, .nth = NTH, .next = IVL_NONE};
	struct worker w[NTH];
	pthread_t pt[NTH];
	struct sample *all = calloc((size_t)NTH * N, sizeof(*all));
	struct got *g = calloc(1, sizeof(*g));
	int64_t first = ivl_index(7 * SEC + off, len);
	uint64_t end = 0;

	memset(th, 0, sizeof(th));
	g->base = first;
	for (int i = 0; i < NTH; i++) {
		tp[i] = &th[i];
		ivl_thread_init(&th[i], len, off);
		w[i] = (struct worker){&th[i], all + (size_t)i * N, N, 0x1234567ull * (i + 1)};
		pthread_create(&pt[i], NULL, work, &w[i]);
	}
	for (int spins = 0; spins < 2000; spins++)
		cr_assert_eq(ivl_collect(&c, first, first, false, record_emit, g), 0);
	for (int i = 0; i < NTH; i++) {
		pthread_join(pt[i], NULL);
		end = w[i].sm[N - 1].t > end ? w[i].sm[N - 1].t : end;
	}
	int64_t last = ivl_index((int64_t)end + off, len);
	cr_assert_lt(last - first, MAXK);
	cr_assert_eq(ivl_collect(&c, first, last, true, record_emit, g), 0);
	cr_assert_eq(g->first, first);
	cr_assert_eq(g->last, last);
	oracle_check(g, all, (size_t)NTH * N, len, off);
	cr_assert_eq(c.n[IVL_DELIVERED] + c.n[IVL_FAILED], (uint64_t)NTH * N);
	for (int i = 0; i < NTH; i++)
		ivl_thread_free(&th[i]);
	ivl_coll_free(&c);
	got_free(g);
	free(g);
	free(all);
}

/* --- merge: aligning logs ---------------------------------------------------------- */

struct aligned_got {
	int calls;
	int64_t last;
	struct ivl_aligned a[MAXK];
	int64_t base;
};

static int keep_aligned(void *ctx, const struct ivl_aligned *a)
{
	struct aligned_got *g = ctx;

	if (g->calls++)
		cr_assert_gt(a->k, g->last, "not increasing");
	g->last = a->k;
	cr_assert(a->k - g->base >= 0 && a->k - g->base < MAXK);
	g->a[a->k - g->base] = *a;
	return 0;
}

/* line_from - a log line, as merge reads it back: sparse buckets. */
static void line_from(struct ivl_line *l, int64_t k, const struct hist *h, const uint64_t *n)
{
	memset(l, 0, sizeof(*l));
	l->k = k;
	memcpy(l->n, n, sizeof(l->n));
	l->count = h->count;
	l->min = h->count ? h->min : 0;
	l->max = h->max;
	l->sum = h->sum;
	l->bi = malloc(HIST_BUCKETS * sizeof(*l->bi));
	l->bc = malloc(HIST_BUCKETS * sizeof(*l->bc));
	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		if (h->c[i]) {
			l->bi[l->nb] = i;
			l->bc[l->nb++] = h->c[i];
		}
}

Test(ivl, align_adds_logs_by_start_and_quantiles_match_the_union)
{
	enum { NIN = 3, SPAN = 20, PER = 3000 };
	const int64_t base = 1795998469;
	/* each log covers its own stretch of [base, base + SPAN): the hosts
	 * started and stopped at different times */
	static const int64_t from[NIN] = {0, 3, 7}, to[NIN] = {15, 20, 12};
	struct ivl_input in[NIN];
	struct aligned_got *g = calloc(1, sizeof(*g));
	struct ivl_aligned *scratch = malloc(sizeof(*scratch));
	uint64_t *u[SPAN];
	size_t un[SPAN] = {0};
	uint64_t want_n[SPAN][IVL_N];
	int want_in[SPAN] = {0};

	memset(want_n, 0, sizeof(want_n));
	g->base = base;
	for (int k = 0; k < SPAN; k++)
		u[k] = malloc((size_t)NIN * PER * sizeof(uint64_t));
	for (int i = 0; i < NIN; i++) {
		in[i].name = "log";
		in[i].n = 0;
		in[i].v = calloc(SPAN, sizeof(struct ivl_line));
		for (int64_t k = from[i]; k < to[i]; k++) {
			struct hist *h = malloc(sizeof(*h));
			uint64_t n[IVL_N] = {0};
			int m = (int)(rnd() % PER);
			hist_init(h);
			if (k == 9 && i == 1)
				m = 0; /* an idle interval in one log: still contributes */
			for (int s = 0; s < m; s++) {
				uint64_t v = i == 2 ? 5000000 + rnd() % 50000000 /* a slow host */
				                    : 30000 + rnd() % 300000;
				hist_record(h, v);
				n[IVL_DELIVERED]++;
				u[k][un[k]++] = v;
			}
			n[IVL_FAILED] = rnd() % 3;
			for (int j = 0; j < IVL_N; j++)
				want_n[k][j] += n[j];
			want_in[k]++;
			line_from(&in[i].v[in[i].n], base + k, h, n);
			in[i].v[in[i].n].warmup = i == 0 && k < 2;
			in[i].v[in[i].n].partial = k == from[i] || k == to[i] - 1;
			in[i].v[in[i].n].covered_ms = k == from[i] ? 300 : 1000;
			in[i].n++;
			free(h);
		}
	}
	cr_assert_eq(ivl_align(in, NIN, scratch, keep_aligned, g), 0);
	cr_assert_eq(g->calls, SPAN);
	for (int k = 0; k < SPAN; k++) {
		const struct ivl_aligned *a = &g->a[k];
		struct hist *h = malloc(sizeof(*h));
		char what[64];
		hist_init(h);
		for (size_t s = 0; s < un[k]; s++)
			hist_record(h, u[k][s]);
		cr_assert_eq(a->k, base + k);
		cr_assert_eq(a->inputs, want_in[k], "k %d: %d inputs", k, a->inputs);
		for (int j = 0; j < IVL_N; j++)
			cr_assert_eq(a->n[j], want_n[k][j]);
		cr_assert_eq(memcmp(a->h.c, h->c, sizeof(h->c)), 0, "k %d buckets", k);
		cr_assert_eq(a->h.sum, h->sum);
		snprintf(what, sizeof(what), "aligned %d", k);
		check_quantiles(&a->h, u[k], un[k], what);
		cr_assert_eq(a->warmup, k < 2);
		/* each log's first and last interval */
		cr_assert_eq(a->partial,
		             k == 0 || k == 14 || k == 3 || k == 19 || k == 7 || k == 11);
		cr_assert_eq(a->covered_ms, k == 0 ? 300 : 1000);
		free(h);
	}
	for (int i = 0; i < NIN; i++) {
		for (size_t j = 0; j < in[i].n; j++) {
			free(in[i].v[j].bi);
			free(in[i].v[j].bc);
		}
		free(in[i].v);
	}
	for (int k = 0; k < SPAN; k++)
		free(u[k]);
	free(scratch);
	free(g);
}
