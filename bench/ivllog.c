/*
 * ivllog.c - the --interval-log file: written during a run, read by merge
 *
 * JSON Lines (docs/json.md, "Interval logs"): a header line (program,
 * version, run id, interval length, histogram layout), one line per
 * wall-clock interval (start, length, warm-up and partial marks, outcome
 * counts, max, sparse raw bucket counts), an end line (totals, why the run
 * stopped).  The reporting thread writes it (ivl_log_poll() from main's
 * live loop): worker threads only queue closed intervals (ivl.c), so a
 * slow disk never stalls them.
 *
 * merge reads logs whole, checks every line (a damaged line names its file,
 * line and key), then adds the intervals that start at the same time
 * (ivl_align) into one CSV row each and into the totals.
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "sink/config.h"

#define IVL_FORMAT 1
#define IVL_KIND   "interval-log"

static const char *const outcome_key[IVL_N] = {"delivered", "partial", "failed"};

static json_t *ju(uint64_t v)
{
	return json_integer((json_int_t)v);
}

/* --- writing (a run) ---------------------------------------------------------------- */

struct ivl_log {
	struct ivl_coll coll;
	int64_t len, off;
	int64_t t0_w, warm_w, end_w; /* run start, end of warm-up, run end (wall ns) */
	bool final;
	FILE *f;
	int err; /* errno of the first failed write, or -1 */
};

int ivl_log_open(struct bench_cfg *c)
{
	c->ivl = !strcmp(c->ivl_path, "-") ? stdout : fopen(c->ivl_path, "w");
	return c->ivl ? 0 : -1;
}

