/*
 * fault.h - fault plan: parsed --fault rules, schedules, seeded chance, and
 * the one question the session asks before each reply: "what now?"
 *
 * Pure: no I/O, no clock reads (time since server start is passed in), no
 * threads created.  A plan is built once on one thread (fault_plan_add*),
 * then shared read-only by every worker; fault_decide() is safe from any
 * number of threads at once.  The only shared writes are the per-rule
 * counters: one atomic fetch_add per *match* of a rule (a rule costs nothing
 * at stages it does not name), which makes every=/first=/after=/limit=
 * exact across sessions and workers - 100 messages with every=10 inject
 * exactly 10 whatever the thread count - and prob= reproducible: the chance
 * is a hash of (seed, rule index, match number), not a shared RNG stream, so
 * the same sequence of matches injects the same faults in any interleaving.
 *
 * Rule grammar (issue 12; docs/faults.md has the semantics of combinations):
 *   RULE     = STAGE { " " MATCH | " " ACTION | " " SCHEDULE }
 *   STAGE    = connect | helo | ehlo | mail | rcpt | data | eod | bdat | rset
 *            | noop | quit | auth | starttls | any
 *   MATCH    = client=CIDR | helo=GLOB | from=GLOB | to=GLOB | size>N
 *   ACTION   = reply='CODE [TEXT]' | drop | reset | delay=DUR | stall
 *            | throttle=BYTES/s
 *   SCHEDULE = prob=P | every=N | first=N | after=N | window=DUR-DUR | limit=N
 *
 * Stateful policies (greylisting, rate limit; fault_policy.h) and
 * address-encoded faults are asked behind the same question, in the order
 * of issue 12: rules, then address faults, then the rate limit, then the
 * greylist.
 */
#ifndef SINK_FAULT_H
#define SINK_FAULT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Stages: the reply the session is about to send.  connect is the greeting
 * (acts before it), data the 354, eod the reply after the message.  The
 * order is part of the ABI of counters and JSON names only through
 * fault_stage_name(). */
enum fault_stage {
	FAULT_ST_CONNECT = 0,
	FAULT_ST_HELO,
	FAULT_ST_EHLO,
	FAULT_ST_MAIL,
	FAULT_ST_RCPT,
	FAULT_ST_DATA,
	FAULT_ST_EOD,
	FAULT_ST_BDAT,
	FAULT_ST_RSET,
	FAULT_ST_NOOP,
	FAULT_ST_QUIT,
	FAULT_ST_AUTH,
	FAULT_ST_STARTTLS,
	/* Query only (not a rule keyword): the reply to BDAT ... LAST, which is
	 * both a chunk reply and the reply after the message, so bdat and eod
	 * rules both apply there, in rule order. */
	FAULT_ST_BDAT_LAST,
	FAULT_ST_COUNT,
	FAULT_ST_ANY = FAULT_ST_COUNT, /* rule only: every stage */
};

#define FAULT_STAGE_BIT(st) (1u << (st))
#define FAULT_STAGES_ALL    ((1u << FAULT_ST_COUNT) - 1)

/* fault_stage_name - "connect" ... "starttls", "bdat-last", "any". */
const char *fault_stage_name(enum fault_stage st);

/* Client address, normalised: IPv4-mapped IPv6 (::ffff:a.b.c.d, what a
 * dual-stack listener reports for IPv4 clients) becomes IPv4 so that
 * client=127.0.0.0/8 matches either way. */
struct fault_ip {
	uint8_t family; /* 0 unknown (e.g. AF_UNIX), 4, 6 */
	uint8_t b[16];  /* network order; IPv4 in b[0..3] */
};

/* fault_ip_from_sockaddr - AF_INET / AF_INET6 into *ip; family 0 otherwise. */
void fault_ip_from_sockaddr(const struct sockaddr *sa, struct fault_ip *ip);
/* fault_ip_parse - numeric IPv4 or IPv6 text; 0 or -EINVAL. */
int fault_ip_parse(const char *s, struct fault_ip *ip);

/* What replaces the normal reply.  NONE with delay_ns/throttle_bps set
 * means "the normal reply, later / slower". */
enum fault_act {
	FAULT_ACT_NONE = 0,
	FAULT_ACT_REPLY, /* send reply[0..reply_len) instead */
	FAULT_ACT_DROP,  /* close without a reply */
	FAULT_ACT_RESET, /* close with RST (SO_LINGER 0) */
	FAULT_ACT_STALL, /* never answer; hold until the client leaves or idles out */
};

