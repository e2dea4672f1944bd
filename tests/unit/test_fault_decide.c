/* test_fault_decide.c - the fault plan's "what now?": stage index, rule
 * order, MATCHes, exact schedules on one and many threads, seeded chance
 * (fault.c) */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sink/fault.h"

static struct fault_plan *mkplan(uint64_t seed, const char *const *rules)
{
	struct fault_plan *p = fault_plan_new(seed);
	char err[512];

	cr_assert_not_null(p);
	for (size_t i = 0; rules && rules[i]; i++)
		cr_assert_eq(fault_plan_add(p, rules[i], strlen(rules[i]), err, sizeof(err)), 0,
		             "%s: %s", rules[i], err);
	return p;
}

#define PLAN(seed, ...) mkplan(seed, (const char *const[]){__VA_ARGS__, NULL})

static struct fault_ip cli;

/* ctx - a context where every field is known */
static struct fault_ctx ctx(void)
{
	fault_ip_parse("192.0.2.7", &cli);
	return (struct fault_ctx){.client = &cli,
	                          .helo = "client.test",
	                          .helo_len = 11,
	                          .from = "alice@example.test",
	                          .from_len = 18,
	                          .to = "bob@example.test",
	                          .to_len = 16,
	                          .size = 1000,
	                          .has_size = true,
	                          .now_ns = 0};
}

static bool ask(const struct fault_plan *p, enum fault_stage st, const struct fault_ctx *c,
                struct fault_decision *d)
{
	return fault_decide(p, st, c, d);
}

Test(fault_decide, null_and_empty_plan)
{
	struct fault_ctx c = ctx();
	struct fault_decision d;
	struct fault_plan *p = fault_plan_new(0);

	for (unsigned st = 0; st < FAULT_ST_COUNT; st++) {
		cr_assert(!fault_plan_has(NULL, st));
		cr_assert(!fault_decide(NULL, st, &c, &d));
		cr_assert(!fault_plan_has(p, st));
		cr_assert(!fault_decide(p, st, &c, &d));
	}
	cr_assert_eq(fault_plan_nrules(NULL), 0);
	cr_assert_eq(fault_plan_nrules(p), 0);
	cr_assert_eq(fault_plan_injected(p), 0);
	cr_assert_eq(fault_plan_injected(NULL), 0);
	fault_plan_free(p);
	fault_plan_free(NULL);
}

Test(fault_decide, stage_bitmap)
{
	struct fault_plan *p = PLAN(0, "rcpt to=x drop", "eod reply='451 x'", "helo delay=1s");
	uint32_t want = FAULT_STAGE_BIT(FAULT_ST_RCPT) | FAULT_STAGE_BIT(FAULT_ST_EOD) |
	                FAULT_STAGE_BIT(FAULT_ST_BDAT_LAST) | FAULT_STAGE_BIT(FAULT_ST_HELO);

	for (unsigned st = 0; st < FAULT_ST_COUNT; st++)
		cr_assert_eq(fault_plan_has(p, st), !!(want & FAULT_STAGE_BIT(st)), "stage %s",
		             fault_stage_name(st));
	/* a stage without rules leaves the decision untouched */
	struct fault_ctx c = ctx();
	struct fault_decision d, z;
	memset(&d, 0xa5, sizeof(d));
	z = d;
	cr_assert(!ask(p, FAULT_ST_MAIL, &c, &d));
	cr_assert_eq(memcmp(&d, &z, sizeof(d)), 0);
	/* ... and so does a rule that does not match */
	cr_assert(!ask(p, FAULT_ST_RCPT, &c, &d));
	cr_assert_eq(memcmp(&d, &z, sizeof(d)), 0);
	fault_plan_set_address_faults(p, true);
	for (unsigned st = FAULT_ST_MAIL; st <= FAULT_ST_BDAT; st++)
		cr_assert(fault_plan_has(p, st));
	cr_assert(fault_plan_has(p, FAULT_ST_BDAT_LAST));
	cr_assert(!fault_plan_has(p, FAULT_ST_QUIT));
	fault_plan_set_address_faults(p, false);
	cr_assert(!fault_plan_has(p, FAULT_ST_MAIL));
	fault_plan_free(p);
}

