/*
 * client.c - SMTP client session core (see client.h)
 *
 * A transaction is a list of replies to wait for: index 0 answers MAIL,
 * 1..k the k RCPTs, k+1 DATA (354) or BDAT (250), and then, for DATA, the
 * reply to the content.  With PIPELINING all envelope commands are written
 * at once and the replies are matched in order (RFC 2920 3.1: the client
 * must read every reply of the group); without it the reply to one command
 * triggers the next.  The same handler serves both, so the two modes count
 * identically.
 *
 * Before the first transaction: greeting, EHLO, then - each only when asked
 * for - STARTTLS and a second EHLO over TLS (RFC 3207), the CHUNKING check,
 * and AUTH (RFC 4954).  Each of these steps is a single command on its own,
 * never pipelined: RFC 3207 4 forbids anything after STARTTLS in a group,
 * and RFC 4954 4 makes AUTH a round trip of its own.  A requirement the
 * server does not meet (no STARTTLS, no AUTH, no usable mechanism) fails
 * the session as unsupported after a polite QUIT.
 */
#include "sink/client.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static const char *const fail_names[CLIENT_FAIL_N] = {
    "none",    "connect",     "4xx",     "5xx", "timeout", "protocol",
    "dropped", "unsupported", "aborted", "tls", "auth",
};

static const char *const cmd_names[CLIENT_CMD_N] = {
    "greeting", "ehlo", "helo", "starttls", "auth", "mail", "rcpt",
    "data",     "bdat", "end",  "rset",     "quit", "none",
};

const char *client_fail_name(unsigned fail)
{
	return fail < CLIENT_FAIL_N ? fail_names[fail] : "?";
}

const char *client_cmd_name(unsigned cmd)
{
	return cmd < CLIENT_CMD_N ? cmd_names[cmd] : "?";
}

static const struct {
	const char *name;
	uint32_t bit;
} ext_table[] = {
    {"PIPELINING", CLIENT_EXT_PIPELINING},
    {"CHUNKING", CLIENT_EXT_CHUNKING},
    {"SIZE", CLIENT_EXT_SIZE},
    {"8BITMIME", CLIENT_EXT_8BITMIME},
    {"SMTPUTF8", CLIENT_EXT_SMTPUTF8},
    {"ENHANCEDSTATUSCODES", CLIENT_EXT_ENHANCEDSTATUSCODES},
    {"STARTTLS", CLIENT_EXT_STARTTLS},
    {"AUTH", CLIENT_EXT_AUTH},
};

uint32_t client_ext_by_name(const char *kw, size_t n)
{
	for (size_t i = 0; i < sizeof(ext_table) / sizeof(ext_table[0]); i++)
		if (strlen(ext_table[i].name) == n && !strncasecmp(ext_table[i].name, kw, n))
			return ext_table[i].bit;
	return 0;
}

/* tpl_max - longest expansion of a template: every {n}/{r} as 20 digits. */
static size_t tpl_max(const char *t)
{
	size_t n = strlen(t);

	for (const char *p = t; (p = strchr(p, '{')) != NULL; p++)
		if ((p[1] == 'n' || p[1] == 'r') && p[2] == '}')
			n += 20;
	return n;
}

bool client_retryable(const struct client_result *r)
{
	if (r->outcome != CLIENT_FAILED || r->rcpt_5xx || r->rcpt_other)
		return false;
	return r->fail == CLIENT_FAIL_4XX || r->fail == CLIENT_FAIL_DROPPED ||
	       r->fail == CLIENT_FAIL_TIMEOUT;
}

/* --- AUTH helpers: base64 and the {s} template ------------------------------------ */

