/*
 * fault.c - the fault plan: rules in order, per-stage index, exact global
 * schedules, seeded chance, and the "what now?" decision (see fault.h)
 *
 * Hot path.  fault_plan_has() is one load and one bit test, so a session
 * with no rule for its stage pays one predictable branch.  Otherwise only
 * the rules that name the stage are visited (per-stage index lists built at
 * setup); a rule whose MATCHes and window hold costs one relaxed atomic
 * fetch_add on its own cache line, which numbers the match globally.  The
 * schedule then decides from that number alone:
 *
 *   after=A  skip matches 1..A; the schedule below counts n = m - A
 *   first=F  n <= F
 *   every=E  n % E == 0        (matches E, 2E, ...)
 *   prob=P   hash(seed, rule index, m) < P
 *   limit=L  fewer than L injections so far (a CAS loop, exact)
 *
 * Because the number is unique and gap-free across threads, every=10 over
 * 100 matches injects exactly 10 on any number of workers, and prob= picks
 * the same match numbers in every run with the same seed.  No locks: the
 * plan itself is read-only after setup.
 */
#include "sink/fault.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sink/fault_policy.h"

/* Stages at which an address can name a fault (fault_addr.c). */
#define ADDR_MASK                                                                                  \
	(FAULT_STAGE_BIT(FAULT_ST_MAIL) | FAULT_STAGE_BIT(FAULT_ST_RCPT) |                         \
	 FAULT_STAGE_BIT(FAULT_ST_DATA) | FAULT_STAGE_BIT(FAULT_ST_EOD) |                          \
	 FAULT_STAGE_BIT(FAULT_ST_BDAT) | FAULT_STAGE_BIT(FAULT_ST_BDAT_LAST))

struct fault_plan *fault_plan_new(uint64_t seed)
{
	size_t sz = (sizeof(struct fault_plan) + 63) & ~(size_t)63;
	struct fault_plan *p = aligned_alloc(64, sz);

	if (!p)
		return NULL;
	memset(p, 0, sz);
	p->seed = seed;
	p->addr_ctr = aligned_alloc(64, sizeof(*p->addr_ctr));
	if (!p->addr_ctr) {
		free(p);
		return NULL;
	}
	atomic_init(&p->addr_ctr->matched, 0);
	atomic_init(&p->addr_ctr->injected, 0);
	return p;
}

void fault_plan_free(struct fault_plan *p)
{
	if (!p)
		return;
	for (uint32_t i = 0; i < p->nrules; i++)
		fault_rule_free(p->rules[i]);
	free(p->rules);
	free(p->ctr);
	free(p->idx);
	free(p->addr_ctr);
	free(p);
}

/* update_mask - what may act at each stage, for fault_plan_has(). */
static void update_mask(struct fault_plan *p)
{
	uint32_t m = 0;

	for (uint32_t i = 0; i < p->nrules; i++)
		m |= p->rules[i]->stage_mask;
	if (p->address_faults)
		m |= ADDR_MASK;
	if (p->rate)
		m |= FAULT_STAGE_BIT(FAULT_ST_MAIL);
	if (p->greylist)
		m |= FAULT_STAGE_BIT(FAULT_ST_RCPT);
	p->stage_mask = m;
}

/* reindex - per-stage lists of rule indexes, in rule order ("the first
 * that fires wins" needs the order kept within each list). */
static int reindex(struct fault_plan *p)
{
	size_t n = 0;
	uint32_t *idx;

	for (uint32_t i = 0; i < p->nrules; i++)
		n += (size_t)__builtin_popcount(p->rules[i]->stage_mask);
	idx = malloc((n ? n : 1) * sizeof(*idx));
	if (!idx)
		return -ENOMEM;
	n = 0;
	for (unsigned st = 0; st < FAULT_ST_COUNT; st++) {
		p->off[st] = (uint32_t)n;
		for (uint32_t i = 0; i < p->nrules; i++)
			if (p->rules[i]->stage_mask & FAULT_STAGE_BIT(st))
				idx[n++] = i;
	}
	p->off[FAULT_ST_COUNT] = (uint32_t)n;
	free(p->idx);
	p->idx = idx;
	return 0;
}