Test(fault_decide, every_10_of_100)
{
	struct fault_plan *p = PLAN(0, "eod reply='451 4.3.0 Try again later' every=10");
	struct fault_ctx c = ctx();
	struct fault_decision d;
	uint64_t matched, injected;
	unsigned n = 0;

	for (unsigned i = 1; i <= 100; i++) {
		bool f = ask(p, FAULT_ST_EOD, &c, &d);
		cr_assert_eq(f, i % 10 == 0, "message %u", i);
		if (f) {
			n++;
			cr_assert_eq(d.src, FAULT_SRC_RULE);
			cr_assert_eq(d.act, FAULT_ACT_REPLY);
			cr_assert_eq(d.code, 451);
			cr_assert_eq(d.rule, 0);
			cr_assert_eq(d.match, i);
			cr_assert_eq(d.reply_len, strlen("451 4.3.0 Try again later\r\n"));
			cr_assert_eq(memcmp(d.reply, "451 4.3.0 Try again later\r\n", d.reply_len),
			             0);
			cr_assert(!d.close);
		}
	}
	cr_assert_eq(n, 10);
	fault_plan_counts(p, 0, &matched, &injected);
	cr_assert_eq(matched, 100);
	cr_assert_eq(injected, 10);
	cr_assert_eq(fault_plan_injected(p), 10);
	fault_plan_free(p);
}

/* Many threads, one plan: the match numbers are handed out exactly once. */
struct thr {
	const struct fault_plan *p;
	enum fault_stage st;
	unsigned n;
	unsigned fired;
	uint64_t *matches; /* match number of each injection */
};

static void *thr_main(void *arg)
{
	struct thr *t = arg;
	struct fault_ctx c = ctx();
	struct fault_decision d;

	for (unsigned i = 0; i < t->n; i++)
		if (fault_decide(t->p, t->st, &c, &d)) {
			if (t->matches)
				t->matches[t->fired] = d.match;
			t->fired++;
		}
	return NULL;
}

static unsigned run_threads(const struct fault_plan *p, enum fault_stage st, unsigned nthr,
                            unsigned per, uint8_t *seen, uint64_t seen_cap)
{
	pthread_t th[16];
	struct thr t[16];
	unsigned total = 0;

	for (unsigned i = 0; i < nthr; i++) {
		t[i] = (struct thr){p, st, per, 0, seen ? calloc(per, sizeof(uint64_t)) : NULL};
		cr_assert_eq(pthread_create(&th[i], NULL, thr_main, &t[i]), 0);
	}
	for (unsigned i = 0; i < nthr; i++) {
		pthread_join(th[i], NULL);
		total += t[i].fired;
		for (unsigned k = 0; seen && k < t[i].fired; k++) {
			uint64_t m = t[i].matches[k];
			cr_assert(m >= 1 && m <= seen_cap);
			cr_assert_eq(seen[m], 0, "match %llu injected twice",
			             (unsigned long long)m);
			seen[m] = 1;
		}
		free(t[i].matches);
	}
	return total;
}

Test(fault_decide, every_10_exact_across_threads)
{
	/* 4 workers x 25 messages: exactly 10 */
	struct fault_plan *p = PLAN(0, "eod reply='451 x' every=10");
	cr_assert_eq(run_threads(p, FAULT_ST_EOD, 4, 25, NULL, 0), 10);
	fault_plan_free(p);

	/* and at volume, with the injected match numbers checked */
	p = PLAN(0, "eod reply='451 x' every=10");
	uint8_t *seen = calloc(400001, 1);
	cr_assert_eq(run_threads(p, FAULT_ST_EOD, 4, 100000, seen, 400000), 40000);
	for (unsigned m = 1; m <= 400000; m++)
		cr_assert_eq(seen[m], m % 10 == 0, "match %u", m);
	uint64_t matched, injected;
	fault_plan_counts(p, 0, &matched, &injected);
	cr_assert_eq(matched, 400000);
	cr_assert_eq(injected, 40000);
	free(seen);
	fault_plan_free(p);
}

