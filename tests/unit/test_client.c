/* test_client.c - client session core: EHLO keywords, command builder bounds,
 * output queue, one result per message */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "sink/client.h"

static const char stamp[] = "X-Stamp: 1\r\n";
static const char raw[] = "b\r\n";
static const char wire[] = "b\r\n.\r\n";

struct t {
	struct client_cfg cfg;
	struct client_stats st;
	struct client c;
	char *cmd;
	char out[1 << 17];
	size_t olen;
};

static void setup_t(struct t *t, const char *from, const char *to, uint32_t rcpts, int pipe,
                    bool bdat)
{
	memset(t, 0, sizeof(*t));
	t->cfg = (struct client_cfg){.ehlo = "c.test",
	                             .pipelining = pipe,
	                             .bdat = bdat,
	                             .rcpts = rcpts,
	                             .from_tpl = from,
	                             .to_tpl = to};
	size_t cap = client_cmd_cap(&t->cfg);
	t->cmd = malloc(cap);
	client_init(&t->c, &t->cfg, &t->st, t->cmd, cap);
	client_start(&t->c);
}

/* drain - take all queued output as written */
static void drain(struct t *t)
{
	int n;
	const struct iovec *iov = client_out(&t->c, &n);
	size_t total = 0;

	for (int i = 0; i < n; i++) {
		cr_assert(t->olen + iov[i].iov_len < sizeof(t->out));
		memcpy(t->out + t->olen, iov[i].iov_base, iov[i].iov_len);
		t->olen += iov[i].iov_len;
		total += iov[i].iov_len;
	}
	client_wrote(&t->c, total);
}

static unsigned feed(struct t *t, const char *s)
{
	size_t n = strlen(s), off = 0;
	unsigned all = 0;

	while (off < n) {
		unsigned act;
		off += client_feed(&t->c, s + off, n - off, &act);
		all |= act;
	}
	return all;
}

static struct client_msg msg(uint64_t n)
{
	return (struct client_msg){n,    stamp,           sizeof(stamp) - 1, raw, sizeof(raw) - 1,
	                           wire, sizeof(wire) - 1};
}

static uint32_t ehlo_ext(const char *reply)
{
	struct t t;

	setup_t(&t, "a@b", "c@d", 1, -1, false);
	feed(&t, "220 x\r\n");
	feed(&t, reply);
	free(t.cmd);
	return t.c.ext;
}

Test(client, ehlo_keywords_case_insensitive_whole_word)
{
	cr_assert_eq(ehlo_ext("250-x\r\n250 chunking\r\n"), CLIENT_EXT_CHUNKING);
	cr_assert_eq(ehlo_ext("250-x\r\n250-Pipelining\r\n250 CHUNKING\r\n"),
	             CLIENT_EXT_CHUNKING | CLIENT_EXT_PIPELINING);
	cr_assert_eq(ehlo_ext("250-x\r\n250-XCHUNKINGX\r\n250 CHUNKINGX\r\n"), 0);
	cr_assert_eq(ehlo_ext("250-x\r\n250-XCHUNKING\r\n250 PIPE\r\n"), 0);
	cr_assert_eq(ehlo_ext("250-x\r\n250-SIZE 1000\r\n250 AUTH PLAIN LOGIN\r\n"),
	             CLIENT_EXT_SIZE | CLIENT_EXT_AUTH);
	/* the first line is the server's name, never a keyword (RFC 5321 4.1.1.1) */
	cr_assert_eq(ehlo_ext("250-CHUNKING\r\n250 8bitmime\r\n"), CLIENT_EXT_8BITMIME);
	cr_assert_eq(ehlo_ext("250 PIPELINING\r\n"), 0);
	/* a refused EHLO advertises nothing */
	cr_assert_eq(ehlo_ext("550-x\r\n550 CHUNKING\r\n"), 0);
	cr_assert_eq(client_ext_by_name("chunking", 8), CLIENT_EXT_CHUNKING);
	cr_assert_eq(client_ext_by_name("CHUNKINGX", 9), 0);
	cr_assert_eq(client_ext_by_name("CHUNKIN", 7), 0);
}