/* Where a decision came from (for counters: faults_injected, greylisted,
 * rate_limited). */
enum fault_src {
	FAULT_SRC_NONE = 0,
	FAULT_SRC_RULE,
	FAULT_SRC_ADDRESS,
	FAULT_SRC_RATE,
	FAULT_SRC_GREYLIST,
};

/* Limits, so a rule stays a small fixed thing. */
#define FAULT_RULE_MAX       4096 /* octets of rule text */
#define FAULT_GLOB_MAX       512  /* octets of a helo=/from=/to= pattern */
#define FAULT_REPLY_MAX      4096 /* octets of a rendered reply (all lines, CRLFs) */
#define FAULT_REPLY_LINE     512  /* RFC 5321 4.5.3.1.5: reply line incl. CRLF */
#define FAULT_DELAY_MAX_NS   (24ull * 3600 * 1000000000) /* delay= at most 24h */
#define FAULT_ADDR_REPLY_MAX 64                          /* rendered address-encoded reply */

/* Which words a rule has (struct fault_rule.have). */
enum {
	FAULT_HAVE_CLIENT = 1u << 0,
	FAULT_HAVE_HELO = 1u << 1,
	FAULT_HAVE_FROM = 1u << 2,
	FAULT_HAVE_TO = 1u << 3,
	FAULT_HAVE_SIZE = 1u << 4,
	FAULT_HAVE_REPLY = 1u << 5,
	FAULT_HAVE_DELAY = 1u << 6,
	FAULT_HAVE_THROTTLE = 1u << 7,
	FAULT_HAVE_PROB = 1u << 8,
	FAULT_HAVE_EVERY = 1u << 9,
	FAULT_HAVE_FIRST = 1u << 10,
	FAULT_HAVE_AFTER = 1u << 11,
	FAULT_HAVE_WINDOW = 1u << 12,
	FAULT_HAVE_LIMIT = 1u << 13,
	/* drop / reset / stall are rule.act */
};

struct fault_cidr {
	struct fault_ip net; /* host bits are zero */
	uint8_t prefix;      /* 0..32 / 0..128 */
};

/* A parsed rule: immutable once parsed, one allocation (strings inside). */
struct fault_rule {
	uint8_t stage;       /* enum fault_stage, or FAULT_ST_ANY */
	uint8_t act;         /* enum fault_act (NONE: delay= and/or throttle= only) */
	uint16_t code;       /* reply code with reply=, else 0 */
	uint32_t have;       /* FAULT_HAVE_* */
	uint32_t stage_mask; /* query stages it is asked at (stage, narrowed by MATCHes) */
	struct fault_cidr client;
	const char *helo, *from, *to; /* lower-case globs ("" = null sender for from=<>) */
	uint32_t helo_len, from_len, to_len;
	uint64_t size_gt;  /* size>N */
	const char *reply; /* the reply as given, escapes decoded ("550 5.1.1 No\nX") */
	const char *wire;  /* rendered: "550-5.1.1 No\r\n550 5.1.1 X\r\n" */
	uint32_t reply_len, wire_len;
	uint64_t delay_ns;     /* delay= */
	uint64_t throttle_bps; /* throttle=, octets per second */
	uint32_t prob_ppb;     /* prob= in parts per 10^9 (exact to 9 decimals) */
	uint64_t every, first, after, limit;
	uint64_t win_from_ns, win_to_ns; /* window=: [from, to) since server start */
	                                 /* the strings follow the struct in the same allocation */
};

/* fault_rule_parse - parse one rule from s[0..len) (no NUL needed).  On
 * error returns -EINVAL and writes a one-line message to err that quotes
 * the offending word and gives its 1-based column, e.g.
 *   column 6, 'prob=2': prob= must be between 0 and 1
 * -ENOMEM when out of memory.  *out is freed with fault_rule_free(). */
int fault_rule_parse(const char *s, size_t len, struct fault_rule **out, char *err, size_t errlen);
void fault_rule_free(struct fault_rule *r);

/* fault_rule_format - the rule in canonical form (fixed word order, lower
 * case, durations and sizes in their largest exact unit): parsing it gives
 * an equal rule.  snprintf semantics: returns the full length. */