Test(fault_decide, limit_exact_across_threads)
{
	struct fault_plan *p = PLAN(0, "rcpt drop limit=1000");
	cr_assert_eq(run_threads(p, FAULT_ST_RCPT, 8, 5000, NULL, 0), 1000);
	uint64_t matched, injected;
	fault_plan_counts(p, 0, &matched, &injected);
	cr_assert_eq(matched, 40000);
	cr_assert_eq(injected, 1000);
	fault_plan_free(p);

	/* first= is exact too: matches 1..N, whoever gets them */
	p = PLAN(0, "rcpt drop first=777");
	uint8_t *seen = calloc(40001, 1);
	cr_assert_eq(run_threads(p, FAULT_ST_RCPT, 8, 5000, seen, 40000), 777);
	for (unsigned m = 1; m <= 40000; m++)
		cr_assert_eq(seen[m], m <= 777);
	free(seen);
	fault_plan_free(p);
}

/* fired - the match numbers 1..n at which the single rule of p fires. */
static void fired(struct fault_plan *p, enum fault_stage st, unsigned n, uint8_t *out)
{
	struct fault_ctx c = ctx();
	struct fault_decision d;

	for (unsigned i = 1; i <= n; i++)
		out[i] = ask(p, st, &c, &d);
}

Test(fault_decide, first_after_limit_and_combinations)
{
	static const struct {
		const char *rule;
		const char *want; /* '1' = fires at that match (1-based) */
	} tab[] = {
	    {"rcpt drop first=3", "11100000000000000000"},
	    {"rcpt drop after=3", "00011111111111111111"},
	    {"rcpt drop after=0", "11111111111111111111"},
	    {"rcpt drop limit=4", "11110000000000000000"},
	    {"rcpt drop every=3", "00100100100100100100"},
	    {"rcpt drop every=1", "11111111111111111111"},
	    /* after= shifts the count the others see */
	    {"rcpt drop after=5 first=3", "00000111000000000000"},
	    {"rcpt drop after=5 every=4", "00000000100010001000"},
	    {"rcpt drop every=2 first=7", "01010100000000000000"},
	    {"rcpt drop every=2 limit=2", "01010000000000000000"},
	    {"rcpt drop after=2 every=3 limit=3", "00001001001000000000"},
	    {"rcpt drop prob=0", "00000000000000000000"},
	    {"rcpt drop prob=1", "11111111111111111111"},
	    {"rcpt drop prob=1 every=5", "00001000010000100001"},
	};
	uint8_t got[21];

	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
		struct fault_plan *p = mkplan(0, (const char *const[]){tab[i].rule, NULL});
		fired(p, FAULT_ST_RCPT, 20, got);
		for (unsigned m = 1; m <= 20; m++)
			cr_assert_eq(got[m], tab[i].want[m - 1] == '1', "%s: match %u", tab[i].rule,
			             m);
		uint64_t matched, injected, n = 0;
		for (unsigned m = 0; m < 20; m++)
			n += tab[i].want[m] == '1';
		fault_plan_counts(p, 0, &matched, &injected);
		cr_assert_eq(matched, 20, "%s", tab[i].rule);
		cr_assert_eq(injected, n, "%s", tab[i].rule);
		fault_plan_free(p);
	}
}

Test(fault_decide, window)
{
	struct fault_plan *p = PLAN(0, "mail reply='421 4.3.2 Maintenance' window=10s-20s every=2");
	struct fault_ctx c = ctx();
	struct fault_decision d;
	const uint64_t s = 1000000000ull;
	uint64_t matched, injected;

	c.now_ns = 0;
	cr_assert(!ask(p, FAULT_ST_MAIL, &c, &d));
	c.now_ns = 10 * s - 1;
	cr_assert(!ask(p, FAULT_ST_MAIL, &c, &d));
	fault_plan_counts(p, 0, &matched, &injected);
	cr_assert_eq(matched, 0, "outside the window is not a match");
	c.now_ns = 10 * s;                         /* from is inclusive */
	cr_assert(!ask(p, FAULT_ST_MAIL, &c, &d)); /* match 1 */
	c.now_ns = 15 * s;
	cr_assert(ask(p, FAULT_ST_MAIL, &c, &d)); /* match 2 */
	cr_assert(d.close, "421 closes (RFC 5321 4.2.2)");
	cr_assert_eq(d.code, 421);
	c.now_ns = 20 * s - 1;
	cr_assert(!ask(p, FAULT_ST_MAIL, &c, &d)); /* match 3 */
	cr_assert(ask(p, FAULT_ST_MAIL, &c, &d));  /* match 4 */
	c.now_ns = 20 * s;                         /* to is exclusive */
	cr_assert(!ask(p, FAULT_ST_MAIL, &c, &d));
	c.now_ns = 3600 * s;
	cr_assert(!ask(p, FAULT_ST_MAIL, &c, &d));
	fault_plan_counts(p, 0, &matched, &injected);
	cr_assert_eq(matched, 4);
	cr_assert_eq(injected, 2);
	fault_plan_free(p);
}

