/* test_fault_rule.c - --fault rule grammar: parse, canonical print, errors
 * that name the word and its column, replies, CIDR, globs (fault_rule.c) */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "sink/fault.h"
#include "sink/units.h"

static struct fault_rule *parse_ok(const char *s)
{
	struct fault_rule *r = NULL;
	char err[512] = "";
	int rc = fault_rule_parse(s, strlen(s), &r, err, sizeof(err));

	cr_assert_eq(rc, 0, "'%s' refused: %s", s, err);
	cr_assert_not_null(r);
	return r;
}

/* roundtrip - s parses, prints as canon (when given), and the printed form
 * parses to an equal rule that prints the same. */
static void roundtrip(const char *s, const char *canon)
{
	struct fault_rule *a = parse_ok(s), *b;
	char f1[FAULT_RULE_MAX + 64], f2[FAULT_RULE_MAX + 64];
	size_t n1 = fault_rule_format(a, f1, sizeof(f1));

	cr_assert_lt(n1, sizeof(f1));
	if (canon)
		cr_assert_str_eq(f1, canon, "'%s' printed as '%s'", s, f1);
	b = parse_ok(f1);
	cr_assert(fault_rule_equal(a, b), "'%s' -> '%s' is another rule", s, f1);
	fault_rule_format(b, f2, sizeof(f2));
	cr_assert_str_eq(f1, f2);
	fault_rule_free(a);
	fault_rule_free(b);
}

/* expect_err - s is refused with "column COL, 'WORD': ...MSG..." */
static void expect_err(const char *s, size_t len, size_t col, const char *word, const char *msg)
{
	struct fault_rule *r = (struct fault_rule *)1;
	char err[512] = "", want[256];
	int rc = fault_rule_parse(s, len, &r, err, sizeof(err));

	cr_assert_eq(rc, -EINVAL, "'%s' accepted", s);
	cr_assert_null(r);
	if (word)
		snprintf(want, sizeof(want), "column %zu, '%s': ", col, word);
	else
		snprintf(want, sizeof(want), "column %zu: ", col);
	cr_assert_eq(strncmp(err, want, strlen(want)), 0, "'%s': got \"%s\", want prefix \"%s\"", s,
	             err, want);
	cr_assert_not_null(strstr(err, msg), "'%s': \"%s\" lacks \"%s\"", s, err, msg);
}

#define ERR(s, col, word, msg) expect_err(s, strlen(s), col, word, msg)

Test(fault_rule, issue_examples)
{
	static const char *ex[] = {
	    "rcpt to=*@bounce.test reply='550 5.1.1 No such user'",
	    "eod reply='451 4.3.0 Try again later' every=10",
	    "connect client=127.0.0.9 delay=2s",
	    "eod from=reset@* reset",
	    "mail reply='451 4.3.2 Busy' prob=0.1",
	};
	for (size_t i = 0; i < sizeof(ex) / sizeof(ex[0]); i++)
		roundtrip(ex[i], ex[i]);

	struct fault_rule *r = parse_ok(ex[0]);
	cr_assert_eq(r->stage, FAULT_ST_RCPT);
	cr_assert_eq(r->act, FAULT_ACT_REPLY);
	cr_assert_eq(r->code, 550);
	cr_assert_str_eq(r->to, "*@bounce.test");
	cr_assert_str_eq(r->wire, "550 5.1.1 No such user\r\n");
	cr_assert_eq(r->wire_len, strlen(r->wire));
	fault_rule_free(r);

	r = parse_ok(ex[2]);
	cr_assert_eq(r->act, FAULT_ACT_NONE);
	cr_assert_eq(r->delay_ns, 2000000000ull);
	cr_assert_eq(r->client.net.family, 4);
	cr_assert_eq(r->client.prefix, 32);
	fault_rule_free(r);

	r = parse_ok(ex[4]);
	cr_assert_eq(r->prob_ppb, 100000000u);
	fault_rule_free(r);
}

/* Every stage x action x schedule parses, prints canonically and reads
 * back as the same rule. */