static int64_t clock_ns(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

static void put_line(struct ivl_log *lg, json_t *o)
{
	if (!lg->err &&
	    (json_dumpf(o, lg->f, JSON_COMPACT | JSON_PRESERVE_ORDER) || fputc('\n', lg->f) == EOF))
		lg->err = errno ? errno : EIO;
	json_decref(o);
}

static void flush(struct ivl_log *lg)
{
	if (!lg->err && fflush(lg->f))
		lg->err = errno ? errno : EIO;
}

int ivl_log_start(struct bench *b)
{
	const struct bench_cfg *c = &b->cfg;
	struct ivl_log *lg = calloc(1, sizeof(*lg));
	json_t *o, *h;
	char buf[256], *cmd;
	int64_t m0, w, m1;

	if (!lg)
		return -1;
	/* the offset between the clocks, read once: the middle of two
	 * monotonic readings around one wall-clock reading */
	m0 = clock_ns(CLOCK_MONOTONIC);
	w = clock_ns(CLOCK_REALTIME);
	m1 = clock_ns(CLOCK_MONOTONIC);
	lg->off = w - (m0 + (m1 - m0) / 2);
	lg->len = (int64_t)c->ivl_ns;
	lg->f = c->ivl;
	lg->coll.next = IVL_NONE;
	lg->coll.nth = c->threads;
	lg->coll.th = calloc((size_t)c->threads, sizeof(*lg->coll.th));
	if (!lg->coll.th) {
		free(lg);
		return -1;
	}
	for (int i = 0; i < c->threads; i++) {
		ivl_thread_init(&b->th[i].ivl, lg->len, lg->off);
		lg->coll.th[i] = &b->th[i].ivl;
	}
	b->ilog = lg;

	o = json_object();
	json_object_set_new(o, "program", json_string("smtpbench"));
	json_object_set_new(o, "kind", json_string(IVL_KIND));
	json_object_set_new(o, "format", json_integer(IVL_FORMAT));
	json_object_set_new(o, "version", json_string(SINK_VERSION));
	json_object_set_new(o, "git_rev", json_string(SINK_GIT_REV));
	snprintf(buf, sizeof(buf), "%016llx", (unsigned long long)c->run_id);
	json_object_set_new(o, "run_id", json_string(buf));
	/* --segment/--start-at: which share of which run this log is */
	if (c->segmented)
		json_object_set_new(o, "segment",
		                    json_pack("{s:I, s:I}", "index", (json_int_t)c->seg_index,
		                              "count", (json_int_t)c->seg_count));
	if (c->start_at_given)
		json_object_set_new(o, "start_at", json_real((double)c->start_at_ns / 1e9));
	if (gethostname(buf, sizeof(buf)))
		snprintf(buf, sizeof(buf), "?");
	buf[sizeof(buf) - 1] = 0;
	cmd = bench_utf8_clean(buf);
	json_object_set_new(o, "host", json_string(cmd ? cmd : "?"));
	free(cmd);
	cmd = bench_utf8_clean(c->argv_line);
	json_object_set_new(o, "command", json_string(cmd ? cmd : "?"));
	free(cmd);
	json_object_set_new(o, "interval_ms", ju(c->ivl_ns / 1000000));
	json_object_set_new(o, "warmup_ms", ju(c->warmup_ns / 1000000));
	h = json_object();
	json_object_set_new(h, "value", json_string("message"));
	json_object_set_new(h, "sub_bits", json_integer(HIST_SUB_BITS));
	json_object_set_new(h, "unit", json_string("ns"));
	json_object_set_new(o, "histogram", h);
	put_line(lg, o);
	flush(lg);
	return 0;
}

/* emit - one interval line (collector callback). */
static int emit(void *ctx, int64_t k, const struct ivl_slot *s)
{
	struct ivl_log *lg = ctx;
	int64_t a = k * lg->len, e = a + lg->len;
	int64_t from = a > lg->t0_w ? a : lg->t0_w;
	int64_t to = lg->final && lg->end_w < e ? lg->end_w : e;
	int64_t covered = to > from ? to - from : 0;
	json_t *o = json_object(), *m = json_object(), *bk = json_array();

	json_object_set_new(o, "start_ms", json_integer(a / 1000000));
	json_object_set_new(o, "length_ms", json_integer(lg->len / 1000000));
	/* any part of it inside the warm-up: the whole interval is warm-up */
	json_object_set_new(o, "warmup", json_boolean(lg->warm_w > lg->t0_w && a < lg->warm_w));
	json_object_set_new(o, "partial", json_boolean(covered < lg->len));
	json_object_set_new(o, "covered_ms", json_integer(covered / 1000000));
	for (int i = 0; i < IVL_N; i++)
		json_object_set_new(m, outcome_key[i], ju(s ? s->n[i] : 0));
	json_object_set_new(o, "messages", m);
	json_object_set_new(o, "count", ju(s ? s->h.count : 0));
	json_object_set_new(o, "min", ju(s && s->h.count ? s->h.min : 0));
	json_object_set_new(o, "max", ju(s ? s->h.max : 0));
	json_object_set_new(o, "sum", ju(s ? s->h.sum : 0));
	for (unsigned i = 0; s && i < HIST_BUCKETS; i++)
		if (s->h.c[i])
			json_array_append_new(
			    bk, json_pack("[I, I]", (json_int_t)i, (json_int_t)s->h.c[i]));
	json_object_set_new(o, "buckets", bk);
	put_line(lg, o);
	return 0;
}

static void collect(struct bench *b, bool final)
{
	struct ivl_log *lg = b->ilog;
	uint64_t before = lg->coll.emitted;

	lg->t0_w = (int64_t)b->t0_ns + lg->off;
	lg->warm_w = (int64_t)b->start_ns + lg->off;
	lg->final = final;
	/* the last interval holds the run's last nanosecond (a message that
	 * ended on the boundary itself still gets its interval) */
	ivl_collect(&lg->coll, ivl_index(lg->t0_w, lg->len),
	            ivl_index(lg->end_w > lg->t0_w ? lg->end_w - 1 : lg->t0_w, lg->len), final,
	            emit, lg);
	if (lg->coll.emitted != before)
		flush(lg);
}

void ivl_log_poll(struct bench *b)
{
	if (b->ilog)
		collect(b, false);
}

int ivl_log_finish(struct bench *b, uint64_t end_ns)
{
	struct ivl_log *lg = b->ilog;
	json_t *o, *m;
	int ret;

	if (!lg)
		return 0;
	lg->end_w = (int64_t)end_ns + lg->off;
	collect(b, true);
	o = json_object();
	m = json_object();
	json_object_set_new(o, "end", json_true());
	json_object_set_new(o, "intervals", ju(lg->coll.emitted));
	{
		uint64_t dropped = 0; /* the threads have ended: their counts are final */
		for (int i = 0; i < b->cfg.threads; i++)
			dropped += b->th[i].ivl.dropped;
		json_object_set_new(o, "dropped_intervals", ju(dropped));
		if (dropped)
			fprintf(stderr,
			        "smtpbench: --interval-log: %llu intervals dropped, the log's "
			        "writer fell behind (the log is incomplete)\n",
			        (unsigned long long)dropped);
	}
	for (int i = 0; i < IVL_N; i++)
		json_object_set_new(m, outcome_key[i], ju(lg->coll.n[i]));
	json_object_set_new(o, "messages", m);
	json_object_set_new(o, "start_ms", json_integer(lg->t0_w / 1000000));
	json_object_set_new(o, "end_ms", json_integer(lg->end_w / 1000000));
	json_object_set_new(o, "stopped",
	                    b->stop_reason[0] ? json_string(b->stop_reason) : json_null());
	put_line(lg, o);
	flush(lg);
	ret = lg->err ? -1 : 0;
	if (lg->f != stdout && fclose(lg->f) && !ret) {
		lg->err = errno;
		ret = -1;
	}
	if (ret)
		errno = lg->err;
	for (int i = 0; i < b->cfg.threads; i++)
		ivl_thread_free(&b->th[i].ivl);
	ivl_coll_free(&lg->coll);
	free(lg->coll.th);
	free(lg);
	b->ilog = NULL;
	return ret;
}

/* --- reading (merge) ---------------------------------------------------------------- */

struct ivl_merge {
	struct ivl_input *in;
	int n, cap;
	int64_t interval_ms;
	const char *first; /* the log that set interval_ms */
};

struct ictx {
	char *err;
	size_t errlen;
	size_t line;
};

__attribute__((format(printf, 2, 3))) static int bad(struct ictx *x, const char *fmt, ...)
{
	va_list ap;
	int k = 0;

	if (x->err[0])
		return -1;
	if (x->line)
		k = snprintf(x->err, x->errlen, "line %zu: ", x->line);
	va_start(ap, fmt);
	vsnprintf(x->err + k, x->errlen - (size_t)k, fmt, ap);
	va_end(ap);
	return -1;
}

static int get_int(struct ictx *x, json_t *o, const char *sec, const char *key, int64_t *out,
                   bool nonneg)
{
	json_t *v = json_is_object(o) ? json_object_get(o, key) : NULL;

	if (!json_is_integer(v) || (nonneg && json_integer_value(v) < 0))
		return bad(x, "missing or invalid \"%s%s%s\" (%s integer)", sec, *sec ? "." : "",
		           key, nonneg ? "a non-negative" : "an");
	*out = json_integer_value(v);
	return 0;
}

static int get_u(struct ictx *x, json_t *o, const char *sec, const char *key, uint64_t *out)
{
	int64_t v;

	if (get_int(x, o, sec, key, &v, true))
		return -1;
	*out = (uint64_t)v;
	return 0;
}

static int get_bool(struct ictx *x, json_t *o, const char *key, bool *out)
{
	json_t *v = json_object_get(o, key);

	if (!json_is_boolean(v))
		return bad(x, "missing or invalid \"%s\" (true or false)", key);
	*out = json_is_true(v);
	return 0;
}

static const char *str_of(json_t *o, const char *key)
{
	json_t *v = json_is_object(o) ? json_object_get(o, key) : NULL;

	return json_is_string(v) ? json_string_value(v) : NULL;
}

/* first_value - the first JSON value in buf, or NULL. */
static json_t *first_value(const char *buf, size_t n)
{
	json_error_t je;

	return json_loadb(buf, n, JSON_DISABLE_EOF_CHECK | JSON_REJECT_DUPLICATES, &je);
}

bool ivl_merge_is_log(const char *buf, size_t n)
{
	json_t *o = first_value(buf, n);
	const char *p = str_of(o, "program"), *k = str_of(o, "kind");
	bool yes = p && k && !strcmp(p, "smtpbench") && !strcmp(k, IVL_KIND);

	json_decref(o);
	return yes;
}

struct ivl_merge *ivl_merge_new(void)
{
	return calloc(1, sizeof(struct ivl_merge));
}

int ivl_merge_nlogs(const struct ivl_merge *m)
{
	return m->n;
}

static void free_input(struct ivl_input *in)
{
	for (size_t i = 0; i < in->n; i++) {
		free(in->v[i].bi);
		free(in->v[i].bc);
	}
	free(in->v);
	in->v = NULL;
	in->n = 0;
}

void ivl_merge_free(struct ivl_merge *m)
{
	if (!m)
		return;
	for (int i = 0; i < m->n; i++)
		free_input(&m->in[i]);
	free(m->in);
	free(m);
}

/* header - line 1: what wrote it, and the layout; only identical layouts
 * and interval lengths can be added. */
static int header(struct ictx *x, struct ivl_merge *m, const char *file, json_t *o)
{
	json_t *h = json_object_get(o, "histogram");
	const char *unit = str_of(h, "unit");
	int64_t v;

	if (get_int(x, o, "", "format", &v, true))
		return -1;
	if (v != IVL_FORMAT)
		return bad(x,
		           "\"format\" is %lld; this smtpbench reads interval log format %d only",
		           (long long)v, IVL_FORMAT);
	if (!json_is_object(h))
		return bad(x, "missing \"histogram\" (the layout)");
	if (get_int(x, h, "histogram", "sub_bits", &v, true))
		return -1;
	if (v != HIST_SUB_BITS)
		return bad(x,
		           "incompatible histogram layout: \"histogram.sub_bits\" is %lld (this "
		           "smtpbench adds only sub_bits %d, unit ns)",
		           (long long)v, HIST_SUB_BITS);
	if (!unit || strcmp(unit, "ns"))
		return bad(x,
		           "incompatible histogram layout: \"histogram.unit\" is %s (this "
		           "smtpbench adds only sub_bits %d, unit ns)",
		           unit ? unit : "missing", HIST_SUB_BITS);
	if (!str_of(h, "value") || strcmp(str_of(h, "value"), "message"))
		return bad(x, "\"histogram.value\" is not \"message\"");
	if (get_int(x, o, "", "interval_ms", &v, true))
		return -1;
	if (v <= 0)
		return bad(x, "\"interval_ms\" is 0");
	if (m->interval_ms && v != m->interval_ms)
		return bad(x,
		           "\"interval_ms\" is %lld, %s has %lld: intervals of different lengths "
		           "cannot be aligned",
		           (long long)v, m->first, (long long)m->interval_ms);
	if (!m->interval_ms) {
		m->interval_ms = v;
		m->first = file;
	}
	return 0;
}

static int interval(struct ictx *x, struct ivl_merge *m, json_t *o, struct ivl_line *l,
                    const struct ivl_line *prev)
{
	json_t *msg = json_object_get(o, "messages"), *bk, *e;
	int64_t start, len, cov;
	uint64_t total = 0;
	size_t i;

	if (get_int(x, o, "", "start_ms", &start, false) ||
	    get_int(x, o, "", "length_ms", &len, true) ||
	    get_int(x, o, "", "covered_ms", &cov, true))
		return -1;
	if (len != m->interval_ms)
		return bad(x, "\"length_ms\" is %lld, the header says %lld", (long long)len,
		           (long long)m->interval_ms);
	if (start % m->interval_ms)
		return bad(x, "\"start_ms\" %lld is not a multiple of the interval (%lld ms)",
		           (long long)start, (long long)m->interval_ms);
	l->k = start / m->interval_ms;
	if (prev && l->k <= prev->k)
		return bad(x, "\"start_ms\" %lld is not after the line before", (long long)start);
	if (cov > len)
		return bad(x, "\"covered_ms\" is more than \"length_ms\"");
	l->covered_ms = cov;
	if (get_bool(x, o, "warmup", &l->warmup) || get_bool(x, o, "partial", &l->partial))
		return -1;
	if (!json_is_object(msg))
		return bad(x, "missing \"messages\"");
	for (int j = 0; j < IVL_N; j++)
		if (get_u(x, msg, "messages", outcome_key[j], &l->n[j]))
			return -1;
	if (get_u(x, o, "", "count", &l->count) || get_u(x, o, "", "min", &l->min) ||
	    get_u(x, o, "", "max", &l->max) || get_u(x, o, "", "sum", &l->sum))
		return -1;
	if (l->count != l->n[IVL_DELIVERED] + l->n[IVL_PARTIAL])
		return bad(
		    x,
		    "\"count\" is %llu, but \"messages.delivered\" + \"messages.partial\" is "
		    "%llu",
		    (unsigned long long)l->count,
		    (unsigned long long)(l->n[IVL_DELIVERED] + l->n[IVL_PARTIAL]));
	bk = json_object_get(o, "buckets");
	if (!json_is_array(bk))
		return bad(x, "\"buckets\" is not an array");
	l->nb = (uint32_t)json_array_size(bk);
	l->bi = malloc((l->nb + 1) * sizeof(*l->bi));
	l->bc = malloc((l->nb + 1) * sizeof(*l->bc));
	if (!l->bi || !l->bc)
		return bad(x, "out of memory");
	json_array_foreach(bk, i, e)
	{
		json_t *a = json_array_get(e, 0), *c = json_array_get(e, 1);
		if (!json_is_array(e) || json_array_size(e) != 2 || !json_is_integer(a) ||
		    !json_is_integer(c) || json_integer_value(a) < 0 ||
		    json_integer_value(a) >= HIST_BUCKETS || json_integer_value(c) < 0)
			return bad(x, "\"buckets\": bucket %zu is not [index, count]", i);
		l->bi[i] = (uint32_t)json_integer_value(a);
		l->bc[i] = (uint64_t)json_integer_value(c);
		if (total + l->bc[i] < total)
			return bad(x, "\"buckets\" overflow when added");
		total += l->bc[i];
	}
	if (total != l->count)
		return bad(x, "\"buckets\" add up to %llu, \"count\" says %llu",
		           (unsigned long long)total, (unsigned long long)l->count);
	if (l->count && l->min > l->max)
		return bad(x, "\"min\" is more than \"max\"");
	return 0;
}

/* trailer - the end line: the log is whole only when its totals are the
 * sums of its lines. */
static int trailer(struct ictx *x, json_t *o, const struct ivl_input *in)
{
	json_t *msg = json_object_get(o, "messages");
	uint64_t n, want[IVL_N] = {0};

	if (!json_is_true(json_object_get(o, "end")))
		return bad(x, "\"end\" is not true");
	if (get_u(x, o, "", "intervals", &n))
		return -1;
	if (n != in->n)
		return bad(x, "\"intervals\" is %llu, the log has %zu interval lines",
		           (unsigned long long)n, in->n);
	json_t *dr = json_object_get(o, "dropped_intervals");
	if (dr && (!json_is_integer(dr) || json_integer_value(dr) != 0))
		return bad(x, "\"dropped_intervals\" is not 0: the writer fell behind and the log "
		              "is incomplete");
	for (size_t i = 0; i < in->n; i++)
		for (int j = 0; j < IVL_N; j++)
			want[j] += in->v[i].n[j];
	if (!json_is_object(msg))
		return bad(x, "missing \"messages\"");
	for (int j = 0; j < IVL_N; j++) {
		if (get_u(x, msg, "messages", outcome_key[j], &n))
			return -1;
		if (n != want[j])
			return bad(x, "\"messages.%s\" is %llu, the interval lines add up to %llu",
			           outcome_key[j], (unsigned long long)n,
			           (unsigned long long)want[j]);
	}
	return 0;
}

int ivl_merge_add(struct ivl_merge *m, const char *file, const char *buf, size_t n, char *err,
                  size_t errlen)
{
	struct ictx x = {.err = err, .errlen = errlen};
	struct ivl_input in = {.name = file};
	size_t cap = 0;
	bool ended = false;
	int ret = 0;

	err[0] = 0;
	for (size_t off = 0; off < n && !ret;) {
		const char *p = buf + off, *nl = memchr(p, '\n', n - off);
		size_t len = nl ? (size_t)(nl - p) : n - off;
		json_error_t je;
		json_t *o;

		off += len + (nl != NULL);
		x.line++;
		if (strspn(p, " \t\r") >= len && x.line > 1)
			continue; /* a blank line (the last newline, a CRLF file) */
		if (ended) {
			ret = bad(&x, "a line after the end line");
			break;
		}
		o = json_loadb(p, len, JSON_REJECT_DUPLICATES, &je);
		if (!json_is_object(o)) {
			if (o)
				ret = bad(&x, "not a JSON object");
			else
				ret = bad(&x, "not valid JSON: %s (column %d)", je.text, je.column);
			json_decref(o);
			break;
		}
		if (x.line == 1) {
			ret = header(&x, m, file, o);
		} else if (json_object_get(o, "end")) {
			ret = trailer(&x, o, &in);
			ended = true;
		} else {
			if (in.n == cap) {
				struct ivl_line *v;
				cap = cap ? 2 * cap : 64;
				v = realloc(in.v, cap * sizeof(*v));
				if (!v) {
					json_decref(o);
					ret = bad(&x, "out of memory");
					break;
				}
				in.v = v;
			}
			memset(&in.v[in.n], 0, sizeof(in.v[0]));
			in.n++; /* counted before it is read: freed on error too */
			ret =
			    interval(&x, m, o, &in.v[in.n - 1], in.n > 1 ? &in.v[in.n - 2] : NULL);
		}
		json_decref(o);
	}
	if (!ret && !ended) {
		x.line = 0;
		ret = bad(&x, "no end line: the log is incomplete (smtpbench was killed, or "
		              "is still running)");
	}
	if (!ret && m->n == m->cap) {
		int cap2 = m->cap ? 2 * m->cap : 8;
		struct ivl_input *v = realloc(m->in, (size_t)cap2 * sizeof(*v));
		if (!v) {
			x.line = 0;
			ret = bad(&x, "out of memory");
		} else {
			m->in = v;
			m->cap = cap2;
		}
	}
	if (ret) {
		free_input(&in);
		return -1;
	}
	m->in[m->n++] = in;
	return 0;
}

/* --- merge output ------------------------------------------------------------------- */

struct csv {
	FILE *f;
	int64_t ms;
	struct ivl_totals *t;
};

static void ms_field(FILE *f, bool have, uint64_t ns)
{
	if (have)
		fprintf(f, ",%" PRIu64 ".%06" PRIu64, ns / 1000000, ns % 1000000);
	else
		fputc(',', f);
}

static int row(void *ctx, const struct ivl_aligned *a)
{
	struct csv *c = ctx;
	struct ivl_totals *t = c->t;
	int64_t start = a->k * c->ms;
	uint64_t done = a->n[IVL_DELIVERED] + a->n[IVL_PARTIAL];

	if (!t->aligned)
		t->first_ms = start;
	t->last_ms = start;
	t->aligned++;
	for (int j = 0; j < IVL_N; j++)
		t->n[j] += a->n[j];
	if (!a->warmup) {
		t->measured += done;
		t->measured_intervals++;
		t->measured_ms += (uint64_t)a->covered_ms;
		hist_merge(&t->h, &a->h);
	}
	if (!c->f)
		return 0;
	/* start: Unix seconds with milliseconds, exact (integer arithmetic) */
	fprintf(c->f, "%s%" PRId64 ".%03" PRId64 ",%" PRId64 ".%03" PRId64 ",%.3f",
	        start < 0 ? "-" : "", (start < 0 ? -start : start) / 1000,
	        (start < 0 ? -start : start) % 1000, c->ms / 1000, c->ms % 1000,
	        (double)done * 1000.0 / (double)c->ms);
	ms_field(c->f, a->h.count, hist_quantile(&a->h, 0.5));
	ms_field(c->f, a->h.count, hist_quantile(&a->h, 0.99));
	ms_field(c->f, a->h.count, a->h.max);
	fprintf(c->f, ",%d,%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%d,%d\n", a->inputs,
	        a->n[IVL_DELIVERED], a->n[IVL_PARTIAL], a->n[IVL_FAILED], a->warmup, a->partial);
	return 0;
}

int ivl_merge_finish(struct ivl_merge *m, FILE *csvf, struct ivl_totals *t)
{
	struct ivl_aligned *a = malloc(sizeof(*a));
	struct csv c = {.f = csvf, .ms = m->interval_ms, .t = t};
	int ret;

	if (!a)
		return -1;
	memset(t, 0, offsetof(struct ivl_totals, h));
	hist_init(&t->h);
	t->logs = m->n;
	t->interval_ms = m->interval_ms;
	if (csvf)
		fputs("start,length_s,msgs_per_s,p50_ms,p99_ms,max_ms,inputs,delivered,partial,"
		      "failed,warmup,partial_interval\n",
		      csvf);
	ret = ivl_align(m->in, m->n, a, row, &c);
	free(a);
	return ret;
}
