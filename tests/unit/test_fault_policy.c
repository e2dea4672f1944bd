/* test_fault_policy.c - greylisting, token-bucket rate limit and per-address
 * connection counts with synthetic time, alone and from many threads, and
 * their place in the decision order (fault_policy.c, fault.c) */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sink/fault.h"
#include "sink/fault_policy.h"

#define MS 1000000ull
#define S  1000000000ull

static struct fault_ip ipof(const char *s)
{
	struct fault_ip a;
	cr_assert_eq(fault_ip_parse(s, &a), 0, "%s", s);
	return a;
}

static struct fault_greylist *mkgrey(uint64_t delay, uint64_t expiry, uint32_t max)
{
	struct fault_greylist_cfg cfg;
	struct fault_greylist *g;

	fault_greylist_cfg_defaults(&cfg, delay);
	if (expiry)
		cfg.expiry_ns = expiry;
	if (max)
		cfg.max = max;
	cr_assert_eq(fault_greylist_new(&cfg, &g), 0);
	return g;
}

static enum fault_grey grey(struct fault_greylist *g, const char *ip, const char *from,
                            const char *to, uint64_t now)
{
	struct fault_ip a = ipof(ip);
	return fault_greylist_check(g, &a, from, strlen(from), to, strlen(to), now);
}

Test(greylist, first_early_late)
{
	struct fault_greylist *g = mkgrey(300 * S, 0, 0);
	const uint64_t t0 = 5 * S;
	struct fault_greylist_stats st;
	size_t n;

	cr_assert_str_eq(fault_greylist_reply(g, &n), "451 4.7.1 Greylisted, try again in 5m\r\n");
	cr_assert_eq(n, strlen("451 4.7.1 Greylisted, try again in 5m\r\n"));
	cr_assert_eq(grey(g, "192.0.2.1", "a@x", "b@y", t0), FAULT_GREY_FIRST);
	cr_assert_eq(grey(g, "192.0.2.1", "a@x", "b@y", t0), FAULT_GREY_EARLY);
	cr_assert_eq(grey(g, "192.0.2.1", "a@x", "b@y", t0 + 300 * S - 1), FAULT_GREY_EARLY);
	cr_assert_eq(grey(g, "192.0.2.1", "a@x", "b@y", t0 + 300 * S), FAULT_GREY_PASS);
	cr_assert_eq(grey(g, "192.0.2.1", "a@x", "b@y", t0 + 301 * S), FAULT_GREY_PASS);
	/* early retries do not move the first-seen time */
	cr_assert_eq(grey(g, "192.0.2.2", "a@x", "b@y", 0), FAULT_GREY_FIRST);
	for (uint64_t t = 10 * S; t < 300 * S; t += 10 * S)
		cr_assert_eq(grey(g, "192.0.2.2", "a@x", "b@y", t), FAULT_GREY_EARLY);
	cr_assert_eq(grey(g, "192.0.2.2", "a@x", "b@y", 300 * S), FAULT_GREY_PASS);
	/* a clock reading older than the entry (another worker) is early */
	cr_assert_eq(grey(g, "192.0.2.3", "a@x", "b@y", 10 * S), FAULT_GREY_FIRST);
	cr_assert_eq(grey(g, "192.0.2.3", "a@x", "b@y", 9 * S), FAULT_GREY_EARLY);
	fault_greylist_stats(g, &st);
	cr_assert_eq(st.entries, 3);
	cr_assert_eq(st.first, 3);
	cr_assert_eq(st.passed, 3);
	cr_assert_eq(st.early, 2 + 29 + 1);
	fault_greylist_free(g);
	fault_greylist_free(NULL);
}

