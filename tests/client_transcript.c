/*
 * client_transcript.c - byte-exact transcript tests for the client session
 *
 * The mirror of transcript.c: for every tests/client_transcripts/NAME.in
 * (the server's bytes) the client's output must equal NAME.ref byte for
 * byte.  The output holds what the client wrote plus one line per event
 * ("== msg 1: delivered ...", "== close: ..."), so outcomes and counts are
 * checked as exactly as the commands.  Each input is fed whole, split in two
 * at every offset and one byte per call; all must give the same output.
 *
 * The driver here is the simplest correct one: output is taken as written at
 * once, on READY the next message starts until `msgs` were started, then
 * QUIT; at the end of the input the server "closes" (client_eof).  With
 * retry=N a message whose result client_retryable() calls transient is
 * begun again (the same message: same number, same content) on the next
 * READY, at most N more times, as smtpbench's queue would; "== retry"
 * lines show the decision.  When the
 * client asks for TLS (CLIENT_ACT_TLS) the handshake "happens" at once: the
 * output shows "== tls: up" and the input that follows stands for the
 * decrypted stream (or "== tls: failed" with tlsfail=1).  An optional first
 * line "#! key=value ..." configures the client:
 *   rcpts=N msgs=N pipelining=auto|on|off bdat=0|1 helo=0|1
 *   from=TPL to=TPL ehlo=NAME tls=none|starttls|implicit tlsfail=0|1
 *   auth_user=TPL auth_pass=TPL auth_mech=auto|PLAIN|LOGIN sid=N retry=N
 *   depth=N (on READY, begin messages while client_can_begin(); a message
 *   lost when the session ends shows as "== msg N: ... (lost)")
 * Usage: client_transcript DIR [--write]
 */
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sink/client.h"

struct run {
	char *out;
	size_t len;
};

struct tcfg {
	struct client_cfg cc;
	unsigned msgs;
	unsigned sid;
	unsigned retry;
	int tlsfail;
	char from[256], to[256], ehlo[128], user[256], pass[256];
};

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *p;
	long n;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	p = malloc((size_t)n + 1);
	if (!p || fread(p, 1, (size_t)n, f) != (size_t)n) {
		fclose(f);
		free(p);
		return NULL;
	}
	fclose(f);
	p[n] = 0;
	*len = (size_t)n;
	return p;
}

static void emit(struct run *r, const char *p, size_t n)
{
	r->out = realloc(r->out, r->len + n + 1);
	memcpy(r->out + r->len, p, n);
	r->len += n;
}

__attribute__((format(printf, 2, 3))) static void emitf(struct run *r, const char *fmt, ...)
{
	char b[512];
	va_list ap;
	int k;

	va_start(ap, fmt);
	k = vsnprintf(b, sizeof(b), fmt, ap);
	va_end(ap);
	emit(r, b, (size_t)k < sizeof(b) ? (size_t)k : sizeof(b) - 1);
}

