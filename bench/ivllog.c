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