Test(greylist, triplets)
{
	struct fault_greylist *g = mkgrey(60 * S, 0, 0);

	cr_assert_eq(grey(g, "192.0.2.1", "a@x", "b@y", 0), FAULT_GREY_FIRST);
	/* each part of the triplet counts */
	cr_assert_eq(grey(g, "192.0.2.2", "a@x", "b@y", 0), FAULT_GREY_FIRST);
	cr_assert_eq(grey(g, "192.0.2.1", "c@x", "b@y", 0), FAULT_GREY_FIRST);
	cr_assert_eq(grey(g, "192.0.2.1", "a@x", "d@y", 0), FAULT_GREY_FIRST);
	cr_assert_eq(grey(g, "2001:db8::1", "a@x", "b@y", 0), FAULT_GREY_FIRST);
	/* the field boundaries are part of the key: "a@x" "b" != "a@xb" "" */
	cr_assert_eq(grey(g, "192.0.2.1", "a@xb@y", "", 0), FAULT_GREY_FIRST);
	cr_assert_eq(grey(g, "192.0.2.1", "", "", 0), FAULT_GREY_FIRST);
	/* addresses compare without case; mapped IPv4 is IPv4 */
	cr_assert_eq(grey(g, "::ffff:192.0.2.1", "A@X", "B@Y", 1), FAULT_GREY_EARLY);
	/* an unknown client address is one address */
	cr_assert_eq(fault_greylist_check(g, NULL, "a", 1, "b", 1, 0), FAULT_GREY_FIRST);
	struct fault_ip none = {0};
	cr_assert_eq(fault_greylist_check(g, &none, "a", 1, "b", 1, 0), FAULT_GREY_EARLY);
	fault_greylist_free(g);
}

Test(greylist, expiry)
{
	/* 1000 entries: one shard, so reclaiming (per shard) is visible */
	struct fault_greylist *g = mkgrey(60 * S, 3600 * S, 1000);
	struct fault_greylist_stats st;

	cr_assert_eq(grey(g, "192.0.2.1", "a@x", "b@y", 0), FAULT_GREY_FIRST);
	cr_assert_eq(grey(g, "192.0.2.1", "a@x", "b@y", 60 * S), FAULT_GREY_PASS);
	/* passed triplets stay passed while they keep coming */
	for (uint64_t t = 1000 * S; t < 20000 * S; t += 3000 * S)
		cr_assert_eq(grey(g, "192.0.2.1", "a@x", "b@y", t), FAULT_GREY_PASS);
	/* last seen at 19000 s: exactly the expiry later is still known ... */
	cr_assert_eq(grey(g, "192.0.2.1", "a@x", "b@y", 22600 * S), FAULT_GREY_PASS);
	/* ... and one ns more after that, forgotten: greylisted again */
	cr_assert_eq(grey(g, "192.0.2.1", "a@x", "b@y", 26200 * S + 1), FAULT_GREY_FIRST);
	/* a pending triplet expires the same way */
	cr_assert_eq(grey(g, "192.0.2.9", "a@x", "b@y", 0), FAULT_GREY_FIRST);
	cr_assert_eq(grey(g, "192.0.2.9", "a@x", "b@y", 3601 * S), FAULT_GREY_FIRST);
	/* stale entries are reclaimed from the LRU end by later lookups */
	for (int i = 0; i < 10; i++) {
		char ip[32];
		snprintf(ip, sizeof(ip), "198.51.100.%d", i);
		grey(g, ip, "a@x", "b@y", 100000 * S);
	}
	for (int i = 0; i < 20; i++)
		grey(g, "203.0.113.1", "a@x", "b@y", 100000 * S + 3601 * S);
	fault_greylist_stats(g, &st);
	cr_assert_eq(st.entries, 1, "stale entries were reclaimed (%llu left)",
	             (unsigned long long)st.entries);
	cr_assert_geq(st.expired, 12);
	fault_greylist_free(g);
}