int fault_plan_add(struct fault_plan *p, const char *rule, size_t len, char *err, size_t errlen)
{
	struct fault_rule *r;
	int rc = fault_rule_parse(rule, len, &r, err, errlen);

	if (rc) {
		if (rc == -ENOMEM && err && errlen)
			snprintf(err, errlen, "out of memory");
		return rc;
	}
	if (p->nrules == p->cap) {
		uint32_t cap = p->cap ? p->cap * 2 : 8;
		struct fault_rule **rules = realloc(p->rules, cap * sizeof(*rules));
		if (rules)
			p->rules = rules;
		/* counters live on their own cache lines: aligned, so no realloc */
		struct fault_rule_ctr *ctr = aligned_alloc(64, cap * sizeof(*ctr));
		if (!rules || !ctr) {
			free(ctr);
			fault_rule_free(r);
			if (err && errlen)
				snprintf(err, errlen, "out of memory");
			return -ENOMEM;
		}
		for (uint32_t i = 0; i < cap; i++) {
			uint64_t m = i < p->nrules ? atomic_load(&p->ctr[i].matched) : 0;
			uint64_t j = i < p->nrules ? atomic_load(&p->ctr[i].injected) : 0;
			atomic_init(&ctr[i].matched, m);
			atomic_init(&ctr[i].injected, j);
		}
		free(p->ctr);
		p->ctr = ctr;
		p->cap = cap;
	}
	p->rules[p->nrules++] = r;
	if (reindex(p)) {
		fault_rule_free(p->rules[--p->nrules]);
		if (err && errlen)
			snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	update_mask(p);
	return 0;
}

int fault_plan_add_file(struct fault_plan *p, const char *text, size_t len, char *err,
                        size_t errlen)
{
	size_t i = 0;
	unsigned line = 0;

	while (i < len) {
		const char *nl = memchr(text + i, '\n', len - i);
		size_t e = nl ? (size_t)(nl - text) : len, le = e, j = i;
		line++;
		if (le > i && text[le - 1] == '\r')
			le--;
		while (j < le && (text[j] == ' ' || text[j] == '\t'))
			j++;
		if (j < le && text[j] != '#') {
			char e2[320];
			int rc = fault_plan_add(p, text + i, le - i, e2, sizeof(e2));
			if (rc) {
				if (err && errlen)
					snprintf(err, errlen, "line %u: %s", line, e2);
				return rc;
			}
		}
		i = e + 1;
	}
	return 0;
}

void fault_plan_set_address_faults(struct fault_plan *p, bool on)
{
	p->address_faults = on;
	update_mask(p);
}

void fault_plan_set_greylist(struct fault_plan *p, struct fault_greylist *g)
{
	p->greylist = g;
	update_mask(p);
}

void fault_plan_set_rate(struct fault_plan *p, struct fault_rate *r)
{
	p->rate = r;
	update_mask(p);
}

void fault_plan_counts(const struct fault_plan *p, uint32_t i, uint64_t *matched,
                       uint64_t *injected)
{
	*matched = atomic_load_explicit(&p->ctr[i].matched, memory_order_relaxed);
	*injected = atomic_load_explicit(&p->ctr[i].injected, memory_order_relaxed);
}

uint64_t fault_plan_injected(const struct fault_plan *p)
{
	uint64_t n = 0;

	if (!p)
		return 0;
	for (uint32_t i = 0; i < p->nrules; i++)
		n += atomic_load_explicit(&p->ctr[i].injected, memory_order_relaxed);
	return n + atomic_load_explicit(&p->addr_ctr->injected, memory_order_relaxed);
}

/* mix64 - splitmix64's finaliser (Steele, Lea, Flood 2014): a bijection
 * with full avalanche, so consecutive match numbers give independent-
 * looking draws. */
static inline uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x;
}

/* chance - prob= for match m of rule i: a pure function of (seed, i, m),
 * so the outcome does not depend on which thread got which number. */
static inline bool chance(uint64_t seed, uint32_t i, uint64_t m, uint32_t ppb)
{
	uint64_t h = mix64(mix64(seed ^ (0x9e3779b97f4a7c15ull * ((uint64_t)i + 1))) + m);
	/* h scaled to [0, 10^9): exact, no modulo bias worth the name */
	return (uint64_t)(((__uint128_t)h * 1000000000u) >> 64) < ppb;
}

static bool rule_matches(const struct fault_rule *r, const struct fault_ctx *c)
{
	uint32_t h = r->have;

	if ((h & FAULT_HAVE_WINDOW) && (c->now_ns < r->win_from_ns || c->now_ns >= r->win_to_ns))
		return false;
	if ((h & FAULT_HAVE_CLIENT) && !fault_cidr_match(&r->client, c->client))
		return false;
	if ((h & FAULT_HAVE_HELO) &&
	    (!c->helo || !fault_glob_match(r->helo, r->helo_len, c->helo, c->helo_len)))
		return false;
	if ((h & FAULT_HAVE_FROM) &&
	    (!c->from || !fault_glob_match(r->from, r->from_len, c->from, c->from_len)))
		return false;
	if ((h & FAULT_HAVE_TO) &&
	    (!c->to || !fault_glob_match(r->to, r->to_len, c->to, c->to_len)))
		return false;
	if ((h & FAULT_HAVE_SIZE) && (!c->has_size || c->size <= r->size_gt))
		return false;
	return true;
}