Test(fault_decide, prob_seeded_and_reproducible)
{
	enum { N = 10000 };
	uint8_t a[N + 1], b[N + 1], other[N + 1];
	struct fault_plan *p;
	unsigned n = 0, diff = 0;

	p = PLAN(7, "mail reply='451 4.3.2 Busy' prob=0.3");
	fired(p, FAULT_ST_MAIL, N, a);
	fault_plan_free(p);
	p = PLAN(7, "mail reply='451 4.3.2 Busy' prob=0.3");
	fired(p, FAULT_ST_MAIL, N, b);
	fault_plan_free(p);
	cr_assert_eq(memcmp(a + 1, b + 1, N), 0, "same seed, same injections");
	for (unsigned i = 1; i <= N; i++)
		n += a[i];
	/* binomial(10000, 0.3): sd 46, so +-200 is over 4 sd */
	cr_assert(n > 2800 && n < 3200, "prob=0.3 injected %u of %u", n, N);

	p = PLAN(8, "mail reply='451 4.3.2 Busy' prob=0.3");
	fired(p, FAULT_ST_MAIL, N, other);
	fault_plan_free(p);
	for (unsigned i = 1; i <= N; i++)
		diff += a[i] != other[i];
	cr_assert_gt(diff, 3000, "another seed, other injections (%u differ)", diff);

	/* the rule index is part of the draw: two equal rules in one plan
	 * (the first never fires for this sender) are independent */
	p = PLAN(7, "mail from=nobody@* reply='451 x' prob=0.3",
	         "mail reply='451 4.3.2 Busy' prob=0.3");
	fired(p, FAULT_ST_MAIL, N, other);
	fault_plan_free(p);
	diff = 0;
	for (unsigned i = 1; i <= N; i++)
		diff += a[i] != other[i];
	cr_assert_gt(diff, 3000);

	/* small and extreme probabilities */
	static const struct {
		const char *rule;
		unsigned lo, hi;
	} tab[] = {{"mail drop prob=0.01", 60, 140},
	           {"mail drop prob=0.5", 4800, 5200},
	           {"mail drop prob=0.99", 9860, 9940},
	           {"mail drop prob=0.000000001", 0, 1}};
	for (size_t k = 0; k < sizeof(tab) / sizeof(tab[0]); k++) {
		p = mkplan(123, (const char *const[]){tab[k].rule, NULL});
		fired(p, FAULT_ST_MAIL, N, other);
		fault_plan_free(p);
		n = 0;
		for (unsigned i = 1; i <= N; i++)
			n += other[i];
		cr_assert(n >= tab[k].lo && n <= tab[k].hi, "%s: %u", tab[k].rule, n);
	}
}

Test(fault_decide, prob_independent_of_interleaving)
{
	enum { PER = 25000, THR = 4, N = PER * THR };
	uint8_t *single = calloc(N + 1, 1), *multi = calloc(N + 1, 1);
	struct fault_plan *p;

	p = PLAN(42, "rcpt reply='450 4.2.0 x' prob=0.1");
	fired(p, FAULT_ST_RCPT, N, single);
	fault_plan_free(p);
	p = PLAN(42, "rcpt reply='450 4.2.0 x' prob=0.1");
	unsigned n = run_threads(p, FAULT_ST_RCPT, THR, PER, multi, N);
	fault_plan_free(p);
	cr_assert_eq(memcmp(single + 1, multi + 1, N), 0,
	             "the same match numbers fire on 1 and on 4 threads");
	unsigned s = 0;
	for (unsigned i = 1; i <= N; i++)
		s += single[i];
	cr_assert_eq(n, s);
	free(single);
	free(multi);
}

