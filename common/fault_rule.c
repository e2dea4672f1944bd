/*
 * fault_rule.c - --fault rule parser and canonical printer (see fault.h)
 *
 * A rule is one line of words separated by blanks.  The first word is the
 * stage; every other word is a MATCH, an ACTION or a SCHEDULE, in any
 * order, each at most once.  Errors quote the offending word and give its
 * 1-based column, so a usage error shows exactly what to fix.  A value is
 * checked when its word is read, and a conflict is reported at the second
 * of the two words (the first one read is taken as what the user meant).
 *
 * Replies are validated and rendered to wire bytes here, once, so the hot
 * path only copies them: three-digit code 2xx-5xx (RFC 5321 4.2.1, second
 * digit 0-5 per 4.2), optional RFC 3463 enhanced code whose class must
 * equal the first digit, lines at most 512 octets with CRLF (4.5.3.1.5),
 * multi-line as "CODE-" continuation lines (4.2) that repeat the enhanced
 * code (RFC 2034 4).
 */
#include "sink/fault.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "sink/units.h"

static const char *const stage_names[FAULT_ST_COUNT + 1] = {
    [FAULT_ST_CONNECT] = "connect",   [FAULT_ST_HELO] = "helo",           [FAULT_ST_EHLO] = "ehlo",
    [FAULT_ST_MAIL] = "mail",         [FAULT_ST_RCPT] = "rcpt",           [FAULT_ST_DATA] = "data",
    [FAULT_ST_EOD] = "eod",           [FAULT_ST_BDAT] = "bdat",           [FAULT_ST_RSET] = "rset",
    [FAULT_ST_NOOP] = "noop",         [FAULT_ST_QUIT] = "quit",           [FAULT_ST_AUTH] = "auth",
    [FAULT_ST_STARTTLS] = "starttls", [FAULT_ST_BDAT_LAST] = "bdat-last", [FAULT_ST_ANY] = "any",
};

const char *fault_stage_name(enum fault_stage st)
{
	return (unsigned)st <= FAULT_ST_ANY ? stage_names[st] : "?";
}

/* Stages at which a MATCH field is known (struct fault_ctx). */
#define SB(x)       FAULT_STAGE_BIT(FAULT_ST_##x)
#define MASK_CLIENT FAULT_STAGES_ALL
#define MASK_HELO   (FAULT_STAGES_ALL & ~SB(CONNECT))
#define MASK_FROM   (SB(MAIL) | SB(RCPT) | SB(DATA) | SB(EOD) | SB(BDAT) | SB(BDAT_LAST))
#define MASK_TO     SB(RCPT)
/* mail: the SIZE= parameter (RFC 1870); eod/bdat: octets received */
#define MASK_SIZE (SB(MAIL) | SB(EOD) | SB(BDAT) | SB(BDAT_LAST))

/* stage_bits - query stages a rule stage is asked at: BDAT ... LAST is both
 * a chunk reply and the reply after the message. */
static uint32_t stage_bits(unsigned st)
{
	if (st == FAULT_ST_ANY)
		return FAULT_STAGES_ALL;
	if (st == FAULT_ST_BDAT || st == FAULT_ST_EOD)
		return FAULT_STAGE_BIT(st) | SB(BDAT_LAST);
	return FAULT_STAGE_BIT(st);
}

