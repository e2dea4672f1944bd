/*
 * fault_addr.c - address-encoded faults (--address-faults; see fault.h)
 *
 * The client under test picks its fault through the addresses it sends, so
 * one sink serves many test cases without being reconfigured (BadSMTP's
 * idea, with our actions).  The local part, case-insensitive, is
 *
 *   [STAGE "-"] ( "delay-" DUR [ "-" ACT ] | ACT ) [ "+" anything ]
 *   ACT   = "reply-" CODE [ "-" ESC ] | "drop" | "reset" | "stall"
 *   STAGE = mail | rcpt | data | eod | bdat     (MAIL FROM only; RCPT TO: rcpt)
 *
 * e.g. reply-550-5.1.1@any.test, reply-451@x, delay-3s@x, delay-2s-drop@x,
 * eod-reset@x (in MAIL FROM: reset instead of the reply after the message).
 * Anything else is an ordinary address: a near miss is never an error,
 * because real clients send real addresses through the same sink.
 */
#include "sink/fault.h"

#include <stdio.h>
#include <string.h>

#include "sink/units.h"

static inline char lc(char c)
{
	return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

struct tok {
	const char *p;
	size_t n;
};

static bool is(const struct tok *t, const char *w)
{
	size_t n = strlen(w);

	if (t->n != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (lc(t->p[i]) != w[i])
			return false;
	return true;
}

struct cur {
	const char *p, *e;
	bool done;
};

/* next - the next '-'-separated token; false once all are taken. */
static bool next(struct cur *c, struct tok *t)
{
	const char *q;

	if (c->done)
		return false;
	q = memchr(c->p, '-', (size_t)(c->e - c->p));
	t->p = c->p;
	t->n = (size_t)((q ? q : c->e) - c->p);
	if (q)
		c->p = q + 1;
	else
		c->done = true;
	return true;
}

static bool dig(char c)
{
	return c >= '0' && c <= '9';
}

/* esc_ok - RFC 3463 class.subject.detail (1-3 digits each), class == c. */
static bool esc_ok(const struct tok *t, char c)
{
	size_t i = 0, d;

	if (t->n < 5 || t->n >= sizeof(((struct fault_addr_fault *)0)->esc) || t->p[0] != c ||
	    t->p[1] != '.')
		return false;
	i = 2;
	for (d = 0; i < t->n && dig(t->p[i]); i++)
		d++;
	if (d < 1 || d > 3 || i == t->n || t->p[i] != '.')
		return false;
	i++;
	for (d = 0; i < t->n && dig(t->p[i]); i++)
		d++;
	return d >= 1 && d <= 3 && i == t->n;
}

bool fault_addr_parse(const char *addr, size_t len, bool sender, struct fault_addr_fault *f)
{
	static const struct {
		const char *name;
		uint8_t stage;
	} stages[] = {{"mail", FAULT_ST_MAIL},
	              {"rcpt", FAULT_ST_RCPT},
	              {"data", FAULT_ST_DATA},
	              {"eod", FAULT_ST_EOD},
	              {"bdat", FAULT_ST_BDAT}};
	struct fault_addr_fault r;
	const char *at, *plus, *e;
	struct cur cur;
	struct tok t;
	bool delayed = false;

	if (!addr || !len || addr[0] == '"')
		return false; /* null sender; quoted local parts are never faults */
	at = memchr(addr, '@', len);
	e = at ? at : addr + len;
	plus = memchr(addr, '+', (size_t)(e - addr));
	if (plus)
		e = plus; /* RFC 5233 subaddress: lets tests make addresses unique */
	memset(&r, 0, sizeof(r));
	r.stage = sender ? FAULT_ST_MAIL : FAULT_ST_RCPT;
	cur = (struct cur){addr, e, false};
	if (!next(&cur, &t))
		return false;
	for (size_t i = 0; i < sizeof(stages) / sizeof(stages[0]); i++) {
		if (is(&t, stages[i].name) && (sender || stages[i].stage == FAULT_ST_RCPT)) {
			r.stage = stages[i].stage;
			if (!next(&cur, &t))
				return false;
			break;
		}
	}
	if (is(&t, "delay")) {
		char buf[24];
		if (!next(&cur, &t) || !t.n || t.n >= sizeof(buf))
			return false;
		memcpy(buf, t.p, t.n);
		buf[t.n] = 0;
		if (units_parse_duration_ns(buf, &r.delay_ns) || r.delay_ns > FAULT_DELAY_MAX_NS)
			return false;
		delayed = true;
		if (!next(&cur, &t)) {
			*f = r; /* delay only: then the normal reply */
			return true;
		}
	}
	if (is(&t, "reply")) {
		if (!next(&cur, &t) || t.n != 3 || t.p[0] < '2' || t.p[0] > '5' || t.p[1] < '0' ||
		    t.p[1] > '5' || !dig(t.p[2]))
			return false;
		r.act = FAULT_ACT_REPLY;
		r.code = (uint16_t)((t.p[0] - '0') * 100 + (t.p[1] - '0') * 10 + (t.p[2] - '0'));
		char c0 = t.p[0];
		if (next(&cur, &t)) {
			if (c0 == '3' || !esc_ok(&t, c0))
				return false;
			memcpy(r.esc, t.p, t.n);
			r.esc[t.n] = 0;
		}
	} else if (is(&t, "drop")) {
		r.act = FAULT_ACT_DROP;
	} else if (is(&t, "reset")) {
		r.act = FAULT_ACT_RESET;
	} else if (is(&t, "stall") && !delayed) {
		r.act = FAULT_ACT_STALL;
	} else {
		return false;
	}
	if (next(&cur, &t))
		return false; /* trailing words: an ordinary address */
	*f = r;
	return true;
}

size_t fault_addr_reply(const struct fault_addr_fault *f, char *buf, size_t cap)
{
	int n = snprintf(buf, cap, "%03u%s%s Fault requested by address\r\n", f->code,
	                 f->esc[0] ? " " : "", f->esc);
	return n < 0 ? 0 : (size_t)n;
}