Test(fault_decide, first_rule_that_fires_wins)
{
	struct fault_plan *p =
	    PLAN(0, "rcpt to=a@* reply='550 5.1.1 a'", "rcpt reply='451 4.3.0 b' every=2");
	struct fault_ctx c = ctx();
	struct fault_decision d;
	uint64_t m0, i0, m1, i1;

	c.to = "a@x";
	c.to_len = 3;
	for (int i = 0; i < 4; i++) {
		cr_assert(ask(p, FAULT_ST_RCPT, &c, &d));
		cr_assert_eq(d.rule, 0);
		cr_assert_eq(d.code, 550);
	}
	fault_plan_counts(p, 1, &m1, &i1);
	cr_assert_eq(m1, 0, "rules after the one that fired are not asked");
	c.to = "b@x";
	for (int i = 1; i <= 4; i++) {
		bool f = ask(p, FAULT_ST_RCPT, &c, &d);
		cr_assert_eq(f, i % 2 == 0);
		if (f)
			cr_assert_eq(d.rule, 1);
	}
	fault_plan_counts(p, 0, &m0, &i0);
	fault_plan_counts(p, 1, &m1, &i1);
	cr_assert_eq(m0, 4);
	cr_assert_eq(i0, 4);
	cr_assert_eq(m1, 4);
	cr_assert_eq(i1, 2);
	fault_plan_free(p);

	/* a rule that matches but whose schedule says no lets the next one act */
	p = PLAN(0, "rcpt reply='550 a' every=2", "rcpt reply='451 b'");
	c = ctx();
	for (int i = 1; i <= 6; i++) {
		cr_assert(ask(p, FAULT_ST_RCPT, &c, &d));
		cr_assert_eq(d.code, i % 2 == 0 ? 550 : 451);
	}
	fault_plan_free(p);
}

Test(fault_decide, any_and_bdat_last)
{
	struct fault_plan *p = PLAN(0, "eod reply='451 e'", "bdat reply='452 b'", "any delay=1s");
	struct fault_ctx c = ctx();
	struct fault_decision d;

	cr_assert(ask(p, FAULT_ST_BDAT_LAST, &c, &d));
	cr_assert_eq(d.code, 451, "rule order decides at BDAT LAST");
	cr_assert(ask(p, FAULT_ST_BDAT, &c, &d));
	cr_assert_eq(d.code, 452);
	cr_assert(ask(p, FAULT_ST_EOD, &c, &d));
	cr_assert_eq(d.code, 451);
	for (unsigned st = 0; st < FAULT_ST_COUNT; st++) {
		if (st == FAULT_ST_EOD || st == FAULT_ST_BDAT || st == FAULT_ST_BDAT_LAST)
			continue;
		cr_assert(ask(p, st, &c, &d), "any acts at %s", fault_stage_name(st));
		cr_assert_eq(d.act, FAULT_ACT_NONE);
		cr_assert_eq(d.delay_ns, 1000000000ull);
		cr_assert_eq(d.rule, 2);
	}
	fault_plan_free(p);

	p = PLAN(0, "bdat reply='452 b'", "eod reply='451 e'");
	cr_assert(ask(p, FAULT_ST_BDAT_LAST, &c, &d));
	cr_assert_eq(d.code, 452);
	fault_plan_free(p);
}

