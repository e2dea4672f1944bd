/*
 * report.c - smtpbench's final report, JSON report and `merge`
 *
 * Percentiles always come from histogram counts: per-thread histograms are
 * added before any quantile is taken, and `merge` adds the raw counts of
 * several runs (e.g. from several machines) - averaging percentiles would
 * be wrong.  JSON is written and read with jansson, so any valid JSON
 * formatting of a report (re-indented, compact, keys sorted) merges the
 * same; every key is documented in docs/json.md, and "schema" changes when
 * a key changes meaning.  Keys added within schema 1 (TLS and AUTH,
 * retries) are optional for merge: a report written before them adds
 * zeros.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

#include "bench.h"
#include "sink/config.h"

#define REPORT_SCHEMA 1

void bench_stats_init(struct bench_stats *s)
{
	memset(s, 0, offsetof(struct bench_stats, connect));
	hist_init(&s->connect);
	hist_init(&s->msg);
	hist_init(&s->msg_raw);
	hist_init(&s->cmd);
	hist_init(&s->tls_hs_full);
	hist_init(&s->tls_hs_resumed);
	hist_init(&s->delivery);
}

/* The scalar counters, in report order: one list for the text report, the
 * JSON writer and the merge reader. */
static const struct ctr {
	const char *sec, *key;
	size_t off;
	bool opt; /* added within schema 1 (TLS, AUTH, retries): may be absent */
} ctrs[] = {
    {"messages", "attempted", offsetof(struct bench_stats, attempted), false},
    {"messages", "delivered", offsetof(struct bench_stats, delivered), false},
    {"messages", "partial", offsetof(struct bench_stats, partial), false},
    {"messages", "failed", offsetof(struct bench_stats, failed), false},
    {"messages", "unsent", offsetof(struct bench_stats, unsent), false},
    {"messages", "measured", offsetof(struct bench_stats, measured), false},
    {"bytes", "content", offsetof(struct bench_stats, bytes), false},
    {"bytes", "measured_content", offsetof(struct bench_stats, measured_bytes), false},
    {"bytes", "sent", offsetof(struct bench_stats, sent_bytes), false},
    {"connections", "attempts", offsetof(struct bench_stats, conn_attempts), false},
    {"connections", "established", offsetof(struct bench_stats, conn_established), false},
    {"connections", "quit", offsetof(struct bench_stats, conn_quit), false},
    {"connections", "failed", offsetof(struct bench_stats, conn_failed), false},
    {"connections", "closed_early", offsetof(struct bench_stats, conn_closed_early), false},
    {"connections", "gave_up", offsetof(struct bench_stats, gave_up), false},
    {"tls", "full", offsetof(struct bench_stats, tls_full), true},
    {"tls", "resumed", offsetof(struct bench_stats, tls_resumed), true},
    {"auth", "attempts", offsetof(struct bench_stats, replies.auth_attempts), true},
    {"auth", "plain", offsetof(struct bench_stats, replies.auth_plain), true},
    {"auth", "login", offsetof(struct bench_stats, replies.auth_login), true},
    {"auth", "ok", offsetof(struct bench_stats, replies.auth_ok), true},
    {"auth", "failed", offsetof(struct bench_stats, replies.auth_failed), true},
    {"retries", "sent", offsetof(struct bench_stats, retry_sent), true},
    {"retries", "first_attempt_failed", offsetof(struct bench_stats, retry_first_failed), true},
    {"retries", "recovered", offsetof(struct bench_stats, retry_recovered), true},
    {"retries", "exhausted", offsetof(struct bench_stats, retry_exhausted), true},
    {"retries", "queue_full", offsetof(struct bench_stats, retry_queue_full), true},
    {"retries", "aborted", offsetof(struct bench_stats, retry_aborted), true},
};
#define NCTRS (sizeof(ctrs) / sizeof(ctrs[0]))

static const char *const rc_names[CLIENT_RC_N] = {"ok", "4xx", "5xx", "other"};

/* failure classes and reply keys that came with TLS and AUTH */
static bool fail_opt(int f)
{
	return f == CLIENT_FAIL_TLS || f == CLIENT_FAIL_AUTH;
}

static bool cmd_opt(int c)
{
	return c == CLIENT_CMD_STARTTLS || c == CLIENT_CMD_AUTH;
}

/* The histograms, for the JSON writer and merge. */
static const struct hdef {
	const char *key;
	size_t off;
	bool opt;
} hdefs[] = {
    {"connect", offsetof(struct bench_stats, connect), false},
    {"message", offsetof(struct bench_stats, msg), false},
    {"message_uncorrected", offsetof(struct bench_stats, msg_raw), false},
    {"command", offsetof(struct bench_stats, cmd), false},
    {"tls_handshake_full", offsetof(struct bench_stats, tls_hs_full), true},
    {"tls_handshake_resumed", offsetof(struct bench_stats, tls_hs_resumed), true},
    {"delivery", offsetof(struct bench_stats, delivery), true},
};
#define NHDEFS (sizeof(hdefs) / sizeof(hdefs[0]))

static struct hist *hist_at(struct bench_stats *s, size_t i)
{
	return (struct hist *)((char *)s + hdefs[i].off);
}
static uint64_t *ctr_at(struct bench_stats *s, size_t i)
{
	return (uint64_t *)((char *)s + ctrs[i].off);
}

