/*
 * fault_policy.c - greylisting, rate limit and per-address connection
 * counts over one bounded, sharded LRU table (see fault_policy.h)
 *
 * The table.  Entries are 40 octets: a 64-bit key hash (the key itself is
 * not kept: at 2^-64 per pair, a collision is far rarer than a lost packet),
 * two 64-bit values, a hash-chain link and LRU links (32-bit indexes).
 * Every shard allocates its entries, bucket heads and free list once, at
 * setup; a lookup walks one short chain, an insert into a full shard
 * reuses its least recently seen entry.  So each operation is O(1)
 * expected, allocates nothing and holds one shard's mutex for a few dozen
 * instructions.  Sharding instead of a global lock: workers seldom hit the
 * same shard at the same time, and each shard sits on its own cache lines.
 * A lock-free table was not worth it here - these policies are opt-in, act
 * once per RCPT or MAIL, and a mutex makes eviction simple and exact.
 */
#include "sink/fault_policy.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sink/units.h"

#define NIL UINT32_MAX

struct ent {
	uint64_t key;
	uint64_t a, b;       /* greylist: first/last seen; rate: TAT; conns: count */
	uint32_t hnext;      /* bucket chain */
	uint32_t prev, next; /* LRU list, head = most recently seen */
	uint32_t flags;      /* greylist: passed */
};

struct shard {
	pthread_mutex_t mu;
	uint32_t *heads;
	struct ent *ents;
	uint32_t mask, cap, used, free_head, lru_head, lru_tail, n;
	uint64_t st[6]; /* policy counters, under mu */
} __attribute__((aligned(64)));

struct tab {
	uint32_t nshards;
	struct shard *sh;
};

/* tab_init - max entries over 1..64 shards of at least 1024 each; the
 * per-shard caps add up to max exactly. */
static int tab_init(struct tab *t, uint32_t max)
{
	uint32_t ns = 1;

	if (!max || max > (1u << 30))
		return -EINVAL;
	while (ns < 64 && max / (ns * 2) >= 1024)
		ns *= 2;
	t->nshards = ns;
	t->sh = aligned_alloc(64, ns * sizeof(*t->sh));
	if (!t->sh)
		return -ENOMEM;
	memset(t->sh, 0, ns * sizeof(*t->sh));
	for (uint32_t i = 0; i < ns; i++) {
		struct shard *s = &t->sh[i];
		uint32_t cap = max / ns + (i < max % ns), nb = 1;
		while (nb < cap)
			nb *= 2;
		pthread_mutex_init(&s->mu, NULL);
		s->cap = cap;
		s->mask = nb - 1;
		s->free_head = s->lru_head = s->lru_tail = NIL;
		s->heads = malloc(nb * sizeof(*s->heads));
		s->ents = malloc(cap * sizeof(*s->ents));
		if (!s->heads || !s->ents) {
			t->nshards = i + 1;
			return -ENOMEM;
		}
		memset(s->heads, 0xff, nb * sizeof(*s->heads));
	}
	return 0;
}

static void tab_free(struct tab *t)
{
	if (!t->sh)
		return;
	for (uint32_t i = 0; i < t->nshards; i++) {
		pthread_mutex_destroy(&t->sh[i].mu);
		free(t->sh[i].heads);
		free(t->sh[i].ents);
	}
	free(t->sh);
	t->sh = NULL;
}

/* The shard takes hash bits the bucket index does not use. */
static inline struct shard *tab_shard(struct tab *t, uint64_t key)
{
	return &t->sh[(key >> 40) & (t->nshards - 1)];
}

static uint32_t tab_find(struct shard *s, uint64_t key)
{
	uint32_t i = s->heads[key & s->mask];

	while (i != NIL && s->ents[i].key != key)
		i = s->ents[i].hnext;
	return i;
}

static void lru_unlink(struct shard *s, uint32_t i)
{
	struct ent *e = &s->ents[i];

	if (e->prev != NIL)
		s->ents[e->prev].next = e->next;
	else
		s->lru_head = e->next;
	if (e->next != NIL)
		s->ents[e->next].prev = e->prev;
	else
		s->lru_tail = e->prev;
}

static void lru_front(struct shard *s, uint32_t i)
{
	struct ent *e = &s->ents[i];

	e->prev = NIL;
	e->next = s->lru_head;
	if (s->lru_head != NIL)
		s->ents[s->lru_head].prev = i;
	s->lru_head = i;
	if (s->lru_tail == NIL)
		s->lru_tail = i;
}