Test(greylist, cap_evicts_least_recently_seen)
{
	struct fault_greylist *g = mkgrey(60 * S, 0, 4);
	struct fault_greylist_stats st;
	const char *ips[] = {"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5"};

	for (int i = 0; i < 4; i++)
		cr_assert_eq(grey(g, ips[i], "a@x", "b@y", (uint64_t)i), FAULT_GREY_FIRST);
	/* .1 seen again: .2 is now the oldest */
	cr_assert_eq(grey(g, ips[0], "a@x", "b@y", 10), FAULT_GREY_EARLY);
	cr_assert_eq(grey(g, ips[4], "a@x", "b@y", 11), FAULT_GREY_FIRST);
	fault_greylist_stats(g, &st);
	cr_assert_eq(st.entries, 4);
	cr_assert_eq(st.evicted, 1);
	cr_assert_eq(grey(g, ips[0], "a@x", "b@y", 61 * S), FAULT_GREY_PASS, ".1 kept");
	cr_assert_eq(grey(g, ips[2], "a@x", "b@y", 61 * S), FAULT_GREY_PASS, ".3 kept");
	cr_assert_eq(grey(g, ips[3], "a@x", "b@y", 61 * S), FAULT_GREY_PASS, ".4 kept");
	cr_assert_eq(grey(g, ips[4], "a@x", "b@y", 61 * S), FAULT_GREY_PASS, ".5 kept");
	/* .2 was evicted: it starts over (and evicts the oldest, .1) */
	cr_assert_eq(grey(g, ips[1], "a@x", "b@y", 62 * S), FAULT_GREY_FIRST);
	cr_assert_eq(grey(g, ips[0], "a@x", "b@y", 63 * S), FAULT_GREY_FIRST);
	fault_greylist_stats(g, &st);
	cr_assert_eq(st.entries, 4);
	cr_assert_eq(st.evicted, 3);
	fault_greylist_free(g);

	/* a sharded table holds exactly max entries */
	g = mkgrey(60 * S, 0, 100000);
	char from[32];
	for (int i = 0; i < 250000; i++) {
		snprintf(from, sizeof(from), "s%d@x", i);
		cr_assert_eq(grey(g, "192.0.2.1", from, "b@y", 0), FAULT_GREY_FIRST);
	}
	fault_greylist_stats(g, &st);
	cr_assert_eq(st.entries, 100000);
	cr_assert_eq(st.evicted, 150000);
	fault_greylist_free(g);
}

Test(greylist, bad_config)
{
	struct fault_greylist_cfg cfg;
	struct fault_greylist *g = (struct fault_greylist *)1;

	fault_greylist_cfg_defaults(&cfg, S);
	cr_assert_eq(cfg.expiry_ns, 24 * 3600 * S);
	cr_assert_eq(cfg.max, FAULT_GREYLIST_MAX_DEFAULT);
	cfg.max = 0;
	cr_assert_eq(fault_greylist_new(&cfg, &g), -EINVAL);
	cr_assert_null(g);
	cfg.max = (1u << 30) + 1;
	cr_assert_eq(fault_greylist_new(&cfg, &g), -EINVAL);
}

struct gthr {
	struct fault_greylist *g;
	int id;
	unsigned keys;
	unsigned calls, first, early, pass;
};

static void *grey_thr(void *arg)
{
	struct gthr *t = arg;
	char from[32], to[32];
	struct fault_ip ip = ipof("192.0.2.1");

	for (unsigned i = 0; i < 30000; i++) {
		unsigned k = (i * 2654435761u + (unsigned)t->id) % t->keys;
		snprintf(from, sizeof(from), "f%u@x", k);
		snprintf(to, sizeof(to), "t%u@y", k % 7);
		ip.b[3] = (uint8_t)(k % 5);
		uint64_t now = (uint64_t)i * MS;
		switch (fault_greylist_check(t->g, &ip, from, strlen(from), to, strlen(to), now)) {
		case FAULT_GREY_FIRST:
			t->first++;
			break;
		case FAULT_GREY_EARLY:
			t->early++;
			break;
		case FAULT_GREY_PASS:
			t->pass++;
			break;
		}
		t->calls++;
	}
	return NULL;
}

static void grey_stress(uint32_t max, unsigned keys)
{
	struct fault_greylist *g = mkgrey(50 * MS, 2 * S, max);
	pthread_t th[8];
	struct gthr t[8];
	struct fault_greylist_stats st;
	uint64_t first = 0, early = 0, pass = 0, calls = 0;

	for (int i = 0; i < 8; i++) {
		t[i] = (struct gthr){.g = g, .id = i, .keys = keys};
		cr_assert_eq(pthread_create(&th[i], NULL, grey_thr, &t[i]), 0);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(th[i], NULL);
		first += t[i].first;
		early += t[i].early;
		pass += t[i].pass;
		calls += t[i].calls;
	}
	fault_greylist_stats(g, &st);
	cr_assert_eq(calls, 8 * 30000);
	cr_assert_eq(st.first, first);
	cr_assert_eq(st.early, early);
	cr_assert_eq(st.passed, pass);
	cr_assert_eq(first + early + pass, calls);
	cr_assert_leq(st.entries, max);
	cr_assert_geq(first, st.entries, "every held entry was once a first attempt");
	fault_greylist_free(g);
}