void bench_stats_add(struct bench_stats *dst, const struct bench_stats *src)
{
	for (size_t i = 0; i < NCTRS; i++)
		*ctr_at(dst, i) += *ctr_at((struct bench_stats *)(uintptr_t)src, i);
	for (int f = 0; f < CLIENT_FAIL_N; f++) {
		dst->failed_by[f] += src->failed_by[f];
		dst->conn_failed_by[f] += src->conn_failed_by[f];
		dst->attempt_failed_by[f] += src->attempt_failed_by[f];
	}
	dst->conn_retried += src->conn_retried;
	for (int c = 0; c < CLIENT_CMD_N; c++)
		for (int r = 0; r < CLIENT_RC_N; r++)
			dst->replies.replies[c][r] += src->replies.replies[c][r];
	for (int i = 0; i < src->tls_versions.n; i++)
		bench_names_add(&dst->tls_versions, src->tls_versions.e[i].name,
		                src->tls_versions.e[i].count);
	for (int i = 0; i < src->tls_ciphers.n; i++)
		bench_names_add(&dst->tls_ciphers, src->tls_ciphers.e[i].name,
		                src->tls_ciphers.e[i].count);
	for (size_t i = 0; i < NHDEFS; i++)
		hist_merge(hist_at(dst, i), hist_at((struct bench_stats *)(uintptr_t)src, i));
}

/* --- text ----------------------------------------------------------------------------- */

static void print_hist(const char *name, const struct hist *h)
{
	if (!h->count) {
		fprintf(stderr, "  %-22s (none)\n", name);
		return;
	}
	fprintf(stderr,
	        "  %-22s p50 %8.3f  p90 %8.3f  p99 %8.3f  p99.9 %8.3f  max %8.3f ms  (n=%llu)\n",
	        name, hist_quantile(h, 0.5) / 1e6, hist_quantile(h, 0.9) / 1e6,
	        hist_quantile(h, 0.99) / 1e6, hist_quantile(h, 0.999) / 1e6, (double)h->max / 1e6,
	        (unsigned long long)h->count);
}

static void print_classes(const char *label, const uint64_t *by)
{
	bool any = false;

	for (int f = 1; f < CLIENT_FAIL_N; f++)
		if (by[f]) {
			fprintf(stderr, "%s%s %s %llu", any ? "," : "", any ? "" : label,
			        client_fail_name((unsigned)f), (unsigned long long)by[f]);
			any = true;
		}
	if (any)
		fputc('\n', stderr);
}

/* report_core - the counts and percentiles; retries: show the retry
 * lines (--retry given, or a merged report with retries in it). */
static void report_core(const struct bench_stats *t, double secs, bool open_loop, bool retries)
{
	const uint64_t(*rp)[CLIENT_RC_N] = t->replies.replies;

	fprintf(stderr,
	        "smtpbench: %llu attempted: %llu delivered, %llu partial, %llu failed"
	        " (%llu not sent)\n",
	        (unsigned long long)t->attempted, (unsigned long long)t->delivered,
	        (unsigned long long)t->partial, (unsigned long long)t->failed,
	        (unsigned long long)t->unsent);
	print_classes("  failed:   ", t->failed_by);
	if (retries) {
		fprintf(
		    stderr,
		    "  retries   %llu sent; %llu messages failed a first attempt: %llu recovered, "
		    "%llu exhausted, %llu queue full, %llu aborted\n",
		    (unsigned long long)t->retry_sent, (unsigned long long)t->retry_first_failed,
		    (unsigned long long)t->retry_recovered, (unsigned long long)t->retry_exhausted,
		    (unsigned long long)t->retry_queue_full, (unsigned long long)t->retry_aborted);
		print_classes("  failed attempts:", t->attempt_failed_by);
	}
	fprintf(
	    stderr,
	    "  measured  %llu in %.2f s: %.0f msgs/s  %.2f MB/s (content)\n"
	    "  rcpt      ok %llu  4xx %llu  5xx %llu  other %llu\n",
	    (unsigned long long)t->measured, secs, secs > 0 ? (double)t->measured / secs : 0.0,
	    secs > 0 ? (double)t->measured_bytes / secs / 1e6 : 0.0,
	    (unsigned long long)rp[CLIENT_CMD_RCPT][0], (unsigned long long)rp[CLIENT_CMD_RCPT][1],
	    (unsigned long long)rp[CLIENT_CMD_RCPT][2], (unsigned long long)rp[CLIENT_CMD_RCPT][3]);
	fprintf(stderr,
	        "  sessions  %llu connects: %llu established, %llu quit, %llu failed, %llu closed "
	        "early, %llu gave up\n",
	        (unsigned long long)t->conn_attempts, (unsigned long long)t->conn_established,
	        (unsigned long long)t->conn_quit, (unsigned long long)t->conn_failed,
	        (unsigned long long)t->conn_closed_early, (unsigned long long)t->gave_up);
	print_classes("  failed connections:", t->conn_failed_by);
	print_hist("connect -> ready", &t->connect);
	print_hist(open_loop ? "message (corrected)" : "message MAIL -> final", &t->msg);
	if (open_loop)
		print_hist("message (uncorrected)", &t->msg_raw);
	if (retries)
		print_hist("delivery 1st -> final", &t->delivery);
	print_hist("command round trip", &t->cmd);
	if (t->tls_full + t->tls_resumed) {
		fprintf(stderr, "  tls       %llu handshakes: %llu full, %llu resumed;",
		        (unsigned long long)(t->tls_full + t->tls_resumed),
		        (unsigned long long)t->tls_full, (unsigned long long)t->tls_resumed);
		for (int i = 0; i < t->tls_versions.n; i++)
			fprintf(stderr, " %s %llu", t->tls_versions.e[i].name,
			        (unsigned long long)t->tls_versions.e[i].count);
		for (int i = 0; i < t->tls_ciphers.n; i++)
			fprintf(stderr, "%s %s %llu", i ? "," : ";", t->tls_ciphers.e[i].name,
			        (unsigned long long)t->tls_ciphers.e[i].count);
		fputc('\n', stderr);
		if (t->tls_full)
			print_hist("tls handshake (full)", &t->tls_hs_full);
		if (t->tls_resumed)
			print_hist("tls handshake (resumed)", &t->tls_hs_resumed);
	}
	if (t->replies.auth_attempts)
		fprintf(
		    stderr,
		    "  auth      %llu attempts (PLAIN %llu, LOGIN %llu): %llu ok, %llu failed\n",
		    (unsigned long long)t->replies.auth_attempts,
		    (unsigned long long)t->replies.auth_plain,
		    (unsigned long long)t->replies.auth_login,
		    (unsigned long long)t->replies.auth_ok,
		    (unsigned long long)t->replies.auth_failed);
}

