/* test_segment.c - smtpbench across many instances: shares that add up
 * exactly, stamp sequence spaces that are disjoint and dense, schedules that
 * interleave into one, --start-at parsing, and the PROXY family mapping. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sink/pace.h"
#include "sink/proxy.h"
#include "sink/segment.h"

Test(segment, parse)
{
	static const struct {
		const char *s;
		uint32_t i, n;
	} ok[] = {{"1/1", 1, 1},
	          {"2/3", 2, 3},
	          {"3/3", 3, 3},
	          {"1/65536", 1, 65536},
	          {"65536/65536", 65536, 65536}};
	static const char *const bad[] = {
	    "",        "0/3",  "4/3",   "3",    "3/",    "/3",   "1/0",
	    "a/3",     "1/3x", " 1/3",  "-1/3", "1 /3",  "01/3", "1/03",
	    "1/65537", "1//3", "1/3/3", "+1/3", "1.0/3", "0/0",  "4294967297/4294967297"};

	for (size_t k = 0; k < sizeof(ok) / sizeof(ok[0]); k++) {
		uint32_t i = 0, n = 0;
		cr_assert_eq(segment_parse(ok[k].s, &i, &n), 0, "%s", ok[k].s);
		cr_assert_eq(i, ok[k].i, "%s", ok[k].s);
		cr_assert_eq(n, ok[k].n, "%s", ok[k].s);
	}
	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
		uint32_t i = 7, n = 7;
		cr_assert_neq(segment_parse(bad[k], &i, &n), 0, "'%s' was accepted", bad[k]);
		cr_assert(i == 7 && n == 7, "'%s' touched the outputs", bad[k]);
	}
	cr_assert_neq(segment_parse(NULL, &(uint32_t){0}, &(uint32_t){0}), 0);
}

/* every total over every count: exact sum, shares one apart, the larger
 * ones first (the remainder goes to the lowest instances) */