Test(greylist, concurrent)
{
	grey_stress(100000, 5000); /* no eviction */
	grey_stress(500, 5000);    /* constant eviction, one shard */
	grey_stress(8192, 50000);  /* eviction over several shards */
}

/*
 * Rate limit
 */

static struct fault_rate *mkrate(const char *spec)
{
	struct fault_rate_cfg cfg;
	struct fault_rate *r;
	char err[256];

	cr_assert_eq(fault_rate_parse(spec, &cfg, err, sizeof(err)), 0, "%s: %s", spec, err);
	cr_assert_eq(fault_rate_new(&cfg, &r), 0);
	return r;
}

static bool take(struct fault_rate *r, const char *ip, const char *from, uint64_t now)
{
	struct fault_ip a = ipof(ip);
	return fault_rate_take(r, &a, from, strlen(from), now);
}

Test(rate, parse)
{
	static const struct {
		const char *s;
		uint64_t n, per;
		uint8_t perk;
	} ok[] = {
	    {"100/s", 100, S, FAULT_RATE_PER_CLIENT},
	    {"100/1s", 100, S, FAULT_RATE_PER_CLIENT},
	    {"10/1m,per=sender", 10, 60 * S, FAULT_RATE_PER_SENDER},
	    {"5k/h,per=all", 5000, 3600 * S, FAULT_RATE_PER_ALL},
	    {"1/500ms,per=client", 1, 500 * MS, FAULT_RATE_PER_CLIENT},
	    {"3/10", 3, 10 * S, FAULT_RATE_PER_CLIENT},
	    {"7/ms", 7, MS, FAULT_RATE_PER_CLIENT},
	};
	static const char *bad[] = {"",       "100",          "0/s",           "x/s",
	                            "100/",   "100/0s",       "100/s,per=foo", "100/s,",
	                            "-1/s",   "100/x",        "1.5/s",         "100/s,per=all,x",
	                            "100//s", "2000000000/s", "1/400d",        "1/-1s"};
	struct fault_rate_cfg cfg;
	char err[256];

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		cr_assert_eq(fault_rate_parse(ok[i].s, &cfg, err, sizeof(err)), 0, "%s: %s",
		             ok[i].s, err);
		cr_assert_eq(cfg.n, ok[i].n, "%s", ok[i].s);
		cr_assert_eq(cfg.per_ns, ok[i].per, "%s", ok[i].s);
		cr_assert_eq(cfg.per, ok[i].perk, "%s", ok[i].s);
		cr_assert_eq(cfg.keys, FAULT_RATE_KEYS_DEFAULT);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = 0;
		cr_assert_eq(fault_rate_parse(bad[i], &cfg, err, sizeof(err)), -EINVAL, "'%s'",
		             bad[i]);
		cr_assert_neq(err[0], 0);
		cr_assert_not_null(strstr(err, "per="), "%s: %s", bad[i], err);
	}
}