void bench_report(struct bench *b, const struct bench_stats *tot, double secs, double cpu)
{
	int shown = 0;
	bool clean = tot->failed == 0 && tot->partial == 0 &&
	             tot->conn_failed + tot->conn_closed_early == tot->conn_retried &&
	             tot->unsent == 0 && !b->stop_reason[0];

	if (b->cfg.quiet && clean)
		return;
	for (int i = 0; i < b->cfg.threads && shown < BENCH_FIRST_ERRORS; i++)
		for (int k = 0; k < b->th[i].nfirst && shown < BENCH_FIRST_ERRORS; k++, shown++)
			fprintf(stderr, "smtpbench: error: %s\n", b->th[i].first_errors[k]);
	if (b->stop_reason[0])
		fprintf(stderr, "smtpbench: stopped: %s\n", b->stop_reason);
	if (b->cfg.segmented)
		fprintf(stderr, "smtpbench: segment %u/%u of run %016llx\n", b->cfg.seg_index,
		        b->cfg.seg_count, (unsigned long long)b->cfg.run_id);
	report_core(tot, secs, b->cfg.rate > 0, b->cfg.retry > 0);
	fprintf(stderr, "  generator CPU %.2f s (%.2f us/msg, %.0f%% of %d threads)\n", cpu,
	        tot->attempted ? cpu * 1e6 / (double)tot->attempted : 0.0,
	        secs > 0 ? 100.0 * cpu / secs / b->cfg.threads : 0.0, b->cfg.threads);
	if (secs > 0 && cpu / secs / b->cfg.threads > 0.9)
		fprintf(stderr, "  WARNING: the generator saturated its CPU: these numbers "
		                "describe smtpbench, not the server\n");
}

/* --- JSON out ---------------------------------------------------------------------------- */

/* utf8_clean - a copy that is valid UTF-8: invalid octets become the
 * text \xHH (jansson refuses invalid UTF-8; control characters it escapes
 * itself). */
static char *utf8_clean(const char *s)
{
	size_t n = strlen(s), k = 0;
	char *o = malloc(4 * n + 1);

	if (!o)
		return NULL;
	for (size_t i = 0; i < n;) {
		const unsigned char *p = (const unsigned char *)s + i;
		size_t len = p[0] < 0x80             ? 1
		             : (p[0] & 0xe0) == 0xc0 ? 2
		             : (p[0] & 0xf0) == 0xe0 ? 3
		             : (p[0] & 0xf8) == 0xf0 ? 4
		                                     : 0;
		bool ok = len > 0 && i + len <= n;
		uint32_t cp = len == 1   ? p[0]
		              : len == 2 ? p[0] & 0x1fu
		              : len == 3 ? p[0] & 0x0fu
		                         : p[0] & 0x07u;
		for (size_t j = 1; ok && j < len; j++) {
			ok = (p[j] & 0xc0) == 0x80;
			cp = cp << 6 | (p[j] & 0x3fu);
		}
		/* no overlong forms, surrogates or code points past U+10FFFF */
		if (ok && ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
		           (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
		           (cp >= 0xd800 && cp <= 0xdfff)))
			ok = false;
		if (ok) {
			memcpy(o + k, p, len);
			k += len;
			i += len;
		} else {
			k += (size_t)sprintf(o + k, "\\x%02x", p[0]);
			i++;
		}
	}
	o[k] = 0;
	return o;
}

char *bench_utf8_clean(const char *s)
{
	return utf8_clean(s);
}

static json_t *ju(uint64_t v)
{
	return json_integer((json_int_t)v);
}

static json_t *hist_json(const struct hist *h)
{
	json_t *o = json_object(), *bk = json_array();

	json_object_set_new(o, "count", ju(h->count));
	json_object_set_new(o, "min", ju(h->count ? h->min : 0));
	json_object_set_new(o, "max", ju(h->max));
	json_object_set_new(o, "sum", ju(h->sum));
	json_object_set_new(o, "sub_bits", json_integer(HIST_SUB_BITS));
	json_object_set_new(o, "unit", json_string("ns"));
	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		if (h->c[i])
			json_array_append_new(
			    bk, json_pack("[I, I]", (json_int_t)i, (json_int_t)h->c[i]));
	json_object_set_new(o, "buckets", bk);
	return o;
}