Test(client, hundred_rcpts_of_300_chars_fit_the_builder)
{
	char to[301], from[301];
	struct t t;

	memset(to, 'r', 300);
	memcpy(to + 280, "{r}@{n}.example", 15);
	to[295] = 0;
	memset(from, 'f', 300);
	from[300] = 0;
	setup_t(&t, from, to, 100, 1, false);
	feed(&t, "220 x\r\n");
	feed(&t, "250-x\r\n250 PIPELINING\r\n");
	drain(&t);
	t.olen = 0;
	struct client_msg m = msg(18446744073709551615ull);
	cr_assert_eq(client_begin(&t.c, &m), CLIENT_ACT_SEND);
	drain(&t);
	t.out[t.olen] = 0;
	/* 1 MAIL + 100 RCPT + DATA, every RCPT with its own index */
	int lines = 0;
	for (size_t i = 0; i < t.olen; i++)
		lines += t.out[i] == '\n';
	cr_assert_eq(lines, 102);
	cr_assert(strstr(t.out, "rrrr99@18446744073709551615.example>\r\nDATA\r\n"));
	cr_assert(t.olen <= client_cmd_cap(&t.cfg));
	free(t.cmd);
}

Test(client, output_is_appended_never_overwritten)
{
	struct t t;
	int n;

	setup_t(&t, "a@b", "c@d", 1, 1, true);
	feed(&t, "220 x\r\n");
	drain(&t);
	feed(&t, "250-x\r\n250 CHUNKING\r\n");
	struct client_msg m = msg(1);
	client_begin(&t.c, &m);
	const struct iovec *iov = client_out(&t.c, &n);
	cr_assert_eq(n, 3); /* envelope, stamp, content */
	client_wrote(&t.c, 5);
	iov = client_out(&t.c, &n);
	cr_assert_eq(strncmp(iov[0].iov_base, "FROM:<a@b>", 10), 0);
	/* the server refuses BDAT before reading it all: RSET queues behind */
	unsigned act = feed(&t, "250 ok\r\n250 ok\r\n554 no\r\n");
	cr_assert(act & CLIENT_ACT_MSG);
	cr_assert_eq(t.c.res.outcome, CLIENT_FAILED);
	cr_assert_eq(t.c.res.fail, CLIENT_FAIL_5XX);
	iov = client_out(&t.c, &n);
	cr_assert_eq(n, 4);
	cr_assert_eq(strncmp(iov[0].iov_base, "FROM:<a@b>", 10), 0);
	cr_assert_eq(strncmp(iov[3].iov_base, "RSET\r\n", 6), 0);
	drain(&t);
	cr_assert_eq(t.c.cmd_len, 0);
	free(t.cmd);
}

Test(client, reply_421_after_data_ends_the_session_once)
{
	struct t t;

	setup_t(&t, "a@b", "c@d", 1, -1, false);
	feed(&t, "220 x\r\n");
	unsigned act = feed(&t, "250-x\r\n250 PIPELINING\r\n");
	cr_assert(act & CLIENT_ACT_READY);
	struct client_msg m = msg(1);
	client_begin(&t.c, &m);
	feed(&t, "250 ok\r\n250 ok\r\n354 go\r\n");
	act = feed(&t, "421 4.3.2 bye\r\n");
	cr_assert_eq(act, CLIENT_ACT_REPLY | CLIENT_ACT_MSG | CLIENT_ACT_CLOSE);
	cr_assert_eq(t.c.res.fail, CLIENT_FAIL_4XX);
	cr_assert(t.c.res.definite);
	cr_assert_eq(client_begin(&t.c, &m), 0);          /* no ghost message */
	cr_assert_eq(client_eof(&t.c), CLIENT_ACT_CLOSE); /* and no second failure */
	free(t.cmd);
}