Test(rate, bucket_exact)
{
	struct fault_rate *r = mkrate("10/s,per=all");
	struct fault_rate_stats st;

	/* starts full: a burst of N, then nothing */
	for (int i = 0; i < 10; i++)
		cr_assert(take(r, "192.0.2.1", "a@x", 0), "token %d", i);
	cr_assert(!take(r, "192.0.2.1", "a@x", 0));
	cr_assert(!take(r, "192.0.2.1", "a@x", 100 * MS - 1));
	/* refills one token per DUR/N, continuously */
	cr_assert(take(r, "192.0.2.1", "a@x", 100 * MS));
	cr_assert(!take(r, "192.0.2.1", "a@x", 100 * MS));
	cr_assert(take(r, "192.0.2.1", "a@x", 250 * MS));
	cr_assert(!take(r, "192.0.2.1", "a@x", 299 * MS));
	cr_assert(take(r, "192.0.2.1", "a@x", 300 * MS));
	/* idle time beyond a full bucket is not saved up: N again, not more */
	for (int i = 0; i < 10; i++)
		cr_assert(take(r, "192.0.2.1", "a@x", 3600 * S), "token %d", i);
	cr_assert(!take(r, "192.0.2.1", "a@x", 3600 * S));
	/* a full period refills exactly N */
	for (int i = 0; i < 10; i++)
		cr_assert(take(r, "192.0.2.1", "a@x", 3601 * S));
	cr_assert(!take(r, "192.0.2.1", "a@x", 3601 * S));
	fault_rate_stats(r, &st);
	cr_assert_eq(st.limited, 6);
	cr_assert_eq(st.keys, 0);
	fault_rate_free(r);
	fault_rate_free(NULL);

	/* dense arrivals (every 1 ms for 10 s, 100/s): the burst of 100 plus one
	 * per 10 ms; the j-th token (from 0) is due at j*10ms - 990ms, so
	 * tokens 0..1098 are taken by 9999 ms */
	r = mkrate("100/s,per=all");
	unsigned ok = 0;
	for (uint64_t t = 0; t < 10000; t++)
		ok += take(r, "192.0.2.1", "a@x", t * MS);
	cr_assert_eq(ok, 1099);
	fault_rate_free(r);

	/* N that does not divide DUR: the interval is rounded up to a ns, so
	 * never more than N per DUR (here 3 per 1 s: 333333334 ns) */
	r = mkrate("3/s,per=all");
	for (int i = 0; i < 3; i++)
		cr_assert(take(r, "192.0.2.1", "a@x", 0));
	cr_assert(!take(r, "192.0.2.1", "a@x", 0));
	cr_assert(!take(r, "192.0.2.1", "a@x", 333333333));
	cr_assert(take(r, "192.0.2.1", "a@x", 333333334));
	fault_rate_free(r);

	/* one per period */
	r = mkrate("1/m,per=all");
	cr_assert(take(r, "192.0.2.1", "a@x", 0));
	cr_assert(!take(r, "192.0.2.1", "a@x", 60 * S - 1));
	cr_assert(take(r, "192.0.2.1", "a@x", 60 * S));
	fault_rate_free(r);
}

Test(rate, per_client_and_sender)
{
	struct fault_rate *r = mkrate("5/s");
	struct fault_rate_stats st;

	for (int i = 0; i < 5; i++)
		cr_assert(take(r, "192.0.2.1", "a@x", 0));
	cr_assert(!take(r, "192.0.2.1", "b@x", 0), "per=client: the sender does not matter");
	cr_assert(!take(r, "::ffff:192.0.2.1", "a@x", 0));
	for (int i = 0; i < 5; i++)
		cr_assert(take(r, "192.0.2.2", "a@x", 0), "another client has its own bucket");
	cr_assert(!take(r, "192.0.2.2", "a@x", 0));
	cr_assert(take(r, "192.0.2.1", "a@x", 200 * MS));
	fault_rate_stats(r, &st);
	cr_assert_eq(st.keys, 2);
	cr_assert_eq(st.limited, 3);
	fault_rate_free(r);

	r = mkrate("2/s,per=sender");
	cr_assert(take(r, "192.0.2.1", "a@x", 0));
	cr_assert(take(r, "192.0.2.2", "A@X", 0));
	cr_assert(!take(r, "192.0.2.3", "a@x", 0), "per=sender: one bucket for a@x, any case");
	cr_assert(take(r, "192.0.2.1", "b@x", 0));
	cr_assert(take(r, "192.0.2.1", "", 0));
	cr_assert(take(r, "192.0.2.1", "", 0));
	cr_assert(!take(r, "192.0.2.1", "", 0), "the null sender is one sender");
	fault_rate_free(r);

	r = mkrate("2/s,per=all");
	cr_assert(take(r, "192.0.2.1", "a@x", 0));
	cr_assert(take(r, "192.0.2.2", "b@x", 0));
	cr_assert(!take(r, "192.0.2.3", "c@x", 0), "per=all: one bucket");
	fault_rate_free(r);
}

Test(rate, forgotten_bucket_is_full)
{
	struct fault_rate_cfg cfg;
	struct fault_rate *r;
	struct fault_rate_stats st;

	cr_assert_eq(fault_rate_parse("1/h", &cfg, NULL, 0), 0);
	cfg.keys = 2;
	cr_assert_eq(fault_rate_new(&cfg, &r), 0);
	cr_assert(take(r, "192.0.2.1", "", 0));
	cr_assert(!take(r, "192.0.2.1", "", 1));
	cr_assert(take(r, "192.0.2.2", "", 2));
	cr_assert(take(r, "192.0.2.3", "", 3)); /* evicts .1 */
	cr_assert(take(r, "192.0.2.1", "", 4), "an evicted bucket starts full again");
	fault_rate_stats(r, &st);
	cr_assert_eq(st.keys, 2);
	cr_assert_eq(st.evicted, 2);
	fault_rate_free(r);

	cfg.keys = 0;
	cr_assert_eq(fault_rate_new(&cfg, &r), -EINVAL);
	cfg.keys = 2;
	cfg.n = 0;
	cr_assert_eq(fault_rate_new(&cfg, &r), -EINVAL);
}

