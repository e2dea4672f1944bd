/*
 * fuzz_client.c - libFuzzer target for the client session core
 *
 * Input: one configuration octet (pipelining, BDAT, HELO, recipients, end
 * by timeout or close, TLS), one octet of split size and TLS/AUTH options,
 * then the server's bytes.  The harness acts as a driver that writes only
 * part of the output at a time, so replies arrive while commands are still
 * queued (the "server answers ahead" case); when asked for TLS it reports
 * the handshake done at once (or failed, for one split value), so the
 * following bytes stand for the decrypted stream.
 * Invariants checked: every started message gets exactly one result, the
 * result's counts are consistent with its outcome, the command buffer and
 * iovec queue stay within bounds, nothing is queued behind STARTTLS, no
 * message starts before TLS is up (--starttls/--tls) or before AUTH was
 * accepted, the password never goes out unencoded, and after the end of
 * input the session is closed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sink/client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char stamp[] = "X-Stamp: 1\r\n";
static const char raw[] = "a\r\n.b\r\n";
static const char wire[] = "a\r\n..b\r\n.\r\n";

static void check(int ok)
{
	if (!ok)
		abort();
}

struct h {
	struct client c;
	struct client_stats *st;
	unsigned started, results, writes;
	int tlsfail;
};

/* out_has - the queued output holds s in clear (within one iovec) */
static int out_has(const struct client *c, const char *s)
{
	for (int i = 0; i < c->nout; i++)
		if (memmem(c->out[i].iov_base, c->out[i].iov_len, s, strlen(s)))
			return 1;
	return 0;
}

static void act_on(struct h *h, unsigned act, size_t wr)
{
	while (act) {
		unsigned next = 0;
		if (act & CLIENT_ACT_MSG) {
			const struct client_result *r = &h->c.res;
			uint32_t k = h->c.cfg->rcpts;
			h->results++;
			check(h->results <= h->started);
			check(r->rcpt_ok + r->rcpt_4xx + r->rcpt_5xx + r->rcpt_other <= k);
			if (r->outcome == CLIENT_DELIVERED)
				check(r->rcpt_ok == k);
			else if (r->outcome == CLIENT_PARTIAL)
				check(r->rcpt_ok > 0 && r->rcpt_ok < k);
			else
				check(r->fail != CLIENT_FAIL_NONE && r->fail < CLIENT_FAIL_N);
			/* only failures are retried, never one a recipient refused for good */
			if (client_retryable(r))
				check(r->outcome == CLIENT_FAILED && !r->rcpt_5xx &&
				      !r->rcpt_other);
		}
		if (act & CLIENT_ACT_CLOSE)
			while (client_lost(&h->c)) /* --depth: the rest in flight */
				h->results++;
		if (act & CLIENT_ACT_TLS) {
			/* RFC 3207 4: nothing pipelined behind STARTTLS */
			check(h->c.state == CLIENT_ST_TLS && !h->c.tls_up && h->c.cfg->tls);
			check(!client_has_output(&h->c) && h->results == h->started);
			next = h->tlsfail ? client_tls_failed(&h->c, "fuzz") : client_tls_up(&h->c);
		}
		if (!(act & CLIENT_ACT_CLOSE) && (act & CLIENT_ACT_READY)) {
			uint32_t depth = h->c.cfg->depth > 1 ? h->c.cfg->depth : 1;
			check(h->started - h->results <= depth);
			check(h->c.cfg->depth > 1 || h->results == h->started);
			/* no message before TLS (when asked for) and AUTH succeeded */
			check(!h->c.cfg->tls || h->c.tls_up);
			check(!h->c.cfg->auth_user || h->st->auth_ok > 0);
			bool begun = false;
			while (h->started < 6 && client_can_begin(&h->c) &&
			       !(next & CLIENT_ACT_CLOSE)) {
				struct client_msg m = {
				    h->started + 1,  stamp, sizeof(stamp) - 1, raw,
				    sizeof(raw) - 1, wire,  sizeof(wire) - 1};
				h->started++;
				next |= client_begin(&h->c, &m);
				begun = true;
				check(h->c.inflight == h->started - h->results);
			}
			if (!begun)
				next = client_quit(&h->c);
		}
		check(h->c.cmd_len <= h->c.cmd_cap && h->c.nout <= h->c.out_max);
		check(h->c.state != CLIENT_ST_TLS || !client_has_output(&h->c));
		check(!out_has(&h->c, "pw-secret"));
		check(h->st->auth_ok + h->st->auth_failed <= h->st->auth_attempts);
		/* a slow writer: part of the output now, the rest later */
		if (client_has_output(&h->c)) {
			int n;
			const struct iovec *iov = client_out(&h->c, &n);
			size_t total = 0;
			for (int i = 0; i < n; i++)
				total += iov[i].iov_len;
			h->writes++;
			client_wrote(&h->c, h->writes % 3 ? total : (wr < total ? wr : total));
		}
		act = next & ~(unsigned)CLIENT_ACT_SEND;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct client_cfg cfg = {
	    .ehlo = "client.test", .from_tpl = "f{n}@a.test", .to_tpl = "t{r}.{n}@b.test"};
	struct client_stats st;
	struct h h;
	size_t off = 2, cap;
	char *cmd;

	if (size < 2)
		return 0;
	cfg.pipelining = (data[0] & 3) == 3 ? -1 : (data[0] & 3) == 2 ? 1 : 0;
	cfg.bdat = data[0] & 4;
	cfg.helo = data[0] & 8;
	cfg.rcpts = 1u + (data[0] >> 4 & 3);
	cfg.depth = size % 3 == 0 ? 1u + (uint32_t)(size % 5) : 1; /* --depth */
	if (data[0] & 128)
		cfg.tls = data[1] & 32 ? CLIENT_TLS_IMPLICIT : CLIENT_TLS_STARTTLS;
	if (data[1] & 64) {
		cfg.auth_user = "user{s}";
		cfg.auth_pass = "pw-secret{s}";
		cfg.auth_mech = data[1] & 128 ? CLIENT_MECH_LOGIN : 0;
	}
	size_t step = (size_t)(data[1] & 31) % 17 + 1;
	memset(&st, 0, sizeof(st));
	memset(&h, 0, sizeof(h));
	h.st = &st;
	h.tlsfail = (data[1] & 31) == 31;
	cap = client_cmd_cap(&cfg);
	cmd = malloc(cap);
	client_init(&h.c, &cfg, &st, cmd, cap);
	h.c.sid = (uint32_t)size;
	act_on(&h, client_start(&h.c), step);
	while (off < size && h.c.state != CLIENT_ST_CLOSED) {
		size_t n = size - off < step ? size - off : step, used = 0;
		char *piece = malloc(n); /* fresh buffer: ASan catches kept views */
		memcpy(piece, data + off, n);
		while (used < n && h.c.state != CLIENT_ST_CLOSED) {
			unsigned act;
			size_t k = client_feed(&h.c, piece + used, n - used, &act);
			check(k > 0 && k <= n - used);
			used += k;
			act_on(&h, act, step);
		}
		free(piece);
		off += n;
	}
	if (h.c.state != CLIENT_ST_CLOSED)
		act_on(&h, (data[0] & 64) ? client_timeout(&h.c) : client_eof(&h.c), step);
	check(h.c.state == CLIENT_ST_CLOSED);
	check(h.results == h.started);
	free(cmd);
	return 0;
}
