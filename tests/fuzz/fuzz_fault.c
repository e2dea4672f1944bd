/*
 * fuzz_fault.c - libFuzzer target for the fault plan's parsers
 *
 * Input: one mode octet, then text.
 *   0  a --fault rule.  Refused: the message names a column.  Accepted:
 *      parse(format(rule)) is an equal rule that prints the same, and a plan
 *      holding it answers at every stage with a well-formed decision.
 *   1  a --fault-file; every accepted rule round-trips as above.
 *   2  an address (sender and recipient); a fault renders a short reply.
 *   3  a reply spec for fault_reply_render(): every wire line is CRLF-ended,
 *      at most 512 octets, and carries the same code.
 *   4  glob and subject (split at the first NUL), --rate-limit text.
 * Any broken invariant aborts.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sink/fault.h"
#include "sink/fault_policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
	if (!ok)
		abort();
}

static void check_wire(const char *w, size_t n)
{
	check(n >= 5 && w[n - 2] == '\r' && w[n - 1] == '\n');
	for (size_t i = 0; i < n;) {
		const char *e = memchr(w + i, '\n', n - i);
		check(e != NULL);
		size_t ll = (size_t)(e - (w + i)) + 1;
		check(ll <= FAULT_REPLY_LINE && ll >= 5 && e[-1] == '\r');
		check(!memcmp(w + i, w, 3));
		bool last = i + ll == n;
		check(w[i + 3] == (last ? ' ' : '-') || (last && w[i + 3] == '\r'));
		i += ll;
	}
}

static void check_decision(const struct fault_decision *d)
{
	check(d->src >= FAULT_SRC_RULE && d->src <= FAULT_SRC_GREYLIST);
	check(d->act <= FAULT_ACT_STALL);
	if (d->act == FAULT_ACT_REPLY) {
		check(d->reply != NULL && d->reply_len > 0);
		check(d->code >= 200 && d->code <= 559);
		check(d->close == (d->code == 421));
		check_wire(d->reply, d->reply_len);
	} else {
		check(d->reply == NULL && !d->close);
	}
	check(d->delay_ns <= FAULT_DELAY_MAX_NS);
}

static void roundtrip(const struct fault_rule *r)
{
	static char f1[2 * FAULT_RULE_MAX], f2[2 * FAULT_RULE_MAX];
	struct fault_rule *b;
	char err[512];
	size_t n = fault_rule_format(r, f1, sizeof(f1));

	check(n < sizeof(f1));
	check(fault_rule_parse(f1, n, &b, err, sizeof(err)) == 0);
	check(fault_rule_equal(r, b));
	check(fault_rule_format(b, f2, sizeof(f2)) == n && !memcmp(f1, f2, n));
	if (r->act == FAULT_ACT_REPLY)
		check_wire(r->wire, r->wire_len);
	fault_rule_free(b);
}

static void ask_all(const struct fault_plan *p, const uint8_t *d, size_t n)
{
	struct fault_ip ip4, ip6;
	struct fault_decision dec;

	fault_ip_parse("127.0.0.9", &ip4);
	fault_ip_parse("2001:db8::1", &ip6);
	/* the input itself as every string field, and a plain context */
	struct fault_ctx c[2] = {
	    {.client = &ip4,
	     .helo = (const char *)d,
	     .helo_len = n,
	     .from = (const char *)d,
	     .from_len = n,
	     .to = (const char *)d,
	     .to_len = n,
	     .size = n * 1000,
	     .has_size = true,
	     .now_ns = n * 100000000ull},
	    {.client = &ip6, .from = "", .from_len = 0, .now_ns = 15000000000ull}};
	for (int k = 0; k < 2; k++)
		for (unsigned st = 0; st < FAULT_ST_COUNT; st++)
			for (int rep = 0; rep < 3; rep++)
				if (fault_decide(p, st, &c[k], &dec))
					check_decision(&dec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[512];

	if (size < 1)
		return 0;
	unsigned mode = data[0] % 5;
	const char *s = (const char *)data + 1;
	size_t n = size - 1;

	switch (mode) {
	case 0: {
		struct fault_rule *r;
		err[0] = 0;
		int rc = fault_rule_parse(s, n, &r, err, sizeof(err));
		if (rc) {
			check(rc == -EINVAL && !strncmp(err, "column ", 7));
			break;
		}
		roundtrip(r);
		fault_rule_free(r);
		struct fault_plan *p = fault_plan_new(data[0]);
		check(fault_plan_add(p, s, n, err, sizeof(err)) == 0);
		fault_plan_set_address_faults(p, data[0] & 0x80);
		ask_all(p, data + 1, n);
		uint64_t m, i;
		fault_plan_counts(p, 0, &m, &i);
		check(i <= m && fault_plan_injected(p) >= i);
		fault_plan_free(p);
		break;
	}
	case 1: {
		struct fault_plan *p = fault_plan_new(0);
		if (fault_plan_add_file(p, s, n, err, sizeof(err)) != 0)
			check(!strncmp(err, "line ", 5));
		for (uint32_t i = 0; i < fault_plan_nrules(p); i++)
			roundtrip(fault_plan_rule(p, i));
		ask_all(p, data + 1, n);
		fault_plan_free(p);
		break;
	}
	case 2: {
		struct fault_addr_fault f;
		char buf[FAULT_ADDR_REPLY_MAX];
		for (int sender = 0; sender < 2; sender++) {
			if (!fault_addr_parse(s, n, sender, &f))
				continue;
			check(f.act <= FAULT_ACT_STALL && f.delay_ns <= FAULT_DELAY_MAX_NS);
			check(f.stage >= FAULT_ST_MAIL && f.stage <= FAULT_ST_BDAT);
			if (f.act == FAULT_ACT_REPLY) {
				size_t k = fault_addr_reply(&f, buf, sizeof(buf));
				check(k < sizeof(buf));
				check_wire(buf, k);
			}
		}
		break;
	}
	case 3: {
		static char wire[FAULT_REPLY_MAX];
		int k = fault_reply_render(s, n, wire, sizeof(wire), err, sizeof(err));
		if (k >= 0)
			check_wire(wire, (size_t)k);
		break;
	}
	case 4: {
		const char *z = memchr(s, 0, n);
		size_t pn = z ? (size_t)(z - s) : n;
		const char *subj = z ? z + 1 : s;
		size_t sn = z ? n - pn - 1 : n;
		(void)fault_glob_match(s, pn, subj, sn);
		check(fault_glob_match("*", 1, subj, sn));
		char *t = malloc(n + 1);
		memcpy(t, s, n);
		t[n] = 0;
		struct fault_rate_cfg cfg;
		if (fault_rate_parse(t, &cfg, err, sizeof(err)) == 0)
			check(cfg.n >= 1 && cfg.per_ns >= 1);
		free(t);
		break;
	}
	}
	return 0;
}