Test(rate, reply)
{
	struct fault_rate *r = mkrate("1/s");
	size_t n;
	char err[160];

	cr_assert_str_eq(fault_rate_reply(r, &n),
	                 "451 4.7.1 Rate limit exceeded, try again later\r\n");
	cr_assert_eq(fault_rate_set_reply(r, "421 4.7.0 Slow down\nor else", err, sizeof(err)), 0);
	cr_assert_str_eq(fault_rate_reply(r, &n), "421-4.7.0 Slow down\r\n421 4.7.0 or else\r\n");
	cr_assert_eq(n, strlen("421-4.7.0 Slow down\r\n421 4.7.0 or else\r\n"));
	cr_assert_eq(fault_rate_set_reply(r, "99 x", err, sizeof(err)), -EINVAL);
	cr_assert_not_null(strstr(err, "three-digit"));
	cr_assert_str_eq(fault_rate_reply(r, &n), "421-4.7.0 Slow down\r\n421 4.7.0 or else\r\n");
	fault_rate_free(r);
}

struct rthr {
	struct fault_rate *r;
	int id;
	bool own_client;
	unsigned ok;
	uint64_t t0, step;
};

static void *rate_thr(void *arg)
{
	struct rthr *t = arg;
	struct fault_ip ip = ipof("192.0.2.0");

	if (t->own_client)
		ip.b[3] = (uint8_t)t->id;
	for (unsigned i = 0; i < 20000; i++)
		t->ok += fault_rate_take(t->r, &ip, "a@x", 3, t->t0 + i * t->step);
	return NULL;
}

static unsigned rate_threads(struct fault_rate *r, bool own, uint64_t step, unsigned *each)
{
	pthread_t th[8];
	struct rthr t[8];
	unsigned ok = 0;

	for (int i = 0; i < 8; i++) {
		t[i] = (struct rthr){.r = r, .id = i, .own_client = own, .step = step};
		cr_assert_eq(pthread_create(&th[i], NULL, rate_thr, &t[i]), 0);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(th[i], NULL);
		ok += t[i].ok;
		if (each)
			each[i] = t[i].ok;
	}
	return ok;
}

Test(rate, concurrent_exact)
{
	/* time stands still: exactly the burst goes through, however many
	 * threads race for it (CAS for per=all, shard locks otherwise) */
	struct fault_rate *r = mkrate("1000/s,per=all");
	struct fault_rate_stats st;
	cr_assert_eq(rate_threads(r, false, 0, NULL), 1000);
	fault_rate_stats(r, &st);
	cr_assert_eq(st.limited, 8 * 20000 - 1000);
	fault_rate_free(r);

	r = mkrate("1000/s,per=client");
	cr_assert_eq(rate_threads(r, false, 0, NULL), 1000);
	fault_rate_free(r);

	unsigned each[8];
	r = mkrate("1000/s,per=client");
	cr_assert_eq(rate_threads(r, true, 0, each), 8000);
	for (int i = 0; i < 8; i++)
		cr_assert_eq(each[i], 1000, "client %d", i);
	fault_rate_free(r);

	/* time moving (each thread's clock runs 0..20 s): never more than the
	 * burst plus the refill over the span */
	r = mkrate("1000/s,per=all");
	unsigned ok = rate_threads(r, false, MS, NULL);
	cr_assert_leq(ok, 1000 + 20000);
	cr_assert_geq(ok, 20000 - 1000);
	fault_rate_free(r);
}

/*
 * Connections per address
 */

