/* test_fault_addr.c - address-encoded faults: every form, near misses that
 * must stay ordinary addresses, and their place in the decision order
 * (fault_addr.c, fault.c) */
#include <criterion/criterion.h>
#include <string.h>

#include "sink/fault.h"

#define S 1000000000ull

Test(fault_addr, forms)
{
	static const struct {
		const char *addr;
		bool sender;
		uint8_t stage, act;
		uint16_t code;
		const char *esc;
		uint64_t delay;
		const char *reply;
	} tab[] = {
	    {"reply-550-5.1.1@any.test", false, FAULT_ST_RCPT, FAULT_ACT_REPLY, 550, "5.1.1", 0,
	     "550 5.1.1 Fault requested by address\r\n"},
	    {"reply-451@x", false, FAULT_ST_RCPT, FAULT_ACT_REPLY, 451, "", 0,
	     "451 Fault requested by address\r\n"},
	    {"REPLY-421-4.3.2@X.TEST", false, FAULT_ST_RCPT, FAULT_ACT_REPLY, 421, "4.3.2", 0,
	     "421 4.3.2 Fault requested by address\r\n"},
	    {"reply-250-2.999.999@x", false, FAULT_ST_RCPT, FAULT_ACT_REPLY, 250, "2.999.999", 0,
	     "250 2.999.999 Fault requested by address\r\n"},
	    {"reply-354@x", true, FAULT_ST_MAIL, FAULT_ACT_REPLY, 354, "", 0,
	     "354 Fault requested by address\r\n"},
	    {"reply-550", false, FAULT_ST_RCPT, FAULT_ACT_REPLY, 550, "", 0, NULL},
	    {"reply-550+case17@x", false, FAULT_ST_RCPT, FAULT_ACT_REPLY, 550, "", 0, NULL},
	    {"reply-550-5.1.1+a-b-c@x", false, FAULT_ST_RCPT, FAULT_ACT_REPLY, 550, "5.1.1", 0,
	     NULL},
	    {"delay-3s@x", false, FAULT_ST_RCPT, FAULT_ACT_NONE, 0, "", 3 * S, NULL},
	    {"delay-1.5s@x", false, FAULT_ST_RCPT, FAULT_ACT_NONE, 0, "", 1500000000ull, NULL},
	    {"delay-250ms@x", true, FAULT_ST_MAIL, FAULT_ACT_NONE, 0, "", 250000000ull, NULL},
	    {"delay-2@x", false, FAULT_ST_RCPT, FAULT_ACT_NONE, 0, "", 2 * S, NULL},
	    {"delay-24h@x", false, FAULT_ST_RCPT, FAULT_ACT_NONE, 0, "", 86400 * S, NULL},
	    {"delay-500ms-reply-451-4.3.0@x", false, FAULT_ST_RCPT, FAULT_ACT_REPLY, 451, "4.3.0",
	     500000000ull, NULL},
	    {"delay-2s-drop@x", false, FAULT_ST_RCPT, FAULT_ACT_DROP, 0, "", 2 * S, NULL},
	    {"delay-1m-reset@x", false, FAULT_ST_RCPT, FAULT_ACT_RESET, 0, "", 60 * S, NULL},
	    {"drop@x", false, FAULT_ST_RCPT, FAULT_ACT_DROP, 0, "", 0, NULL},
	    {"Drop@X", true, FAULT_ST_MAIL, FAULT_ACT_DROP, 0, "", 0, NULL},
	    {"reset@x", false, FAULT_ST_RCPT, FAULT_ACT_RESET, 0, "", 0, NULL},
	    {"stall@x", false, FAULT_ST_RCPT, FAULT_ACT_STALL, 0, "", 0, NULL},
	    {"drop@", false, FAULT_ST_RCPT, FAULT_ACT_DROP, 0, "", 0, NULL},
	    /* a sender may name a later stage of its transaction */
	    {"mail-reply-451@x", true, FAULT_ST_MAIL, FAULT_ACT_REPLY, 451, "", 0, NULL},
	    {"rcpt-reply-550-5.1.1@x", true, FAULT_ST_RCPT, FAULT_ACT_REPLY, 550, "5.1.1", 0, NULL},
	    {"data-reply-554-5.5.1@x", true, FAULT_ST_DATA, FAULT_ACT_REPLY, 554, "5.5.1", 0, NULL},
	    {"eod-reset@x", true, FAULT_ST_EOD, FAULT_ACT_RESET, 0, "", 0, NULL},
	    {"EOD-delay-3s@x", true, FAULT_ST_EOD, FAULT_ACT_NONE, 0, "", 3 * S, NULL},
	    {"bdat-drop@x", true, FAULT_ST_BDAT, FAULT_ACT_DROP, 0, "", 0, NULL},
	    {"eod-stall+x@y", true, FAULT_ST_EOD, FAULT_ACT_STALL, 0, "", 0, NULL},
	    /* a recipient may say rcpt- (its own stage) */
	    {"rcpt-drop@x", false, FAULT_ST_RCPT, FAULT_ACT_DROP, 0, "", 0, NULL},
	};
	char buf[FAULT_ADDR_REPLY_MAX];

	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
		struct fault_addr_fault f;
		memset(&f, 0x5a, sizeof(f));
		cr_assert(fault_addr_parse(tab[i].addr, strlen(tab[i].addr), tab[i].sender, &f),
		          "%s", tab[i].addr);
		cr_assert_eq(f.stage, tab[i].stage, "%s", tab[i].addr);
		cr_assert_eq(f.act, tab[i].act, "%s", tab[i].addr);
		cr_assert_eq(f.code, tab[i].code, "%s", tab[i].addr);
		cr_assert_str_eq(f.esc, tab[i].esc, "%s", tab[i].addr);
		cr_assert_eq(f.delay_ns, tab[i].delay, "%s", tab[i].addr);
		if (tab[i].reply) {
			size_t n = fault_addr_reply(&f, buf, sizeof(buf));
			cr_assert_str_eq(buf, tab[i].reply);
			cr_assert_eq(n, strlen(tab[i].reply));
		}
	}
}