static json_t *quantiles_json(const struct hist *h)
{
	json_t *o = json_object();

	json_object_set_new(o, "p50", json_real(hist_quantile(h, 0.5) / 1e6));
	json_object_set_new(o, "p90", json_real(hist_quantile(h, 0.9) / 1e6));
	json_object_set_new(o, "p99", json_real(hist_quantile(h, 0.99) / 1e6));
	json_object_set_new(o, "p999", json_real(hist_quantile(h, 0.999) / 1e6));
	json_object_set_new(o, "max", json_real((double)h->max / 1e6));
	return o;
}

static json_t *classes_json(const uint64_t *by)
{
	json_t *o = json_object();

	for (int f = 1; f < CLIENT_FAIL_N; f++)
		json_object_set_new(o, client_fail_name((unsigned)f), ju(by[f]));
	return o;
}

static json_t *names_json(const struct bench_names *t)
{
	json_t *o = json_object();

	for (int i = 0; i < t->n; i++) {
		char *k = utf8_clean(t->e[i].name);
		json_object_set_new(o, k ? k : "?", ju(t->e[i].count));
		free(k);
	}
	return o;
}

/* stats_json - everything merge reads back, added to doc. */
static void stats_json(json_t *doc, const struct bench_stats *t, double secs, double cpu)
{
	json_t *rp = json_object(), *lat = json_object(), *hs = json_object();

	json_object_set_new(doc, "seconds", json_real(secs));
	json_object_set_new(doc, "cpu_seconds", json_real(cpu));
	json_object_set_new(doc, "msgs_per_s", json_real(secs > 0 ? t->measured / secs : 0.0));
	for (size_t i = 0; i < NCTRS; i++) {
		json_t *sec = json_object_get(doc, ctrs[i].sec);
		if (!sec) {
			sec = json_object();
			json_object_set_new(doc, ctrs[i].sec, sec);
		}
		json_object_set_new(sec, ctrs[i].key,
		                    ju(*ctr_at((struct bench_stats *)(uintptr_t)t, i)));
	}
	json_object_set_new(json_object_get(doc, "messages"), "failed_by",
	                    classes_json(t->failed_by));
	json_object_set_new(json_object_get(doc, "connections"), "failed_by",
	                    classes_json(t->conn_failed_by));
	json_object_set_new(json_object_get(doc, "retries"), "attempt_failed_by",
	                    classes_json(t->attempt_failed_by));
	for (int c = 0; c < CLIENT_CMD_N; c++) {
		json_t *o = json_object();
		for (int r = 0; r < CLIENT_RC_N; r++)
			json_object_set_new(o, rc_names[r], ju(t->replies.replies[c][r]));
		json_object_set_new(rp, client_cmd_name((unsigned)c), o);
	}
	json_object_set_new(doc, "replies", rp);
	json_object_set_new(json_object_get(doc, "tls"), "versions", names_json(&t->tls_versions));
	json_object_set_new(json_object_get(doc, "tls"), "ciphers", names_json(&t->tls_ciphers));
	for (size_t i = 0; i < NHDEFS; i++) {
		const struct hist *h = hist_at((struct bench_stats *)(uintptr_t)t, i);
		json_object_set_new(lat, hdefs[i].key, quantiles_json(h));
		json_object_set_new(hs, hdefs[i].key, hist_json(h));
	}
	json_object_set_new(doc, "latency_ms", lat);
	json_object_set_new(doc, "histograms", hs);
}

static void cpu_model(char *out, size_t n)
{
	FILE *f = fopen("/proc/cpuinfo", "r");
	char line[512];

	snprintf(out, n, "unknown");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
			snprintf(out, n, "%s",
			         strchr(line, ':') + 1 + (strchr(line, ':')[1] == ' '));
			out[strcspn(out, "\n")] = 0;
			break;
		}
	fclose(f);
}

static json_t *new_doc(void)
{
	json_t *doc = json_object();

	json_object_set_new(doc, "schema", json_integer(REPORT_SCHEMA));
	json_object_set_new(doc, "program", json_string("smtpbench"));
	json_object_set_new(doc, "version", json_string(SINK_VERSION));
	json_object_set_new(doc, "git_rev", json_string(SINK_GIT_REV));
	return doc;
}

static int write_doc(json_t *doc, FILE *f)
{
	int ret = json_dumpf(doc, f, JSON_INDENT(2) | JSON_PRESERVE_ORDER);

	json_decref(doc);
	if (!ret && fputc('\n', f) == EOF)
		ret = -1;
	if (f == stdout)
		return ret || fflush(f) ? -1 : 0;
	return fclose(f) || ret ? -1 : 0;
}

