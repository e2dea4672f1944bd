/*
 * report.c - smtpbench's final report, JSON output and `merge`
 *
 * Percentiles always come from histogram counts: per-thread histograms are
 * added before any quantile is taken, and `merge` adds the raw counts of
 * several runs (e.g. from several machines) - averaging percentiles would
 * be wrong.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

#include "bench.h"
#include "sink/config.h"

static const char *err_names[E_NCLASS] = {"connect", "4xx",      "5xx",
                                          "timeout", "protocol", "dropped"};

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

static void report_core(const struct bench_stats *t, double secs, double cpu, int threads,
                        uint64_t errs_first_threads, struct bench *b)
{
	uint64_t errs = 0;

	for (int e = 0; e < E_NCLASS; e++)
		errs += t->errors[e];
	fprintf(stderr,
	        "smtpbench: %llu delivered, %llu failed in %.2f s measured\n"
	        "  rate      %.0f msgs/s  %.2f MB/s  %.0f sessions/s\n",
	        (unsigned long long)t->delivered, (unsigned long long)t->failed, secs,
	        secs > 0 ? (double)t->measured / secs : 0.0,
	        secs > 0 ? (double)t->measured_bytes / secs / 1e6 : 0.0,
	        secs > 0 ? (double)t->sessions_opened / secs : 0.0);
	fprintf(stderr, "  errors    %llu:", (unsigned long long)errs);
	for (int e = 0; e < E_NCLASS; e++)
		fprintf(stderr, " %s %llu", err_names[e], (unsigned long long)t->errors[e]);
	fputc('\n', stderr);
	print_hist("connect -> 220", &t->connect);
	print_hist(b && b->cfg.rate > 0 ? "message (corrected)" : "message MAIL -> 250", &t->msg);
	if (b && b->cfg.rate > 0)
		print_hist("message (uncorrected)", &t->msg_raw);
	print_hist("command round trip", &t->cmd);
	if (cpu >= 0) {
		fprintf(stderr, "  generator CPU %.2f s (%.2f us/msg, %.0f%% of %d threads)\n", cpu,
		        t->delivered ? cpu * 1e6 / (double)t->delivered : 0.0,
		        secs > 0 ? 100.0 * cpu / secs / threads : 0.0, threads);
		if (secs > 0 && cpu / secs / threads > 0.9)
			fprintf(stderr, "  WARNING: the generator saturated its CPU: these numbers "
			                "describe smtpbench, not the server\n");
	}
	(void)errs_first_threads;
}

void bench_report(struct bench *b, const struct bench_stats *tot, double secs, double cpu)
{
	int shown = 0;

	if (b->cfg.quiet && tot->failed == 0)
		return;
	for (int i = 0; i < b->cfg.threads && shown < 5; i++)
		for (int k = 0; k < b->th[i].nfirst && shown < 5; k++, shown++)
			fprintf(stderr, "smtpbench: error: %s\n", b->th[i].first_errors[k]);
	report_core(tot, secs, cpu, b->cfg.threads, 0, b);
}

static void json_hist(FILE *f, const char *name, const struct hist *h, int last)
{
	fprintf(f, "    \"%s\": ", name);
	hist_write_json(h, f);
	fprintf(f, "%s\n", last ? "" : ",");
}

static void cpu_model(char *out, size_t n)
{
	FILE *f = fopen("/proc/cpuinfo", "r");
	char line[512];

	snprintf(out, n, "unknown");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "model name", 10)) {
			snprintf(out, n, "%s", strchr(line, ':') + 2);
			out[strcspn(out, "\n")] = 0;
			break;
		}
	fclose(f);
}

int bench_json(struct bench *b, const struct bench_stats *t, double secs, double cpu,
               const char *path)
{
	const struct bench_cfg *c = &b->cfg;
	struct utsname un;
	char cpum[128];
	FILE *f = fopen(path, "w");

	if (!f)
		return -1;
	uname(&un);
	cpu_model(cpum, sizeof(cpum));
	fprintf(
	    f, "{\n  \"program\": \"smtpbench\",\n  \"version\": \"%s\",\n  \"git_rev\": \"%s\",\n",
	    SINK_VERSION, SINK_GIT_REV);
	fprintf(f, "  \"kernel\": \"%s %s\",\n  \"cpu_model\": \"%s\",\n  \"backend\": \"%s\",\n",
	        un.sysname, un.release, cpum, c->use_uring ? "io_uring" : "epoll");
	fprintf(f, "  \"command\": \"");
	for (const char *p = c->argv_line; *p; p++)
		fprintf(f, *p == '"' || *p == '\\' ? "\\%c" : "%c", *p);
	fprintf(f, "\",\n  \"run_id\": \"%016llx\",\n", (unsigned long long)c->run_id);
	fprintf(f,
	        "  \"options\": {\"sessions\": %u, \"threads\": %d, \"messages\": %llu, "
	        "\"duration_s\": %.3f, \"warmup_s\": %.3f, \"rate\": %.3f, \"rcpts\": %u, "
	        "\"pipelining\": \"%s\", \"bdat\": %s, \"msgs_per_session\": %llu},\n",
	        c->sessions, c->threads, (unsigned long long)c->messages,
	        (double)c->duration_ns / 1e9, (double)c->warmup_ns / 1e9, c->rate, c->rcpts,
	        c->pipelining < 0 ? "auto"
	        : c->pipelining   ? "on"
	                          : "off",
	        c->bdat ? "true" : "false", (unsigned long long)c->msgs_per_session);
	fprintf(f,
	        "  \"seconds\": %.6f,\n  \"cpu_seconds\": %.6f,\n  \"delivered\": %llu,\n"
	        "  \"failed\": %llu,\n  \"measured\": %llu,\n  \"measured_bytes\": %llu,\n"
	        "  \"sessions_opened\": %llu,\n  \"sessions_quit\": %llu,\n  \"commands\": %llu,\n",
	        secs, cpu, (unsigned long long)t->delivered, (unsigned long long)t->failed,
	        (unsigned long long)t->measured, (unsigned long long)t->measured_bytes,
	        (unsigned long long)t->sessions_opened, (unsigned long long)t->sessions_done,
	        (unsigned long long)t->commands);
	fprintf(f, "  \"msgs_per_s\": %.3f,\n  \"errors\": {", secs > 0 ? t->measured / secs : 0.0);
	for (int e = 0; e < E_NCLASS; e++)
		fprintf(f, "%s\"%s\": %llu", e ? ", " : "", err_names[e],
		        (unsigned long long)t->errors[e]);
	fprintf(f, "},\n  \"histograms\": {\n");
	json_hist(f, "connect", &t->connect, 0);
	json_hist(f, "message", &t->msg, 0);
	json_hist(f, "message_uncorrected", &t->msg_raw, 0);
	json_hist(f, "command", &t->cmd, 1);
	fprintf(f, "  }\n}\n");
	return fclose(f);
}

/* --- merge --------------------------------------------------------------- */