static inline char lc(char c)
{
	return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static bool ieq(const char *a, size_t an, const char *b)
{
	size_t bn = strlen(b);

	if (an != bn)
		return false;
	for (size_t i = 0; i < an; i++)
		if (lc(a[i]) != b[i])
			return false;
	return true;
}

/*
 * Addresses
 */

void fault_ip_from_sockaddr(const struct sockaddr *sa, struct fault_ip *ip)
{
	memset(ip, 0, sizeof(*ip));
	if (!sa)
		return;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
		ip->family = 4;
		memcpy(ip->b, &in->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
		const uint8_t *a = in6->sin6_addr.s6_addr;
		static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
		if (!memcmp(a, mapped, 12)) { /* RFC 4291 2.5.5.2 */
			ip->family = 4;
			memcpy(ip->b, a + 12, 4);
		} else {
			ip->family = 6;
			memcpy(ip->b, a, 16);
		}
	}
}

int fault_ip_parse(const char *s, struct fault_ip *ip)
{
	struct fault_ip t;

	memset(&t, 0, sizeof(t));
	if (strchr(s, ':')) {
		if (inet_pton(AF_INET6, s, t.b) != 1)
			return -EINVAL;
		t.family = 6;
		static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
		if (!memcmp(t.b, mapped, 12)) {
			memmove(t.b, t.b + 12, 4);
			memset(t.b + 4, 0, 12);
			t.family = 4;
		}
	} else {
		if (inet_pton(AF_INET, s, t.b) != 1)
			return -EINVAL;
		t.family = 4;
	}
	*ip = t;
	return 0;
}

bool fault_cidr_match(const struct fault_cidr *c, const struct fault_ip *ip)
{
	unsigned full = c->prefix / 8, rest = c->prefix % 8;

	if (!ip || ip->family != c->net.family)
		return false;
	if (memcmp(ip->b, c->net.b, full))
		return false;
	if (rest) {
		uint8_t m = (uint8_t)(0xff00u >> rest);
		if ((ip->b[full] & m) != c->net.b[full])
			return false;
	}
	return true;
}

bool fault_glob_match(const char *p, size_t pn, const char *s, size_t sn)
{
	/* Iterative matcher that backtracks only to the last '*': O(pn * sn)
	 * at worst, no recursion, no allocation. */
	size_t pi = 0, si = 0, star = SIZE_MAX, mark = 0;

	while (si < sn) {
		if (pi < pn && p[pi] == '*') {
			star = pi++;
			mark = si;
		} else if (pi < pn && (p[pi] == '?' || p[pi] == lc(s[si]))) {
			pi++;
			si++;
		} else if (star != SIZE_MAX) {
			pi = star + 1;
			si = ++mark;
		} else {
			return false;
		}
	}
	while (pi < pn && p[pi] == '*')
		pi++;
	return pi == pn;
}

/*
 * Formatting helpers
 */

struct sbuf {
	char *p;
	size_t cap, len;
};

static void sb_put(struct sbuf *b, const char *s, size_t n)
{
	if (b->len < b->cap) {
		size_t room = b->cap - b->len;
		memcpy(b->p + b->len, s, n < room ? n : room);
	}
	b->len += n;
}

static void sb_str(struct sbuf *b, const char *s)
{
	sb_put(b, s, strlen(s));
}

__attribute__((format(printf, 2, 3))) static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	char tmp[64];
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n > 0)
		sb_put(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* sb_end - NUL-terminate (truncating) and return the full length. */
static size_t sb_end(struct sbuf *b)
{
	if (b->cap)
		b->p[b->len < b->cap ? b->len : b->cap - 1] = 0;
	return b->len;
}

size_t fault_duration_format(uint64_t ns, char *buf, size_t cap)
{
	static const struct {
		uint64_t ns;
		const char *u;
	} tab[] = {{3600000000000ull, "h"}, {60000000000ull, "m"}, {1000000000ull, "s"},
	           {1000000ull, "ms"},      {1000ull, "us"},       {1, "ns"}};
	struct sbuf b = {buf, cap, 0};

	if (!ns) {
		sb_str(&b, "0s");
		return sb_end(&b);
	}
	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
		if (ns % tab[i].ns == 0) {
			sb_printf(&b, "%llu%s", (unsigned long long)(ns / tab[i].ns), tab[i].u);
			break;
		}
	}
	return sb_end(&b);
}

/* size_format - octets in the largest exact binary unit (units.h reads
 * k/M/G as powers of 1024). */
static void size_format(struct sbuf *b, uint64_t v)
{
	static const char u[] = "GMk";
	for (int i = 0; i < 3; i++) {
		uint64_t m = 1ull << (10 * (3 - i));
		if (v && v % m == 0) {
			sb_printf(b, "%llu%c", (unsigned long long)(v / m), u[i]);
			return;
		}
	}
	sb_printf(b, "%llu", (unsigned long long)v);
}

/*
 * Replies
 */