Test(connlimit, count_and_limit)
{
	struct fault_connlimit *c;
	struct fault_ip a = ipof("192.0.2.1"), b = ipof("2001:db8::1"),
	                m = ipof("::ffff:192.0.2.1");

	cr_assert_eq(fault_connlimit_new(0, 10, &c), -EINVAL);
	cr_assert_eq(fault_connlimit_new(2, 0, &c), -EINVAL);
	cr_assert_eq(fault_connlimit_new(2, 10, &c), 0);
	cr_assert_eq(fault_connlimit_inc(c, &a), FAULT_CONN_OK);
	cr_assert_eq(fault_connlimit_inc(c, &m), FAULT_CONN_OK, "mapped IPv4 is the same client");
	cr_assert_eq(fault_connlimit_inc(c, &a), FAULT_CONN_LIMIT);
	cr_assert_eq(fault_connlimit_count(c, &a), 2);
	cr_assert_eq(fault_connlimit_inc(c, &b), FAULT_CONN_OK);
	cr_assert_eq(fault_connlimit_count(c, &b), 1);
	fault_connlimit_dec(c, &a);
	cr_assert_eq(fault_connlimit_count(c, &a), 1);
	cr_assert_eq(fault_connlimit_inc(c, &a), FAULT_CONN_OK);
	cr_assert_eq(fault_connlimit_refused(c), 1);
	fault_connlimit_dec(c, &a);
	fault_connlimit_dec(c, &a);
	fault_connlimit_dec(c, &b);
	cr_assert_eq(fault_connlimit_count(c, &a), 0);
	fault_connlimit_dec(c, &a); /* unknown: ignored */
	fault_connlimit_free(c);
	fault_connlimit_free(NULL);
}

Test(connlimit, full_table_never_loses_counts)
{
	struct fault_connlimit *c;
	struct fault_ip a = ipof("192.0.2.1"), b = ipof("192.0.2.2"), x = ipof("192.0.2.3");

	cr_assert_eq(fault_connlimit_new(5, 2, &c), 0);
	cr_assert_eq(fault_connlimit_inc(c, &a), FAULT_CONN_OK);
	cr_assert_eq(fault_connlimit_inc(c, &b), FAULT_CONN_OK);
	cr_assert_eq(fault_connlimit_inc(c, &x), FAULT_CONN_UNTRACKED);
	cr_assert_eq(fault_connlimit_inc(c, &a), FAULT_CONN_OK, "known addresses still count");
	fault_connlimit_dec(c, &b);
	cr_assert_eq(fault_connlimit_inc(c, &x), FAULT_CONN_OK, "room again");
	cr_assert_eq(fault_connlimit_count(c, &a), 2);
	fault_connlimit_free(c);
}

/* no cr_assert in these threads: Criterion's asserts unwind the test's
 * own thread; problems are counted and checked after the join */
struct cthr {
	struct fault_connlimit *c;
	int id;
	unsigned refused, over, odd;
};

static void *conn_thr(void *arg)
{
	struct cthr *t = arg;
	struct fault_ip ip = ipof("192.0.2.0");

	for (unsigned i = 0; i < 20000; i++) {
		ip.b[3] = (uint8_t)((i + (unsigned)t->id) % 3);
		enum fault_conn v = fault_connlimit_inc(t->c, &ip);
		if (v == FAULT_CONN_OK) {
			t->over += fault_connlimit_count(t->c, &ip) > 4;
			fault_connlimit_dec(t->c, &ip);
		} else {
			t->odd += v != FAULT_CONN_LIMIT;
			t->refused++;
		}
	}
	return NULL;
}

Test(connlimit, concurrent)
{
	struct fault_connlimit *c;
	pthread_t th[8];
	struct cthr t[8];
	uint64_t refused = 0;

	cr_assert_eq(fault_connlimit_new(4, 64, &c), 0);
	for (int i = 0; i < 8; i++) {
		t[i] = (struct cthr){.c = c, .id = i};
		cr_assert_eq(pthread_create(&th[i], NULL, conn_thr, &t[i]), 0);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(th[i], NULL);
		refused += t[i].refused;
		cr_assert_eq(t[i].over, 0, "more than the limit counted");
		cr_assert_eq(t[i].odd, 0, "untracked with room in the table");
	}
	cr_assert_eq(fault_connlimit_refused(c), refused);
	for (int k = 0; k < 3; k++) {
		struct fault_ip ip = ipof("192.0.2.0");
		ip.b[3] = (uint8_t)k;
		cr_assert_eq(fault_connlimit_count(c, &ip), 0);
	}
	fault_connlimit_free(c);
}

/*
 * Order of decisions: rules, address faults, rate limit, greylisting
 */