static int parse_opts(char *line, struct tcfg *t)
{
	for (char *s = strtok(line, " \t"); s; s = strtok(NULL, " \t")) {
		char *v = strchr(s, '=');
		if (!v)
			return -1;
		*v++ = 0;
		if (!strcmp(s, "rcpts"))
			t->cc.rcpts = (uint32_t)strtoul(v, NULL, 10);
		else if (!strcmp(s, "msgs"))
			t->msgs = (unsigned)strtoul(v, NULL, 10);
		else if (!strcmp(s, "pipelining"))
			t->cc.pipelining = !strcmp(v, "on") ? 1 : !strcmp(v, "off") ? 0 : -1;
		else if (!strcmp(s, "bdat"))
			t->cc.bdat = atoi(v) != 0;
		else if (!strcmp(s, "helo"))
			t->cc.helo = atoi(v) != 0;
		else if (!strcmp(s, "from"))
			snprintf(t->from, sizeof(t->from), "%s", v);
		else if (!strcmp(s, "to"))
			snprintf(t->to, sizeof(t->to), "%s", v);
		else if (!strcmp(s, "ehlo"))
			snprintf(t->ehlo, sizeof(t->ehlo), "%s", v);
		else if (!strcmp(s, "tls"))
			t->cc.tls = !strcmp(v, "starttls")   ? CLIENT_TLS_STARTTLS
			            : !strcmp(v, "implicit") ? CLIENT_TLS_IMPLICIT
			                                     : CLIENT_TLS_NONE;
		else if (!strcmp(s, "tlsfail"))
			t->tlsfail = atoi(v);
		else if (!strcmp(s, "auth_user"))
			snprintf(t->user, sizeof(t->user), "%s", v);
		else if (!strcmp(s, "auth_pass"))
			snprintf(t->pass, sizeof(t->pass), "%s", v);
		else if (!strcmp(s, "auth_mech"))
			t->cc.auth_mech = !strcmp(v, "PLAIN")   ? CLIENT_MECH_PLAIN
			                  : !strcmp(v, "LOGIN") ? CLIENT_MECH_LOGIN
			                                        : 0;
		else if (!strcmp(s, "sid"))
			t->sid = (unsigned)strtoul(v, NULL, 10);
		else if (!strcmp(s, "retry"))
			t->retry = (unsigned)strtoul(v, NULL, 10);
		else if (!strcmp(s, "depth"))
			t->cc.depth = (uint32_t)strtoul(v, NULL, 10);
		else
			return -1;
	}
	return 0;
}

static const char stamp[] = "X-Stamp: 1\r\n";
static const char raw[] = "Subject: t\r\n\r\n.dot\r\n";
static const char wire[] = "Subject: t\r\n\r\n..dot\r\n.\r\n";

/* The driver's state: messages started, and the one waiting for a retry. */
struct drv {
	unsigned started;
	unsigned cur;                    /* number of the message whose result came last */
	unsigned attempts;               /* attempts of the message in progress (depth 1) */
	unsigned again;                  /* message to begin again on the next READY, 0: none */
	unsigned fifo[CLIENT_DEPTH_MAX]; /* numbers in flight, oldest first */
	unsigned fh, fn;
};

/* flush - the client's output is written at once. */
static void flush(struct client *c, struct run *r)
{
	int n;
	const struct iovec *iov = client_out(c, &n);
	size_t total = 0;

	for (int i = 0; i < n; i++) {
		emit(r, iov[i].iov_base, iov[i].iov_len);
		total += iov[i].iov_len;
	}
	client_wrote(c, total);
}

static void result(struct client *c, const struct tcfg *t, struct drv *d, struct run *r,
                   const char *tag)
{
	const struct client_result *x = &c->res;
	static const char *oc[] = {"delivered", "partial", "failed"};

	d->cur = d->fifo[d->fh++ % CLIENT_DEPTH_MAX];
	d->fn--;
	emitf(r, "== msg %u: %s", d->cur, oc[x->outcome]);
	if (x->outcome == CLIENT_FAILED)
		emitf(r, " %s at %s (%u%s) \"%s\"", client_fail_name(x->fail),
		      client_cmd_name(x->cmd), x->code, x->definite ? ", definite" : "", x->text);
	emitf(r, " rcpt ok=%u 4xx=%u 5xx=%u other=%u%s\n", x->rcpt_ok, x->rcpt_4xx, x->rcpt_5xx,
	      x->rcpt_other, tag);
	if (t->retry && x->outcome == CLIENT_FAILED) {
		bool again = client_retryable(x);
		emitf(r, "== retry: %s\n",
		      !again                   ? "no (permanent)"
		      : d->attempts > t->retry ? "no (retries exhausted)"
		                               : "yes");
		if (again && d->attempts <= t->retry)
			d->again = d->cur;
	}
}