Test(fault_rule, stage_action_schedule_matrix)
{
	static const char *stages[] = {"connect", "helo", "ehlo",     "mail", "rcpt",
	                               "data",    "eod",  "bdat",     "rset", "noop",
	                               "quit",    "auth", "starttls", "any"};
	static const char *actions[] = {"reply='421 4.3.2 Going away'",
	                                "reply='250 2.0.0 one\\ntwo\\nthree'",
	                                "reply='550'",
	                                "drop",
	                                "reset",
	                                "delay=1500ms",
	                                "stall",
	                                "throttle=10k/s",
	                                "reply='451 4.3.0 Later' delay=3s",
	                                "delay=250us drop",
	                                "delay=1m reset",
	                                "reply='250 Ok' throttle=100/s",
	                                "delay=2h throttle=1M/s"};
	static const char *scheds[] = {"",
	                               "prob=0.25",
	                               "prob=1",
	                               "prob=0",
	                               "every=10",
	                               "first=3",
	                               "after=5",
	                               "window=10s-1m",
	                               "limit=7",
	                               "prob=0.5 every=2 first=3 after=2 limit=1",
	                               "window=0s-500ms"};
	char rule[512];
	unsigned n = 0;

	for (size_t s = 0; s < sizeof(stages) / sizeof(stages[0]); s++)
		for (size_t a = 0; a < sizeof(actions) / sizeof(actions[0]); a++)
			for (size_t k = 0; k < sizeof(scheds) / sizeof(scheds[0]); k++) {
				snprintf(rule, sizeof(rule), "%s %s%s%s", stages[s], actions[a],
				         scheds[k][0] ? " " : "", scheds[k]);
				/* already canonical: words are in canonical order */
				roundtrip(rule, rule);
				n++;
			}
	cr_assert_eq(n, 14 * 13 * 11);
}

Test(fault_rule, matches_per_stage)
{
	/* where each MATCH is known: client everywhere, helo after the
	 * greeting, from in a transaction, to at rcpt, size at mail/eod/bdat */
	static const struct {
		const char *m;
		const char *ok;
	} tab[] = {
	    {"client=10.0.0.0/8", "connect helo ehlo mail rcpt data eod bdat rset noop quit auth "
	                          "starttls any"},
	    {"helo=*.test", "helo ehlo mail rcpt data eod bdat rset noop quit auth starttls any"},
	    {"from=*@x.test", "mail rcpt data eod bdat any"},
	    {"from=<>", "mail rcpt data eod bdat any"},
	    {"to=a?c@*", "rcpt any"},
	    {"size>10k", "mail eod bdat any"},
	};
	static const char *stages[] = {"connect", "helo", "ehlo",     "mail", "rcpt",
	                               "data",    "eod",  "bdat",     "rset", "noop",
	                               "quit",    "auth", "starttls", "any"};
	char rule[256], ok[256];

	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++)
		for (size_t s = 0; s < sizeof(stages) / sizeof(stages[0]); s++) {
			snprintf(rule, sizeof(rule), "%s %s drop", stages[s], tab[i].m);
			snprintf(ok, sizeof(ok), " %s ", tab[i].ok);
			char st[32];
			snprintf(st, sizeof(st), " %s ", stages[s]);
			if (strstr(ok, st)) {
				roundtrip(rule, rule);
			} else {
				char w[64];
				snprintf(w, sizeof(w), "%s", tab[i].m);
				expect_err(rule, strlen(rule), strlen(stages[s]) + 2, w,
				           "not known at");
			}
		}

	/* any narrows to where its MATCHes are known */
	struct fault_rule *r = parse_ok("any from=*@x drop");
	cr_assert_eq(r->stage_mask,
	             FAULT_STAGE_BIT(FAULT_ST_MAIL) | FAULT_STAGE_BIT(FAULT_ST_RCPT) |
	                 FAULT_STAGE_BIT(FAULT_ST_DATA) | FAULT_STAGE_BIT(FAULT_ST_EOD) |
	                 FAULT_STAGE_BIT(FAULT_ST_BDAT) | FAULT_STAGE_BIT(FAULT_ST_BDAT_LAST));
	fault_rule_free(r);
	r = parse_ok("any to=x client=::1 drop");
	cr_assert_eq(r->stage_mask, FAULT_STAGE_BIT(FAULT_ST_RCPT));
	fault_rule_free(r);
}