size_t fault_rule_format(const struct fault_rule *r, char *buf, size_t cap);

/* fault_rule_equal - same meaning (every field the decision reads). */
bool fault_rule_equal(const struct fault_rule *a, const struct fault_rule *b);

/* fault_glob_match - case-insensitive (ASCII) glob: '*' any run, '?' one
 * octet, everything else literal.  pat must already be lower case. */
bool fault_glob_match(const char *pat, size_t plen, const char *s, size_t slen);

/* fault_cidr_parse - "ADDR[/PREFIX]" (IPv4 or IPv6; host bits beyond the
 * prefix refused, with a "did you mean" in hint); 0 or -EINVAL. */
int fault_cidr_parse(const char *v, size_t n, struct fault_cidr *c, char *hint, size_t hintlen);
/* fault_cidr_match - ip inside cidr (family must agree). */
bool fault_cidr_match(const struct fault_cidr *c, const struct fault_ip *ip);

/* fault_reply_render - turn "CODE [TEXT]" (TEXT may hold '\n' for more
 * lines) into wire lines "CODE-..." / "CODE ..." with CRLF (RFC 5321 4.2),
 * repeating an RFC 3463 enhanced code on every line (RFC 2034 4).  The
 * code must be [2-5][0-5][0-9]; the enhanced code's class must equal the
 * code's first digit.  Returns the wire length, or -EINVAL with a reason in
 * err (no column).  For rule replies and --rate-limit-reply. */
int fault_reply_render(const char *spec, size_t len, char *wire, size_t cap, char *err,
                       size_t errlen);

/* fault_duration_format - ns as "<n><unit>" in the largest unit that is
 * exact (h, m, s, ms, us, ns; 0 is "0s"); units_parse_duration_ns() reads
 * it back.  Returns the length (snprintf semantics). */
size_t fault_duration_format(uint64_t ns, char *buf, size_t cap);

/*
 * Decisions
 */

/* What the session knows when it asks.  Strings are (pointer, length), not
 * NUL-terminated; a NULL pointer means "not known at this point" and no
 * MATCH on that field can succeed. */
struct fault_ctx {
	const struct fault_ip *client; /* NULL or family 0: unknown */
	const char *helo;              /* HELO/EHLO argument (at helo/ehlo: this one) */
	const char *from;              /* reverse-path without <>; "" = null sender */
	const char *to;                /* forward-path without <> (rcpt only) */
	size_t helo_len, from_len, to_len;
	uint64_t size;   /* mail: SIZE= declared; eod/bdat: octets received so far */
	bool has_size;   /* size is known (MAIL without SIZE=: false) */
	uint64_t now_ns; /* since server start (window=, greylist, rate limit) */
};

struct fault_decision {
	uint8_t src;           /* enum fault_src */
	uint8_t act;           /* enum fault_act */
	uint8_t close;         /* 421 reply: close after it (RFC 5321 4.2.2, 3.8) */
	uint16_t code;         /* reply code with FAULT_ACT_REPLY */
	uint32_t rule;         /* rule index, with FAULT_SRC_RULE */
	uint64_t match;        /* that rule's match number that fired (1-based) */
	uint64_t delay_ns;     /* wait before acting / before the normal reply */
	uint64_t throttle_bps; /* from now on, this session's rate; 0 = unchanged */
	const char *reply;     /* wire bytes with FAULT_ACT_REPLY; may point into buf */
	size_t reply_len;
	char buf[FAULT_ADDR_REPLY_MAX]; /* storage for address-encoded replies */
};

/* Per-rule counters, each rule on its own cache line so rules that fire on
 * different workers do not share one. */
struct fault_rule_ctr {
	_Alignas(64) _Atomic uint64_t matched; /* stage, MATCHes and window held */
	_Atomic uint64_t injected;             /* ... and the schedule fired */
};

struct fault_greylist;
struct fault_rate;

/* The plan.  Fields are private to fault.c except through the functions
 * below; the struct is public only so fault_plan_has() inlines. */
struct fault_plan {
	uint32_t stage_mask; /* FAULT_STAGE_BIT(st) when anything may act at st */
	uint32_t nrules, cap;
	uint64_t seed;
	struct fault_rule **rules;
	struct fault_rule_ctr *ctr;
	uint32_t *idx;                    /* rule indexes per query stage, in rule order */
	uint32_t off[FAULT_ST_COUNT + 1]; /* idx[off[st] .. off[st + 1]) */
	bool address_faults;
	struct fault_greylist *greylist; /* not owned */
	struct fault_rate *rate;         /* not owned */
	struct fault_rule_ctr *addr_ctr; /* address-encoded faults injected */
};