size_t client_b64(const void *in, size_t n, char *out)
{
	static const char tab[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const unsigned char *p = in;
	size_t k = 0, i = 0;

	for (; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
		out[k++] = tab[v >> 18];
		out[k++] = tab[v >> 12 & 63];
		out[k++] = tab[v >> 6 & 63];
		out[k++] = tab[v & 63];
	}
	if (i < n) { /* RFC 4648 4: pad the last quantum with '=' */
		uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
		out[k++] = tab[v >> 18];
		out[k++] = tab[v >> 12 & 63];
		out[k++] = i + 1 < n ? tab[v >> 6 & 63] : '=';
		out[k++] = '=';
	}
	return k;
}

size_t client_tpl_s(const char *tpl, uint32_t s, char *out, size_t cap)
{
	size_t k = 0;

	for (const char *t = tpl; *t;) {
		if (t[0] == '{' && t[1] == 's' && t[2] == '}') {
			char d[16];
			int m = snprintf(d, sizeof(d), "%u", s);
			if ((size_t)m > cap - k)
				return (size_t)-1;
			memcpy(out + k, d, (size_t)m);
			k += (size_t)m;
			t += 3;
			continue;
		}
		if (k == cap)
			return (size_t)-1;
		out[k++] = *t++;
	}
	return k;
}

size_t client_tpl_s_max(const char *tpl)
{
	size_t n = strlen(tpl);

	for (const char *p = tpl; (p = strstr(p, "{s}")) != NULL; p += 3)
		n += 10 - 3; /* a uint32 has at most 10 digits */
	return n;
}

/* env_size - command text of one group at its longest: an RSET (--depth,
 * after a failure), MAIL, every RCPT, DATA or BDAT. */
static size_t env_size(const struct client_cfg *cfg)
{
	return sizeof("RSET\r\n") + sizeof("MAIL FROM:<>\r\n") + tpl_max(cfg->from_tpl) +
	       (size_t)cfg->rcpts * (sizeof("RCPT TO:<>\r\n") + tpl_max(cfg->to_tpl)) +
	       sizeof("BDAT 18446744073709551615 LAST\r\n") + sizeof("DATA\r\n");
}

int client_iov_max(const struct client_cfg *cfg)
{
	return cfg->depth > 1 ? 3 * (int)cfg->depth + 2 : CLIENT_IOV_MAX;
}

static size_t iov_bytes(const struct client_cfg *cfg)
{
	return (size_t)client_iov_max(cfg) * sizeof(struct iovec);
}

size_t client_cmd_cap(const struct client_cfg *cfg)
{
	/* --depth: every group in flight may wait unsent (an io_uring send is
	 * busy, the socket is full), within reason: client_can_begin() waits
	 * for room beyond that */
	size_t one = env_size(cfg), env = one;

	if (cfg->depth > 1) {
		env = one * cfg->depth;
		if (env > 32768)
			env = one * 2 > 32768 ? one * 2 : 32768;
	}
	size_t greet = sizeof("EHLO \r\n") + strlen(cfg->ehlo);
	/* the longest AUTH line: PLAIN's initial response "\0user\0pass" */
	size_t auth = sizeof("AUTH PLAIN \r\n") + 4 * ((2 + 2 * CLIENT_AUTH_MAX + 2) / 3);

	if (cfg->auth_user && auth > greet)
		greet = auth;

	/* RSET and QUIT may be queued behind an envelope still being written */
	size_t text = (env > greet ? env : greet) + 64;

	return iov_bytes(cfg) + ((text + 15) & ~(size_t)15);
}

void client_init(struct client *c, const struct client_cfg *cfg, struct client_stats *stats,
                 char *cmd, size_t cap)
{
	memset(c, 0, sizeof(*c));
	c->cfg = cfg;
	c->stats = stats;
	/* the iovecs first: cmd is malloc()ed, cap a multiple of 16 */
	c->out = (struct iovec *)(void *)cmd;
	c->out_max = client_iov_max(cfg);
	c->cmd = cmd + iov_bytes(cfg);
	c->cmd_cap = cap - iov_bytes(cfg);
	c->env_max = env_size(cfg);
}

unsigned client_start(struct client *c)
{
	reply_init(&c->rp);
	c->state = CLIENT_ST_GREET;
	c->pipe = 0;
	c->fail = CLIENT_FAIL_NONE;
	c->fail_cmd = CLIENT_CMD_GREETING;
	c->fail_code = 0;
	c->text[0] = 0;
	c->ext = 0;
	c->mechs = 0;
	c->tls_up = 0;
	c->inflight = 0;
	c->res_old = 0;
	c->rset_next = 0;
	c->rset_mask = 0;
	c->nout = 0;
	c->cmd_len = 0;
	if (c->cfg->tls == CLIENT_TLS_IMPLICIT) {
		/* RFC 8314 3.3: the TLS handshake starts at once, the SMTP
		 * greeting comes over TLS */
		c->state = CLIENT_ST_TLS;
		return CLIENT_ACT_TLS;
	}
	return 0;
}

/* --- output ---------------------------------------------------------------- */

static int out_add(struct client *c, const char *p, size_t n)
{
	if (!n)
		return 0;
	if (c->nout == c->out_max)
		return -1;
	/* text appended to the command buffer right after the previous entry
	 * joins it: one iovec for a whole envelope */
	if (c->nout &&
	    (const char *)c->out[c->nout - 1].iov_base + c->out[c->nout - 1].iov_len == p &&
	    p >= c->cmd && p < c->cmd + c->cmd_cap) {
		c->out[c->nout - 1].iov_len += n;
		return 0;
	}
	c->out[c->nout].iov_base = (void *)(uintptr_t)p;
	c->out[c->nout].iov_len = n;
	c->nout++;
	return 0;
}

/* put - append command text; -1 when the buffer is full (only possible when
 * a server answers commands it has not been sent yet). */
static int put(struct client *c, const char *s, size_t n)
{
	if (n > c->cmd_cap - c->cmd_len)
		return -1;
	memcpy(c->cmd + c->cmd_len, s, n);
	if (out_add(c, c->cmd + c->cmd_len, n))
		return -1;
	c->cmd_len += n;
	return 0;
}

static int puts_(struct client *c, const char *s)
{
	return put(c, s, strlen(s));
}

static int put_u64(struct client *c, uint64_t v)
{
	char d[24];
	int k = snprintf(d, sizeof(d), "%llu", (unsigned long long)v);

	return put(c, d, (size_t)k);
}

/* put_tpl - expand {n} (message number) and {r} (recipient index). */
static int put_tpl(struct client *c, const char *t, uint64_t n, uint32_t r)
{
	while (*t) {
		if (t[0] == '{' && (t[1] == 'n' || t[1] == 'r') && t[2] == '}') {
			if (put_u64(c, t[1] == 'n' ? n : r))
				return -1;
			t += 3;
			continue;
		}
		size_t k = strcspn(t + 1, "{") + 1;
		if (put(c, t, k))
			return -1;
		t += k;
	}
	return 0;
}

void client_wrote(struct client *c, size_t n)
{
	int i = 0;

	while (i < c->nout && n >= c->out[i].iov_len)
		n -= c->out[i++].iov_len;
	if (i) {
		memmove(c->out, c->out + i, sizeof(c->out[0]) * (size_t)(c->nout - i));
		c->nout -= i;
	}
	if (c->nout && n) {
		c->out[0].iov_base = (char *)c->out[0].iov_base + n;
		c->out[0].iov_len -= n;
	}
	if (!c->nout)
		c->cmd_len = 0; /* everything is out: the buffer is free again */
}

/* --- failures and results ----------------------------------------------------- */

static unsigned code_rc(uint16_t code)
{
	return code >= 400 && code < 500   ? CLIENT_RC_4XX
	       : code >= 500 && code < 600 ? CLIENT_RC_5XX
	                                   : CLIENT_RC_OTHER;
}

static uint8_t code_fail(uint16_t code)
{
	unsigned rc = code_rc(code);

	return rc == CLIENT_RC_4XX   ? CLIENT_FAIL_4XX
	       : rc == CLIENT_RC_5XX ? CLIENT_FAIL_5XX
	                             : CLIENT_FAIL_PROTOCOL;
}

/* session_fail - the session ends abnormally; the first cause is kept. */
static unsigned session_fail(struct client *c, uint8_t fail, uint8_t cmd, uint16_t code,
                             const char *text)
{
	if (c->fail == CLIENT_FAIL_NONE) {
		c->fail = fail;
		c->fail_cmd = cmd;
		c->fail_code = code;
		snprintf(c->text, sizeof(c->text), "%s", text);
	}
	c->state = CLIENT_ST_CLOSED;
	c->nout = 0; /* nothing more is sent on a failed session */
	c->cmd_len = 0;
	return CLIENT_ACT_CLOSE;
}

/* decide - the message fails; the first deciding reply is kept. */
static void decide(struct client *c, uint8_t fail, uint8_t cmd, uint16_t code, const char *text,
                   bool definite)
{
	if (c->decided)
		return;
	c->decided = 1;
	c->res.fail = fail;
	c->res.cmd = cmd;
	c->res.code = code;
	c->res.definite = definite;
	snprintf(c->res_text, sizeof(c->res_text), "%s", text);
}

/* finish - the message has its one result. */
static unsigned finish(struct client *c, bool accepted, uint8_t cmd, uint16_t code)
{
	struct client_result *r = &c->res;

	if (accepted && !c->decided) {
		r->outcome = r->rcpt_ok == c->cfg->rcpts ? CLIENT_DELIVERED : CLIENT_PARTIAL;
		r->fail = CLIENT_FAIL_NONE;
		r->cmd = cmd;
		r->code = code;
		r->definite = 1;
		r->text = "";
	} else {
		if (!c->decided)
			decide(c, CLIENT_FAIL_PROTOCOL, cmd, code, "unexpected reply", true);
		r->outcome = CLIENT_FAILED;
		r->text = c->res_text;
	}
	/* the next in flight (--depth) becomes the head; its replies come
	 * next.  res stays for the driver until that first reply (fresh()) */
	c->inflight--;
	c->rset_mask >>= 1;
	c->msg = c->msg_next;
	c->await = 0;
	c->mail_ok = 0;
	c->decided = 0;
	c->res_old = 1;
	return CLIENT_ACT_MSG;
}

/* fresh - the head's result starts empty (the last one has been read). */
static void fresh(struct client *c)
{
	if (c->res_old) {
		memset(&c->res, 0, sizeof(c->res));
		c->res_old = 0;
	}
}

static bool deep(const struct client *c)
{
	return c->cfg->depth > 1 && c->pipe;
}

/* fail_msg - end the session with the message in progress failed. */
static unsigned fail_msg(struct client *c, uint8_t fail, uint8_t cmd, uint16_t code,
                         const char *text, bool definite)
{
	unsigned act = 0;

	if (c->inflight) {
		fresh(c);
		decide(c, fail, cmd, code, text, definite);
		act |= finish(c, false, cmd, code);
	}
	return act | session_fail(c, fail, cmd, code, text);
}

/* --- commands ------------------------------------------------------------------- */

static unsigned send_line(struct client *c, const char *verb, const char *arg, uint8_t state)
{
	if (puts_(c, verb) || (arg && (put(c, " ", 1) || puts_(c, arg))) || put(c, "\r\n", 2))
		return session_fail(c, CLIENT_FAIL_PROTOCOL, CLIENT_CMD_NONE, 0,
		                    "server replied ahead of the client's commands");
	c->state = state;
	return CLIENT_ACT_SEND;
}

static int put_mail(struct client *c, const struct client_msg *m)
{
	return puts_(c, "MAIL FROM:<") || put_tpl(c, c->cfg->from_tpl, m->n, 0) ||
	       put(c, ">\r\n", 3);
}

static int put_rcpt(struct client *c, const struct client_msg *m, uint32_t r)
{
	return puts_(c, "RCPT TO:<") || put_tpl(c, c->cfg->to_tpl, m->n, r) || put(c, ">\r\n", 3);
}

/* put_last - DATA, or BDAT with the whole content as one LAST chunk (RFC
 * 3030 2: the octet count covers exactly the octets that follow). */
static int put_last(struct client *c, const struct client_msg *m)
{
	if (!c->cfg->bdat)
		return puts_(c, "DATA\r\n");
	return puts_(c, "BDAT ") || put_u64(c, m->stamp_len + m->raw_len) ||
	       puts_(c, " LAST\r\n") || out_add(c, m->stamp, m->stamp_len) ||
	       out_add(c, m->raw, m->raw_len);
}

static unsigned overflow(struct client *c)
{
	return fail_msg(c, CLIENT_FAIL_PROTOCOL, CLIENT_CMD_NONE, 0,
	                "server replied ahead of the client's commands", false);
}

bool client_can_begin(const struct client *c)
{
	if (c->state == CLIENT_ST_READY)
		return true;
	if (!deep(c) || !c->inflight || c->inflight >= c->cfg->depth)
		return false;
	/* BDAT: behind any group in flight; DATA: behind the head's content */
	if (c->cfg->bdat ? c->state != CLIENT_ST_TX : c->state != CLIENT_ST_END || c->inflight != 1)
		return false;
	/* a group takes at most 3 iovecs (commands, stamp, body) */
	return c->nout + 3 <= c->out_max && c->cmd_cap - c->cmd_len >= c->env_max;
}

unsigned client_begin(struct client *c, const struct client_msg *m)
{
	if (!client_can_begin(c))
		return 0;
	if (c->state == CLIENT_ST_READY) {
		c->msg = *m;
		c->await = 0;
		c->mail_ok = 0;
		c->decided = 0;
		c->res_old = 0;
		memset(&c->res, 0, sizeof(c->res));
		c->state = CLIENT_ST_TX;
	} else if (!c->cfg->bdat) {
		c->msg_next = *m; /* its content goes out at its 354 */
	}
	if (c->rset_next) {
		/* --depth: a failed transaction may have left the server inside
		 * one (every RCPT refused); the next group starts clean (RFC 5321
		 * 4.1.1.5; RFC 2920 3.1 lets RSET go anywhere in a group) */
		if (puts_(c, "RSET\r\n"))
			return overflow(c);
		c->rset_mask |= 1ull << c->inflight;
		c->rset_next = 0;
	}
	c->inflight++;
	if (put_mail(c, m))
		return overflow(c);
	if (c->pipe) {
		/* RFC 2920 3.1: MAIL, RCPTs and DATA/BDAT in one group, DATA last */
		for (uint32_t r = 0; r < c->cfg->rcpts; r++)
			if (put_rcpt(c, m, r))
				return overflow(c);
		if (put_last(c, m))
			return overflow(c);
	}
	return CLIENT_ACT_SEND;
}

bool client_lost(struct client *c)
{
	char why[REPLY_TEXT_MAX];

	if (!c->inflight || c->state != CLIENT_ST_CLOSED)
		return false;
	fresh(c);
	snprintf(why, sizeof(why), "no reply, the session ended: %.100s", c->text);
	decide(c, c->fail != CLIENT_FAIL_NONE ? c->fail : CLIENT_FAIL_DROPPED, CLIENT_CMD_NONE, 0,
	       why, false);
	finish(c, false, CLIENT_CMD_NONE, 0);
	return true;
}

unsigned client_quit(struct client *c)
{
	if (c->state != CLIENT_ST_READY)
		return 0;
	c->rset_next = 0; /* QUIT ends whatever state the server is in */
	return send_line(c, "QUIT", NULL, CLIENT_ST_QUIT);
}

/* after_failed_tx - a transaction ended without its content being taken:
 * RSET so the next MAIL starts clean (RFC 5321 4.1.1.5). */
static unsigned after_failed_tx(struct client *c)
{
	return send_line(c, "RSET", NULL, CLIENT_ST_RSET);
}

/* tx_reply - one reply inside a transaction (state TX). */
static unsigned tx_reply(struct client *c, const struct reply *r)
{
	uint32_t k = c->cfg->rcpts, i;
	unsigned rc = code_rc(r->code);
	bool two = r->code >= 200 && r->code < 300;

	if (c->rset_mask & 1) { /* --depth: the RSET that opened this group */
		c->stats->replies[CLIENT_CMD_RSET][two ? CLIENT_RC_OK : rc]++;
		c->rset_mask &= ~1ull;
		if (!two)
			return fail_msg(c, code_fail(r->code), CLIENT_CMD_RSET, r->code, r->text,
			                true);
		return 0;
	}
	i = c->await++;
	if (i == 0) { /* MAIL */
		c->stats->replies[CLIENT_CMD_MAIL][two ? CLIENT_RC_OK : rc]++;
		/* --depth with BDAT: a transaction whose every RCPT was refused
		 * stays open at the server (its BDAT is refused, nothing resets
		 * it), and the group already sent behind it gets "503 nested
		 * MAIL" - its RCPTs and content then go into that open
		 * transaction.  Whether this message was taken is decided by the
		 * reply to its content, as the server sees it; the group after
		 * the refusal starts with RSET (rset_next), so one at most. */
		bool nested = !two && r->code == 503 && deep(c) && c->cfg->bdat;
		c->mail_ok = two || nested;
		if (!two && !nested)
			decide(c, code_fail(r->code), CLIENT_CMD_MAIL, r->code, r->text, true);
		if (c->pipe)
			return 0;
		if (!two)
			return finish(c, false, CLIENT_CMD_MAIL, r->code) | after_failed_tx(c);
		return put_rcpt(c, &c->msg, 0) ? overflow(c) : CLIENT_ACT_SEND;
	}
	if (i <= k) { /* RCPT i-1; RFC 5321 4.2.5: 250 and 251 both accept */
		c->stats->replies[CLIENT_CMD_RCPT][two ? CLIENT_RC_OK : rc]++;
		if (two)
			c->res.rcpt_ok++;
		else if (rc == CLIENT_RC_4XX)
			c->res.rcpt_4xx++;
		else if (rc == CLIENT_RC_5XX)
			c->res.rcpt_5xx++;
		else
			c->res.rcpt_other++;
		if (i == k && c->res.rcpt_ok == 0)
			/* every RCPT refused: the last refusal decides */
			decide(c, code_fail(r->code), CLIENT_CMD_RCPT, r->code, r->text, true);
		if (c->pipe)
			return 0;
		if (i < k)
			return put_rcpt(c, &c->msg, i) ? overflow(c) : CLIENT_ACT_SEND;
		if (!c->res.rcpt_ok)
			return finish(c, false, CLIENT_CMD_RCPT, r->code) | after_failed_tx(c);
		return put_last(c, &c->msg) ? overflow(c) : CLIENT_ACT_SEND;
	}
	if (c->cfg->bdat) { /* BDAT n LAST */
		c->stats->replies[CLIENT_CMD_BDAT][two ? CLIENT_RC_OK : rc]++;
		bool ok = two && c->mail_ok && c->res.rcpt_ok > 0;
		if (!two)
			decide(c, code_fail(r->code), CLIENT_CMD_BDAT, r->code, r->text, true);
		else if (!ok)
			decide(c, CLIENT_FAIL_PROTOCOL, CLIENT_CMD_BDAT, r->code,
			       "BDAT accepted without a valid envelope", true);
		unsigned act = finish(c, ok, CLIENT_CMD_BDAT, r->code);
		if (deep(c)) {
			/* RFC 3030 2: the BDAT LAST reply ends the transaction; the
			 * next in flight is the head now, its replies follow */
			c->rset_next |= !ok;
			c->state = c->inflight ? CLIENT_ST_TX : CLIENT_ST_READY;
			return act | CLIENT_ACT_READY;
		}
		if (ok) {
			c->state = CLIENT_ST_READY;
			return act | CLIENT_ACT_READY;
		}
		return act | after_failed_tx(c);
	}
	/* DATA */
	c->stats->replies[CLIENT_CMD_DATA][r->code == 354 ? CLIENT_RC_OK : rc]++;
	if (r->code == 354) {
		c->state = CLIENT_ST_END;
		if (c->mail_ok && c->res.rcpt_ok > 0) {
			if (out_add(c, c->msg.stamp, c->msg.stamp_len) ||
			    out_add(c, c->msg.wire, c->msg.wire_len))
				return overflow(c);
			/* --depth: the next envelope may follow the content */
			return CLIENT_ACT_SEND | (deep(c) ? CLIENT_ACT_READY : 0);
		}
		/* RFC 2920 3.1: DATA accepted although no recipient was: send an
		 * empty message (a lone dot); the message has failed already */
		decide(c, CLIENT_FAIL_PROTOCOL, CLIENT_CMD_DATA, r->code,
		       "354 without a valid envelope", true);
		return put(c, ".\r\n", 3) ? overflow(c) : CLIENT_ACT_SEND;
	}
	if (rc == CLIENT_RC_OTHER)
		decide(c, CLIENT_FAIL_PROTOCOL, CLIENT_CMD_DATA, r->code, r->text, true);
	else
		decide(c, code_fail(r->code), CLIENT_CMD_DATA, r->code, r->text, true);
	return finish(c, false, CLIENT_CMD_DATA, r->code) | after_failed_tx(c);
}

/* refuse - the session cannot go on, but the server is in a sane state:
 * record why and leave with QUIT. */
static unsigned refuse(struct client *c, uint8_t fail, uint8_t cmd, uint16_t code, const char *text)
{
	c->fail = fail;
	c->fail_cmd = cmd;
	c->fail_code = code;
	snprintf(c->text, sizeof(c->text), "%s", text);
	return send_line(c, "QUIT", NULL, CLIENT_ST_QUIT);
}

/* send_ehlo - EHLO (or HELO), forgetting every extension seen before. */
static unsigned send_ehlo(struct client *c)
{
	c->ext = 0;
	c->mechs = 0;
	c->el_line = 0;
	c->el_col = 0;
	c->kw_len = 0;
	c->kw_end = 0;
	c->el_auth = 0;
	c->at_len = 0;
	return c->cfg->helo ? send_line(c, "HELO", c->cfg->ehlo, CLIENT_ST_HELO)
	                    : send_line(c, "EHLO", c->cfg->ehlo, CLIENT_ST_EHLO);
}

/* put_b64_cred - the expanded template tpl, base64-encoded. */
static int put_b64_cred(struct client *c, const char *tpl)
{
	char raw[CLIENT_AUTH_MAX], enc[4 * ((CLIENT_AUTH_MAX + 2) / 3)];
	size_t n = client_tpl_s(tpl, c->sid, raw, sizeof(raw));

	if (n == (size_t)-1)
		return -1;
	return put(c, enc, client_b64(raw, n, enc));
}

/* auth_plain - RFC 4954 4 with an initial response; RFC 4616 2: the
 * message is [authzid] NUL authcid NUL passwd, here without an authzid. */
static int auth_plain(struct client *c)
{
	char raw[2 + 2 * CLIENT_AUTH_MAX], enc[4 * ((sizeof(raw) + 2) / 3)];
	size_t u, p;

	raw[0] = 0;
	u = client_tpl_s(c->cfg->auth_user, c->sid, raw + 1, CLIENT_AUTH_MAX);
	if (u == (size_t)-1)
		return -1;
	raw[1 + u] = 0;
	p = client_tpl_s(c->cfg->auth_pass, c->sid, raw + 2 + u, CLIENT_AUTH_MAX);
	if (p == (size_t)-1)
		return -1;
	return puts_(c, "AUTH PLAIN ") || put(c, enc, client_b64(raw, 2 + u + p, enc)) ||
	       put(c, "\r\n", 2);
}

/* auth_start - AUTH with the configured mechanism, or the first of PLAIN,
 * LOGIN that the server offers (PLAIN needs one round trip less). */
static unsigned auth_start(struct client *c)
{
	const struct client_cfg *cfg = c->cfg;
	uint8_t want = cfg->auth_mech ? cfg->auth_mech : CLIENT_MECH_PLAIN | CLIENT_MECH_LOGIN;
	uint8_t ok = want & c->mechs;

	if (!(c->ext & CLIENT_EXT_AUTH))
		return refuse(c, CLIENT_FAIL_UNSUPPORTED, CLIENT_CMD_EHLO, 0,
		              "--auth-user: server does not offer AUTH");
	if (!ok)
		return refuse(c, CLIENT_FAIL_UNSUPPORTED, CLIENT_CMD_EHLO, 0,
		              cfg->auth_mech == CLIENT_MECH_LOGIN ? "--auth-mech LOGIN: not offered"
		              : cfg->auth_mech                    ? "--auth-mech PLAIN: not offered"
		                               : "server offers neither AUTH PLAIN nor LOGIN");
	c->mech = ok & CLIENT_MECH_PLAIN ? CLIENT_MECH_PLAIN : CLIENT_MECH_LOGIN;
	c->auth_step = 0;
	c->stats->auth_attempts++;
	if (c->mech == CLIENT_MECH_PLAIN) {
		c->stats->auth_plain++;
		if (auth_plain(c))
			return session_fail(c, CLIENT_FAIL_PROTOCOL, CLIENT_CMD_AUTH, 0,
			                    "AUTH credentials too long");
		c->state = CLIENT_ST_AUTH;
		return CLIENT_ACT_SEND;
	}
	c->stats->auth_login++;
	return send_line(c, "AUTH", "LOGIN", CLIENT_ST_AUTH);
}

/* ehlo_done - EHLO answered 250: STARTTLS, checks, AUTH, or ready. */
static unsigned ehlo_done(struct client *c)
{
	const struct client_cfg *cfg = c->cfg;

	if (cfg->tls == CLIENT_TLS_STARTTLS && !c->tls_up) {
		/* --starttls is a demand: no silent fallback to plaintext (the
		 * downgrade RFC 3207 6 warns about) */
		if (!(c->ext & CLIENT_EXT_STARTTLS))
			return refuse(c, CLIENT_FAIL_UNSUPPORTED, CLIENT_CMD_EHLO, 0,
			              "--starttls: server does not offer STARTTLS");
		/* RFC 3207 4: STARTTLS is the last command of a group; nothing
		 * else is queued at this point, and nothing will be until the
		 * handshake is done */
		return send_line(c, "STARTTLS", NULL, CLIENT_ST_STARTTLS);
	}
	c->pipe = cfg->pipelining == 1 || (cfg->pipelining < 0 && (c->ext & CLIENT_EXT_PIPELINING));
	if (cfg->depth > 1 && !c->pipe)
		/* --depth is pipelining: without it there is nothing to measure */
		return refuse(c, CLIENT_FAIL_UNSUPPORTED, CLIENT_CMD_EHLO, 0,
		              "--depth: server does not offer PIPELINING");
	if (cfg->bdat && !(c->ext & CLIENT_EXT_CHUNKING))
		/* --bdat is a demand, not a preference: say so and leave */
		return refuse(c, CLIENT_FAIL_UNSUPPORTED, CLIENT_CMD_EHLO, 0,
		              "--bdat: server does not offer CHUNKING");
	if (cfg->auth_user)
		return auth_start(c);
	c->state = CLIENT_ST_READY;
	return CLIENT_ACT_READY;
}

/* auth_reply - one reply during AUTH (its text is already redacted). */
static unsigned auth_reply(struct client *c, const struct reply *r)
{
	struct client_stats *st = c->stats;

	if (r->code == 334) {
		/* RFC 4954 4: a challenge; LOGIN asks for the user name, then the
		 * password (the challenge texts are not needed to answer) */
		st->replies[CLIENT_CMD_AUTH][CLIENT_RC_OK]++;
		if (c->mech != CLIENT_MECH_LOGIN || c->auth_step >= 2)
			return session_fail(c, CLIENT_FAIL_PROTOCOL, CLIENT_CMD_AUTH, r->code,
			                    "unexpected 334 challenge");
		c->auth_step++;
		if (put_b64_cred(c, c->auth_step == 1 ? c->cfg->auth_user : c->cfg->auth_pass) ||
		    put(c, "\r\n", 2))
			return session_fail(c, CLIENT_FAIL_PROTOCOL, CLIENT_CMD_AUTH, 0,
			                    "AUTH credentials too long");
		return CLIENT_ACT_SEND;
	}
	if (r->code == 235) { /* RFC 4954 6: 235 2.7.0 Authentication Succeeded */
		st->replies[CLIENT_CMD_AUTH][CLIENT_RC_OK]++;
		st->auth_ok++;
		c->state = CLIENT_ST_READY;
		return CLIENT_ACT_READY;
	}
	unsigned rc = code_rc(r->code);
	st->replies[CLIENT_CMD_AUTH][rc]++;
	if (rc == CLIENT_RC_OTHER)
		return session_fail(c, CLIENT_FAIL_PROTOCOL, CLIENT_CMD_AUTH, r->code, r->text);
	/* 535 5.7.8 credentials invalid, 454 4.7.0 temporary failure, 534,
	 * 538, 504: the server is sane, the credentials or mechanism are not */
	st->auth_failed++;
	return refuse(c, CLIENT_FAIL_AUTH, CLIENT_CMD_AUTH, r->code, r->text);
}

/* auth_redact - a reply during AUTH keeps its code and enhanced status code
 * only: a server may echo the line it got, which holds the credentials. */
static void auth_redact(struct reply *r)
{
	size_t k = 0;

	while (k < 3 && r->text[k] >= '0' && r->text[k] <= '9')
		k++;
	if (k == 3 && r->text[3] && r->text[4] >= '2' && r->text[4] <= '5' && r->text[5] == '.') {
		size_t e = 4 + strspn(r->text + 4, "0123456789.");
		if (e - 4 <= 11)
			k = e;
	}
	snprintf(r->text + k, sizeof(r->text) - k, "%s(text withheld: AUTH)", k ? " " : "");
}

/* cur_cmd - the command the next reply answers. */
static uint8_t cur_cmd(const struct client *c)
{
	switch (c->state) {
	case CLIENT_ST_GREET:
		return CLIENT_CMD_GREETING;
	case CLIENT_ST_EHLO:
		return CLIENT_CMD_EHLO;
	case CLIENT_ST_HELO:
		return CLIENT_CMD_HELO;
	case CLIENT_ST_STARTTLS:
		return CLIENT_CMD_STARTTLS;
	case CLIENT_ST_TLS:
		return c->cfg->tls == CLIENT_TLS_IMPLICIT ? CLIENT_CMD_GREETING
		                                          : CLIENT_CMD_STARTTLS;
	case CLIENT_ST_AUTH:
		return CLIENT_CMD_AUTH;
	case CLIENT_ST_TX:
		return c->rset_mask & 1            ? CLIENT_CMD_RSET
		       : c->await == 0             ? CLIENT_CMD_MAIL
		       : c->await <= c->cfg->rcpts ? CLIENT_CMD_RCPT
		       : c->cfg->bdat              ? CLIENT_CMD_BDAT
		                                   : CLIENT_CMD_DATA;
	case CLIENT_ST_END:
		return CLIENT_CMD_END;
	case CLIENT_ST_RSET:
		return CLIENT_CMD_RSET;
	case CLIENT_ST_QUIT:
		return CLIENT_CMD_QUIT;
	default:
		return CLIENT_CMD_NONE;
	}
}

/* on_reply - one complete reply. */
static unsigned on_reply(struct client *c, const struct reply *r)
{
	bool two = r->code >= 200 && r->code < 300;

	if (r->bad) { /* malformed: the stream cannot be trusted any more */
		uint8_t cmd = cur_cmd(c);
		c->stats->replies[cmd][CLIENT_RC_OTHER]++;
		return fail_msg(c, CLIENT_FAIL_PROTOCOL, cmd, 0, r->text, false);
	}
	/* RFC 5321 3.8: 421 to anything means the server is closing the
	 * channel: fail the message in progress once, never start another */
	if (r->code == 421 && c->state != CLIENT_ST_QUIT) {
		uint8_t cmd = cur_cmd(c);
		c->stats->replies[cmd][CLIENT_RC_4XX]++;
		if (c->state == CLIENT_ST_AUTH)
			c->stats->auth_failed++;
		return fail_msg(c, CLIENT_FAIL_4XX, cmd, r->code, r->text, true);
	}
	switch (c->state) {
	case CLIENT_ST_GREET:
		c->stats->replies[CLIENT_CMD_GREETING]
		                 [r->code == 220 ? CLIENT_RC_OK : code_rc(r->code)]++;
		if (r->code != 220)
			return session_fail(c, code_fail(r->code), CLIENT_CMD_GREETING, r->code,
			                    r->text);
		return send_ehlo(c);
	case CLIENT_ST_EHLO:
		c->stats
		    ->replies[CLIENT_CMD_EHLO][r->code == 250 ? CLIENT_RC_OK : code_rc(r->code)]++;
		if (r->code == 250)
			return ehlo_done(c);
		/* RFC 5321 3.2: a server that does not know EHLO gets HELO */
		if (r->code == 500 || r->code == 502) {
			c->ext = 0;
			c->mechs = 0;
			return send_line(c, "HELO", c->cfg->ehlo, CLIENT_ST_HELO);
		}
		return session_fail(c, code_fail(r->code), CLIENT_CMD_EHLO, r->code, r->text);
	case CLIENT_ST_HELO:
		c->stats
		    ->replies[CLIENT_CMD_HELO][r->code == 250 ? CLIENT_RC_OK : code_rc(r->code)]++;
		if (r->code != 250)
			return session_fail(c, code_fail(r->code), CLIENT_CMD_HELO, r->code,
			                    r->text);
		c->ext = 0;
		c->mechs = 0;
		return ehlo_done(c);
	case CLIENT_ST_STARTTLS:
		c->stats->replies[CLIENT_CMD_STARTTLS]
		                 [r->code == 220 ? CLIENT_RC_OK : code_rc(r->code)]++;
		if (r->code == 220) {
			/* RFC 3207 4.2: all knowledge from the server is discarded;
			 * EHLO is sent again once TLS is up */
			c->ext = 0;
			c->mechs = 0;
			c->pipe = 0;
			c->state = CLIENT_ST_TLS;
			return CLIENT_ACT_TLS;
		}
		if (code_rc(r->code) == CLIENT_RC_OTHER)
			return session_fail(c, CLIENT_FAIL_PROTOCOL, CLIENT_CMD_STARTTLS, r->code,
			                    r->text);
		/* RFC 3207 4: 454 TLS not available (temporary), 501, 5xx */
		return refuse(c, code_fail(r->code), CLIENT_CMD_STARTTLS, r->code, r->text);
	case CLIENT_ST_AUTH:
		return auth_reply(c, r);
	case CLIENT_ST_TX:
		return tx_reply(c, r);
	case CLIENT_ST_END: {
		c->stats->replies[CLIENT_CMD_END][two ? CLIENT_RC_OK : code_rc(r->code)]++;
		if (!two)
			decide(c, code_fail(r->code), CLIENT_CMD_END, r->code, r->text, true);
		/* RFC 5321 4.1.1.4: the end of data ends the transaction either
		 * way; no RSET needed */
		unsigned act = finish(c, two, CLIENT_CMD_END, r->code);
		/* --depth: the envelope sent behind the content is the head now */
		c->state = c->inflight ? CLIENT_ST_TX : CLIENT_ST_READY;
		return act | CLIENT_ACT_READY;
	}
	case CLIENT_ST_RSET:
		c->stats->replies[CLIENT_CMD_RSET][two ? CLIENT_RC_OK : code_rc(r->code)]++;
		if (!two)
			return session_fail(c, code_fail(r->code), CLIENT_CMD_RSET, r->code,
			                    r->text);
		c->state = CLIENT_ST_READY;
		return CLIENT_ACT_READY;
	case CLIENT_ST_QUIT:
		c->stats->replies[CLIENT_CMD_QUIT][two ? CLIENT_RC_OK : code_rc(r->code)]++;
		c->state = CLIENT_ST_CLOSED;
		return CLIENT_ACT_CLOSE;
	default: /* READY: a reply nobody asked for */
		c->stats->replies[CLIENT_CMD_NONE][code_rc(r->code)]++;
		return session_fail(c, CLIENT_FAIL_PROTOCOL, CLIENT_CMD_NONE, r->code, r->text);
	}
}

/* ehlo_scan - watch the EHLO reply's raw bytes for keywords: every line
 * after the first is "250-KEYWORD params" (RFC 5321 4.1.1.1). */
/* auth_param_end - one parameter of the AUTH line is complete: RFC 4954 3
 * lists mechanisms separated by spaces; names are case-insensitive. */
static void auth_param_end(struct client *c)
{
	if (c->at_len == 5 && !strncasecmp(c->at, "PLAIN", 5))
		c->mechs |= CLIENT_MECH_PLAIN;
	else if (c->at_len == 5 && !strncasecmp(c->at, "LOGIN", 5))
		c->mechs |= CLIENT_MECH_LOGIN;
	c->at_len = 0;
}

static void ehlo_scan(struct client *c, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char ch = p[i];
		if (ch == '\n') {
			if (c->el_line > 0 && c->kw_len <= sizeof(c->kw))
				c->ext |= client_ext_by_name(c->kw, c->kw_len);
			if (c->el_auth)
				auth_param_end(c);
			if (c->el_line < UINT16_MAX)
				c->el_line++;
			c->el_col = 0;
			c->kw_len = 0;
			c->kw_end = 0;
			c->el_auth = 0;
			continue;
		}
		if (c->el_col < UINT16_MAX)
			c->el_col++;
		if (c->el_col <= 4)
			continue;
		if (c->kw_end) {
			if (!c->el_auth)
				continue;
			if (ch == ' ' || ch == '\r' || ch == '=')
				auth_param_end(c);
			else if (c->at_len < sizeof(c->at))
				c->at[c->at_len++] = ch;
			continue;
		}
		if (ch == ' ' || ch == '\r' || ch == '=') {
			/* "AUTH=PLAIN LOGIN" is the pre-RFC 4954 spelling some
			 * servers still send; its mechanisms count the same */
			c->kw_end = 1;
			c->el_auth =
			    c->el_line > 0 && c->kw_len == 4 && !strncasecmp(c->kw, "AUTH", 4);
			c->at_len = 0;
			continue;
		}
		if (c->kw_len < sizeof(c->kw))
			c->kw[c->kw_len] = ch;
		if (c->kw_len <= sizeof(c->kw))
			c->kw_len++; /* > sizeof: too long for any keyword we know */
	}
}