/* tab_touch - i was just seen. */
static void tab_touch(struct shard *s, uint32_t i)
{
	if (s->lru_head != i) {
		lru_unlink(s, i);
		lru_front(s, i);
	}
}

static void tab_remove(struct shard *s, uint32_t i)
{
	uint32_t *pp = &s->heads[s->ents[i].key & s->mask];

	while (*pp != i)
		pp = &s->ents[*pp].hnext;
	*pp = s->ents[i].hnext;
	lru_unlink(s, i);
	s->ents[i].hnext = s->free_head;
	s->free_head = i;
	s->n--;
}

/* tab_insert - a zeroed entry for key (not present).  When the shard is
 * full, its least recently seen entry makes room if may_evict (*evicted
 * set); otherwise NIL. */
static uint32_t tab_insert(struct shard *s, uint64_t key, bool may_evict, bool *evicted)
{
	uint32_t i;

	*evicted = false;
	if (s->free_head == NIL && s->used == s->cap) {
		if (!may_evict)
			return NIL;
		tab_remove(s, s->lru_tail);
		*evicted = true;
	}
	if (s->free_head != NIL) {
		i = s->free_head;
		s->free_head = s->ents[i].hnext;
	} else {
		i = s->used++;
	}
	struct ent *e = &s->ents[i];
	memset(e, 0, sizeof(*e));
	e->key = key;
	e->hnext = s->heads[key & s->mask];
	s->heads[key & s->mask] = i;
	lru_front(s, i);
	s->n++;
	return i;
}

/*
 * Keys: FNV-1a over the fields (strings folded to lower case, as
 * greylisting implementations compare addresses), finished with
 * splitmix64's mixer so that both the low (bucket) and middle (shard) bits
 * are uniform.
 */
struct hash {
	uint64_t h;
};

static void h_bytes(struct hash *h, const void *p, size_t n, bool fold)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < n; i++) {
		unsigned char c = b[i];
		if (fold && c >= 'A' && c <= 'Z')
			c = (unsigned char)(c - 'A' + 'a');
		h->h = (h->h ^ c) * 0x100000001b3ull;
	}
}

static void h_ip(struct hash *h, const struct fault_ip *ip)
{
	uint8_t fam = ip ? ip->family : 0;

	h_bytes(h, &fam, 1, false);
	if (fam)
		h_bytes(h, ip->b, fam == 4 ? 4 : 16, false);
}

static uint64_t h_end(struct hash *h)
{
	uint64_t x = h->h;

	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x;
}

#define H_INIT                                                                                     \
	{                                                                                          \
		0xcbf29ce484222325ull                                                              \
	}

/*
 * Greylisting
 */

enum { GS_FIRST, GS_EARLY, GS_PASSED, GS_EVICTED, GS_EXPIRED };

struct fault_greylist {
	struct fault_greylist_cfg cfg;
	struct tab tab;
	char reply[96];
	size_t reply_len;
};

void fault_greylist_cfg_defaults(struct fault_greylist_cfg *cfg, uint64_t delay_ns)
{
	cfg->delay_ns = delay_ns;
	cfg->expiry_ns = FAULT_GREYLIST_EXPIRY_DEFAULT;
	cfg->max = FAULT_GREYLIST_MAX_DEFAULT;
}

int fault_greylist_new(const struct fault_greylist_cfg *cfg, struct fault_greylist **out)
{
	struct fault_greylist *g = calloc(1, sizeof(*g));
	char dur[32];
	int rc;

	*out = NULL;
	if (!g)
		return -ENOMEM;
	g->cfg = *cfg;
	rc = tab_init(&g->tab, cfg->max);
	if (rc) {
		tab_free(&g->tab);
		free(g);
		return rc;
	}
	fault_duration_format(cfg->delay_ns, dur, sizeof(dur));
	/* 4.7.1: "delivery not authorized, message refused" is what Postfix
	 * and postgrey use for greylisting (RFC 3463 3.8). */
	g->reply_len = (size_t)snprintf(g->reply, sizeof(g->reply),
	                                "451 4.7.1 Greylisted, try again in %s\r\n", dur);
	*out = g;
	return 0;
}

void fault_greylist_free(struct fault_greylist *g)
{
	if (!g)
		return;
	tab_free(&g->tab);
	free(g);
}

const char *fault_greylist_reply(const struct fault_greylist *g, size_t *len)
{
	*len = g->reply_len;
	return g->reply;
}