Test(client, timeout_and_eof_fail_the_message_once)
{
	struct t t;

	setup_t(&t, "a@b", "c@d", 2, 0, false);
	feed(&t, "220 x\r\n");
	feed(&t, "250 x\r\n");
	struct client_msg m = msg(1);
	client_begin(&t.c, &m);
	feed(&t, "250 ok\r\n");
	cr_assert(client_waiting(&t.c));
	unsigned act = client_timeout(&t.c);
	cr_assert_eq(act, CLIENT_ACT_MSG | CLIENT_ACT_CLOSE);
	cr_assert_eq(t.c.res.fail, CLIENT_FAIL_TIMEOUT);
	cr_assert_not(t.c.res.definite);
	cr_assert_eq(t.c.res.cmd, CLIENT_CMD_RCPT);
	cr_assert_eq(client_eof(&t.c), CLIENT_ACT_CLOSE);
	free(t.cmd);
}

/* result - a failed result of class fail with these recipient counts. */
static struct client_result result(uint8_t outcome, uint8_t fail, uint32_t r5, uint32_t rother)
{
	return (struct client_result){
	    .outcome = outcome, .fail = fail, .rcpt_5xx = r5, .rcpt_other = rother};
}

Test(client, retryable_classes)
{
	/* transient: 4xx (421 included), dropped, timeout (RFC 5321 4.2.5) */
	static const uint8_t transient[] = {CLIENT_FAIL_4XX, CLIENT_FAIL_DROPPED,
	                                    CLIENT_FAIL_TIMEOUT};
	for (int f = 0; f < CLIENT_FAIL_N; f++) {
		bool want = false;
		for (size_t i = 0; i < sizeof(transient); i++)
			want |= transient[i] == f;
		struct client_result r = result(CLIENT_FAILED, (uint8_t)f, 0, 0);
		cr_assert_eq(client_retryable(&r), want, "class %s", client_fail_name(f));
		/* a recipient refused for good makes the whole message permanent */
		r = result(CLIENT_FAILED, (uint8_t)f, 1, 0);
		cr_assert_not(client_retryable(&r), "class %s with a 5xx RCPT",
		              client_fail_name(f));
		r = result(CLIENT_FAILED, (uint8_t)f, 0, 1);
		cr_assert_not(client_retryable(&r), "class %s with an odd RCPT reply",
		              client_fail_name(f));
	}
	/* final outcomes are never retried, partial included */
	struct client_result d = result(CLIENT_DELIVERED, CLIENT_FAIL_NONE, 0, 0);
	struct client_result p = result(CLIENT_PARTIAL, CLIENT_FAIL_NONE, 0, 0);
	cr_assert_not(client_retryable(&d));
	cr_assert_not(client_retryable(&p));
}

Test(client, a_retry_is_the_same_message_on_a_clean_transaction)
{
	struct t t;

	setup_t(&t, "s{n}@b", "r{r}.{n}@d", 1, -1, false);
	feed(&t, "220 x\r\n");
	feed(&t, "250-x\r\n250 PIPELINING\r\n");
	drain(&t);
	t.olen = 0; /* EHLO */
	struct client_msg m = msg(77);
	client_begin(&t.c, &m);
	drain(&t);
	feed(&t, "250 ok\r\n250 ok\r\n354 go\r\n");
	drain(&t);
	size_t first = t.olen;
	unsigned act = feed(&t, "451 4.3.0 later\r\n");
	cr_assert_eq(act, CLIENT_ACT_REPLY | CLIENT_ACT_MSG | CLIENT_ACT_READY);
	cr_assert(client_retryable(&t.c.res));
	/* the same client_msg again: byte for byte the same transaction */
	cr_assert_eq(client_begin(&t.c, &m), CLIENT_ACT_SEND);
	drain(&t);
	feed(&t, "250 ok\r\n250 ok\r\n354 go\r\n");
	drain(&t);
	cr_assert_eq(t.olen, 2 * first);
	cr_assert_eq(memcmp(t.out, t.out + first, first), 0);
	act = feed(&t, "250 queued\r\n");
	cr_assert(act & CLIENT_ACT_MSG);
	cr_assert_eq(t.c.res.outcome, CLIENT_DELIVERED);
	free(t.cmd);
}