int bench_json(struct bench *b, const struct bench_stats *t, double secs, double cpu, FILE *f)
{
	const struct bench_cfg *c = &b->cfg;
	const struct client_cfg *cc = &c->client;
	struct utsname un;
	char cpum[128], buf[256], *cmd;
	json_t *doc = new_doc(), *opt = json_object(), *errs = json_array();

	uname(&un);
	cpu_model(cpum, sizeof(cpum));
	snprintf(buf, sizeof(buf), "%s %s", un.sysname, un.release);
	json_object_set_new(doc, "kernel", json_string(buf));
	cmd = utf8_clean(cpum);
	json_object_set_new(doc, "cpu_model", json_string(cmd ? cmd : "?"));
	free(cmd);
	json_object_set_new(doc, "backend", json_string(c->use_uring ? "io_uring" : "epoll"));
	cmd = utf8_clean(c->argv_line);
	json_object_set_new(doc, "command", json_string(cmd ? cmd : "?"));
	free(cmd);
	snprintf(buf, sizeof(buf), "%016llx", (unsigned long long)c->run_id);
	json_object_set_new(doc, "run_id", json_string(buf));
	/* many hosts: which part of which run this was, and when it began (wall
	 * clock, Unix seconds), so the instances' starts can be compared */
	if (c->segmented)
		json_object_set_new(
		    doc, "segment",
		    json_pack("{s:I, s:I, s:I, s:I, s:f, s:f}", "index", (json_int_t)c->seg_index,
		              "count", (json_int_t)c->seg_count, "sessions_total",
		              (json_int_t)c->sessions_total, "messages_total",
		              (json_int_t)c->messages_total, "rate_total", c->rate_total,
		              "connect_rate_total", c->connect_rate_total));
	else
		json_object_set_new(doc, "segment", json_null());
	json_object_set_new(doc, "start_at",
	                    c->start_at_given ? json_real((double)c->start_at_ns / 1e9)
	                                      : json_null());
	json_object_set_new(doc, "started_at", json_real((double)c->started_ns / 1e9));
	json_object_set_new(opt, "sessions", ju(c->sessions));
	json_object_set_new(opt, "threads", json_integer(c->threads));
	json_object_set_new(opt, "messages", ju(c->messages));
	json_object_set_new(opt, "duration_s", json_real((double)c->duration_ns / 1e9));
	json_object_set_new(opt, "warmup_s", json_real((double)c->warmup_ns / 1e9));
	json_object_set_new(opt, "rate", json_real(c->rate));
	json_object_set_new(opt, "connect_rate", json_real(c->connect_rate));
	json_object_set_new(opt, "rcpts", ju(cc->rcpts));
	json_object_set_new(opt, "pipelining",
	                    json_string(cc->pipelining < 0 ? "auto"
	                                : cc->pipelining   ? "on"
	                                                   : "off"));
	json_object_set_new(opt, "bdat", json_boolean(cc->bdat));
	json_object_set_new(opt, "depth", json_integer(cc->depth > 1 ? cc->depth : 1));
	json_object_set_new(opt, "msgs_per_session", ju(c->msgs_per_session));
	json_object_set_new(opt, "timeout_s", json_real((double)c->timeout_ns / 1e9));
	json_object_set_new(opt, "max_attempts", ju(c->max_attempts));
	json_object_set_new(opt, "retry", ju(c->retry));
	json_object_set_new(opt, "retry_delay_s", json_real((double)c->retry_delay_ns / 1e9));
	uint64_t rq = 0;
	for (int i = 0; i < c->threads; i++)
		rq += b->th[i].retry_cap;
	json_object_set_new(opt, "retry_queue", ju(rq));
	json_object_set_new(opt, "tls",
	                    json_string(cc->tls == CLIENT_TLS_STARTTLS   ? "starttls"
	                                : cc->tls == CLIENT_TLS_IMPLICIT ? "implicit"
	                                                                 : "none"));
	json_object_set_new(opt, "tls_verify", json_boolean(c->tls_verify));
	json_object_set_new(opt, "tls_resume", json_boolean(c->tls_resume));
	/* whether AUTH was used and how; never the credentials */
	json_object_set_new(opt, "auth", json_boolean(cc->auth_user != NULL));
	json_object_set_new(opt, "auth_mech",
	                    json_string(cc->auth_mech == CLIENT_MECH_PLAIN   ? "PLAIN"
	                                : cc->auth_mech == CLIENT_MECH_LOGIN ? "LOGIN"
	                                                                     : "auto"));
	json_object_set_new(opt, "proxy",
	                    json_string(c->proxy == 1   ? "v1"
	                                : c->proxy == 2 ? "v2"
	                                                : "none"));
	if (c->proxy_src_given) {
		char a[INET6_ADDRSTRLEN] = "?";
		inet_ntop(c->proxy_src.family == 4 ? AF_INET : AF_INET6, c->proxy_src.b, a,
		          sizeof(a));
		json_object_set_new(opt, "proxy_source", json_string(a));
	} else {
		json_object_set_new(opt, "proxy_source", json_null());
	}
	json_object_set_new(doc, "options", opt);
	json_object_set_new(doc, "stopped",
	                    b->stop_reason[0] ? json_string(b->stop_reason) : json_null());
	for (int i = 0; i < c->threads; i++)
		for (int k = 0; k < b->th[i].nfirst; k++) {
			char *e = utf8_clean(b->th[i].first_errors[k]);
			json_array_append_new(errs, json_string(e ? e : "?"));
			free(e);
		}
	json_object_set_new(doc, "first_errors", errs);
	stats_json(doc, t, secs, cpu);
	return write_doc(doc, f);
}

/* --- merge -------------------------------------------------------------------------------- */

struct mctx {
	const char *file;
	char err[256];
};

__attribute__((format(printf, 2, 3))) static int bad(struct mctx *m, const char *fmt, ...)
{
	va_list ap;

	if (!m->err[0]) {
		va_start(ap, fmt);
		vsnprintf(m->err, sizeof(m->err), fmt, ap);
		va_end(ap);
	}
	return -1;
}