/* grey_expired - not seen for longer than the expiry.  A clock reading
 * older than the entry (another worker got there a moment later) is not
 * expiry. */
static bool grey_expired(const struct fault_greylist *g, const struct ent *e, uint64_t now)
{
	return now > e->b && now - e->b > g->cfg.expiry_ns;
}

enum fault_grey fault_greylist_check(struct fault_greylist *g, const struct fault_ip *client,
                                     const char *from, size_t from_len, const char *to,
                                     size_t to_len, uint64_t now_ns)
{
	struct hash h = H_INIT;
	static const uint8_t sep = 0xff;
	enum fault_grey v;
	bool ev;

	h_ip(&h, client);
	h_bytes(&h, &sep, 1, false);
	h_bytes(&h, from, from_len, true);
	h_bytes(&h, &sep, 1, false);
	h_bytes(&h, to, to_len, true);
	uint64_t key = h_end(&h);
	struct shard *s = tab_shard(&g->tab, key);

	pthread_mutex_lock(&s->mu);
	/* Amortised expiry: the least recently seen entry goes if it is
	 * stale, one per call, so expired triplets do not sit in the table
	 * until eviction and the entry count stays honest. */
	if (s->lru_tail != NIL && grey_expired(g, &s->ents[s->lru_tail], now_ns)) {
		tab_remove(s, s->lru_tail);
		s->st[GS_EXPIRED]++;
	}
	uint32_t i = tab_find(s, key);
	if (i != NIL && grey_expired(g, &s->ents[i], now_ns)) {
		tab_remove(s, i);
		s->st[GS_EXPIRED]++;
		i = NIL;
	}
	if (i == NIL) {
		i = tab_insert(s, key, true, &ev);
		s->st[GS_EVICTED] += ev;
		s->ents[i].a = s->ents[i].b = now_ns;
		v = FAULT_GREY_FIRST;
	} else {
		struct ent *e = &s->ents[i];
		if (!e->flags && now_ns >= e->a && now_ns - e->a >= g->cfg.delay_ns)
			e->flags = 1; /* retried late enough: remembered as passed */
		v = e->flags ? FAULT_GREY_PASS : FAULT_GREY_EARLY;
		if (now_ns > e->b)
			e->b = now_ns;
		tab_touch(s, i);
	}
	s->st[v == FAULT_GREY_PASS ? GS_PASSED : v == FAULT_GREY_FIRST ? GS_FIRST : GS_EARLY]++;
	pthread_mutex_unlock(&s->mu);
	return v;
}

void fault_greylist_stats(struct fault_greylist *g, struct fault_greylist_stats *st)
{
	memset(st, 0, sizeof(*st));
	for (uint32_t i = 0; i < g->tab.nshards; i++) {
		struct shard *s = &g->tab.sh[i];
		pthread_mutex_lock(&s->mu);
		st->entries += s->n;
		st->first += s->st[GS_FIRST];
		st->early += s->st[GS_EARLY];
		st->passed += s->st[GS_PASSED];
		st->evicted += s->st[GS_EVICTED];
		st->expired += s->st[GS_EXPIRED];
		pthread_mutex_unlock(&s->mu);
	}
}

/*
 * Rate limit
 */

enum { RS_EVICTED };

struct fault_rate {
	_Alignas(64) _Atomic uint64_t tat; /* per=all: theoretical arrival time */
	_Alignas(64) _Atomic uint64_t limited;
	uint64_t t;   /* emission interval: ceil(per / n) ns */
	uint64_t tau; /* burst tolerance: (n - 1) * t */
	struct fault_rate_cfg cfg;
	struct tab tab; /* per=client / per=sender */
	char reply[FAULT_REPLY_MAX + 1];
	size_t reply_len;
};