static char *slurp(const char *path)
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
	if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
		free(p);
		p = NULL;
	}
	if (p)
		p[n] = 0;
	fclose(f);
	return p;
}

static int num_after(const char *s, const char *key, double *out)
{
	const char *p = strstr(s, key);

	if (!p)
		return -1;
	p += strlen(key);
	while (*p == ' ' || *p == ':' || *p == '"')
		p++;
	char *e;
	*out = strtod(p, &e);
	return e == p ? -1 : 0;
}

/* add_hist - parse {"count": .., "buckets": [[i, c], ...]} after "name": */
static int add_hist(const char *doc, const char *name, struct hist *h)
{
	char key[64];
	const char *p, *end;
	double d;

	snprintf(key, sizeof(key), "\"%s\": {", name);
	p = strstr(doc, key);
	if (!p)
		return -1;
	end = strchr(p, '}');
	if (!end || num_after(p, "\"sub_bits\"", &d) || (int)d != HIST_SUB_BITS)
		return -1; /* only identical layouts can be added */
	if (!num_after(p, "\"count\"", &d))
		h->count += (uint64_t)d;
	if (!num_after(p, "\"sum\"", &d))
		h->sum += (uint64_t)d;
	if (!num_after(p, "\"max\"", &d) && (uint64_t)d > h->max)
		h->max = (uint64_t)d;
	if (!num_after(p, "\"min\"", &d) && (uint64_t)d < h->min && d > 0)
		h->min = (uint64_t)d;
	p = strstr(p, "\"buckets\": [");
	if (!p || p > end)
		return -1;
	p += strlen("\"buckets\": [");
	while (*p == '[') {
		char *e;
		unsigned long i = strtoul(p + 1, &e, 10);
		unsigned long long c = strtoull(e + 1, &e, 10);
		if (i >= HIST_BUCKETS)
			return -1;
		h->c[i] += c;
		p = e + 1;
		while (*p == ',' || *p == ' ')
			p++;
	}
	return 0;
}

int bench_merge(int argc, char **argv)
{
	struct bench_stats *t = calloc(1, sizeof(*t));
	double secs = 0, cpu = 0;

	if (argc < 1) {
		fprintf(stderr, "smtpbench: merge needs JSON files\nTry 'smtpbench --help'.\n");
		return 2;
	}
	hist_init(&t->connect);
	hist_init(&t->msg);
	hist_init(&t->msg_raw);
	hist_init(&t->cmd);
	for (int i = 0; i < argc; i++) {
		char *doc = slurp(argv[i]);
		double d;
		if (!doc || !strstr(doc, "\"program\": \"smtpbench\"")) {
			fprintf(stderr, "smtpbench: merge: %s is not a smtpbench JSON report\n",
			        argv[i]);
			return 2;
		}
		/* runs side by side: wall time is the longest, work adds up */
		if (!num_after(doc, "\"seconds\"", &d) && d > secs)
			secs = d;
		if (!num_after(doc, "\"cpu_seconds\"", &d))
			cpu += d;
		if (!num_after(doc, "\"delivered\"", &d))
			t->delivered += (uint64_t)d;
		if (!num_after(doc, "\"failed\"", &d))
			t->failed += (uint64_t)d;
		if (!num_after(doc, "\"measured\"", &d))
			t->measured += (uint64_t)d;
		if (!num_after(doc, "\"measured_bytes\"", &d))
			t->measured_bytes += (uint64_t)d;
		if (!num_after(doc, "\"sessions_opened\"", &d))
			t->sessions_opened += (uint64_t)d;
		for (int e = 0; e < E_NCLASS; e++) {
			char k[32];
			snprintf(k, sizeof(k), "\"%s\"", err_names[e]);
			if (!num_after(strstr(doc, "\"errors\""), k, &d))
				t->errors[e] += (uint64_t)d;
		}
		if (add_hist(doc, "connect", &t->connect) || add_hist(doc, "message", &t->msg) ||
		    add_hist(doc, "message_uncorrected", &t->msg_raw) ||
		    add_hist(doc, "command", &t->cmd)) {
			fprintf(stderr, "smtpbench: merge: %s: histogram missing or incompatible\n",
			        argv[i]);
			return 2;
		}
		free(doc);
	}
	fprintf(stderr, "smtpbench merge: %d runs\n", argc);
	report_core(t, secs, -1, 1, 0, NULL);
	fprintf(stderr, "  generator CPU %.2f s in all runs\n", cpu);
	free(t);
	return 0;
}