Test(fault_rule, stage_masks)
{
	struct fault_rule *r = parse_ok("eod drop");
	cr_assert_eq(r->stage_mask,
	             FAULT_STAGE_BIT(FAULT_ST_EOD) | FAULT_STAGE_BIT(FAULT_ST_BDAT_LAST));
	fault_rule_free(r);
	r = parse_ok("bdat drop");
	cr_assert_eq(r->stage_mask,
	             FAULT_STAGE_BIT(FAULT_ST_BDAT) | FAULT_STAGE_BIT(FAULT_ST_BDAT_LAST));
	fault_rule_free(r);
	r = parse_ok("any drop");
	cr_assert_eq(r->stage_mask, FAULT_STAGES_ALL);
	fault_rule_free(r);
	r = parse_ok("rcpt drop");
	cr_assert_eq(r->stage_mask, FAULT_STAGE_BIT(FAULT_ST_RCPT));
	fault_rule_free(r);
	/* bdat-last is a query stage, not a keyword */
	ERR("bdat-last drop", 1, "bdat-last", "unknown stage");
}

Test(fault_rule, canonical_form)
{
	static const struct {
		const char *in, *out;
	} tab[] = {
	    /* word order, case, blanks */
	    {"  RCPT\tDROP  To=*@X.Test   every=5 ", "rcpt to=*@x.test drop every=5"},
	    {"eod every=2 reply='451 x' from=A@B", "eod from=a@b reply='451 x' every=2"},
	    {"mail limit=1 after=0 first=2 prob=0.50 window=1s-2s every=3 drop",
	     "mail drop prob=0.5 every=3 first=2 after=0 window=1s-2s limit=1"},
	    /* durations in their largest exact unit */
	    {"rcpt delay=1.5s", "rcpt delay=1500ms"},
	    {"rcpt delay=120", "rcpt delay=2m"},
	    {"rcpt delay=3600s", "rcpt delay=1h"},
	    {"rcpt delay=0", "rcpt delay=0s"},
	    {"rcpt delay=7ns", "rcpt delay=7ns"},
	    {"rcpt window=0-90s drop", "rcpt drop window=0s-90s"},
	    /* sizes in k/M/G when exact */
	    {"eod size>10240 drop", "eod size>10k drop"},
	    {"eod size>1.5M drop", "eod size>1536k drop"},
	    {"eod size>1000 drop", "eod size>1000 drop"},
	    {"eod size>0 drop", "eod size>0 drop"},
	    {"rcpt throttle=2048B/s", "rcpt throttle=2k/s"},
	    {"rcpt throttle=1GiB/S", "rcpt throttle=1G/s"},
	    /* counts with units */
	    {"rcpt every=10k drop", "rcpt drop every=10000"},
	    /* probabilities */
	    {"rcpt prob=0.000000001 drop", "rcpt drop prob=0.000000001"},
	    {"rcpt prob=1.000 drop", "rcpt drop prob=1"},
	    {"rcpt prob=0.0 drop", "rcpt drop prob=0"},
	    {"rcpt prob=00.25 drop", "rcpt drop prob=0.25"},
	    /* addresses */
	    {"connect client=::ffff:10.0.0.0/104 drop", "connect client=10.0.0.0/8 drop"},
	    {"connect client=::FFFF:1.2.3.4 drop", "connect client=1.2.3.4 drop"},
	    {"connect client=2001:DB8:0:0::/32 drop", "connect client=2001:db8::/32 drop"},
	    {"connect client=0.0.0.0/0 drop", "connect client=0.0.0.0/0 drop"},
	    {"connect client=::/0 drop", "connect client=::/0 drop"},
	    {"connect client=::1/128 drop", "connect client=::1 drop"},
	    /* replies: escapes kept, unquoted form quoted */
	    {"rcpt reply=451", "rcpt reply='451'"},
	    {"rcpt reply='550 Can\\'t \\\\ here'", "rcpt reply='550 Can\\'t \\\\ here'"},
	    {"rcpt reply='250 a\\n\\nb'", "rcpt reply='250 a\\n\\nb'"},
	    {"rcpt reply='250 tab\there'", "rcpt reply='250 tab\there'"},
	    {"mail from=<> drop", "mail from=<> drop"},
	    {"rcpt to=O'Brien@x drop", "rcpt to=o'brien@x drop"},
	};
	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++)
		roundtrip(tab[i].in, tab[i].out);
}