Test(fault_decide, matches)
{
	struct fault_ctx c = ctx();
	struct fault_decision d;
	struct fault_plan *p;
	struct fault_ip v6, v4;

	fault_ip_parse("2001:db8::5", &v6);
	fault_ip_parse("127.0.0.9", &v4);

	p = PLAN(0, "connect client=127.0.0.9 delay=2s", "connect client=2001:db8::/32 drop");
	c.client = &v4;
	cr_assert(ask(p, FAULT_ST_CONNECT, &c, &d));
	cr_assert_eq(d.delay_ns, 2000000000ull);
	cr_assert_eq(d.act, FAULT_ACT_NONE);
	c.client = &v6;
	cr_assert(ask(p, FAULT_ST_CONNECT, &c, &d));
	cr_assert_eq(d.act, FAULT_ACT_DROP);
	c.client = &cli;
	cr_assert(!ask(p, FAULT_ST_CONNECT, &c, &d));
	c.client = NULL;
	cr_assert(!ask(p, FAULT_ST_CONNECT, &c, &d), "unknown client matches no client=");
	fault_plan_free(p);

	p = PLAN(0, "mail helo=*.TEST reply='550 h'");
	c = ctx();
	cr_assert(ask(p, FAULT_ST_MAIL, &c, &d));
	c.helo = "CLIENT.Test";
	cr_assert(ask(p, FAULT_ST_MAIL, &c, &d), "globs ignore case");
	c.helo = "client.test.org";
	c.helo_len = 15;
	cr_assert(!ask(p, FAULT_ST_MAIL, &c, &d));
	c.helo = NULL;
	c.helo_len = 0;
	cr_assert(!ask(p, FAULT_ST_MAIL, &c, &d), "no HELO yet: no match");
	fault_plan_free(p);

	p = PLAN(0, "mail from=<> reply='550 null'", "mail from=reset@* reset");
	c = ctx();
	cr_assert(!ask(p, FAULT_ST_MAIL, &c, &d));
	c.from = "";
	c.from_len = 0;
	cr_assert(ask(p, FAULT_ST_MAIL, &c, &d));
	cr_assert_eq(d.code, 550);
	c.from = "Reset@Example.test";
	c.from_len = 18;
	cr_assert(ask(p, FAULT_ST_MAIL, &c, &d));
	cr_assert_eq(d.act, FAULT_ACT_RESET);
	c.from = NULL;
	cr_assert(!ask(p, FAULT_ST_MAIL, &c, &d));
	fault_plan_free(p);

	p = PLAN(0, "rcpt to=*@bounce.test reply='550 5.1.1 No such user'");
	c = ctx();
	cr_assert(!ask(p, FAULT_ST_RCPT, &c, &d));
	c.to = "x@bounce.test";
	c.to_len = 13;
	cr_assert(ask(p, FAULT_ST_RCPT, &c, &d));
	c.to = "x@bounce.test2";
	c.to_len = 14;
	cr_assert(!ask(p, FAULT_ST_RCPT, &c, &d));
	fault_plan_free(p);

	/* size>N: strictly greater; unknown size never matches */
	p = PLAN(0, "eod size>10k reply='552 5.3.4 Too big'", "mail size>1M reply='552 5.3.4 x'");
	c = ctx();
	c.size = 10240;
	cr_assert(!ask(p, FAULT_ST_EOD, &c, &d));
	c.size = 10241;
	cr_assert(ask(p, FAULT_ST_EOD, &c, &d));
	cr_assert(ask(p, FAULT_ST_BDAT_LAST, &c, &d));
	c.has_size = false;
	cr_assert(!ask(p, FAULT_ST_EOD, &c, &d));
	c.has_size = true;
	c.size = 1048577;
	cr_assert(ask(p, FAULT_ST_MAIL, &c, &d));
	c.has_size = false;
	cr_assert(!ask(p, FAULT_ST_MAIL, &c, &d), "MAIL without SIZE=");
	fault_plan_free(p);
}

Test(fault_decide, decisions)
{
	struct fault_ctx c = ctx();
	struct fault_decision d;
	struct fault_plan *p =
	    PLAN(0, "helo drop", "ehlo reset", "mail stall", "rcpt throttle=1k/s",
	         "data reply='554 5.5.1 No\\nreally' delay=500ms", "noop reply='421 4.3.2 Bye'",
	         "quit delay=1s drop");

	cr_assert(ask(p, FAULT_ST_HELO, &c, &d));
	cr_assert_eq(d.act, FAULT_ACT_DROP);
	cr_assert_eq(d.reply, NULL);
	cr_assert_eq(d.delay_ns, 0);
	cr_assert(ask(p, FAULT_ST_EHLO, &c, &d));
	cr_assert_eq(d.act, FAULT_ACT_RESET);
	cr_assert(ask(p, FAULT_ST_MAIL, &c, &d));
	cr_assert_eq(d.act, FAULT_ACT_STALL);
	cr_assert(ask(p, FAULT_ST_RCPT, &c, &d));
	cr_assert_eq(d.act, FAULT_ACT_NONE);
	cr_assert_eq(d.throttle_bps, 1024);
	cr_assert(ask(p, FAULT_ST_DATA, &c, &d));
	cr_assert_eq(d.act, FAULT_ACT_REPLY);
	cr_assert_eq(d.delay_ns, 500000000ull);
	cr_assert_eq(d.code, 554);
	cr_assert(!d.close);
	cr_assert_eq(d.reply_len, strlen("554-5.5.1 No\r\n554 5.5.1 really\r\n"));
	cr_assert_eq(memcmp(d.reply, "554-5.5.1 No\r\n554 5.5.1 really\r\n", d.reply_len), 0);
	cr_assert(ask(p, FAULT_ST_NOOP, &c, &d));
	cr_assert(d.close);
	cr_assert_eq(d.rule, 5);
	cr_assert(ask(p, FAULT_ST_QUIT, &c, &d));
	cr_assert_eq(d.act, FAULT_ACT_DROP);
	cr_assert_eq(d.delay_ns, 1000000000ull);
	cr_assert(!ask(p, FAULT_ST_RSET, &c, &d));
	cr_assert_eq(fault_plan_injected(p), 7);
	fault_plan_free(p);
}