static int get_u64(struct mctx *m, json_t *obj, const char *sec, const char *key, uint64_t *out)
{
	json_t *v = obj ? json_object_get(obj, key) : NULL;

	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return bad(m, "missing or invalid \"%s%s%s\" (a non-negative integer)", sec,
		           *sec ? "." : "", key);
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

static int add_u64(struct mctx *m, json_t *obj, const char *sec, const char *key, uint64_t *acc)
{
	uint64_t v = 0;

	if (get_u64(m, obj, sec, key, &v))
		return -1;
	if (*acc + v < *acc)
		return bad(m, "\"%s.%s\" overflows when added", sec, key);
	*acc += v;
	return 0;
}

/* add_opt - add_u64 for a key added within schema 1: absent adds 0 (a
 * report written before it), present must be valid. */
static int add_opt(struct mctx *m, json_t *obj, const char *sec, const char *key, uint64_t *acc,
                   bool opt)
{
	if (opt && (!json_is_object(obj) || !json_object_get(obj, key)))
		return 0;
	return add_u64(m, obj, sec, key, acc);
}

/* add_names - a {"name": count} object (tls.versions, tls.ciphers). */
static int add_names(struct mctx *m, json_t *obj, const char *path, struct bench_names *t)
{
	const char *k;
	json_t *v;

	if (!obj)
		return 0; /* a report from before TLS */
	if (!json_is_object(obj))
		return bad(m, "\"%s\" is not an object", path);
	json_object_foreach(obj, k, v)
	{
		if (!json_is_integer(v) || json_integer_value(v) < 0)
			return bad(m, "\"%s.%s\" is not a non-negative integer", path, k);
		bench_names_add(t, k, (uint64_t)json_integer_value(v));
	}
	return 0;
}

static int get_num(struct mctx *m, json_t *doc, const char *key, double *out)
{
	json_t *v = json_object_get(doc, key);

	if (!json_is_number(v) || json_number_value(v) < 0)
		return bad(m, "missing or invalid \"%s\" (a non-negative number)", key);
	*out = json_number_value(v);
	return 0;
}

/* add_hist - only identical layouts can be added: same sub-bucket bits and
 * unit; the bucket counts must add up to "count". */
static int add_hist(struct mctx *m, json_t *hs, const char *name, struct hist *h)
{
	json_t *o = json_object_get(hs, name), *bk, *v;
	struct hist x;
	size_t i;
	uint64_t sub = 0, total = 0;

	if (!json_is_object(o))
		return bad(m, "missing histogram \"%s\"", name);
	if (get_u64(m, o, name, "sub_bits", &sub))
		return -1;
	v = json_object_get(o, "unit");
	if (sub != HIST_SUB_BITS || !json_is_string(v) || strcmp(json_string_value(v), "ns"))
		return bad(m,
		           "histogram \"%s\" has an incompatible layout (sub_bits %llu, unit %s; "
		           "this smtpbench adds only sub_bits %d, unit ns)",
		           name, (unsigned long long)sub,
		           json_is_string(v) ? json_string_value(v) : "?", HIST_SUB_BITS);
	hist_init(&x);
	if (get_u64(m, o, name, "count", &x.count) || get_u64(m, o, name, "min", &x.min) ||
	    get_u64(m, o, name, "max", &x.max) || get_u64(m, o, name, "sum", &x.sum))
		return -1;
	if (!x.count)
		x.min = UINT64_MAX;
	bk = json_object_get(o, "buckets");
	if (!json_is_array(bk))
		return bad(m, "histogram \"%s\": \"buckets\" is not an array", name);
	json_array_foreach(bk, i, v)
	{
		json_t *a = json_array_get(v, 0), *c = json_array_get(v, 1);
		if (!json_is_array(v) || json_array_size(v) != 2 || !json_is_integer(a) ||
		    !json_is_integer(c) || json_integer_value(a) < 0 ||
		    json_integer_value(a) >= HIST_BUCKETS || json_integer_value(c) < 0)
			return bad(m, "histogram \"%s\": bucket %zu is not [index, count]", name,
			           i);
		x.c[json_integer_value(a)] += (uint64_t)json_integer_value(c);
		total += (uint64_t)json_integer_value(c);
	}
	if (total != x.count)
		return bad(m, "histogram \"%s\": buckets add up to %llu, \"count\" says %llu", name,
		           (unsigned long long)total, (unsigned long long)x.count);
	hist_merge(h, &x);
	return 0;
}

static int merge_one(struct mctx *m, json_t *doc, struct bench_stats *t, double *secs, double *cpu)
{
	json_t *v, *sec;
	double d = 0;

	if (!json_is_object(doc))
		return bad(m, "not a JSON object");
	v = json_object_get(doc, "program");
	if (!json_is_string(v) || strcmp(json_string_value(v), "smtpbench"))
		return bad(m, "not a smtpbench report (\"program\" is not \"smtpbench\")");
	v = json_object_get(doc, "schema");
	if (!json_is_integer(v))
		return bad(m,
		           "no \"schema\": a report of an older smtpbench; only schema %d "
		           "can be merged",
		           REPORT_SCHEMA);
	if (json_integer_value(v) != REPORT_SCHEMA)
		return bad(m, "report schema %lld; this smtpbench merges schema %d only",
		           (long long)json_integer_value(v), REPORT_SCHEMA);
	/* runs side by side: wall time is the longest, work adds up */
	if (get_num(m, doc, "seconds", &d))
		return -1;
	*secs = d > *secs ? d : *secs;
	if (get_num(m, doc, "cpu_seconds", &d))
		return -1;
	*cpu += d;
	for (size_t i = 0; i < NCTRS; i++)
		if (add_opt(m, json_object_get(doc, ctrs[i].sec), ctrs[i].sec, ctrs[i].key,
		            ctr_at(t, i), ctrs[i].opt))
			return -1;
	for (int f = 1; f < CLIENT_FAIL_N; f++) {
		sec = json_object_get(json_object_get(doc, "messages"), "failed_by");
		if (add_opt(m, sec, "messages.failed_by", client_fail_name((unsigned)f),
		            &t->failed_by[f], fail_opt(f)))
			return -1;
		sec = json_object_get(json_object_get(doc, "connections"), "failed_by");
		if (add_opt(m, sec, "connections.failed_by", client_fail_name((unsigned)f),
		            &t->conn_failed_by[f], fail_opt(f)))
			return -1;
		sec = json_object_get(json_object_get(doc, "retries"), "attempt_failed_by");
		if (add_opt(m, sec, "retries.attempt_failed_by", client_fail_name((unsigned)f),
		            &t->attempt_failed_by[f], true))
			return -1;
	}
	for (int c = 0; c < CLIENT_CMD_N; c++) {
		char path[64];
		snprintf(path, sizeof(path), "replies.%s", client_cmd_name((unsigned)c));
		sec =
		    json_object_get(json_object_get(doc, "replies"), client_cmd_name((unsigned)c));
		if (cmd_opt(c) && !sec)
			continue;
		for (int r = 0; r < CLIENT_RC_N; r++)
			if (add_u64(m, sec, path, rc_names[r], &t->replies.replies[c][r]))
				return -1;
	}
	sec = json_object_get(doc, "tls");
	if (add_names(m, json_object_get(sec, "versions"), "tls.versions", &t->tls_versions) ||
	    add_names(m, json_object_get(sec, "ciphers"), "tls.ciphers", &t->tls_ciphers))
		return -1;
	sec = json_object_get(doc, "histograms");
	if (!json_is_object(sec))
		return bad(m, "missing \"histograms\"");
	for (size_t i = 0; i < NHDEFS; i++) {
		if (hdefs[i].opt && !json_object_get(sec, hdefs[i].key))
			continue;
		if (add_hist(m, sec, hdefs[i].key, hist_at(t, i)))
			return -1;
	}
	return 0;
}

/* read_all - a whole input ("-": standard input), NUL-terminated. */
static char *read_all(const char *path, size_t *len)
{
	FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
	size_t cap = 65536, n = 0;
	char *buf = f ? malloc(cap + 1) : NULL;

	while (buf && !ferror(f) && !feof(f)) {
		if (n == cap) {
			char *b = realloc(buf, 2 * cap + 1);
			if (!b) {
				free(buf);
				buf = NULL;
				errno = ENOMEM;
				break;
			}
			buf = b;
			cap *= 2;
		}
		n += fread(buf + n, 1, cap - n, f);
	}
	if (buf && ferror(f)) {
		free(buf);
		buf = NULL;
		errno = EIO;
	}
	if (f && f != stdin)
		fclose(f);
	if (buf) {
		buf[n] = 0;
		*len = n;
	}
	return buf;
}

/* intervals_out - what the interval logs add up to: text, and the
 * "intervals" object of the merged JSON (docs/json.md). */
static json_t *intervals_out(const struct ivl_totals *it)
{
	json_t *o = json_object(), *m = json_object();
	static const char *const keys[IVL_N] = {"delivered", "partial", "failed"};

	fprintf(stderr,
	        "smtpbench merge: %d interval logs, %lld ms intervals: %llu aligned intervals "
	        "(%llu not warm-up)\n",
	        it->logs, (long long)it->interval_ms, (unsigned long long)it->aligned,
	        (unsigned long long)it->measured_intervals);
	fprintf(stderr,
	        "  messages  %llu delivered, %llu partial, %llu failed; measured %llu in %.2f s: "
	        "%.0f msgs/s\n",
	        (unsigned long long)it->n[IVL_DELIVERED], (unsigned long long)it->n[IVL_PARTIAL],
	        (unsigned long long)it->n[IVL_FAILED], (unsigned long long)it->measured,
	        (double)it->measured_ms / 1e3,
	        it->measured_ms ? (double)it->measured * 1e3 / (double)it->measured_ms : 0.0);
	print_hist("message (not warm-up)", &it->h);
	json_object_set_new(o, "logs", json_integer(it->logs));
	json_object_set_new(o, "interval_ms", json_integer(it->interval_ms));
	json_object_set_new(o, "aligned", ju(it->aligned));
	json_object_set_new(o, "measured_intervals", ju(it->measured_intervals));
	json_object_set_new(o, "first_start_ms", json_integer(it->aligned ? it->first_ms : 0));
	json_object_set_new(o, "last_start_ms", json_integer(it->aligned ? it->last_ms : 0));
	for (int i = 0; i < IVL_N; i++)
		json_object_set_new(m, keys[i], ju(it->n[i]));
	json_object_set_new(o, "messages", m);
	json_object_set_new(o, "measured", ju(it->measured));
	json_object_set_new(o, "seconds", json_real((double)it->measured_ms / 1e3));
	json_object_set_new(o, "msgs_per_s",
	                    json_real(it->measured_ms
	                                  ? (double)it->measured * 1e3 / (double)it->measured_ms
	                                  : 0.0));
	json_object_set_new(o, "latency_ms", quantiles_json(&it->h));
	json_object_set_new(o, "histogram", hist_json(&it->h));
	return o;
}

static int merge_fail(FILE *of, FILE *csv, struct bench_stats *t, struct ivl_merge *im)
{
	if (of && of != stdout)
		fclose(of);
	if (csv && csv != stdout)
		fclose(csv);
	free(t);
	ivl_merge_free(im);
	return 2;
}

/* merge_out - open an output before reading anything, as for a run. */
static FILE *merge_out(const char *path)
{
	FILE *f = !strcmp(path, "-") ? stdout : fopen(path, "w");

	if (!f)
		fprintf(stderr, "smtpbench: merge: cannot write '%s': %s\n", path, strerror(errno));
	return f;
}

int bench_merge(int argc, char **argv)
{
	struct bench_stats *t = malloc(sizeof(*t));
	struct ivl_merge *im = ivl_merge_new();
	struct ivl_totals *it = NULL;
	const char *out = NULL, *csv = NULL;
	double secs = 0, cpu = 0;
	int nfiles = 0, nlogs = 0;
	FILE *of = NULL, *cf = NULL;

	if (!t || !im) {
		free(t);
		ivl_merge_free(im);
		return 1;
	}
	bench_stats_init(t);
	for (int i = 0; i < argc; i++) {
		bool j = !strcmp(argv[i], "--json") || !strcmp(argv[i], "-j");
		if (j || !strcmp(argv[i], "--csv")) {
			if (i + 1 >= argc) {
				fprintf(stderr, "smtpbench: merge: %s needs a file\n", argv[i]);
				return merge_fail(NULL, NULL, t, im);
			}
			*(j ? &out : &csv) = argv[++i];
		}
	}
	if (out && csv && !strcmp(out, "-") && !strcmp(csv, "-")) {
		fprintf(stderr, "smtpbench: merge: --json - and --csv - would both write to "
		                "stdout\n");
		return merge_fail(NULL, NULL, t, im);
	}
	/* checked before reading anything, as for a run */
	if ((out && !(of = merge_out(out))) || (csv && !(cf = merge_out(csv))))
		return merge_fail(of, cf, t, im);
	for (int i = 0; i < argc; i++) {
		struct mctx m = {.file = argv[i]};
		json_error_t je;
		json_t *doc;
		size_t len = 0;
		char *buf;

		if (!strcmp(argv[i], "--json") || !strcmp(argv[i], "-j") ||
		    !strcmp(argv[i], "--csv")) {
			i++;
			continue;
		}
		/* the whole input first: pipes and /dev/stdin work, and an
		 * interval log (JSON Lines) is told from a report by its
		 * first line */
		buf = read_all(argv[i], &len);
		if (!buf) {
			fprintf(stderr, "smtpbench: merge: %s: cannot read: %s\n", argv[i],
			        strerror(errno));
			return merge_fail(of, cf, t, im);
		}
		if (ivl_merge_is_log(buf, len)) {
			int ret = ivl_merge_add(im, argv[i], buf, len, m.err, sizeof(m.err));
			free(buf);
			if (ret) {
				fprintf(stderr, "smtpbench: merge: %s: %s\n", argv[i], m.err);
				return merge_fail(of, cf, t, im);
			}
			nlogs++;
			continue;
		}
		nfiles++;
		doc = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
		free(buf);
		if (!doc) {
			fprintf(stderr,
			        "smtpbench: merge: %s: not valid JSON: %s (line %d, column %d)\n",
			        argv[i], je.text, je.line, je.column);
			return merge_fail(of, cf, t, im);
		}
		int ret = merge_one(&m, doc, t, &secs, &cpu);
		json_decref(doc);
		if (ret) {
			fprintf(stderr, "smtpbench: merge: %s: %s\n", argv[i], m.err);
			return merge_fail(of, cf, t, im);
		}
	}
	if (!nfiles && !nlogs) {
		fprintf(stderr, "smtpbench merge needs JSON reports or interval logs\n"
		                "Try 'smtpbench --help'.\n");
		return merge_fail(of, cf, t, im);
	}
	if (cf && !nlogs) {
		fprintf(stderr, "smtpbench: merge: --csv needs interval logs (--interval-log) "
		                "among the inputs\n");
		return merge_fail(of, cf, t, im);
	}
	int ret = 0;
	if (nfiles) {
		fprintf(stderr, "smtpbench merge: %d runs\n", nfiles);
		/* runs with --retry 0 count transient failures too: only retries
		 * sent (or queued and lost) show that some run had --retry */
		report_core(t, secs, false,
		            t->retry_sent + t->retry_queue_full + t->retry_aborted > 0);
		fprintf(stderr, "  generator CPU %.2f s in all runs\n", cpu);
	}
	json_t *ivl_doc = NULL;
	if (nlogs) {
		it = malloc(sizeof(*it));
		if (!it || ivl_merge_finish(im, cf, it)) {
			fprintf(stderr, "smtpbench: merge: out of memory\n");
			free(it);
			merge_fail(of, cf, t, im);
			return 1;
		}
		ivl_doc = intervals_out(it);
		free(it);
		if (cf &&
		    ((cf == stdout ? fflush(cf) : fclose(cf)) || (cf == stdout && ferror(cf)))) {
			fprintf(stderr, "smtpbench: merge: cannot write '%s'\n", csv);
			ret = 1;
		}
	}
	if (of) {
		json_t *doc = new_doc();
		if (nfiles) {
			json_object_set_new(doc, "merged", json_integer(nfiles));
			stats_json(doc, t, secs, cpu);
		}
		if (ivl_doc)
			json_object_set_new(doc, "intervals", ivl_doc);
		ivl_doc = NULL;
		if (write_doc(doc, of)) {
			fprintf(stderr, "smtpbench: merge: cannot write '%s'\n", out);
			ret = 1;
		}
	}
	json_decref(ivl_doc);
	free(t);
	ivl_merge_free(im);
	return ret;
}