Test(fault_rule, errors_name_word_and_column)
{
	ERR("", 1, NULL, "empty rule");
	ERR("   ", 4, NULL, "empty rule");
	ERR("rpct reply='550 x'", 1, "rpct", "unknown stage");
	ERR("  rpct drop", 3, "rpct", "unknown stage");
	ERR("rcpt foo=1 drop", 6, "foo=1", "unknown word");
	ERR("rcpt drop drop", 11, "drop", "given twice");
	ERR("rcpt every=1 every=2 drop", 14, "every=2", "given twice");
	ERR("rcpt reply='550 x' reply='551 y'", 20, "reply='551 y'", "given twice");
	ERR("rcpt reply='550 x' drop", 20, "drop", "cannot be combined with reply=");
	ERR("rcpt drop reply='550 x'", 11, "reply='550 x'", "cannot be combined with drop");
	ERR("rcpt drop reset", 11, "reset", "cannot be combined with drop");
	ERR("rcpt stall drop", 12, "drop", "cannot be combined with stall");
	ERR("rcpt delay=1s stall", 15, "stall", "cannot follow a delay");
	ERR("rcpt stall delay=1s", 12, "delay=1s", "delay= means nothing");
	ERR("rcpt throttle=1k/s drop", 20, "drop", "throttle=");
	ERR("rcpt reset throttle=1k/s", 12, "throttle=1k/s", "reset ends the session");
	ERR("rcpt stall throttle=1k/s", 12, "throttle=1k/s", "stall ends the session");
	ERR("helo size>10k drop", 6, "size>10k",
	    "size> is not known at helo (only at mail, eod, "
	    "bdat)");
	ERR("eod to=x drop", 5, "to=x", "to= is not known at eod (only at rcpt)");
	ERR("connect helo=x drop", 9, "helo=x", "not known at connect");
	ERR("any to=x size>1 drop", 10, "size>1", "no stage knows both size>");
	ERR("rcpt to=*@x", 1, "rcpt", "rule has no action");
	ERR("rcpt every=3", 1, "rcpt", "rule has no action");
	/* values */
	ERR("rcpt prob=1.5 drop", 6, "prob=1.5", "between 0 and 1");
	ERR("rcpt prob=2 drop", 6, "prob=2", "between 0 and 1");
	ERR("rcpt prob=.5 drop", 6, "prob=.5", "between 0 and 1");
	ERR("rcpt prob=-0.1 drop", 6, "prob=-0.1", "between 0 and 1");
	ERR("rcpt prob=1. drop", 6, "prob=1.", "between 0 and 1");
	ERR("rcpt prob=0.5x drop", 6, "prob=0.5x", "between 0 and 1");
	ERR("rcpt prob=1.000000001 drop", 6, "prob=1.000000001", "between 0 and 1");
	ERR("rcpt prob=0.1234567891 drop", 6, "prob=0.1234567891", "at most 9 decimals");
	ERR("rcpt prob= drop", 6, "prob=", "needs a value");
	ERR("rcpt every=0 drop", 6, "every=0", "at least 1");
	ERR("rcpt first=0 drop", 6, "first=0", "at least 1");
	ERR("rcpt limit=0 drop", 6, "limit=0", "at least 1");
	ERR("rcpt every=x drop", 6, "every=x", "whole number");
	ERR("rcpt every=1.5 drop", 6, "every=1.5", "whole number");
	ERR("rcpt after=-1 drop", 6, "after=-1", "whole number");
	ERR("rcpt after=99999999999999999999 drop", 6, "after=99999999999999999999", "whole");
	ERR("rcpt window=5s-1s drop", 6, "window=5s-1s", "must end after it starts");
	ERR("rcpt window=5s-5s drop", 6, "window=5s-5s", "must end after it starts");
	ERR("rcpt window=5s drop", 6, "window=5s", "FROM-TO");
	ERR("rcpt window=-5s drop", 6, "window=-5s", "FROM-TO");
	ERR("rcpt window=1s-2x drop", 6, "window=1s-2x", "FROM-TO");
	ERR("rcpt delay=25h", 6, "delay=25h", "at most 24h");
	ERR("rcpt delay=fast", 6, "delay=fast", "duration");
	ERR("rcpt delay=-1s", 6, "delay=-1s", "duration");
	ERR("rcpt throttle=1k", 6, "throttle=1k", "octets per second");
	ERR("rcpt throttle=0/s", 6, "throttle=0/s", "octets per second");
	ERR("rcpt throttle=/s", 6, "throttle=/s", "octets per second");
	ERR("rcpt throttle=1k/m", 6, "throttle=1k/m", "octets per second");
	ERR("eod size>10q drop", 5, "size>10q", "octet count");
	ERR("eod size>=10 drop", 5, "size>=10", "octet count");
	ERR("rcpt to= drop", 6, "to=", "needs a value");
	ERR("rcpt helo= drop", 6, "helo=", "needs a value");
	/* CIDR */
	ERR("rcpt client=10.1.2.3/8 drop", 6, "client=10.1.2.3/8", "did you mean 10.0.0.0/8?");
	ERR("rcpt client=2001:db8::1/32 drop", 6, "client=2001:db8::1/32",
	    "did you mean 2001:db8::/32?");
	ERR("rcpt client=10.0.0.0/33 drop", 6, "client=10.0.0.0/33", "IPv4 or IPv6");
	ERR("rcpt client=::1/129 drop", 6, "client=::1/129", "IPv4 or IPv6");
	ERR("rcpt client=1.2.3 drop", 6, "client=1.2.3", "IPv4 or IPv6");
	ERR("rcpt client=10.0.0.0/ drop", 6, "client=10.0.0.0/", "IPv4 or IPv6");
	ERR("rcpt client=10.0.0.0/+8 drop", 6, "client=10.0.0.0/+8", "IPv4 or IPv6");
	ERR("rcpt client=fe80::1%eth0 drop", 6, "client=fe80::1%eth0", "IPv4 or IPv6");
	ERR("rcpt client=localhost drop", 6, "client=localhost", "IPv4 or IPv6");
	ERR("rcpt client=::ffff:1.2.3.4/64 drop", 6, "client=::ffff:1.2.3.4/64", "IPv4 or IPv6");
	/* replies */
	ERR("rcpt reply='550 x", 6, "reply='550 x", "unterminated quote");
	ERR("rcpt reply='550 x\\'", 6, "reply='550 x\\'", "unterminated quote");
	ERR("rcpt reply='550 x'y drop", 6, "reply='550 x'y", "text after the closing quote");
	ERR("rcpt reply='55 x'", 6, "reply='55 x'", "three-digit code");
	ERR("rcpt reply='5500 x'", 6, "reply='5500 x'", "three-digit code");
	ERR("rcpt reply='600 x'", 6, "reply='600 x'", "three-digit code");
	ERR("rcpt reply='199 x'", 6, "reply='199 x'", "three-digit code");
	ERR("rcpt reply='560 x'", 6, "reply='560 x'", "three-digit code");
	ERR("rcpt reply='x50 x'", 6, "reply='x50 x'", "three-digit code");
	ERR("rcpt reply=''", 6, "reply=''", "three-digit code");
	ERR("rcpt reply='550x'", 6, "reply='550x'", "followed by a space");
	ERR("rcpt reply='550-x'", 6, "reply='550-x'", "followed by a space");
	ERR("rcpt reply='550 4.1.1 x'", 6, "reply='550 4.1.1 x'", "class must equal");
	ERR("rcpt reply='354 3.0.0 go'", 6, "reply='354 3.0.0 go'", "class must equal");
	ERR("rcpt reply='550 \\t'", 6, "reply='550 \\t'", "unknown escape");
	ERR("rcpt reply=550'x", 6, "reply=550'x", "quoted reply");
	ERR("rcpt reply='550 caf\xc3\xa9'", 6,
	    "reply='550 caf?"
	    "?'",
	    "printable ASCII");
	ERR("rcpt reply=550 x", 16, "x", "unknown word");
	/* control octets, even inside quotes */
	ERR("rcpt\x01 drop", 1, "rcpt?", "control character");
	ERR("rcpt reply='550 a\rb'", 6, "reply='550 a?b'", "control character");
	expect_err("rcpt drop\0 x", 12, 6, "drop?", "control character");
	/* long words are shortened in the message */
	ERR("rcpt to=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@x", 1, "rcpt",
	    "no action");
	ERR("rcpt xx=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@x drop", 6,
	    "xx=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...", "unknown word");
}