size_t client_feed(struct client *c, const char *p, size_t n, unsigned *act)
{
	struct reply r;
	int done;
	size_t used;

	*act = 0;
	if (c->state == CLIENT_ST_CLOSED || c->state == CLIENT_ST_IDLE)
		return n;
	if (c->state == CLIENT_ST_TLS) {
		/* RFC 3207 5 (and the STARTTLS response injection attacks): bytes
		 * the server sent after its 220 but before the handshake are not
		 * trustworthy; they are never read as replies */
		*act = session_fail(c, CLIENT_FAIL_PROTOCOL, CLIENT_CMD_STARTTLS, 0,
		                    "plaintext after the 220 to STARTTLS (RFC 3207 5)");
		return n;
	}
	used = reply_feed(&c->rp, p, n, &r, &done);
	if (c->state == CLIENT_ST_EHLO)
		ehlo_scan(c, p, used);
	if (done) {
		if (c->state == CLIENT_ST_EHLO && r.code != 250) {
			c->ext = 0;
			c->mechs = 0;
		}
		if (c->state == CLIENT_ST_AUTH)
			auth_redact(&r);
		if (c->state == CLIENT_ST_TX || c->state == CLIENT_ST_END)
			fresh(c);
		*act = CLIENT_ACT_REPLY | on_reply(c, &r);
	}
	return used;
}