__attribute__((format(printf, 3, 4))) static int rerr(char *err, size_t errlen, const char *fmt,
                                                      ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

static bool isdig(char c)
{
	return c >= '0' && c <= '9';
}

/* esc_len - length of an RFC 3463 enhanced code at the start of t (class
 * "." 1*3digit "." 1*3digit, then a space, a line break or the end), 0 when
 * t does not start with one: then it is just text ("250 1.5 seconds"). */
static int esc_len(const char *t, size_t n)
{
	size_t i, d;

	if (n < 5 || !isdig(t[0]) || t[1] != '.')
		return 0;
	i = 2;
	for (d = 0; i < n && isdig(t[i]) && d < 4; i++, d++)
		;
	if (d < 1 || d > 3 || i >= n || t[i] != '.')
		return 0;
	i++;
	for (d = 0; i < n && isdig(t[i]) && d < 4; i++, d++)
		;
	if (d < 1 || d > 3)
		return 0;
	if (i < n && t[i] != ' ' && t[i] != '\n')
		return 0;
	return (int)i;
}

int fault_reply_render(const char *spec, size_t len, char *wire, size_t cap, char *err,
                       size_t errlen)
{
	struct sbuf b = {wire, cap, 0};
	const char *t, *end = spec + len;
	int el = 0;

	/* RFC 5321 4.2: Reply-code = %x32-35 %x30-35 %x30-39 */
	if (len < 3 || spec[0] < '2' || spec[0] > '5' || spec[1] < '0' || spec[1] > '5' ||
	    !isdig(spec[2]) || (len > 3 && isdig(spec[3])))
		return rerr(err, errlen, "a reply starts with a three-digit code 200..559");
	if (len > 3 && spec[3] != ' ')
		return rerr(err, errlen, "the reply code is followed by a space and the text");
	t = len > 3 ? spec + 4 : end;
	el = esc_len(t, (size_t)(end - t));
	if (el > 0 && (t[0] != spec[0] || spec[0] == '3'))
		return rerr(err, errlen,
		            "the enhanced status code's class must equal the reply's first digit "
		            "(2, 4 or 5; RFC 3463 2)");
	const char *esc = t;
	t += el;
	if (el && t < end && *t == ' ')
		t++;
	for (const char *q = t; q < end; q++)
		if (*q != '\n' && *q != '\t' &&
		    ((unsigned char)*q < 0x20 || (unsigned char)*q > 0x7e))
			return rerr(err, errlen,
			            "reply text must be printable ASCII (RFC 5321 4.2)");
	/* one wire line per '\n'-separated piece */
	for (;;) {
		const char *nl = memchr(t, '\n', (size_t)(end - t));
		const char *le = nl ? nl : end;
		size_t start = b.len;
		sb_put(&b, spec, 3);
		if (!nl && !el && le == t) {
			/* "CODE" CRLF: RFC 5321 4.2 allows no SP without text */
		} else {
			sb_put(&b, nl ? "-" : " ", 1);
			if (el) {
				sb_put(&b, esc, (size_t)el);
				if (le > t)
					sb_put(&b, " ", 1);
			}
			sb_put(&b, t, (size_t)(le - t));
		}
		sb_put(&b, "\r\n", 2);
		if (b.len - start > FAULT_REPLY_LINE)
			return rerr(err, errlen,
			            "reply line longer than %d octets (RFC 5321 4.5.3.1.5)",
			            FAULT_REPLY_LINE);
		if (!nl)
			break;
		t = nl + 1;
	}
	if (b.len > cap || b.len > FAULT_REPLY_MAX)
		return rerr(err, errlen, "reply longer than %d octets", FAULT_REPLY_MAX);
	return (int)b.len;
}

/*
 * Rule parser
 */

struct pctx {
	const char *s;
	size_t len;
	char *err;
	size_t errlen;
};

/* perr - "column C, 'WORD': message", the word shortened and made
 * printable so the message is safe on a terminal. */
__attribute__((format(printf, 4, 5))) static int perr(struct pctx *c, size_t off, size_t wlen,
                                                      const char *fmt, ...)
{
	char w[52];
	size_t n = 0;
	struct sbuf b = {c->err, c->errlen, 0};
	char msg[256];
	va_list ap;

	if (!c->err || !c->errlen)
		return -EINVAL;
	for (size_t i = 0; i < wlen && n < 40; i++) {
		char ch = c->s[off + i];
		w[n++] = (ch >= 0x20 && ch < 0x7f) ? ch : '?';
	}
	if (n < wlen)
		memcpy(w + n, "...", 3), n += 3;
	w[n] = 0;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	sb_printf(&b, "column %zu", off + 1);
	if (wlen) {
		sb_str(&b, ", '");
		sb_str(&b, w);
		sb_str(&b, "'");
	}
	sb_str(&b, ": ");
	sb_str(&b, msg);
	sb_end(&b);
	return -EINVAL;
}

static bool blank(char c)
{
	return c == ' ' || c == '\t';
}

enum kw {
	K_CLIENT,
	K_HELO,
	K_FROM,
	K_TO,
	K_SIZE,
	K_REPLY,
	K_DELAY,
	K_THROTTLE,
	K_PROB,
	K_EVERY,
	K_FIRST,
	K_AFTER,
	K_WINDOW,
	K_LIMIT,
	K_DROP,
	K_RESET,
	K_STALL,
	K_N,
};

static const struct {
	const char *name; /* with its '=' / '>' for words that take a value */
	uint32_t have;    /* FAULT_HAVE_* (0 for drop/reset/stall: rule.act) */
	uint32_t mask;    /* MATCH: stages where the field is known */
} kws[K_N] = {
    [K_CLIENT] = {"client=", FAULT_HAVE_CLIENT, MASK_CLIENT},
    [K_HELO] = {"helo=", FAULT_HAVE_HELO, MASK_HELO},
    [K_FROM] = {"from=", FAULT_HAVE_FROM, MASK_FROM},
    [K_TO] = {"to=", FAULT_HAVE_TO, MASK_TO},
    [K_SIZE] = {"size>", FAULT_HAVE_SIZE, MASK_SIZE},
    [K_REPLY] = {"reply=", FAULT_HAVE_REPLY, 0},
    [K_DELAY] = {"delay=", FAULT_HAVE_DELAY, 0},
    [K_THROTTLE] = {"throttle=", FAULT_HAVE_THROTTLE, 0},
    [K_PROB] = {"prob=", FAULT_HAVE_PROB, 0},
    [K_EVERY] = {"every=", FAULT_HAVE_EVERY, 0},
    [K_FIRST] = {"first=", FAULT_HAVE_FIRST, 0},
    [K_AFTER] = {"after=", FAULT_HAVE_AFTER, 0},
    [K_WINDOW] = {"window=", FAULT_HAVE_WINDOW, 0},
    [K_LIMIT] = {"limit=", FAULT_HAVE_LIMIT, 0},
    [K_DROP] = {"drop", 0, 0},
    [K_RESET] = {"reset", 0, 0},
    [K_STALL] = {"stall", 0, 0},
};

static const char *const act_names[] = {"", "reply=", "drop", "reset", "stall"};

/* Everything a rule needs before it is copied into its one allocation. */
struct tmp {
	struct fault_rule r;
	const char *glob[3]; /* helo, from, to: slices of the input */
	size_t glob_len[3];
	char reply[FAULT_RULE_MAX];
	size_t reply_len;
	char wire[FAULT_REPLY_MAX];
	size_t wire_len;
};

/* value_cstr - copy a short value out for the units parsers (which want a
 * NUL-terminated string); false if it does not fit. */
static bool value_cstr(const char *v, size_t n, char *buf, size_t cap)
{
	if (n >= cap)
		return false;
	memcpy(buf, v, n);
	buf[n] = 0;
	return true;
}

static int parse_count(const char *v, size_t n, uint64_t *out)
{
	char buf[32];

	if (!value_cstr(v, n, buf, sizeof(buf)))
		return -EINVAL;
	return units_parse_count(buf, out);
}

static int parse_dur(const char *v, size_t n, uint64_t *out)
{
	char buf[32];

	if (!value_cstr(v, n, buf, sizeof(buf)))
		return -EINVAL;
	return units_parse_duration_ns(buf, out);
}

/* parse_prob - "0", "1", "0.25": exact to 9 decimals as parts per 10^9. */
static int parse_prob(const char *v, size_t n, uint32_t *ppb)
{
	uint64_t ip = 0, f = 0;
	size_t i = 0, fd = 0;

	if (!n || !isdig(v[0]))
		return -EINVAL;
	for (; i < n && isdig(v[i]); i++) {
		ip = ip * 10 + (uint64_t)(v[i] - '0');
		if (ip > 1)
			return -EINVAL;
	}
	if (i < n && v[i] == '.') {
		i++;
		for (; i < n && isdig(v[i]); i++, fd++) {
			if (fd == 9)
				return -E2BIG;
			f = f * 10 + (uint64_t)(v[i] - '0');
		}
		if (!fd)
			return -EINVAL;
	}
	if (i != n)
		return -EINVAL;
	for (; fd < 9; fd++)
		f *= 10;
	if (ip * 1000000000ull + f > 1000000000ull)
		return -EINVAL;
	*ppb = (uint32_t)(ip * 1000000000ull + f);
	return 0;
}

int fault_cidr_parse(const char *v, size_t n, struct fault_cidr *c, char *hint, size_t hintlen)
{
	char buf[64];
	const char *slash = memchr(v, '/', n);
	size_t an = slash ? (size_t)(slash - v) : n;
	unsigned max, pfx;

	hint[0] = 0;
	if (!value_cstr(v, an, buf, sizeof(buf)) || fault_ip_parse(buf, &c->net))
		return -EINVAL;
	/* a mapped IPv4 written as IPv6 keeps its prefix relative to the IPv4 */
	bool mapped = c->net.family == 4 && memchr(buf, ':', an);
	max = c->net.family == 4 ? 32 : 128;
	pfx = max;
	if (slash) {
		const char *p = slash + 1, *e = v + n;
		if (p == e || e - p > 3)
			return -EINVAL;
		pfx = 0;
		for (; p < e; p++) {
			if (!isdig(*p))
				return -EINVAL;
			pfx = pfx * 10 + (unsigned)(*p - '0');
		}
		if (mapped) {
			if (pfx < 96 || pfx > 128)
				return -EINVAL;
			pfx -= 96;
		}
		if (pfx > max)
			return -EINVAL;
	}
	c->prefix = (uint8_t)pfx;
	/* Host bits beyond the prefix are refused, as Postfix cidr_table
	 * does: 10.1.2.3/8 is more likely a typo than a wish for 10/8. */
	struct fault_cidr m = *c;
	unsigned full = pfx / 8, rest = pfx % 8;
	if (rest)
		m.net.b[full] &= (uint8_t)(0xff00u >> rest);
	memset(m.net.b + full + (rest ? 1 : 0), 0, 16 - full - (rest ? 1 : 0));
	if (memcmp(&m.net, &c->net, sizeof(m.net))) {
		char a[INET6_ADDRSTRLEN];
		inet_ntop(m.net.family == 4 ? AF_INET : AF_INET6, m.net.b, a, sizeof(a));
		snprintf(hint, hintlen, "host bits set beyond /%u (did you mean %s/%u?)", pfx, a,
		         pfx);
		return -EINVAL;
	}
	return 0;
}

/* decode_reply - the value of reply=: 'quoted' with \n \\ \' escapes, or
 * one unquoted word (reply=451); *why says what is wrong. */
static int decode_reply(const char *v, size_t n, char *out, size_t *outlen, const char **why)
{
	size_t o = 0;

	if (n && v[0] == '\'') {
		/* the word splitter guarantees the closing quote is last */
		for (size_t i = 1; i + 1 < n; i++) {
			if (v[i] == '\\') {
				char e = v[++i];
				if (e == 'n')
					out[o++] = '\n';
				else if (e == '\\' || e == '\'')
					out[o++] = e;
				else {
					*why = "unknown escape in reply (use \\n, \\\\ or \\')";
					return -EINVAL;
				}
			} else {
				out[o++] = v[i];
			}
		}
	} else {
		for (size_t i = 0; i < n; i++) {
			if (v[i] == '\\' || v[i] == '\'') {
				*why = "reply= takes a quoted reply: reply='CODE [TEXT]'";
				return -EINVAL;
			}
			out[o++] = v[i];
		}
	}
	*outlen = o;
	return 0;
}

/* stage_list - ", "-separated names of the stages in mask. */
static void stage_list(uint32_t mask, char *buf, size_t cap)
{
	struct sbuf b = {buf, cap, 0};

	for (unsigned st = 0; st < FAULT_ST_BDAT_LAST; st++) {
		if (mask & FAULT_STAGE_BIT(st)) {
			if (b.len)
				sb_str(&b, ", ");
			sb_str(&b, stage_names[st]);
		}
	}
	sb_end(&b);
}

/* word_end - end of the word at i.  A reply=' word runs to its closing
 * quote (blanks inside); -1 when the quote is not closed. */
static ssize_t word_end(const char *s, size_t len, size_t i)
{
	if (len - i >= 7 && ieq(s + i, 7, "reply='")) {
		size_t j = i + 7;
		while (j < len) {
			if (s[j] == '\\' && j + 1 < len)
				j += 2;
			else if (s[j] == '\'')
				return (ssize_t)j + 1;
			else
				j++;
		}
		return -1;
	}
	while (i < len && !blank(s[i]))
		i++;
	return (ssize_t)i;
}

/* ctl - a control octet in s[i..e)?  NUL, CR, LF never belong in a rule
 * (a reply takes "\n" for its line breaks); TAB is a blank. */
static bool ctl(const char *s, size_t i, size_t e)
{
	for (; i < e; i++) {
		unsigned char ch = (unsigned char)s[i];
		if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
			return true;
	}
	return false;
}

/* parse_word - one MATCH / ACTION / SCHEDULE word at s[off..off+wn). */
static int parse_word(struct pctx *c, struct tmp *t, size_t off, size_t wn)
{
	struct fault_rule *r = &t->r;
	const char *w = c->s + off;
	enum kw k;
	const char *v = NULL;
	size_t vn = 0;
	char hint[128];
	uint64_t u;

	for (k = 0; k < K_N; k++) {
		size_t kn = strlen(kws[k].name);
		if (k >= K_DROP ? ieq(w, wn, kws[k].name) : (wn >= kn && ieq(w, kn, kws[k].name))) {
			v = w + kn;
			vn = k >= K_DROP ? 0 : wn - kn;
			break;
		}
	}
	if (k == K_N)
		return perr(
		    c, off, wn,
		    "unknown word (expected client= helo= from= to= size> reply= drop reset "
		    "delay= stall throttle= prob= every= first= after= window= limit=)");
	if (kws[k].have & r->have)
		return perr(c, off, wn, "%s given twice", kws[k].name);
	if (k < K_DROP && !vn)
		return perr(c, off, wn, "%s needs a value", kws[k].name);

	/* Actions that exclude each other: one of reply= / drop / reset /
	 * stall says what replaces the reply; stall never answers, so a delay
	 * before it or a throttle after it means nothing. */
	if (k >= K_DROP || k == K_REPLY) {
		uint8_t a = k == K_REPLY ? FAULT_ACT_REPLY
		                         : (uint8_t)(FAULT_ACT_DROP + (unsigned)(k - K_DROP));
		if (r->act == a)
			return perr(c, off, wn, "%s given twice", kws[k].name);
		if (r->act)
			return perr(c, off, wn,
			            "%s cannot be combined with %s (one of reply=, drop, "
			            "reset, stall per rule)",
			            kws[k].name, act_names[r->act]);
		if (a == FAULT_ACT_STALL && (r->have & FAULT_HAVE_DELAY))
			return perr(c, off, wn, "stall never answers: it cannot follow a delay=");
		if (a >= FAULT_ACT_DROP && (r->have & FAULT_HAVE_THROTTLE))
			return perr(c, off, wn, "%s ends the session: throttle= would mean nothing",
			            kws[k].name);
	}
	if (k == K_DELAY && r->act == FAULT_ACT_STALL)
		return perr(c, off, wn, "stall never answers: delay= means nothing with it");
	if (k == K_THROTTLE && r->act >= FAULT_ACT_DROP)
		return perr(c, off, wn, "%s ends the session: throttle= would mean nothing",
		            act_names[r->act]);

	/* MATCHes: the field must be known where the rule acts. */
	if (kws[k].mask) {
		uint32_t m = r->stage_mask & kws[k].mask;
		if (!m) {
			char list[160];
			stage_list(kws[k].mask, list, sizeof(list));
			if (r->stage == FAULT_ST_ANY)
				return perr(c, off, wn,
				            "no stage knows both %s and the other MATCHes (%s is "
				            "known at %s)",
				            kws[k].name, kws[k].name, list);
			return perr(c, off, wn, "%s is not known at %s (only at %s)", kws[k].name,
			            stage_names[r->stage], list);
		}
		r->stage_mask = m;
	}

	switch (k) {
	case K_CLIENT:
		if (fault_cidr_parse(v, vn, &r->client, hint, sizeof(hint)))
			return perr(c, off, wn, "%s",
			            hint[0]
			                ? hint
			                : "client= takes an IPv4 or IPv6 address with an optional "
			                  "/prefix");
		break;
	case K_HELO:
	case K_FROM:
	case K_TO: {
		int g = k - K_HELO;
		if (k == K_FROM && vn == 2 && v[0] == '<' && v[1] == '>')
			vn = 0; /* from=<>: the null reverse-path (RFC 5321 4.5.5) */
		if (vn > FAULT_GLOB_MAX)
			return perr(c, off, wn, "pattern longer than %d octets", FAULT_GLOB_MAX);
		t->glob[g] = v;
		t->glob_len[g] = vn;
		break;
	}
	case K_SIZE: {
		char buf[32];
		if (!value_cstr(v, vn, buf, sizeof(buf)) || units_parse_size(buf, &r->size_gt))
			return perr(c, off, wn,
			            "size> takes an octet count such as 100000, 10k or 1M");
		break;
	}
	case K_REPLY: {
		const char *why = NULL;
		int n;
		char rerrbuf[160];
		if (decode_reply(v, vn, t->reply, &t->reply_len, &why))
			return perr(c, off, wn, "%s", why);
		n = fault_reply_render(t->reply, t->reply_len, t->wire, sizeof(t->wire), rerrbuf,
		                       sizeof(rerrbuf));
		if (n < 0)
			return perr(c, off, wn, "%s", rerrbuf);
		t->wire_len = (size_t)n;
		r->code = (uint16_t)((t->reply[0] - '0') * 100 + (t->reply[1] - '0') * 10 +
		                     (t->reply[2] - '0'));
		r->act = FAULT_ACT_REPLY;
		break;
	}
	case K_DELAY:
		if (parse_dur(v, vn, &r->delay_ns))
			return perr(c, off, wn, "delay= takes a duration such as 2s or 500ms");
		if (r->delay_ns > FAULT_DELAY_MAX_NS)
			return perr(c, off, wn, "delay= is at most 24h");
		break;
	case K_THROTTLE: {
		char buf[32];
		if (vn < 3 || !ieq(v + vn - 2, 2, "/s") ||
		    !value_cstr(v, vn - 2, buf, sizeof(buf)) ||
		    units_parse_size(buf, &r->throttle_bps) || !r->throttle_bps)
			return perr(c, off, wn, "throttle= takes octets per second such as 1k/s");
		break;
	}
	case K_PROB: {
		int rc = parse_prob(v, vn, &r->prob_ppb);
		if (rc == -E2BIG)
			return perr(c, off, wn, "prob= has at most 9 decimals");
		if (rc)
			return perr(c, off, wn, "prob= must be a number between 0 and 1, e.g. 0.1");
		break;
	}
	case K_EVERY:
	case K_FIRST:
	case K_LIMIT:
	case K_AFTER: {
		uint64_t *dst = k == K_EVERY   ? &r->every
		                : k == K_FIRST ? &r->first
		                : k == K_LIMIT ? &r->limit
		                               : &r->after;
		if (parse_count(v, vn, &u) || (k != K_AFTER && !u))
			return perr(c, off, wn, "%s takes a whole number%s", kws[k].name,
			            k == K_AFTER ? "" : " of at least 1");
		*dst = u;
		break;
	}
	case K_WINDOW: {
		const char *dash = memchr(v, '-', vn);
		if (!dash || parse_dur(v, (size_t)(dash - v), &r->win_from_ns) ||
		    parse_dur(dash + 1, (size_t)(v + vn - dash - 1), &r->win_to_ns))
			return perr(c, off, wn,
			            "window= takes FROM-TO durations since start, e.g. 10s-1m");
		if (r->win_from_ns >= r->win_to_ns)
			return perr(c, off, wn, "window= must end after it starts");
		break;
	}
	case K_DROP:
	case K_RESET:
	case K_STALL:
		r->act = (uint8_t)(FAULT_ACT_DROP + (unsigned)(k - K_DROP));
		break;
	case K_N:
		break;
	}
	r->have |= kws[k].have;
	return 0;
}

int fault_rule_parse(const char *s, size_t len, struct fault_rule **out, char *err, size_t errlen)
{
	struct pctx c = {s, len, err, errlen};
	struct tmp *t;
	size_t i = 0, stage_off, stage_len;
	ssize_t e;
	int rc = -EINVAL;

	*out = NULL;
	if (len > FAULT_RULE_MAX)
		return perr(&c, 0, 0, "rule longer than %d octets", FAULT_RULE_MAX);
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	while (i < len && blank(s[i]))
		i++;
	if (i == len) {
		perr(&c, i, 0,
		     "empty rule (expected a stage: connect helo ehlo mail rcpt data eod bdat "
		     "rset noop quit auth starttls any)");
		goto out;
	}
	stage_off = i;
	while (i < len && !blank(s[i]))
		i++;
	stage_len = i - stage_off;
	i = stage_off;
	if (ctl(s, i, i + stage_len)) {
		perr(&c, i, stage_len, "control character in rule (use \\n in a reply)");
		goto out;
	}
	{
		size_t wn = stage_len;
		unsigned st;
		for (st = 0; st <= FAULT_ST_ANY; st++)
			if (st != FAULT_ST_BDAT_LAST && ieq(s + i, wn, stage_names[st]))
				break;
		if (st > FAULT_ST_ANY) {
			perr(&c, i, wn,
			     "unknown stage (expected connect helo ehlo mail rcpt data eod bdat "
			     "rset "
			     "noop quit auth starttls any)");
			goto out;
		}
		t->r.stage = (uint8_t)st;
		t->r.stage_mask = stage_bits(st);
		i += wn;
	}
	for (;;) {
		while (i < len && blank(s[i]))
			i++;
		if (i == len)
			break;
		e = word_end(s, len, i);
		if (e < 0) {
			perr(&c, i, len - i, "unterminated quote in reply=");
			goto out;
		}
		if (ctl(s, i, (size_t)e)) {
			perr(&c, i, (size_t)e - i,
			     "control character in rule (use \\n in a reply)");
			goto out;
		}
		if ((size_t)e < len && !blank(s[e])) {
			size_t we = (size_t)e;
			while (we < len && !blank(s[we]))
				we++;
			perr(&c, i, we - i, "text after the closing quote");
			goto out;
		}
		rc = parse_word(&c, t, i, (size_t)e - i);
		if (rc)
			goto out;
		rc = -EINVAL;
		i = (size_t)e;
	}
	if (!t->r.act && !(t->r.have & (FAULT_HAVE_DELAY | FAULT_HAVE_THROTTLE))) {
		perr(&c, stage_off, stage_len,
		     "rule has no action (reply=, drop, reset, delay=, stall or throttle=)");
		goto out;
	}

	/* one allocation: the rule, then its strings */
	size_t need = sizeof(struct fault_rule) + t->glob_len[0] + t->glob_len[1] + t->glob_len[2] +
	              t->reply_len + t->wire_len + 5;
	struct fault_rule *r = malloc(need);
	if (!r) {
		rc = -ENOMEM;
		goto out;
	}
	*r = t->r;
	char *p = (char *)(r + 1);
	const char **gdst[3] = {&r->helo, &r->from, &r->to};
	uint32_t *gl[3] = {&r->helo_len, &r->from_len, &r->to_len};
	static const uint32_t gh[3] = {FAULT_HAVE_HELO, FAULT_HAVE_FROM, FAULT_HAVE_TO};
	for (int g = 0; g < 3; g++) {
		if (!(r->have & gh[g])) {
			*gdst[g] = NULL;
			*gl[g] = 0;
			continue;
		}
		*gdst[g] = p;
		*gl[g] = (uint32_t)t->glob_len[g];
		for (size_t j = 0; j < t->glob_len[g]; j++)
			*p++ = lc(t->glob[g][j]);
		*p++ = 0;
	}
	if (r->have & FAULT_HAVE_REPLY) {
		r->reply = p;
		r->reply_len = (uint32_t)t->reply_len;
		memcpy(p, t->reply, t->reply_len);
		p += t->reply_len;
		*p++ = 0;
		r->wire = p;
		r->wire_len = (uint32_t)t->wire_len;
		memcpy(p, t->wire, t->wire_len);
		p += t->wire_len;
		*p++ = 0;
	} else {
		r->reply = r->wire = NULL;
		r->reply_len = r->wire_len = 0;
	}
	*out = r;
	rc = 0;
out:
	free(t);
	return rc;
}

void fault_rule_free(struct fault_rule *r)
{
	free(r);
}

size_t fault_rule_format(const struct fault_rule *r, char *buf, size_t cap)
{
	struct sbuf b = {buf, cap, 0};
	char tmp[64];

	sb_str(&b, fault_stage_name(r->stage));
	if (r->have & FAULT_HAVE_CLIENT) {
		char a[INET6_ADDRSTRLEN];
		inet_ntop(r->client.net.family == 4 ? AF_INET : AF_INET6, r->client.net.b, a,
		          sizeof(a));
		sb_str(&b, " client=");
		sb_str(&b, a);
		if (r->client.prefix != (r->client.net.family == 4 ? 32 : 128))
			sb_printf(&b, "/%u", r->client.prefix);
	}
	if (r->have & FAULT_HAVE_HELO) {
		sb_str(&b, " helo=");
		sb_put(&b, r->helo, r->helo_len);
	}
	if (r->have & FAULT_HAVE_FROM) {
		sb_str(&b, " from=");
		if (r->from_len)
			sb_put(&b, r->from, r->from_len);
		else
			sb_str(&b, "<>");
	}
	if (r->have & FAULT_HAVE_TO) {
		sb_str(&b, " to=");
		sb_put(&b, r->to, r->to_len);
	}
	if (r->have & FAULT_HAVE_SIZE) {
		sb_str(&b, " size>");
		size_format(&b, r->size_gt);
	}
	if (r->have & FAULT_HAVE_REPLY) {
		sb_str(&b, " reply='");
		for (uint32_t i = 0; i < r->reply_len; i++) {
			char ch = r->reply[i];
			if (ch == '\n')
				sb_str(&b, "\\n");
			else if (ch == '\\' || ch == '\'')
				sb_put(&b, "\\", 1), sb_put(&b, &ch, 1);
			else
				sb_put(&b, &ch, 1);
		}
		sb_str(&b, "'");
	}
	if (r->have & FAULT_HAVE_DELAY) {
		fault_duration_format(r->delay_ns, tmp, sizeof(tmp));
		sb_str(&b, " delay=");
		sb_str(&b, tmp);
	}
	if (r->act >= FAULT_ACT_DROP) {
		sb_str(&b, " ");
		sb_str(&b, act_names[r->act]);
	}
	if (r->have & FAULT_HAVE_THROTTLE) {
		sb_str(&b, " throttle=");
		size_format(&b, r->throttle_bps);
		sb_str(&b, "/s");
	}
	if (r->have & FAULT_HAVE_PROB) {
		if (r->prob_ppb == 0 || r->prob_ppb == 1000000000u) {
			sb_str(&b, r->prob_ppb ? " prob=1" : " prob=0");
		} else {
			int n = snprintf(tmp, sizeof(tmp), "%09u", r->prob_ppb);
			while (n > 1 && tmp[n - 1] == '0')
				tmp[--n] = 0;
			sb_str(&b, " prob=0.");
			sb_str(&b, tmp);
		}
	}
	if (r->have & FAULT_HAVE_EVERY)
		sb_printf(&b, " every=%llu", (unsigned long long)r->every);
	if (r->have & FAULT_HAVE_FIRST)
		sb_printf(&b, " first=%llu", (unsigned long long)r->first);
	if (r->have & FAULT_HAVE_AFTER)
		sb_printf(&b, " after=%llu", (unsigned long long)r->after);
	if (r->have & FAULT_HAVE_WINDOW) {
		sb_str(&b, " window=");
		fault_duration_format(r->win_from_ns, tmp, sizeof(tmp));
		sb_str(&b, tmp);
		sb_str(&b, "-");
		fault_duration_format(r->win_to_ns, tmp, sizeof(tmp));
		sb_str(&b, tmp);
	}
	if (r->have & FAULT_HAVE_LIMIT)
		sb_printf(&b, " limit=%llu", (unsigned long long)r->limit);
	return sb_end(&b);
}

static bool str_eq(const char *a, uint32_t an, const char *b, uint32_t bn)
{
	return an == bn && (!an || !memcmp(a, b, an)) && (!a) == (!b);
}

bool fault_rule_equal(const struct fault_rule *a, const struct fault_rule *b)
{
	return a->stage == b->stage && a->act == b->act && a->code == b->code &&
	       a->have == b->have && a->stage_mask == b->stage_mask &&
	       a->client.prefix == b->client.prefix &&
	       !memcmp(&a->client.net, &b->client.net, sizeof(a->client.net)) &&
	       str_eq(a->helo, a->helo_len, b->helo, b->helo_len) &&
	       str_eq(a->from, a->from_len, b->from, b->from_len) &&
	       str_eq(a->to, a->to_len, b->to, b->to_len) && a->size_gt == b->size_gt &&
	       str_eq(a->reply, a->reply_len, b->reply, b->reply_len) &&
	       str_eq(a->wire, a->wire_len, b->wire, b->wire_len) && a->delay_ns == b->delay_ns &&
	       a->throttle_bps == b->throttle_bps && a->prob_ppb == b->prob_ppb &&
	       a->every == b->every && a->first == b->first && a->after == b->after &&
	       a->limit == b->limit && a->win_from_ns == b->win_from_ns &&
	       a->win_to_ns == b->win_to_ns;
}