Test(fault_rule, length_limits)
{
	char rule[FAULT_RULE_MAX + 64];
	char line[700];

	/* a reply line of exactly 512 octets with CRLF is fine, 513 is not
	 * (RFC 5321 4.5.3.1.5) */
	memset(line, 'x', sizeof(line));
	snprintf(rule, sizeof(rule), "rcpt reply='550 %.*s'", 512 - 6, line);
	roundtrip(rule, rule);
	snprintf(rule, sizeof(rule), "rcpt reply='550 %.*s'", 512 - 5, line);
	ERR(rule, 6, "reply='550 xxxxxxxxxxxxxxxxxxxxxxxxxxxxx...", "longer than 512");
	/* the limit is per line: many lines may add up to more */
	snprintf(rule, sizeof(rule), "rcpt reply='550 %.*s\\n%.*s\\n%.*s'", 400, line, 400, line,
	         400, line);
	roundtrip(rule, rule);
	/* patterns */
	snprintf(rule, sizeof(rule), "rcpt to=%.*s drop", FAULT_GLOB_MAX, line);
	roundtrip(rule, rule);
	snprintf(rule, sizeof(rule), "rcpt to=%.*s drop", FAULT_GLOB_MAX + 1, line);
	ERR(rule, 6, "to=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...", "longer than 512");
	/* whole rule */
	memset(rule, ' ', sizeof(rule));
	memcpy(rule, "rcpt drop", 9);
	expect_err(rule, FAULT_RULE_MAX + 1, 1, NULL, "longer than 4096");
	struct fault_rule *r;
	cr_assert_eq(fault_rule_parse(rule, FAULT_RULE_MAX, &r, NULL, 0), 0);
	fault_rule_free(r);
}