Test(fault_decide, rule_file)
{
	static const char file[] = "# faults for the retry test\n"
	                           "\n"
	                           "rcpt to=*@bounce.test reply='550 5.1.1 No such user'\r\n"
	                           "   # indented comment\n"
	                           "\t\n"
	                           "eod reply='451 4.3.0 Try again later' every=10\n"
	                           "connect client=127.0.0.9 delay=2s"; /* no final newline */
	struct fault_plan *p = fault_plan_new(0);
	char err[512], buf[256];

	cr_assert_eq(fault_plan_add_file(p, file, sizeof(file) - 1, err, sizeof(err)), 0, "%s",
	             err);
	cr_assert_eq(fault_plan_nrules(p), 3);
	fault_rule_format(fault_plan_rule(p, 0), buf, sizeof(buf));
	cr_assert_str_eq(buf, "rcpt to=*@bounce.test reply='550 5.1.1 No such user'");
	fault_rule_format(fault_plan_rule(p, 2), buf, sizeof(buf));
	cr_assert_str_eq(buf, "connect client=127.0.0.9 delay=2s");
	fault_plan_free(p);

	static const char bad[] = "rcpt drop\n# ok\n\neod reply='451 x' evry=10\nrcpt drop\n";
	p = fault_plan_new(0);
	cr_assert_eq(fault_plan_add_file(p, bad, sizeof(bad) - 1, err, sizeof(err)), -EINVAL);
	cr_assert_str_eq(err, "line 4: column 19, 'evry=10': unknown word (expected client= helo= "
	                      "from= to= size> reply= drop reset delay= stall throttle= prob= "
	                      "every= first= after= window= limit=)");
	fault_plan_free(p);

	p = fault_plan_new(0);
	cr_assert_eq(fault_plan_add_file(p, "", 0, err, sizeof(err)), 0);
	cr_assert_eq(fault_plan_add_file(p, "\n\n#\n", 4, err, sizeof(err)), 0);
	cr_assert_eq(fault_plan_nrules(p), 0);
	cr_assert(!fault_plan_has(p, FAULT_ST_RCPT));
	fault_plan_free(p);
}

Test(fault_decide, counters_survive_plan_growth)
{
	struct fault_plan *p = PLAN(0, "rcpt drop every=2");
	struct fault_ctx c = ctx();
	struct fault_decision d;
	char rule[64], err[256];
	uint64_t m, i;

	for (int k = 0; k < 10; k++)
		ask(p, FAULT_ST_RCPT, &c, &d);
	for (int k = 0; k < 100; k++) {
		snprintf(rule, sizeof(rule), "mail from=r%d@x drop", k);
		cr_assert_eq(fault_plan_add(p, rule, strlen(rule), err, sizeof(err)), 0);
	}
	fault_plan_counts(p, 0, &m, &i);
	cr_assert_eq(m, 10);
	cr_assert_eq(i, 5);
	cr_assert_eq(fault_plan_nrules(p), 101);
	c.from = "r77@x";
	c.from_len = 5;
	cr_assert(ask(p, FAULT_ST_MAIL, &c, &d));
	cr_assert_eq(d.rule, 78);
	/* a bad rule leaves the plan as it was */
	cr_assert_eq(fault_plan_add(p, "mail nonsense", 13, err, sizeof(err)), -EINVAL);
	cr_assert_eq(fault_plan_nrules(p), 101);
	fault_plan_free(p);
}