Test(segment, shares_add_up_exactly)
{
	static const uint64_t big[] = {1000000007ull, 1ull << 40, UINT64_MAX / 3, UINT64_MAX - 1,
	                               UINT64_MAX};
	uint64_t totals[300 + sizeof(big) / sizeof(big[0])];
	size_t nt = 0;

	for (uint64_t t = 0; t < 300; t++)
		totals[nt++] = t;
	for (size_t k = 0; k < sizeof(big) / sizeof(big[0]); k++)
		totals[nt++] = big[k];
	for (size_t k = 0; k < nt; k++) {
		for (uint32_t n = 1; n <= 70; n += n < 10 ? 1 : 7) {
			uint64_t sum = 0, prev = UINT64_MAX;
			for (uint32_t i = 1; i <= n; i++) {
				uint64_t s = segment_share(totals[k], i, n);
				cr_assert_leq(s, prev, "total %llu, %u/%u: not non-increasing",
				              (unsigned long long)totals[k], i, n);
				cr_assert_leq(segment_share(totals[k], 1, n) - s, 1);
				cr_assert_eq(s, totals[k] / n + (i <= totals[k] % n));
				prev = s;
				sum += s;
			}
			cr_assert_eq(sum, totals[k], "total %llu over %u: sum %llu",
			             (unsigned long long)totals[k], n, (unsigned long long)sum);
		}
	}
	/* the largest count */
	cr_assert_eq(segment_share(SEGMENT_MAX - 1, SEGMENT_MAX, SEGMENT_MAX), 0);
	cr_assert_eq(segment_share(SEGMENT_MAX - 1, SEGMENT_MAX - 1, SEGMENT_MAX), 1);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* seq_space - every stamp sequence number of a run of m messages over n
 * instances, instance i with threads[i] threads, each thread its share of
 * its instance's share, as smtpbench gives them.  Returns how many. */
static size_t seq_space(uint64_t m, uint32_t n, const uint32_t *threads, uint64_t *out)
{
	size_t k = 0;

	for (uint32_t i = 1; i <= n; i++) {
		uint64_t mi = segment_share(m, i, n);
		for (uint32_t t = 0; t < threads[i - 1]; t++) {
			uint64_t q = segment_share(mi, t + 1, threads[i - 1]);
			for (uint64_t j = 0; j < q; j++)
				out[k++] = segment_seq(i, n, t, j);
		}
	}
	return k;
}

Test(segment, seq_spaces_disjoint_and_dense)
{
	static const uint64_t ms[] = {1, 2, 3, 5, 7, 10, 31, 100, 999, 1000, 3000, 4097};
	uint64_t *seqs = malloc(5000 * sizeof(uint64_t));
	uint32_t threads[16];

	cr_assert_not_null(seqs);
	for (size_t a = 0; a < sizeof(ms) / sizeof(ms[0]); a++)
		for (uint32_t n = 1; n <= 16 && n <= ms[a]; n++)
			for (uint32_t tt = 1; tt <= 9; tt += 2) {
				for (uint32_t i = 0; i < n; i++)
					threads[i] = tt;
				size_t k = seq_space(ms[a], n, threads, seqs);
				cr_assert_eq(k, ms[a]);
				qsort(seqs, k, sizeof(*seqs), cmp_u64);
				/* per thread id (seq >> 40): exactly 0 .. count-1 */
				uint64_t want = 0, tid = 0;
				for (size_t x = 0; x < k; x++) {
					if (seqs[x] >> 40 != tid) {
						tid = seqs[x] >> 40;
						want = 0;
					}
					cr_assert_eq(seqs[x] & ((1ull << 40) - 1), want,
					             "m %llu, n %u, threads %u: seq %llx not dense",
					             (unsigned long long)ms[a], n, tt,
					             (unsigned long long)seqs[x]);
					want++;
				}
			}
	/* instances with different thread counts: still never one number twice */
	for (size_t a = 0; a < sizeof(ms) / sizeof(ms[0]); a++)
		for (uint32_t n = 2; n <= 16 && n <= ms[a]; n++) {
			for (uint32_t i = 0; i < n; i++)
				threads[i] = 1 + (i * 5 + 3) % 7;
			size_t k = seq_space(ms[a], n, threads, seqs);
			cr_assert_eq(k, ms[a]);
			qsort(seqs, k, sizeof(*seqs), cmp_u64);
			for (size_t x = 1; x < k; x++)
				cr_assert_neq(seqs[x], seqs[x - 1], "duplicate seq %llx",
				              (unsigned long long)seqs[x]);
		}
	/* without --segment (1/1) the numbering is the single-run one */
	cr_assert_eq(segment_seq(1, 1, 0, 0), 0);
	cr_assert_eq(segment_seq(1, 1, 3, 17), 3ull << 40 | 17);
	cr_assert_eq(segment_seq(2, 3, 1, 4), 1ull << 40 | 13);
	free(seqs);
}

/* N instances x T threads on the open-loop schedule: the slots are exactly
 * one generator's 0, 1, 2, ... at R, and R of them fall in each second */
Test(segment, schedules_interleave_into_one)
{
	static const struct {
		double rate;
		uint32_t n, t;
	} cases[] = {{1000, 3, 7}, {90, 3, 1}, {5000, 4, 2}, {7, 2, 3}, {12345.5, 5, 4}};

	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		uint32_t n = cases[c].n, T = cases[c].t;
		double r = cases[c].rate;
		size_t cap = (size_t)(2 * r) + 16, k = 0;
		uint64_t *due = malloc(cap * sizeof(uint64_t)),
		         *slot = malloc(cap * sizeof(uint64_t));
		struct pace single;

		cr_assert(due && slot);
		for (uint32_t i = 1; i <= n; i++)
			for (uint32_t t = 0; t < T; t++) {
				struct pace p;
				pace_init_share(&p, 1000, r, segment_slot(i, n, t, T, 0),
				                (uint64_t)n * T);
				for (uint64_t j = 0; pace_next(&p) < 1000 + 1000000000ull; j++) {
					cr_assert_lt(k, cap);
					slot[k] = segment_slot(i, n, t, T, j);
					due[k++] = pace_take(&p);
				}
			}
		/* R per second in all: the slots g < R start before 1 s */
		size_t want = (size_t)r + ((double)(size_t)r < r);
		cr_assert_eq(k, want, "rate %g over %u x %u: %zu slots in the first second", r, n,
		             T, k);
		qsort(slot, k, sizeof(*slot), cmp_u64);
		for (size_t x = 0; x < k; x++)
			cr_assert_eq(slot[x], x, "slot numbers not exactly 0..%zu", k - 1);
		qsort(due, k, sizeof(*due), cmp_u64);
		pace_init(&single, 1000, r);
		for (size_t x = 0; x < k; x++)
			cr_assert_eq(due[x], pace_take(&single), "rate %g: slot %zu off the grid",
			             r, x);
		free(due);
		free(slot);
	}
}