Test(fault_rule, reply_render)
{
	static const struct {
		const char *spec, *wire;
	} tab[] = {
	    {"550 5.1.1 No such user", "550 5.1.1 No such user\r\n"},
	    {"451 Try later", "451 Try later\r\n"},
	    {"550", "550\r\n"},
	    {"550 ", "550\r\n"}, /* no SP without text (RFC 5321 4.2) */
	    {"550 5.1.1", "550 5.1.1\r\n"},
	    /* RFC 5321 4.2: CODE- continuation lines; RFC 2034 4: the enhanced
	     * code on every line */
	    {"550 5.7.1 first\nsecond\nthird",
	     "550-5.7.1 first\r\n550-5.7.1 second\r\n550 5.7.1 third\r\n"},
	    {"250 one\ntwo", "250-one\r\n250 two\r\n"},
	    {"250 one\n", "250-one\r\n250\r\n"},
	    {"250 2.0.0 x\ny", "250-2.0.0 x\r\n250 2.0.0 y\r\n"},
	    {"451 4.3.0\nmore", "451-4.3.0\r\n451 4.3.0 more\r\n"},
	    /* things that only look like an enhanced code are text */
	    {"250 1.5 seconds", "250 1.5 seconds\r\n"},
	    {"250 2.0.0000 x", "250 2.0.0000 x\r\n"},
	    {"250 2.0.0x", "250 2.0.0x\r\n"},
	    {"354 End data", "354 End data\r\n"},
	    {"421 4.3.2 Bye", "421 4.3.2 Bye\r\n"},
	    {"559 x", "559 x\r\n"},
	    {"200 x", "200 x\r\n"},
	};
	char wire[FAULT_REPLY_MAX], err[160];

	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
		int n = fault_reply_render(tab[i].spec, strlen(tab[i].spec), wire, sizeof(wire),
		                           err, sizeof(err));
		cr_assert_gt(n, 0, "'%s': %s", tab[i].spec, err);
		cr_assert_eq((size_t)n, strlen(tab[i].wire), "'%s'", tab[i].spec);
		cr_assert_eq(memcmp(wire, tab[i].wire, (size_t)n), 0, "'%s' -> '%.*s'", tab[i].spec,
		             n, wire);
	}
	/* too small a buffer is an error, never an overflow */
	cr_assert_lt(fault_reply_render("550 abc", 7, wire, 5, err, sizeof(err)), 0);
	/* 421 closes (RFC 5321 4.2.2): the rule's code says so */
	struct fault_rule *r = parse_ok("mail reply='421 4.3.2 Bye'");
	cr_assert_eq(r->code, 421);
	fault_rule_free(r);
}

