/* test_reply.c - client-side reply parser, fed whole and split anywhere */
#include <criterion/criterion.h>
#include <string.h>

#include "sink/reply.h"

struct got {
	int n;
	struct reply r[16];
};

static void feed(const char *in, size_t n, size_t step, struct got *g)
{
	struct reply_parser rp;
	size_t off = 0;

	reply_init(&rp);
	memset(g, 0, sizeof(*g));
	while (off < n) {
		size_t len = step && step < n - off ? step : n - off, p = 0;
		while (p < len) {
			int done;
			p += reply_feed(&rp, in + off + p, len - p, &g->r[g->n], &done);
			if (done)
				g->n++;
		}
		off += len;
	}
}

static void check_all_splits(const char *in, const struct got *want)
{
	size_t n = strlen(in);

	for (size_t step = 0; step <= n; step++) {
		struct got g;
		feed(in, n, step, &g);
		cr_assert_eq(g.n, want->n, "step %zu", step);
		for (int i = 0; i < g.n; i++) {
			cr_assert_eq(g.r[i].code, want->r[i].code);
			cr_assert_eq(g.r[i].bad, want->r[i].bad, "reply %d step %zu", i, step);
			cr_assert_str_eq(g.r[i].text, want->r[i].text);
		}
	}
}

Test(reply, single_and_multiline)
{
	const char *in = "220 mx.test ESMTP\r\n250-mx.test\r\n250-PIPELINING\r\n250 CHUNKING\r\n"
	                 "354 go\r\n250\r\n";
	struct got g;

	feed(in, strlen(in), 0, &g);
	cr_assert_eq(g.n, 4);
	cr_assert_eq(g.r[0].code, 220);
	cr_assert_str_eq(g.r[0].text, "220 mx.test ESMTP");
	cr_assert_eq(g.r[1].code, 250);
	cr_assert_eq(g.r[1].lines, 3);
	cr_assert_eq(g.r[2].code, 354);
	cr_assert_eq(g.r[3].code, 250);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(g.r[i].bad, 0);
	check_all_splits(in, &g);
}

Test(reply, violations_are_flagged)
{
	static const char *bad[] = {
	    "25 short\r\n",                /* code too short */
	    "2x0 bad code\r\n",            /* non-digit */
	    "250-first\r\n251 second\r\n", /* code changes within a reply */
	    "250_sep\r\n",                 /* bad separator */
	    "250 bare lf\n",               /* LF without CR */
	    "250 bare\rcr\r\n",            /* CR inside a line */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct got g;
		feed(bad[i], strlen(bad[i]), 0, &g);
		cr_assert_eq(g.n, 1, "vector %zu", i);
		cr_assert_eq(g.r[0].bad, 1, "vector %zu not flagged", i);
		check_all_splits(bad[i], &g);
	}
}