int fault_rate_parse(const char *s, struct fault_rate_cfg *cfg, char *err, size_t errlen)
{
	char buf[64];
	const char *slash = strchr(s, '/'), *comma;
	struct fault_rate_cfg c = {0, 0, FAULT_RATE_PER_CLIENT, FAULT_RATE_KEYS_DEFAULT};
	size_t n;

	if (!slash || (size_t)(slash - s) >= sizeof(buf))
		goto bad;
	memcpy(buf, s, (size_t)(slash - s));
	buf[slash - s] = 0;
	if (units_parse_count(buf, &c.n) || !c.n || c.n > 1000000000ull)
		goto bad;
	comma = strchr(slash + 1, ',');
	n = comma ? (size_t)(comma - slash - 1) : strlen(slash + 1);
	if (!n || n + 2 > sizeof(buf))
		goto bad;
	/* "100/s" reads as "100 per 1s" */
	size_t o = 0;
	if (slash[1] < '0' || slash[1] > '9')
		buf[o++] = '1';
	memcpy(buf + o, slash + 1, n);
	buf[o + n] = 0;
	if (units_parse_duration_ns(buf, &c.per_ns) || !c.per_ns ||
	    c.per_ns > 366ull * 24 * 3600 * 1000000000)
		goto bad;
	if (comma) {
		const char *p = comma + 1;
		if (!strcmp(p, "per=client"))
			c.per = FAULT_RATE_PER_CLIENT;
		else if (!strcmp(p, "per=sender"))
			c.per = FAULT_RATE_PER_SENDER;
		else if (!strcmp(p, "per=all"))
			c.per = FAULT_RATE_PER_ALL;
		else {
			if (err && errlen)
				snprintf(err, errlen,
				         "'%s': expected per=client, per=sender or per=all", p);
			return -EINVAL;
		}
	}
	*cfg = c;
	return 0;
bad:
	if (err && errlen)
		snprintf(err, errlen,
		         "'%s': expected N/DUR[,per=client|sender|all], e.g. 100/s or 10/1m "
		         "(N 1..10^9, DUR up to a year)",
		         s);
	return -EINVAL;
}

int fault_rate_new(const struct fault_rate_cfg *cfg, struct fault_rate **out)
{
	struct fault_rate *r;
	int rc;

	*out = NULL;
	if (!cfg->n || !cfg->per_ns || cfg->per > FAULT_RATE_PER_ALL)
		return -EINVAL;
	r = aligned_alloc(64, (sizeof(*r) + 63) & ~(size_t)63);
	if (!r)
		return -ENOMEM;
	memset(r, 0, sizeof(*r));
	r->cfg = *cfg;
	r->t = (cfg->per_ns + cfg->n - 1) / cfg->n;
	r->tau = (cfg->n - 1) * r->t;
	atomic_init(&r->tat, 0); /* in the past: the bucket starts full */
	atomic_init(&r->limited, 0);
	if (cfg->per != FAULT_RATE_PER_ALL) {
		rc = tab_init(&r->tab, cfg->keys);
		if (rc) {
			tab_free(&r->tab);
			free(r);
			return rc;
		}
	}
	static const char def[] = "451 4.7.1 Rate limit exceeded, try again later\r\n";
	memcpy(r->reply, def, sizeof(def));
	r->reply_len = sizeof(def) - 1;
	*out = r;
	return 0;
}

void fault_rate_free(struct fault_rate *r)
{
	if (!r)
		return;
	tab_free(&r->tab);
	free(r);
}

int fault_rate_set_reply(struct fault_rate *r, const char *spec, char *err, size_t errlen)
{
	char wire[FAULT_REPLY_MAX];
	int n = fault_reply_render(spec, strlen(spec), wire, sizeof(wire), err, errlen);

	if (n < 0)
		return n;
	memcpy(r->reply, wire, (size_t)n);
	r->reply[n] = 0;
	r->reply_len = (size_t)n;
	return 0;
}

const char *fault_rate_reply(const struct fault_rate *r, size_t *len)
{
	*len = r->reply_len;
	return r->reply;
}

/* gcra - one arrival at now against theoretical arrival time *tat: allowed
 * when the bucket has a token (tat - now <= tau), and then tat moves one
 * interval on.  max(tat, now) is the bucket's cap: idle time beyond a full
 * bucket is not saved up. */
static inline bool gcra(uint64_t *tat, uint64_t now, uint64_t t, uint64_t tau)
{
	uint64_t base = *tat > now ? *tat : now;

	if (base - now > tau)
		return false;
	*tat = base + t;
	return true;
}