Test(fault_rule, globs)
{
	static const struct {
		const char *pat, *s;
		bool m;
	} tab[] = {
	    {"*", "", true},
	    {"*", "anything", true},
	    {"", "", true},
	    {"", "a", false},
	    {"a", "A", true},
	    {"*@bounce.test", "User@BOUNCE.test", true},
	    {"*@bounce.test", "user@bounce.test.evil", false},
	    {"reset@*", "reset@x", true},
	    {"reset@*", "xreset@x", false},
	    {"?", "", false},
	    {"?", "x", true},
	    {"??", "x", false},
	    {"a?c", "abc", true},
	    {"a?c", "ac", false},
	    {"a*b*c", "aXXbYYc", true},
	    {"a*b*c", "aXXbYY", false},
	    {"a*b*c", "abc", true},
	    {"*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false},
	    {"**", "x", true},
	    {"*?", "", false},
	    {"*?", "x", true},
	    {"x*", "x", true},
	    {"[a]", "[a]", true},
	    {"\xc3\xa9*", "\xc3\xa9t\xc3\xa9", true},
	};
	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++)
		cr_assert_eq(
		    fault_glob_match(tab[i].pat, strlen(tab[i].pat), tab[i].s, strlen(tab[i].s)),
		    tab[i].m, "'%s' vs '%s'", tab[i].pat, tab[i].s);
}

static struct fault_ip ip(const char *s)
{
	struct fault_ip a;
	cr_assert_eq(fault_ip_parse(s, &a), 0, "%s", s);
	return a;
}

static bool in(const char *rule_client, const char *addr)
{
	char rule[128];
	struct fault_rule *r;
	struct fault_ip a = ip(addr);
	bool m;

	snprintf(rule, sizeof(rule), "connect client=%s drop", rule_client);
	r = parse_ok(rule);
	m = fault_cidr_match(&r->client, &a);
	fault_rule_free(r);
	return m;
}

