/*
 * fault_policy.h - stateful realism: greylisting, rate limit, connections
 * per client address
 *
 * Pure (time is passed in, no I/O, no threads created) and shared by all
 * workers.  Keyed state lives in fixed-size tables allocated once: sharded
 * by key hash, one small mutex per shard, held for a few dozen instructions
 * and never across I/O.  Without the option, none of this exists and the
 * fault plan's stage mask keeps the session from asking (fault.h).  The
 * un-keyed rate limit (per=all) is one 64-bit word updated by CAS.
 *
 * Eviction is least-recently-seen within a shard; a table smaller than
 * 2048 entries has one shard, so its eviction order is exact, and a bigger
 * one has up to 64 shards of at least 1024 entries whose oldest entries are
 * within a hair of the global oldest (keys hash uniformly).
 */
#ifndef SINK_FAULT_POLICY_H
#define SINK_FAULT_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sink/fault.h"

/*
 * Greylisting (--greylist DUR, --greylist-expiry, --greylist-max), after
 * Evan Harris, "The Next Step in the Spam Control War: Greylisting" (2003),
 * and RFC 6647: the first delivery attempt of a (client address, MAIL FROM,
 * RCPT TO) triplet is refused with a 4xx; a retry at least DUR later
 * passes, and the triplet then passes until it has not been seen for the
 * expiry time.
 */
#define FAULT_GREYLIST_EXPIRY_DEFAULT (24ull * 3600 * 1000000000) /* 24h */
#define FAULT_GREYLIST_MAX_DEFAULT    100000

struct fault_greylist_cfg {
	uint64_t delay_ns;  /* --greylist DUR: a retry this late passes */
	uint64_t expiry_ns; /* forget a triplet not seen for this long */
	uint32_t max;       /* entries kept (40 octets each); oldest evicted */
};

enum fault_grey {
	FAULT_GREY_PASS = 0, /* let it through */
	FAULT_GREY_FIRST,    /* first attempt (or after expiry/eviction): 451 */
	FAULT_GREY_EARLY,    /* retried before DUR: 451 again */
};

struct fault_greylist_stats {
	uint64_t entries; /* triplets held now */
	uint64_t first;   /* FAULT_GREY_FIRST answers */
	uint64_t early;   /* FAULT_GREY_EARLY answers */
	uint64_t passed;  /* FAULT_GREY_PASS answers */
	uint64_t evicted; /* dropped to make room (table full) */
	uint64_t expired; /* dropped for age */
};

struct fault_greylist;

void fault_greylist_cfg_defaults(struct fault_greylist_cfg *cfg, uint64_t delay_ns);
/* fault_greylist_new - 0, -EINVAL (max 0 or over 2^30), -ENOMEM. */
int fault_greylist_new(const struct fault_greylist_cfg *cfg, struct fault_greylist **out);
void fault_greylist_free(struct fault_greylist *g);
/* fault_greylist_check - the verdict for one RCPT, updating the triplet.
 * client NULL = unknown address (all such clients share one). */
enum fault_grey fault_greylist_check(struct fault_greylist *g, const struct fault_ip *client,
                                     const char *from, size_t from_len, const char *to,
                                     size_t to_len, uint64_t now_ns);
/* fault_greylist_reply - "451 4.7.1 Greylisted, try again in DUR\r\n". */
const char *fault_greylist_reply(const struct fault_greylist *g, size_t *len);
/* fault_greylist_stats - sums over the shards (takes each shard's lock). */
void fault_greylist_stats(struct fault_greylist *g, struct fault_greylist_stats *st);

/*
 * Rate limit (--rate-limit N/DUR[,per=client|sender|all]): a token bucket
 * that holds N tokens (one DUR's worth of burst), refills N per DUR
 * continuously and starts full; each MAIL takes a token, a MAIL that finds
 * none is limited ("451 4.7.1 Rate limit exceeded, try again later").
 * Implemented as GCRA (the ATM Forum's generic cell rate algorithm), which
 * is the same bucket kept as one "theoretical arrival time" - one word, so
 * per=all is a lock-free CAS.  The emission interval DUR/N is rounded up to
 * a nanosecond: exact when N divides DUR in ns (100/s, 10/m, ...), never
 * more than N per DUR otherwise.
 */
enum fault_rate_per {
	FAULT_RATE_PER_CLIENT = 0, /* default: one bucket per client address */
	FAULT_RATE_PER_SENDER,     /* one per MAIL FROM (case-insensitive) */
	FAULT_RATE_PER_ALL,        /* one for the whole server */
};

#define FAULT_RATE_KEYS_DEFAULT 65536

struct fault_rate_cfg {
	uint64_t n;      /* tokens per period, >= 1 */
	uint64_t per_ns; /* the period */
	uint8_t per;     /* enum fault_rate_per */
	uint32_t keys;   /* per=client/sender: buckets kept (LRU; a forgotten one is full) */
};

struct fault_rate_stats {
	uint64_t limited; /* MAILs refused */
	uint64_t keys;    /* buckets held now (per=client/sender) */
	uint64_t evicted; /* buckets forgotten to make room */
};

struct fault_rate;

/* fault_rate_parse - "100/s", "10/1m,per=sender", "5k/h,per=all": fills
 * cfg (keys = FAULT_RATE_KEYS_DEFAULT); -EINVAL with a reason in err. */
int fault_rate_parse(const char *s, struct fault_rate_cfg *cfg, char *err, size_t errlen);
int fault_rate_new(const struct fault_rate_cfg *cfg, struct fault_rate **out);
void fault_rate_free(struct fault_rate *r);
/* fault_rate_set_reply - --rate-limit-reply 'CODE [TEXT]' (fault_reply_render
 * rules); setup only. */
int fault_rate_set_reply(struct fault_rate *r, const char *spec, char *err, size_t errlen);
const char *fault_rate_reply(const struct fault_rate *r, size_t *len);
/* fault_rate_take - take a token for one MAIL: true = allowed, false =
 * limited (no token taken).  from is used with per=sender only. */
bool fault_rate_take(struct fault_rate *r, const struct fault_ip *client, const char *from,
                     size_t from_len, uint64_t now_ns);
void fault_rate_stats(struct fault_rate *r, struct fault_rate_stats *st);

/*
 * Connections per client address (--max-conns-per-ip N): a counter per
 * address with inc at accept and dec at close.  The table never evicts
 * (that would lose counts): size it to the server's connection limit, as
 * every tracked address holds at least one connection.
 */
enum fault_conn {
	FAULT_CONN_OK = 0,    /* counted: call fault_connlimit_dec() at close */
	FAULT_CONN_LIMIT,     /* over the limit: refuse (421 4.7.0), not counted */
	FAULT_CONN_UNTRACKED, /* table full: allow, not counted, no dec */
};

struct fault_connlimit;

int fault_connlimit_new(uint32_t max_per_ip, uint32_t max_tracked, struct fault_connlimit **out);
void fault_connlimit_free(struct fault_connlimit *c);
enum fault_conn fault_connlimit_inc(struct fault_connlimit *c, const struct fault_ip *client);
void fault_connlimit_dec(struct fault_connlimit *c, const struct fault_ip *client);
/* fault_connlimit_count - connections counted for client now. */
uint32_t fault_connlimit_count(struct fault_connlimit *c, const struct fault_ip *client);
/* fault_connlimit_refused - FAULT_CONN_LIMIT answers so far. */
uint64_t fault_connlimit_refused(struct fault_connlimit *c);

#endif