bool fault_rate_take(struct fault_rate *r, const struct fault_ip *client, const char *from,
                     size_t from_len, uint64_t now_ns)
{
	bool ok;

	if (r->cfg.per == FAULT_RATE_PER_ALL) {
		uint64_t old = atomic_load_explicit(&r->tat, memory_order_relaxed), nv;
		do {
			nv = old;
			if (!gcra(&nv, now_ns, r->t, r->tau)) {
				ok = false;
				break;
			}
			ok = true;
		} while (!atomic_compare_exchange_weak_explicit(
		    &r->tat, &old, nv, memory_order_relaxed, memory_order_relaxed));
	} else {
		struct hash h = H_INIT;
		bool ev;
		if (r->cfg.per == FAULT_RATE_PER_CLIENT)
			h_ip(&h, client);
		else
			h_bytes(&h, from ? from : "", from ? from_len : 0, true);
		uint64_t key = h_end(&h);
		struct shard *s = tab_shard(&r->tab, key);
		pthread_mutex_lock(&s->mu);
		uint32_t i = tab_find(s, key);
		if (i == NIL) {
			i = tab_insert(s, key, true, &ev); /* TAT 0: a full bucket */
			s->st[RS_EVICTED] += ev;
		} else {
			tab_touch(s, i);
		}
		ok = gcra(&s->ents[i].a, now_ns, r->t, r->tau);
		pthread_mutex_unlock(&s->mu);
	}
	if (!ok)
		atomic_fetch_add_explicit(&r->limited, 1, memory_order_relaxed);
	return ok;
}

void fault_rate_stats(struct fault_rate *r, struct fault_rate_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->limited = atomic_load_explicit(&r->limited, memory_order_relaxed);
	for (uint32_t i = 0; r->tab.sh && i < r->tab.nshards; i++) {
		struct shard *s = &r->tab.sh[i];
		pthread_mutex_lock(&s->mu);
		st->keys += s->n;
		st->evicted += s->st[RS_EVICTED];
		pthread_mutex_unlock(&s->mu);
	}
}

/*
 * Connections per client address
 */

struct fault_connlimit {
	uint32_t max_per_ip;
	struct tab tab;
	_Alignas(64) _Atomic uint64_t refused;
};

int fault_connlimit_new(uint32_t max_per_ip, uint32_t max_tracked, struct fault_connlimit **out)
{
	struct fault_connlimit *c;
	int rc;

	*out = NULL;
	if (!max_per_ip)
		return -EINVAL;
	c = aligned_alloc(64, (sizeof(*c) + 63) & ~(size_t)63);
	if (!c)
		return -ENOMEM;
	memset(c, 0, sizeof(*c));
	c->max_per_ip = max_per_ip;
	atomic_init(&c->refused, 0);
	rc = tab_init(&c->tab, max_tracked);
	if (rc) {
		tab_free(&c->tab);
		free(c);
		return rc;
	}
	*out = c;
	return 0;
}

void fault_connlimit_free(struct fault_connlimit *c)
{
	if (!c)
		return;
	tab_free(&c->tab);
	free(c);
}

static uint64_t ip_key(const struct fault_ip *ip)
{
	struct hash h = H_INIT;

	h_ip(&h, ip);
	return h_end(&h);
}

enum fault_conn fault_connlimit_inc(struct fault_connlimit *c, const struct fault_ip *client)
{
	uint64_t key = ip_key(client);
	struct shard *s = tab_shard(&c->tab, key);
	enum fault_conn v = FAULT_CONN_OK;
	bool ev;

	pthread_mutex_lock(&s->mu);
	uint32_t i = tab_find(s, key);
	if (i == NIL)
		i = tab_insert(s, key, false, &ev);
	if (i == NIL)
		v = FAULT_CONN_UNTRACKED;
	else if (s->ents[i].a >= c->max_per_ip)
		v = FAULT_CONN_LIMIT;
	else
		s->ents[i].a++;
	pthread_mutex_unlock(&s->mu);
	if (v == FAULT_CONN_LIMIT)
		atomic_fetch_add_explicit(&c->refused, 1, memory_order_relaxed);
	return v;
}

void fault_connlimit_dec(struct fault_connlimit *c, const struct fault_ip *client)
{
	uint64_t key = ip_key(client);
	struct shard *s = tab_shard(&c->tab, key);

	pthread_mutex_lock(&s->mu);
	uint32_t i = tab_find(s, key);
	if (i != NIL && --s->ents[i].a == 0)
		tab_remove(s, i);
	pthread_mutex_unlock(&s->mu);
}

uint32_t fault_connlimit_count(struct fault_connlimit *c, const struct fault_ip *client)
{
	uint64_t key = ip_key(client);
	struct shard *s = tab_shard(&c->tab, key);
	uint32_t n = 0;

	pthread_mutex_lock(&s->mu);
	uint32_t i = tab_find(s, key);
	if (i != NIL)
		n = (uint32_t)s->ents[i].a;
	pthread_mutex_unlock(&s->mu);
	return n;
}

uint64_t fault_connlimit_refused(struct fault_connlimit *c)
{
	return atomic_load_explicit(&c->refused, memory_order_relaxed);
}
