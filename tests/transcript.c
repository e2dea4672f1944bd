/*
 * transcript.c - byte-exact protocol transcript tests for the session core
 *
 * For every tests/transcripts/NAME.in (client bytes) the session's output
 * must equal NAME.ref byte for byte.  Each input is fed three ways - whole,
 * split in two at every offset, and one byte per call - and all must give
 * the same output, which proves replies do not depend on how TCP segments
 * the stream.  When NAME.counters exists, the session's non-zero counters
 * (JSON names, "name=value" per line, in struct order) must equal it too.
 * An optional first line "#! key=value ..." configures the session and is
 * not part of the input:
 *   max_size=N max_rcpt=N rcpt_overshoot=N line_max=N max_errors=N
 *   hide=EXT[,EXT] bare_lf=normalize|note|reject strict=0|1
 *   stop_after=N   (the host answers may_start "no" once N messages were
 *                   accepted, as a stopping server does)
 *   starttls=1 auth=1 auth_insecure=1 require_tls=1 require_auth=1
 *   tls=1          (TLS is up from the start, as on an implicit-TLS port)
 *   max_msgs=N address_faults=1
 * A line "#TLS" in the input (not fed) stands for a completed STARTTLS
 * handshake: the session is told TLS started.  AUTH accepts good/secret.
 * Lines "#fault RULE" right after the options add --fault rules (the
 * client is 127.0.0.1, time stands still); a delayed reply is resumed at
 * once, a stall or a drop/reset ends the transcript ("#STALL", "#DROP",
 * "#RESET" are appended to the output so the .ref shows it).
 * Usage: transcript DIR [--write]   (--write regenerates .ref files)
 */
#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sink/sess.h"

struct run {
	char *out;
	size_t len;
	struct sess_stats st;
};

static uint64_t stop_after; /* 0 = never */
static bool start_tls;      /* implicit TLS */

/* host_may_start - the policy a stopping server applies (see stop_after). */
static bool host_may_start(void *ctx)
{
	const struct sess *s = ctx;

	return !stop_after || s->stats->msgs < stop_after;
}

/* host_auth - transcripts know one account: good / secret. */
static bool host_auth(void *ctx, const char *user, size_t ulen, const char *pass, size_t plen)
{
	(void)ctx;
	return ulen == 4 && !memcmp(user, "good", 4) && plen == 6 && !memcmp(pass, "secret", 6);
}

/* The transcript's fault plan: "#fault RULE" lines before the input. */
static struct fault_plan *plan;
static struct fault_ip client_ip = {.family = 4, .b = {127, 0, 0, 1}};

static bool host_fault(void *ctx, enum fault_stage st, struct fault_ctx *fc,
                       struct fault_decision *d)
{
	(void)ctx;
	fc->client = &client_ip;
	fc->now_ns = 0;
	return fault_decide(plan, st, fc, d);
}

static const struct sess_policy_ops host_ops = {host_may_start, host_auth, host_fault};

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

static int parse_opts(char *line, struct sess_cfg *cfg)
{
	for (char *t = strtok(line, " \t"); t; t = strtok(NULL, " \t")) {
		char *v = strchr(t, '=');
		if (!v)
			return -1;
		*v++ = 0;
		if (!strcmp(t, "max_size"))
			cfg->max_size = strtoull(v, NULL, 10);
		else if (!strcmp(t, "max_rcpt"))
			cfg->max_rcpt = (uint32_t)strtoul(v, NULL, 10);
		else if (!strcmp(t, "rcpt_overshoot"))
			cfg->rcpt_overshoot = (uint32_t)strtoul(v, NULL, 10);
		else if (!strcmp(t, "strict"))
			cfg->strict = strtoul(v, NULL, 10) != 0;
		else if (!strcmp(t, "stop_after"))
			stop_after = strtoull(v, NULL, 10);
		else if (!strcmp(t, "starttls"))
			cfg->starttls = strtoul(v, NULL, 10) != 0;
		else if (!strcmp(t, "auth"))
			cfg->auth = strtoul(v, NULL, 10) != 0;
		else if (!strcmp(t, "auth_insecure"))
			cfg->auth_insecure = strtoul(v, NULL, 10) != 0;
		else if (!strcmp(t, "require_tls"))
			cfg->require_tls = strtoul(v, NULL, 10) != 0;
		else if (!strcmp(t, "require_auth"))
			cfg->require_auth = strtoul(v, NULL, 10) != 0;
		else if (!strcmp(t, "tls"))
			start_tls = strtoul(v, NULL, 10) != 0;
		else if (!strcmp(t, "max_msgs"))
			cfg->max_msgs_per_session = (uint32_t)strtoul(v, NULL, 10);
		else if (!strcmp(t, "address_faults")) {
			if (!plan)
				plan = fault_plan_new(0);
			fault_plan_set_address_faults(plan, strtoul(v, NULL, 10) != 0);
			cfg->faults = true;
		} else if (!strcmp(t, "line_max"))
			cfg->line_max = (uint32_t)strtoul(v, NULL, 10);
		else if (!strcmp(t, "max_errors"))
			cfg->max_errors = (uint32_t)strtoul(v, NULL, 10);
		else if (!strcmp(t, "bare_lf")) {
			int pol = sess_bare_lf_by_name(v);
			if (pol < 0)
				return -1;
			cfg->bare_lf = (enum sess_bare_lf)pol;
		} else if (!strcmp(t, "hide")) {
			for (char *x = strtok_r(v, ",", &v); x; x = strtok_r(NULL, ",", &v)) {
				uint32_t bit = sess_ext_by_name(x);
				if (!bit)
					return -1;
				cfg->ext &= ~bit;
			}
		} else
			return -1;
	}
	return 0;
}