/* rule_fires - count the match, then ask the schedule (see the top). */
static bool rule_fires(const struct fault_plan *p, uint32_t i, const struct fault_rule *r,
                       uint64_t *match)
{
	struct fault_rule_ctr *ctr = &p->ctr[i];
	uint64_t m = atomic_fetch_add_explicit(&ctr->matched, 1, memory_order_relaxed) + 1, n = m;
	uint32_t h = r->have;

	if (h & FAULT_HAVE_AFTER) {
		if (m <= r->after)
			return false;
		n = m - r->after;
	}
	if ((h & FAULT_HAVE_FIRST) && n > r->first)
		return false;
	if ((h & FAULT_HAVE_EVERY) && n % r->every)
		return false;
	if ((h & FAULT_HAVE_PROB) && !chance(p->seed, i, m, r->prob_ppb))
		return false;
	if (h & FAULT_HAVE_LIMIT) {
		uint64_t inj = atomic_load_explicit(&ctr->injected, memory_order_relaxed);
		do {
			if (inj >= r->limit)
				return false;
		} while (!atomic_compare_exchange_weak_explicit(
		    &ctr->injected, &inj, inj + 1, memory_order_relaxed, memory_order_relaxed));
	} else {
		atomic_fetch_add_explicit(&ctr->injected, 1, memory_order_relaxed);
	}
	*match = m;
	return true;
}

static void clear(struct fault_decision *d, uint8_t src)
{
	d->src = src;
	d->act = FAULT_ACT_NONE;
	d->close = 0;
	d->code = 0;
	d->rule = 0;
	d->match = 0;
	d->delay_ns = 0;
	d->throttle_bps = 0;
	d->reply = NULL;
	d->reply_len = 0;
}

/* reply_from - a fixed reply (wire bytes) as the decision. */
static void reply_from(struct fault_decision *d, uint8_t src, const char *wire, size_t len)
{
	clear(d, src);
	d->act = FAULT_ACT_REPLY;
	d->reply = wire;
	d->reply_len = len;
	d->code = (uint16_t)((wire[0] - '0') * 100 + (wire[1] - '0') * 10 + (wire[2] - '0'));
	d->close = d->code == 421;
}

/* addr_stage_hit - an address fault for stage fs acts at query stage st. */
static bool addr_stage_hit(unsigned fs, enum fault_stage st)
{
	return fs == (unsigned)st ||
	       (st == FAULT_ST_BDAT_LAST && (fs == FAULT_ST_BDAT || fs == FAULT_ST_EOD));
}

static bool addr_decide(const struct fault_plan *p, enum fault_stage st, const struct fault_ctx *c,
                        struct fault_decision *d)
{
	struct fault_addr_fault f;

	/* The sender first: it may name any later stage of its transaction;
	 * a recipient names only its own RCPT. */
	if (!(c->from && fault_addr_parse(c->from, c->from_len, true, &f) &&
	      addr_stage_hit(f.stage, st)) &&
	    !(st == FAULT_ST_RCPT && c->to && fault_addr_parse(c->to, c->to_len, false, &f)))
		return false;
	clear(d, FAULT_SRC_ADDRESS);
	if (f.act == FAULT_ACT_REPLY) {
		size_t n = fault_addr_reply(&f, d->buf, sizeof(d->buf));
		reply_from(d, FAULT_SRC_ADDRESS, d->buf, n);
	}
	d->act = f.act;
	d->delay_ns = f.delay_ns;
	atomic_fetch_add_explicit(&p->addr_ctr->injected, 1, memory_order_relaxed);
	return true;
}

bool fault_decide_slow(const struct fault_plan *p, enum fault_stage st, const struct fault_ctx *c,
                       struct fault_decision *d)
{
	/* 1. rules, in the order given: the first that fires wins */
	for (uint32_t k = p->off[st], e = p->off[st + 1]; k < e; k++) {
		uint32_t i = p->idx[k];
		const struct fault_rule *r = p->rules[i];
		uint64_t m;
		if (!rule_matches(r, c) || !rule_fires(p, i, r, &m))
			continue;
		if (r->act == FAULT_ACT_REPLY)
			reply_from(d, FAULT_SRC_RULE, r->wire, r->wire_len);
		else
			clear(d, FAULT_SRC_RULE);
		d->act = r->act;
		d->rule = i;
		d->match = m;
		d->delay_ns = r->delay_ns;
		d->throttle_bps = r->throttle_bps;
		return true;
	}
	/* 2. address-encoded faults */
	if (p->address_faults && (ADDR_MASK >> st & 1u) && addr_decide(p, st, c, d))
		return true;
	/* 3. the rate limit, at MAIL */
	if (p->rate && st == FAULT_ST_MAIL &&
	    !fault_rate_take(p->rate, c->client, c->from, c->from_len, c->now_ns)) {
		size_t n;
		const char *w = fault_rate_reply(p->rate, &n);
		reply_from(d, FAULT_SRC_RATE, w, n);
		return true;
	}
	/* 4. greylisting, at RCPT, as Harris 2003 and RFC 6647 describe it */
	if (p->greylist && st == FAULT_ST_RCPT && c->from && c->to &&
	    fault_greylist_check(p->greylist, c->client, c->from, c->from_len, c->to, c->to_len,
	                         c->now_ns) != FAULT_GREY_PASS) {
		size_t n;
		const char *w = fault_greylist_reply(p->greylist, &n);
		reply_from(d, FAULT_SRC_GREYLIST, w, n);
		return true;
	}
	return false;
}