unsigned client_tls_up(struct client *c)
{
	if (c->state != CLIENT_ST_TLS)
		return 0;
	c->tls_up = 1;
	reply_init(&c->rp);
	if (c->cfg->tls == CLIENT_TLS_IMPLICIT) {
		c->state = CLIENT_ST_GREET;
		return 0;
	}
	/* RFC 3207 4.2: the client SHOULD send EHLO as the first command after
	 * a successful TLS negotiation (its extensions may differ) */
	return send_ehlo(c);
}

unsigned client_tls_failed(struct client *c, const char *why)
{
	if (c->state != CLIENT_ST_TLS)
		return 0;
	return session_fail(c, CLIENT_FAIL_TLS, cur_cmd(c), 0, why);
}

unsigned client_eof(struct client *c)
{
	if (c->state == CLIENT_ST_QUIT || c->state == CLIENT_ST_CLOSED) {
		c->state = CLIENT_ST_CLOSED;
		return CLIENT_ACT_CLOSE;
	}
	if (c->state == CLIENT_ST_TLS) /* a server that refuses a handshake often just closes */
		return session_fail(c, CLIENT_FAIL_TLS, cur_cmd(c), 0,
		                    "server closed the connection during the TLS handshake");
	return fail_msg(c, CLIENT_FAIL_DROPPED, cur_cmd(c), 0, "server closed the connection",
	                false);
}

unsigned client_timeout(struct client *c)
{
	return fail_msg(c, CLIENT_FAIL_TIMEOUT, cur_cmd(c), 0,
	                c->state == CLIENT_ST_TLS ? "TLS handshake not done within --timeout"
	                                          : "no reply within --timeout",
	                false);
}

unsigned client_abort(struct client *c)
{
	return fail_msg(c, CLIENT_FAIL_ABORTED, cur_cmd(c), 0, "run stopped", false);
}