/* drain - move what the session wrote into the run's record, as a client
 * that reads everything would. */
static void drain(struct obuf *out, struct run *r)
{
	size_t n = obuf_pending(out);

	r->out = realloc(r->out, r->len + n + 1);
	memcpy(r->out + r->len, out->p + out->off, n);
	r->len += n;
	obuf_consume(out, n);
}

/* play - feed in pieces: whole (step 0, no cuts), at cut points, or step
 * octets per call.  Each piece is a fresh allocation freed right after the
 * call, so a view kept past its call is caught by ASan. */
static size_t tls_at[16], ntls; /* offsets where a "#TLS" line was */

/* play - feed in pieces: whole (step 0, no cuts), at cut points, or step
 * octets per call; pieces also end at TLS points, where the session is told
 * TLS started.  Each piece is a fresh allocation freed right after the call,
 * so a view kept past its call is caught by ASan. */
static void play(const struct sess_cfg *cfg, const char *in, size_t len, const size_t *cut,
                 size_t ncut, size_t step, struct run *r)
{
	struct sess s;
	struct obuf out;
	uint64_t seq = 0;
	char *carry = malloc(cfg->line_max);
	size_t off = 0, ci = 0, ti = 0;

	r->out = NULL;
	r->len = 0;
	obuf_init(&out);
	memset(&r->st, 0, sizeof(r->st));
	sess_start(&s, cfg, &r->st, &out, carry, &seq, 0);
	s.policy_ops = &host_ops;
	s.content_ctx = &s;
	unsigned act = sess_greet(&s);
	if (start_tls)
		sess_tls_started(&s);
	drain(&out, r);
	while (act & SESS_ACT_SUSPEND && s.suspend_ns)
		act = sess_resume(&s);
	while (off <= len && s.state != SESS_ST_CLOSING && !(act & SESS_ACT_SUSPEND)) {
		size_t end = len, done = 0;
		while (ti < ntls && tls_at[ti] == off) {
			sess_tls_started(&s);
			ti++;
		}
		if (off == len)
			break;
		if (step)
			end = off + step < len ? off + step : len;
		else if (ci < ncut && cut[ci] > off)
			end = cut[ci];
		if (ci < ncut && cut[ci] <= end)
			ci++;
		if (ti < ntls && tls_at[ti] < end)
			end = tls_at[ti];
		char *piece = malloc(end - off ? end - off : 1);
		memcpy(piece, in + off, end - off);
		while (done < end - off && !(act & SESS_ACT_SUSPEND) &&
		       s.state != SESS_ST_CLOSING) {
			done += sess_feed(&s, piece + done, end - off - done, &act);
			drain(&out, r);
			while (act & SESS_ACT_SUSPEND && s.suspend_ns) { /* delay=: time passes */
				act = sess_resume(&s);
				drain(&out, r);
			}
		}
		free(piece);
		off = end;
	}
	if (act & (SESS_ACT_SUSPEND | SESS_ACT_DROP | SESS_ACT_RESET)) {
		const char *m = act & SESS_ACT_DROP    ? "#DROP\n"
		                : act & SESS_ACT_RESET ? "#RESET\n"
		                                       : "#STALL\n";
		r->out = realloc(r->out, r->len + strlen(m) + 1);
		memcpy(r->out + r->len, m, strlen(m));
		r->len += strlen(m);
	}
	obuf_free(&out);
	free(carry);
}