Test(fault_addr, near_misses_are_ordinary_addresses)
{
	static const struct {
		const char *addr;
		bool sender;
	} tab[] = {
	    {"", true},
	    {"@x", false},
	    {"+drop@x", false},
	    {"alice@example.test", false},
	    {"\"drop\"@x", false},
	    {"reply@x", false},
	    {"reply-@x", false},
	    {"reply-55@x", false},
	    {"reply-5500@x", false},
	    {"reply-650@x", false},
	    {"reply-160@x", false},
	    {"reply-560@x", false},
	    {"reply-5x0@x", false},
	    {"reply-550-4.1.1@x", false},
	    {"reply-550-5.1@x", false},
	    {"reply-550-5.1.1.1@x", false},
	    {"reply-550-5.1000.1@x", false},
	    {"reply-550-5..1@x", false},
	    {"reply-550-@x", false},
	    {"reply-354-3.0.0@x", false},
	    {"reply-550-5.1.1-extra@x", false},
	    {"reply-550-5.1.1-drop@x", false},
	    {"drop-now@x", false},
	    {"dropx@x", false},
	    {"xdrop@x", false},
	    {"drop-@x", false},
	    {"-drop@x", false},
	    {"delay@x", false},
	    {"delay-@x", false},
	    {"delay-soon@x", false},
	    {"delay--1s@x", false},
	    {"delay-25h@x", false},
	    {"delay-3s-@x", false},
	    {"delay-3s-stall@x", false},
	    {"delay-3s-delay-1s@x", false},
	    {"delay-3s-eod-drop@x", true},
	    {"stall-1s@x", false},
	    {"reset-reset@x", false},
	    /* stage prefixes: a recipient has only its own */
	    {"eod-reset@x", false},
	    {"data-drop@x", false},
	    {"mail-drop@x", false},
	    /* a stage word alone, or with something else */
	    {"eod@x", true},
	    {"eod-@x", true},
	    {"data-team@corp.test", true},
	    {"rcpt-eod-drop@x", true},
	    {"quit-drop@x", true},
	    {"connect-drop@x", true},
	};

	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
		struct fault_addr_fault f;
		cr_assert(!fault_addr_parse(tab[i].addr, strlen(tab[i].addr), tab[i].sender, &f),
		          "'%s' taken for a fault", tab[i].addr);
	}
	struct fault_addr_fault f;
	cr_assert(!fault_addr_parse(NULL, 0, true, &f));
	/* not NUL-terminated: only len octets count */
	cr_assert(fault_addr_parse("drop@xyz", 4, false, &f));
	cr_assert(!fault_addr_parse("dropped", 4 + 1, false, &f));
}

static struct fault_ctx ctx(const char *from, const char *to)
{
	return (struct fault_ctx){.from = from,
	                          .from_len = from ? strlen(from) : 0,
	                          .to = to,
	                          .to_len = to ? strlen(to) : 0};
}