Test(segment, run_id)
{
	uint64_t t = 1796000400ull * 1000000000ull;

	cr_assert_eq(segment_run_id(t, 3), segment_run_id(t, 3));
	cr_assert_neq(segment_run_id(t, 3), segment_run_id(t + 1, 3));
	cr_assert_neq(segment_run_id(t, 3), segment_run_id(t, 4));
	cr_assert_neq(segment_run_id(t, 3), segment_run_id(t + 1000000000ull, 3));
	for (uint64_t x = 0; x < 100000; x++)
		cr_assert_neq(segment_run_id(x, (uint32_t)(x % 7) + 1), 0);
}

Test(segment, start_at_parsing)
{
	static const struct {
		const char *s;
		uint64_t sec, ns;
	} ok[] = {
	    {"1970-01-01T00:00:00Z", 0, 0},
	    {"2026-11-30T01:00:00Z", 1796000400, 0},
	    {"2026-11-30t01:00:00z", 1796000400, 0},
	    {"2026-11-30 01:00:00Z", 1796000400, 0},
	    {"2026-11-30T02:00:00+01:00", 1796000400, 0},
	    {"2026-11-29T20:00:00-05:00", 1796000400, 0},
	    {"2026-11-30T06:30:00+05:30", 1796000400, 0},
	    {"2026-11-30T01:00:00-00:00", 1796000400, 0},
	    {"2026-11-30T01:00:00.5Z", 1796000400, 500000000},
	    {"2026-11-30T01:00:00.000000001Z", 1796000400, 1},
	    {"2026-11-30T01:00:00.1234567899Z", 1796000400, 123456789},
	    {"2026-11-30T02:00:00.25+01:00", 1796000400, 250000000},
	    {"2016-12-31T23:59:60Z", 1483228800, 0}, /* a leap second */
	    {"2024-02-29T12:00:00Z", 1709208000, 0},
	    {"2000-03-01T00:00:00Z", 951868800, 0},
	    {"9999-12-31T23:59:59Z", 253402300799ull, 0},
	    {"1796000400", 1796000400, 0},
	    {"1796000400.25", 1796000400, 250000000},
	    {"1796000400.000000001", 1796000400, 1},
	    {"0", 0, 0},
	    {"0.5", 0, 500000000},
	    {"253402300799", 253402300799ull, 0},
	};
	static const char *const bad[] = {
	    "",
	    "garbage",
	    "now",
	    "2026-11-30",
	    "2026-11-30T01:00:00",  /* no offset (RFC 3339 4.3) */
	    "2026-11-30T01:00Z",    /* no seconds */
	    "2026-11-30T1:00:00Z",  /* one-digit hour */
	    "2026-13-01T00:00:00Z", /* month */
	    "2026-00-01T00:00:00Z", /* month */
	    "2026-11-31T00:00:00Z", /* no 31 November */
	    "2026-11-00T00:00:00Z", /* day */
	    "2023-02-29T00:00:00Z", /* not a leap year */
	    "1900-02-29T00:00:00Z", /* not a leap year either */
	    "2026-11-30T24:00:00Z", /* hour */
	    "2026-11-30T01:60:00Z", /* minute */
	    "2026-11-30T01:00:61Z", /* second */
	    "2026-11-30T01:00:00+24:00",
	    "2026-11-30T01:00:00+01:60",
	    "2026-11-30T01:00:00+0100",
	    "2026-11-30T01:00:00Z ",
	    " 2026-11-30T01:00:00Z",
	    "2026-11-30T01:00:00.Z",
	    "2026-11-30X01:00:00Z",
	    "1969-12-31T23:59:59Z",      /* before the epoch */
	    "1970-01-01T00:30:00+01:00", /* so is this */
	    "10000-01-01T00:00:00Z",
	    "1796000400.",
	    ".5",
	    "-1",
	    "+1",
	    "1e9",
	    "0x10",
	    "1796000400 ",
	    "1796000400s",
	    "253402300800", /* past year 9999 */
	    "99999999999999999999999",
	};

	for (size_t k = 0; k < sizeof(ok) / sizeof(ok[0]); k++) {
		uint64_t ns = 7;
		cr_assert_eq(segment_parse_time(ok[k].s, &ns), 0, "'%s' refused", ok[k].s);
		cr_assert_eq(ns, ok[k].sec * 1000000000ull + ok[k].ns, "'%s' -> %llu", ok[k].s,
		             (unsigned long long)ns);
	}
	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
		uint64_t ns = 7;
		cr_assert_neq(segment_parse_time(bad[k], &ns), 0, "'%s' accepted", bad[k]);
		cr_assert_eq(ns, 7, "'%s' touched the output", bad[k]);
	}
	cr_assert_neq(segment_parse_time(NULL, &(uint64_t){0}), 0);
}