/* handle - act as the driver on action bits. */
static void handle(struct client *c, const struct tcfg *t, unsigned act, struct drv *d,
                   struct run *r)
{
	while (act) {
		if (act & CLIENT_ACT_MSG) {
			result(c, t, d, r, "");
		}
		unsigned next = 0;
		if (act & CLIENT_ACT_CLOSE) {
			emitf(r, "== close: %s", client_fail_name(c->fail));
			if (c->fail)
				emitf(r, " at %s (%u) \"%s\"", client_cmd_name(c->fail_cmd),
				      c->fail_code, c->text);
			emitf(r, "\n");
			while (client_lost(c))
				result(c, t, d, r, " (lost)");
		} else if (act & CLIENT_ACT_TLS) {
			/* nothing may be queued behind STARTTLS (RFC 3207 4) */
			if (client_has_output(c))
				emitf(r, "== BUG: output queued during the TLS handshake\n");
			if (t->tlsfail) {
				emitf(r, "== tls: failed\n");
				next = client_tls_failed(c, "handshake failure (simulated)");
			} else {
				emitf(r, "== tls: up\n");
				next = client_tls_up(c);
			}
		} else if (act & CLIENT_ACT_READY) {
			bool begun = false;
			while ((d->again || d->started < t->msgs) && client_can_begin(c) &&
			       !(next & CLIENT_ACT_CLOSE)) {
				if (d->again) {
					d->cur = d->again;
					d->again = 0;
					d->attempts++;
				} else {
					d->cur = ++d->started;
					d->attempts = 1;
				}
				struct client_msg m = {.n = d->cur,
				                       .stamp = stamp,
				                       .stamp_len = sizeof(stamp) - 1,
				                       .raw = raw,
				                       .raw_len = sizeof(raw) - 1,
				                       .wire = wire,
				                       .wire_len = sizeof(wire) - 1};
				d->fifo[(d->fh + d->fn++) % CLIENT_DEPTH_MAX] = d->cur;
				next |= client_begin(c, &m);
				flush(c, r);
				begun = true;
			}
			if (!begun)
				next = client_quit(c);
		}
		if ((act | next) & CLIENT_ACT_SEND)
			flush(c, r);
		act = next & ~CLIENT_ACT_SEND;
	}
}

static void play(const struct tcfg *t, const char *in, size_t len, const size_t *cut, size_t ncut,
                 size_t step, struct run *r)
{
	struct client c;
	struct client_stats st;
	size_t cap = client_cmd_cap(&t->cc), off = 0, ci = 0;
	char *cmd = malloc(cap);
	struct drv d = {0};

	memset(&st, 0, sizeof(st));
	r->out = NULL;
	r->len = 0;
	client_init(&c, &t->cc, &st, cmd, cap);
	c.sid = t->sid;
	handle(&c, t, client_start(&c), &d, r);
	while (off < len && c.state != CLIENT_ST_CLOSED) {
		size_t end = len, done = 0;
		if (step)
			end = off + step < len ? off + step : len;
		else if (ci < ncut)
			end = cut[ci++];
		char *piece = malloc(end - off ? end - off : 1);
		memcpy(piece, in + off, end - off);
		while (done < end - off && c.state != CLIENT_ST_CLOSED) {
			unsigned act;
			done += client_feed(&c, piece + done, end - off - done, &act);
			handle(&c, t, act, &d, r);
		}
		free(piece);
		off = end;
	}
	if (c.state != CLIENT_ST_CLOSED)
		handle(&c, t, client_eof(&c), &d, r);
	emitf(r, "== replies:");
	for (int i = 0; i < CLIENT_CMD_N; i++)
		if (st.replies[i][0] + st.replies[i][1] + st.replies[i][2] + st.replies[i][3])
			emitf(r, " %s=%llu/%llu/%llu/%llu", client_cmd_name((unsigned)i),
			      (unsigned long long)st.replies[i][0],
			      (unsigned long long)st.replies[i][1],
			      (unsigned long long)st.replies[i][2],
			      (unsigned long long)st.replies[i][3]);
	if (st.auth_attempts)
		emitf(r, " | auth attempts=%llu (plain %llu, login %llu) ok=%llu failed=%llu",
		      (unsigned long long)st.auth_attempts, (unsigned long long)st.auth_plain,
		      (unsigned long long)st.auth_login, (unsigned long long)st.auth_ok,
		      (unsigned long long)st.auth_failed);
	emitf(r, "\n");
	free(cmd);
}

static int same(const struct run *a, const struct run *b)
{
	return a->len == b->len && !memcmp(a->out, b->out, a->len);
}