/* cut_tls_markers - remove "#TLS" lines from the input, remembering where. */
static size_t cut_tls_markers(char *in, size_t len)
{
	size_t w = 0;

	ntls = 0;
	for (size_t r = 0; r < len;) {
		bool at_line = r == 0 || in[r - 1] == '\n';
		if (at_line && len - r >= 5 && !memcmp(in + r, "#TLS", 4) &&
		    (in[r + 4] == '\n' ||
		     (in[r + 4] == '\r' && r + 5 < len && in[r + 5] == '\n'))) {
			if (ntls < sizeof(tls_at) / sizeof(tls_at[0]))
				tls_at[ntls++] = w;
			r += in[r + 4] == '\n' ? 5 : 6;
			continue;
		}
		in[w++] = in[r++];
	}
	return w;
}

/* same - equal output and counters; pipelining_violations is left out: it
 * counts commands that had more input behind them in the same read, which
 * depends on the split by definition. */
static int same(const struct run *a, const struct run *b)
{
	struct sess_stats x = a->st, y = b->st;

	x.pipelining_violations = y.pipelining_violations = 0;
	return a->len == b->len && !memcmp(a->out, b->out, a->len) && !memcmp(&x, &y, sizeof(x));
}

/* counters_text - "name=value\n" for every non-zero counter. */
static char *counters_text(const struct sess_stats *st, size_t *len)
{
	const uint64_t *v = (const uint64_t *)st;
	char *p = malloc(4096);
	size_t k = 0;

	for (size_t i = 0; i < SESS_NCOUNTERS; i++)
		if (v[i])
			k += (size_t)snprintf(p + k, 4096 - k, "%s=%llu\n", sess_counter_names[i],
			                      (unsigned long long)v[i]);
	*len = k;
	return p;
}

static int run_one(const char *dir, const char *name, int write)
{
	char path[4096];
	size_t len, rlen, skip = 0;
	struct sess_cfg cfg;
	struct run whole, bytes;
	int fail = 0;
	char *in, *ref;

	snprintf(path, sizeof(path), "%s/%s.in", dir, name);
	in = slurp(path, &len);
	if (!in) {
		fprintf(stderr, "%s: cannot read\n", path);
		return 1;
	}
	sess_cfg_defaults(&cfg);
	cfg.hostname = "sink.test";
	fault_plan_free(plan);
	plan = NULL;
	stop_after = 0;
	start_tls = false;
	if (len >= 2 && in[0] == '#' && in[1] == '!') {
		char *nl = memchr(in, '\n', len);
		if (!nl)
			return 1;
		skip = (size_t)(nl - in) + 1;
		char *opts = strndup(in + 2, (size_t)(nl - in) - 2);
		if (parse_opts(opts, &cfg)) {
			fprintf(stderr, "%s: bad #! options\n", name);
			return 1;
		}
		free(opts);
	}
	while (len - skip > 7 && !memcmp(in + skip, "#fault ", 7)) {
		char *nl = memchr(in + skip, '\n', len - skip), err[512];
		size_t end = nl ? (size_t)(nl - in) : len, rl = end - skip - 7;
		if (rl && in[skip + 7 + rl - 1] == '\r')
			rl--;
		if (!plan)
			plan = fault_plan_new(0);
		if (fault_plan_add(plan, in + skip + 7, rl, err, sizeof(err))) {
			fprintf(stderr, "%s: bad #fault: %s\n", name, err);
			return 1;
		}
		cfg.faults = true;
		skip = nl ? end + 1 : len;
	}
	len = skip + cut_tls_markers(in + skip, len - skip);
	play(&cfg, in + skip, len - skip, NULL, 0, 0, &whole);
	play(&cfg, in + skip, len - skip, NULL, 0, 1, &bytes);
	if (!same(&whole, &bytes)) {
		fprintf(stderr, "FAIL %s: byte-by-byte feed differs from whole feed\n", name);
		fail = 1;
	}
	for (size_t k = 1; k < len - skip && !fail; k++) {
		struct run split;
		play(&cfg, in + skip, len - skip, &k, 1, 0, &split);
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
	snprintf(path, sizeof(path), "%s/%s.counters", dir, name);
	{
		size_t clen, flen;
		char *ctext = counters_text(&whole.st, &clen), *want = slurp(path, &flen);
		if (write && want) {
			FILE *f = fopen(path, "wb");
			if (!f || fwrite(ctext, 1, clen, f) != clen)
				fail = 1;
			if (f)
				fclose(f);
		} else if (want && (flen != clen || memcmp(want, ctext, clen))) {
			fprintf(stderr,
			        "FAIL %s: counters differ\n--- got ---\n%.*s--- want ---\n%s", name,
			        (int)clen, ctext, want);
			fail = 1;
		}
		free(want);
		free(ctext);
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
		fprintf(stderr, "usage: transcript DIR [--write]\n");
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
	fault_plan_free(plan);
	printf("transcripts: %d passed, %d failed\n", pass, fail);
	return fail ? 1 : 0;
}