Test(policy, decision_order)
{
	struct fault_plan *p = fault_plan_new(0);
	struct fault_rate *r = mkrate("2/s,per=all");
	struct fault_greylist *g = mkgrey(60 * S, 0, 0);
	struct fault_ip ip = ipof("192.0.2.1");
	struct fault_decision d;
	char err[256];
	const char *rule = "mail from=busy@* reply='452 4.3.1 Busy'";

	cr_assert_eq(fault_plan_add(p, rule, strlen(rule), err, sizeof(err)), 0, "%s", err);
	fault_plan_set_address_faults(p, true);
	fault_plan_set_rate(p, r);
	fault_plan_set_greylist(p, g);
	cr_assert(fault_plan_has(p, FAULT_ST_MAIL));
	cr_assert(fault_plan_has(p, FAULT_ST_RCPT));

	struct fault_ctx c = {.client = &ip, .from = "busy@x", .from_len = 6, .now_ns = 0};
	/* a rule that fires takes no token */
	cr_assert(fault_decide(p, FAULT_ST_MAIL, &c, &d));
	cr_assert_eq(d.src, FAULT_SRC_RULE);
	/* neither does an address fault */
	c.from = "reply-451@x";
	c.from_len = 11;
	cr_assert(fault_decide(p, FAULT_ST_MAIL, &c, &d));
	cr_assert_eq(d.src, FAULT_SRC_ADDRESS);
	/* ordinary MAILs: two tokens, then the limit */
	c.from = "alice@x";
	c.from_len = 7;
	cr_assert(!fault_decide(p, FAULT_ST_MAIL, &c, &d));
	cr_assert(!fault_decide(p, FAULT_ST_MAIL, &c, &d));
	cr_assert(fault_decide(p, FAULT_ST_MAIL, &c, &d));
	cr_assert_eq(d.src, FAULT_SRC_RATE);
	cr_assert_eq(d.act, FAULT_ACT_REPLY);
	cr_assert_eq(d.code, 451);
	cr_assert(!d.close);
	cr_assert_eq(
	    memcmp(d.reply, "451 4.7.1 Rate limit exceeded, try again later\r\n", d.reply_len), 0);
	/* greylisting at RCPT */
	c.to = "bob@y";
	c.to_len = 5;
	cr_assert(fault_decide(p, FAULT_ST_RCPT, &c, &d));
	cr_assert_eq(d.src, FAULT_SRC_GREYLIST);
	cr_assert_eq(d.code, 451);
	cr_assert_eq(memcmp(d.reply, "451 4.7.1 Greylisted, try again in 1m\r\n", d.reply_len), 0);
	c.now_ns = 30 * S;
	cr_assert(fault_decide(p, FAULT_ST_RCPT, &c, &d));
	c.now_ns = 60 * S;
	cr_assert(!fault_decide(p, FAULT_ST_RCPT, &c, &d), "retried after the delay: passes");
	/* an address fault at RCPT comes before greylisting */
	c.to = "drop@y";
	c.to_len = 6;
	cr_assert(fault_decide(p, FAULT_ST_RCPT, &c, &d));
	cr_assert_eq(d.src, FAULT_SRC_ADDRESS);
	/* no MAIL FROM known: greylisting cannot ask */
	c.to = "carol@y";
	c.to_len = 7;
	c.from = NULL;
	cr_assert(!fault_decide(p, FAULT_ST_RCPT, &c, &d));
	/* counters: rules + address faults in the plan, the rest in the policies */
	cr_assert_eq(fault_plan_injected(p), 3);
	struct fault_rate_stats rs;
	fault_rate_stats(r, &rs);
	cr_assert_eq(rs.limited, 1);
	struct fault_greylist_stats gs;
	fault_greylist_stats(g, &gs);
	cr_assert_eq(gs.first, 1);
	cr_assert_eq(gs.early, 1);
	cr_assert_eq(gs.passed, 1);

	fault_plan_set_rate(p, NULL);
	fault_plan_set_greylist(p, NULL);
	fault_plan_set_address_faults(p, false);
	cr_assert(!fault_plan_has(p, FAULT_ST_RCPT));
	cr_assert(fault_plan_has(p, FAULT_ST_MAIL), "the rule remains");
	fault_plan_free(p);
	fault_rate_free(r);
	fault_greylist_free(g);
}