static int run_one(const char *dir, const char *name, int write)
{
	char path[4096];
	size_t len, rlen, skip = 0;
	struct tcfg t;
	struct run whole, bytes;
	int fail = 0;
	char *in, *ref;

	snprintf(path, sizeof(path), "%s/%s.in", dir, name);
	in = slurp(path, &len);
	if (!in) {
		fprintf(stderr, "%s: cannot read\n", path);
		return 1;
	}
	memset(&t, 0, sizeof(t));
	t.cc.rcpts = 1;
	t.cc.pipelining = -1;
	t.msgs = 1;
	snprintf(t.from, sizeof(t.from), "bench{n}@client.test");
	snprintf(t.to, sizeof(t.to), "rcpt{r}@server.test");
	snprintf(t.ehlo, sizeof(t.ehlo), "client.test");
	if (len >= 2 && in[0] == '#' && in[1] == '!') {
		char *nl = memchr(in, '\n', len);
		if (!nl)
			return 1;
		skip = (size_t)(nl - in) + 1;
		char *opts = strndup(in + 2, (size_t)(nl - in) - 2);
		if (parse_opts(opts, &t)) {
			fprintf(stderr, "%s: bad #! options\n", name);
			return 1;
		}
		free(opts);
	}
	t.cc.from_tpl = t.from;
	t.cc.to_tpl = t.to;
	t.cc.ehlo = t.ehlo;
	if (t.user[0]) {
		t.cc.auth_user = t.user;
		t.cc.auth_pass = t.pass;
	}
	play(&t, in + skip, len - skip, NULL, 0, 0, &whole);
	play(&t, in + skip, len - skip, NULL, 0, 1, &bytes);
	if (!same(&whole, &bytes)) {
		fprintf(stderr,
		        "FAIL %s: byte-by-byte feed differs from whole feed\n--- bytes ---\n%.*s\n",
		        name, (int)bytes.len, bytes.out);
		fail = 1;
	}
	for (size_t k = 1; k < len - skip && !fail; k++) {
		struct run split;
		play(&t, in + skip, len - skip, &k, 1, 0, &split);
		if (!same(&whole, &split)) {
			fprintf(stderr, "FAIL %s: split at %zu differs from whole feed\n", name, k);
			fail = 1;
		}
		free(split.out);
	}
	snprintf(path, sizeof(path), "%s/%s.ref", dir, name);
	if (write) {
		FILE *f = fopen(path, "wb");
		if (!f || fwrite(whole.out, 1, whole.len, f) != whole.len)
			fail = 1;
		if (f)
			fclose(f);
	} else {
		ref = slurp(path, &rlen);
		if (!ref) {
			fprintf(stderr, "FAIL %s: no %s\n", name, path);
			fail = 1;
		} else if (rlen != whole.len || memcmp(ref, whole.out, rlen)) {
			fprintf(stderr,
			        "FAIL %s: output differs from .ref\n--- got ---\n%.*s\n--- want "
			        "---\n%s\n",
			        name, (int)whole.len, whole.out, ref);
			fail = 1;
		}
		free(ref);
	}
	free(whole.out);
	free(bytes.out);
	free(in);
	return fail;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

static int is_in(const struct dirent *d)
{
	size_t n = strlen(d->d_name);
	return n > 3 && !strcmp(d->d_name + n - 3, ".in");
}

int main(int argc, char **argv)
{
	struct dirent **ents;
	int n, pass = 0, fail = 0, write = argc > 2 && !strcmp(argv[2], "--write");

	if (argc < 2) {
		fprintf(stderr, "usage: client_transcript DIR [--write]\n");
		return 2;
	}
	n = scandir(argv[1], &ents, is_in, by_name);
	if (n <= 0) {
		fprintf(stderr, "no transcripts in %s\n", argv[1]);
		return 1;
	}
	for (int i = 0; i < n; i++) {
		ents[i]->d_name[strlen(ents[i]->d_name) - 3] = 0;
		if (run_one(argv[1], ents[i]->d_name, write))
			fail++;
		else
			pass++;
		free(ents[i]);
	}
	free(ents);
	printf("client transcripts: %d passed, %d failed\n", pass, fail);
	return fail ? 1 : 0;
}