Test(fault_addr, decisions)
{
	struct fault_plan *p = fault_plan_new(0);
	struct fault_decision d;
	struct fault_ctx c;

	/* off unless asked for */
	c = ctx("reply-451@x", "drop@x");
	cr_assert(!fault_decide(p, FAULT_ST_MAIL, &c, &d));
	cr_assert(!fault_decide(p, FAULT_ST_RCPT, &c, &d));
	fault_plan_set_address_faults(p, true);

	cr_assert(fault_decide(p, FAULT_ST_MAIL, &c, &d));
	cr_assert_eq(d.src, FAULT_SRC_ADDRESS);
	cr_assert_eq(d.act, FAULT_ACT_REPLY);
	cr_assert_eq(d.code, 451);
	cr_assert_eq(d.reply, d.buf);
	cr_assert_eq(d.reply_len, strlen("451 Fault requested by address\r\n"));
	cr_assert_eq(memcmp(d.reply, "451 Fault requested by address\r\n", d.reply_len), 0);

	/* at RCPT: the sender's fault is for MAIL, so the recipient's acts */
	cr_assert(fault_decide(p, FAULT_ST_RCPT, &c, &d));
	cr_assert_eq(d.act, FAULT_ACT_DROP);
	cr_assert_eq(d.reply, NULL);

	c = ctx("alice@x", "reply-421-4.7.0@x");
	cr_assert(!fault_decide(p, FAULT_ST_MAIL, &c, &d));
	cr_assert(fault_decide(p, FAULT_ST_RCPT, &c, &d));
	cr_assert(d.close, "421 closes");
	cr_assert(!fault_decide(p, FAULT_ST_EOD, &c, &d), "a recipient acts at its RCPT only");

	/* a sender naming a later stage, which wins over the recipient */
	c = ctx("rcpt-reply-550-5.1.1@x", "reply-451@x");
	cr_assert(!fault_decide(p, FAULT_ST_MAIL, &c, &d));
	cr_assert(fault_decide(p, FAULT_ST_RCPT, &c, &d));
	cr_assert_eq(d.code, 550);

	c = ctx("eod-reset@x", NULL);
	cr_assert(!fault_decide(p, FAULT_ST_MAIL, &c, &d));
	cr_assert(!fault_decide(p, FAULT_ST_DATA, &c, &d));
	cr_assert(!fault_decide(p, FAULT_ST_BDAT, &c, &d));
	cr_assert(fault_decide(p, FAULT_ST_EOD, &c, &d));
	cr_assert_eq(d.act, FAULT_ACT_RESET);
	cr_assert(fault_decide(p, FAULT_ST_BDAT_LAST, &c, &d), "BDAT LAST ends the message too");

	c = ctx("bdat-delay-2s@x", NULL);
	cr_assert(fault_decide(p, FAULT_ST_BDAT, &c, &d));
	cr_assert_eq(d.act, FAULT_ACT_NONE);
	cr_assert_eq(d.delay_ns, 2 * S);
	cr_assert(fault_decide(p, FAULT_ST_BDAT_LAST, &c, &d));
	cr_assert(!fault_decide(p, FAULT_ST_EOD, &c, &d));

	c = ctx("data-reply-554-5.5.1@x", NULL);
	cr_assert(fault_decide(p, FAULT_ST_DATA, &c, &d));
	cr_assert_eq(d.code, 554);

	/* the null sender and ordinary addresses are not faults */
	c = ctx("", "bob@x");
	cr_assert(!fault_decide(p, FAULT_ST_MAIL, &c, &d));
	cr_assert(!fault_decide(p, FAULT_ST_RCPT, &c, &d));
	cr_assert_eq(fault_plan_injected(p), 9);
	fault_plan_free(p);
}

Test(fault_addr, rules_come_first)
{
	struct fault_plan *p = fault_plan_new(0);
	struct fault_decision d;
	struct fault_ctx c = ctx("alice@x", "reply-550-5.1.1@x");
	char err[256];

	cr_assert_eq(fault_plan_add(p, "rcpt reply='451 4.3.0 rule' every=2", 35, err, sizeof(err)),
	             0, "%s", err);
	fault_plan_set_address_faults(p, true);
	cr_assert(fault_decide(p, FAULT_ST_RCPT, &c, &d));
	cr_assert_eq(d.src, FAULT_SRC_ADDRESS);
	cr_assert(fault_decide(p, FAULT_ST_RCPT, &c, &d));
	cr_assert_eq(d.src, FAULT_SRC_RULE);
	cr_assert_eq(d.code, 451);
	fault_plan_free(p);
}