Test(fault_rule, cidr_edges)
{
	cr_assert(in("0.0.0.0/0", "0.0.0.0"));
	cr_assert(in("0.0.0.0/0", "255.255.255.255"));
	cr_assert(!in("0.0.0.0/0", "::1"), "/0 of IPv4 is not all of IPv6");
	cr_assert(in("::/0", "::"));
	cr_assert(in("::/0", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
	cr_assert(!in("::/0", "1.2.3.4"), "IPv4 clients are IPv4 even from a v6 socket");
	cr_assert(in("127.0.0.9", "127.0.0.9"));
	cr_assert(in("127.0.0.9/32", "127.0.0.9"));
	cr_assert(!in("127.0.0.9", "127.0.0.8"));
	cr_assert(!in("127.0.0.9", "127.0.0.10"));
	cr_assert(in("127.0.0.9", "::ffff:127.0.0.9"));
	cr_assert(in("10.0.0.0/8", "10.255.255.255"));
	cr_assert(!in("10.0.0.0/8", "11.0.0.0"));
	cr_assert(!in("10.0.0.0/8", "9.255.255.255"));
	cr_assert(in("192.168.1.128/25", "192.168.1.255"));
	cr_assert(in("192.168.1.128/25", "192.168.1.128"));
	cr_assert(!in("192.168.1.128/25", "192.168.1.127"));
	cr_assert(in("10.0.0.0/7", "11.1.1.1"));
	cr_assert(!in("10.0.0.0/7", "12.0.0.0"));
	cr_assert(in("::1", "::1"));
	cr_assert(in("::1/128", "::1"));
	cr_assert(!in("::1/128", "::2"));
	cr_assert(!in("::1/128", "::"));
	cr_assert(in("2001:db8::/32", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"));
	cr_assert(!in("2001:db8::/32", "2001:db9::"));
	cr_assert(in("2001:db8::/33", "2001:db8:7fff::1"));
	cr_assert(!in("2001:db8::/33", "2001:db8:8000::"));
	cr_assert(in("fe80::/10", "febf::1"));
	cr_assert(!in("fe80::/10", "fec0::1"));
	cr_assert(in("::ffff:10.0.0.0/104", "10.1.2.3"));

	/* sockaddr normalisation */
	struct sockaddr_in6 s6 = {.sin6_family = AF_INET6};
	struct fault_ip a;
	inet_pton(AF_INET6, "::ffff:127.0.0.9", &s6.sin6_addr);
	fault_ip_from_sockaddr((struct sockaddr *)&s6, &a);
	cr_assert_eq(a.family, 4);
	cr_assert_eq(memcmp(a.b, "\x7f\x00\x00\x09", 4), 0);
	inet_pton(AF_INET6, "2001:db8::1", &s6.sin6_addr);
	fault_ip_from_sockaddr((struct sockaddr *)&s6, &a);
	cr_assert_eq(a.family, 6);
	struct sockaddr_in s4 = {.sin_family = AF_INET};
	inet_pton(AF_INET, "10.1.2.3", &s4.sin_addr);
	fault_ip_from_sockaddr((struct sockaddr *)&s4, &a);
	cr_assert_eq(a.family, 4);
	cr_assert_eq(memcmp(a.b, "\x0a\x01\x02\x03", 4), 0);
	struct sockaddr su = {.sa_family = AF_UNIX};
	fault_ip_from_sockaddr(&su, &a);
	cr_assert_eq(a.family, 0);
	fault_ip_from_sockaddr(NULL, &a);
	cr_assert_eq(a.family, 0);
	/* unknown clients match no client= */
	struct fault_rule *r = parse_ok("connect client=0.0.0.0/0 drop");
	cr_assert(!fault_cidr_match(&r->client, &a));
	cr_assert(!fault_cidr_match(&r->client, NULL));
	fault_rule_free(r);
}

Test(fault_rule, duration_format)
{
	static const struct {
		uint64_t ns;
		const char *s;
	} tab[] = {{0, "0s"},
	           {1, "1ns"},
	           {999, "999ns"},
	           {1000, "1us"},
	           {1500000, "1500us"},
	           {2000000000ull, "2s"},
	           {90000000000ull, "90s"},
	           {120000000000ull, "2m"},
	           {7200000000000ull, "2h"},
	           {86400000000000ull, "24h"}};
	char buf[32];
	uint64_t back;

	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
		fault_duration_format(tab[i].ns, buf, sizeof(buf));
		cr_assert_str_eq(buf, tab[i].s);
		cr_assert_eq(units_parse_duration_ns(buf, &back), 0);
		cr_assert_eq(back, tab[i].ns);
	}
	/* truncation keeps NUL termination and reports the full length */
	cr_assert_eq(fault_duration_format(86400000000000ull, buf, 2), 3);
	cr_assert_str_eq(buf, "2");
}

Test(fault_rule, format_truncates_safely)
{
	struct fault_rule *r = parse_ok("rcpt to=*@bounce.test reply='550 5.1.1 No such user'");
	char full[256], small[10];
	size_t n = fault_rule_format(r, full, sizeof(full));

	cr_assert_eq(fault_rule_format(r, small, sizeof(small)), n);
	cr_assert_eq(strlen(small), sizeof(small) - 1);
	cr_assert_eq(strncmp(small, full, sizeof(small) - 1), 0);
	cr_assert_eq(fault_rule_format(r, NULL, 0), n);
	fault_rule_free(r);
}