/* every date of 1970..2100 at noon UTC agrees with a day count */
Test(segment, start_at_every_day)
{
	uint64_t day = 0;
	char buf[40];

	for (int y = 1970; y <= 2100; y++)
		for (int m = 1; m <= 12; m++) {
			static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
			int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
			for (int d = 1; d <= dm[m - 1] + (m == 2 && leap); d++, day++) {
				uint64_t ns;
				snprintf(buf, sizeof(buf), "%04d-%02d-%02dT12:00:00Z", y, m, d);
				cr_assert_eq(segment_parse_time(buf, &ns), 0, "%s", buf);
				cr_assert_eq(ns, (day * 86400 + 43200) * 1000000000ull, "%s", buf);
			}
		}
}

static struct fault_ip ip(const char *s)
{
	struct fault_ip a;

	cr_assert_eq(fault_ip_parse(s, &a), 0, "%s", s);
	return a;
}

/* --proxy-source and the target of another family: a header both builders
 * take, and smtpsink's parser reads the IPv4 address back */
Test(segment, proxy_families_agree)
{
	static const struct {
		const char *src, *dst, *want_src, *want_dst;
	} cases[] = {
	    {"127.0.0.8", "127.0.0.1", "127.0.0.8", "127.0.0.1"},
	    {"2001:db8::8", "::1", "2001:db8::8", "::1"},
	    {"2001:db8::8", "127.0.0.1", "2001:db8::8", "127.0.0.1"}, /* dst mapped */
	    {"127.0.0.8", "::1", "127.0.0.8", "::1"},                 /* src mapped */
	};

	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		struct fault_ip s = ip(cases[k].src), d = ip(cases[k].dst);
		struct fault_ip ws = ip(cases[k].want_src), wd = ip(cases[k].want_dst);
		char buf[PROXY_MAX];
		struct proxy_hdr h;
		enum proxy_reason why;

		cr_assert_eq(proxy_same_family(&s, &d), 0);
		cr_assert_eq(s.family, d.family, "%s %s", cases[k].src, cases[k].dst);
		for (int v = 1; v <= 2; v++) {
			size_t n = v == 1 ? proxy_build_v1(buf, sizeof(buf), &s, 40000, &d, 25)
			                  : proxy_build_v2(buf, sizeof(buf), &s, 40000, &d, 25);
			cr_assert_gt(n, 0, "v%d %s -> %s not built", v, cases[k].src, cases[k].dst);
			cr_assert_eq(proxy_parse(buf, n, &h, &why), PROXY_DONE);
			cr_assert_eq(h.len, n);
			cr_assert(!h.local);
			cr_assert_eq(memcmp(&h.src, &ws, sizeof(ws)), 0, "v%d src of %s", v,
			             cases[k].src);
			cr_assert_eq(memcmp(&h.dst, &wd, sizeof(wd)), 0, "v%d dst of %s", v,
			             cases[k].dst);
			cr_assert_eq(h.src_port, 40000);
			cr_assert_eq(h.dst_port, 25);
		}
	}
	/* the mapped form is ::ffff:a.b.c.d exactly */
	struct fault_ip s = ip("2001:db8::8"), d = ip("192.0.2.1"), m;
	cr_assert_eq(proxy_same_family(&s, &d), 0);
	cr_assert_eq(inet_pton(AF_INET6, "::ffff:192.0.2.1", m.b), 1);
	cr_assert_eq(d.family, 6);
	cr_assert_eq(memcmp(d.b, m.b, 16), 0);
	/* an unknown family is refused and nothing changes */
	struct fault_ip u = {0}, v4 = ip("127.0.0.1"), keep = v4;
	cr_assert_neq(proxy_same_family(&u, &v4), 0);
	cr_assert_neq(proxy_same_family(&v4, &u), 0);
	cr_assert_eq(memcmp(&v4, &keep, sizeof(v4)), 0);
}