/* fault_plan_new - empty plan; seed drives prob= (--seed, default 0 so that
 * runs are reproducible unless asked otherwise).  NULL when out of memory. */
struct fault_plan *fault_plan_new(uint64_t seed);
void fault_plan_free(struct fault_plan *p);

/* fault_plan_add - parse and append a rule (rules fire in the order added).
 * Returns 0, -EINVAL (message in err, see fault_rule_parse), -ENOMEM. */
int fault_plan_add(struct fault_plan *p, const char *rule, size_t len, char *err, size_t errlen);

/* fault_plan_add_file - a --fault-file's contents: one rule per line, blank
 * lines and lines whose first non-blank octet is '#' ignored, CRLF or LF.
 * The error names the line: "line 3: column 6, 'x': ...".  On error the
 * rules before the bad line stay added: discard the plan. */
int fault_plan_add_file(struct fault_plan *p, const char *text, size_t len, char *err,
                        size_t errlen);

/* Policies asked after the rules (not owned: the caller keeps them across
 * plan reloads so greylist and rate state survive SIGHUP). */
void fault_plan_set_address_faults(struct fault_plan *p, bool on);
void fault_plan_set_greylist(struct fault_plan *p, struct fault_greylist *g);
void fault_plan_set_rate(struct fault_plan *p, struct fault_rate *r);

static inline uint32_t fault_plan_nrules(const struct fault_plan *p)
{
	return p ? p->nrules : 0;
}

static inline const struct fault_rule *fault_plan_rule(const struct fault_plan *p, uint32_t i)
{
	return p->rules[i];
}

/* fault_plan_counts - rule i's counters (relaxed reads: a snapshot that is
 * exact once the workers are quiet). */
void fault_plan_counts(const struct fault_plan *p, uint32_t i, uint64_t *matched,
                       uint64_t *injected);
/* fault_plan_injected - rules' injections plus address-encoded faults (not
 * greylist / rate decisions: those are counted by their policies). */
uint64_t fault_plan_injected(const struct fault_plan *p);

/* fault_plan_has - may anything act at st?  One load and one test; NULL
 * plan = nothing configured. */
static inline bool fault_plan_has(const struct fault_plan *p, enum fault_stage st)
{
	return p && (p->stage_mask >> st & 1u);
}

bool fault_decide_slow(const struct fault_plan *p, enum fault_stage st, const struct fault_ctx *c,
                       struct fault_decision *d);

/* fault_decide - what now, at stage st?  false: nothing; send the normal
 * reply (d untouched).  true: *d says what to do instead (see
 * docs/faults.md: Integrating).  Thread-safe; no allocation. */
static inline bool fault_decide(const struct fault_plan *p, enum fault_stage st,
                                const struct fault_ctx *c, struct fault_decision *d)
{
	if (!fault_plan_has(p, st))
		return false;
	return fault_decide_slow(p, st, c, d);
}

/*
 * Address-encoded faults (--address-faults): the local part of MAIL FROM or
 * RCPT TO names the fault, e.g. RCPT TO:<reply-550-5.1.1@any.test>.  See
 * docs/faults.md for the forms.
 */
struct fault_addr_fault {
	uint8_t stage;     /* enum fault_stage it acts at */
	uint8_t act;       /* enum fault_act (NONE: delay only) */
	uint16_t code;     /* with FAULT_ACT_REPLY */
	char esc[12];      /* enhanced code or "" */
	uint64_t delay_ns; /* delay-DUR */
};

/* fault_addr_parse - does addr[0..len) encode a fault?  sender: it is the
 * MAIL FROM address (which may name a later stage: rcpt-, data-, eod-,
 * bdat-); otherwise a RCPT TO address (acts at rcpt only). */
bool fault_addr_parse(const char *addr, size_t len, bool sender, struct fault_addr_fault *f);

/* fault_addr_reply - render f's reply ("550 5.1.1 <default text>\r\n");
 * returns the length (snprintf semantics, < FAULT_ADDR_REPLY_MAX always). */
size_t fault_addr_reply(const struct fault_addr_fault *f, char *buf, size_t cap);

#endif
