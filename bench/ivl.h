/*
 * ivl.h - smtpbench --interval-log: message latency histograms per
 * wall-clock interval (HdrHistogram's interval log idea, for SMTP)
 *
 * Intervals are aligned to multiples of their length since the Unix epoch
 * (1 s: whole seconds), so logs written on different hosts cover the same
 * windows and `smtpbench merge` can add them window by window.  Interval k
 * covers wall-clock [k * len, (k + 1) * len).
 *
 * Recording (worker threads, no lock, no shared write on the hot path):
 * each thread records into its own current slot - outcome counts and a
 * struct hist - and compares the monotonic time with the end of that slot
 * once per message and at its 10 ms tick.  When the interval is over the
 * thread queues the slot on its own single-producer single-consumer queue
 * (an intrusive list, Vyukov's unbounded SPSC queue) and publishes "every
 * interval below k is queued" with one release store.  A slot with nothing
 * in it is reused, so an idle thread allocates nothing.  Allocation (one
 * slot per interval per busy thread) is the only cost outside the hot path.
 *
 * Collection (the reporting thread): ivl_collect() reads every thread's
 * mark, drains the queues, adds the slots of one interval together and
 * hands each complete interval, in order and without gaps, to a callback
 * (the log writer, or a test).  The workers never wait for it: a slow disk
 * only makes the queues longer.
 *
 * Merging logs (merge): ivl_align() adds the intervals of several logs
 * that have the same start, in increasing order.
 *
 * Wall-clock times come from one reading of CLOCK_REALTIME against
 * CLOCK_MONOTONIC at start (off = wall - monotonic); a clock step during
 * the run does not move the intervals.
 */
#ifndef SINK_BENCH_IVL_H
#define SINK_BENCH_IVL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sink/hist.h"

enum { IVL_DELIVERED = 0, IVL_PARTIAL, IVL_FAILED, IVL_N };

#define IVL_NONE INT64_MIN /* ivl_thread.done before the thread started */
#define IVL_OVER INT64_MAX /* ivl_thread.done after the thread ended */

/* ivl_index - the interval holding wall-clock time w (ns since the epoch)
 * for intervals of len ns: floor(w / len), also for w < 0. */
static inline int64_t ivl_index(int64_t w, int64_t len)
{
	int64_t q = w / len;

	return w % len < 0 ? q - 1 : q;
}

/* ivl_end_mono - the monotonic time at which interval k ends, for a clock
 * offset off = wall - monotonic. */
static inline uint64_t ivl_end_mono(int64_t k, int64_t len, int64_t off)
{
	return (uint64_t)((k + 1) * len - off);
}

struct ivl_slot {
	struct ivl_slot *_Atomic next; /* queue link */
	int64_t k;                     /* interval number: starts at k * len */
	uint64_t n[IVL_N];             /* message outcomes completed in it */
	struct hist h;                 /* latency of the delivered and partial ones */
};

/* One per worker thread; all zero (calloc) means --interval-log is off. */
struct ivl_thread {
	struct ivl_slot *cur;  /* worker: the slot being recorded; NULL: off */
	uint64_t end;          /* worker: monotonic time at which cur's interval ends */
	int64_t len, off;      /* interval length, wall - monotonic (ns) */
	struct ivl_slot *tail; /* worker: last slot queued (or the stub) */
	uint64_t pushed;       /* worker: slots queued */
	uint64_t dropped;      /* worker: intervals not queued, the backlog was full */
	_Atomic int64_t done;  /* every interval below it is queued */
	/* the collector's side, apart from the worker's (calloc gives no
	 * 64-octet alignment to ask for, so padding) */
	char pad[64];
	struct ivl_slot *head;   /* stub: head->next is the oldest queued */
	_Atomic uint64_t popped; /* slots the collector has taken */
};

/* A worker never queues more than this many closed intervals ahead of the
 * collector (~60 KiB each): if the log's writer stalls (a full disk, a
 * pipe nobody reads), memory stays bounded and the intervals past the cap
 * are dropped and counted; the end line says how many, and merge refuses
 * such a log rather than add an incomplete one. */
#define IVL_QUEUE_MAX 256

struct ivl_slot *ivl_slot_new(void); /* initialised; aborts when out of memory */

/* ivl_thread_init - before the thread starts (the collector's thread). */
void ivl_thread_init(struct ivl_thread *v, int64_t len, int64_t off);
/* ivl_thread_start - the worker's first interval begins at now. */
void ivl_thread_start(struct ivl_thread *v, uint64_t now);
/* ivl_rotate - now is at or past the end of the current interval: queue it
 * (when it holds anything) and begin the one holding now. */
void ivl_rotate(struct ivl_thread *v, uint64_t now);
/* ivl_thread_end - the worker is done: queue what it has, mark it over. */
void ivl_thread_end(struct ivl_thread *v);
/* ivl_thread_free - after the worker was joined and everything collected. */
void ivl_thread_free(struct ivl_thread *v);

/* ivl_msg - a message's outcome at now; lat is its latency (delivered and
 * partial only).  The hot path: a test, a compare, hist_record. */
static inline void ivl_msg(struct ivl_thread *v, uint64_t now, unsigned outcome, uint64_t lat)
{
	if (!v->cur)
		return;
	if (now >= v->end)
		ivl_rotate(v, now);
	v->cur->n[outcome]++;
	if (outcome != IVL_FAILED)
		hist_record(&v->cur->h, lat);
}

/* ivl_tick - close the interval of an idle thread in time. */
static inline void ivl_tick(struct ivl_thread *v, uint64_t now)
{
	if (v->cur && now >= v->end)
		ivl_rotate(v, now);
}

/* Receives each complete interval k once, in increasing order without
 * gaps; agg is NULL when no thread recorded anything in it.  Nonzero stops
 * the collection and is returned. */
typedef int (*ivl_emit_fn)(void *ctx, int64_t k, const struct ivl_slot *agg);

struct ivl_coll {
	struct ivl_thread **th;
	int nth;
	int64_t next;           /* next interval to emit; IVL_NONE: not yet known */
	struct ivl_slot **pend; /* sums of the intervals not yet emitted, by k */
	size_t npend, cap;
	uint64_t n[IVL_N]; /* outcomes emitted so far */
	uint64_t emitted;  /* intervals emitted so far */
};

/* ivl_collect - emit every interval that no thread can still add to.
 * first: the interval the run began in (the first emitted, unless a thread
 * recorded earlier).  final: every worker has ended (joined); then the
 * intervals up to last are emitted too, and everything queued. */
int ivl_collect(struct ivl_coll *c, int64_t first, int64_t last, bool final, ivl_emit_fn emit,
                void *ctx);
void ivl_coll_free(struct ivl_coll *c);

/* --- merge: aligning the intervals of several logs --------------------------------- */

/* One interval of one log, as read back (sparse buckets). */
struct ivl_line {
	int64_t k;
	uint64_t n[IVL_N];
	uint64_t count, min, max, sum;
	int64_t covered_ms; /* how much of the interval the run covered */
	bool warmup, partial;
	uint32_t nb;  /* non-empty buckets */
	uint32_t *bi; /* their indices (< HIST_BUCKETS) */
	uint64_t *bc; /* their counts */
};

struct ivl_input {
	const char *name;
	struct ivl_line *v; /* strictly increasing k */
	size_t n;
};

/* What the inputs hold for one aligned interval. */
struct ivl_aligned {
	int64_t k;
	uint64_t n[IVL_N];
	struct hist h;      /* sum of the inputs' histograms */
	int inputs;         /* how many inputs have this interval */
	int64_t covered_ms; /* the most any input covered of it */
	bool warmup;        /* any input marks it warm-up */
	bool partial;       /* any input covered only part of it */
};

/* ivl_line_add - add one log line to a histogram (and its counts). */
void ivl_line_add(struct hist *h, const struct ivl_line *l);

/* ivl_align - for every interval present in any input, in increasing
 * order, the sum over the inputs (a is the caller's scratch, reset for
 * each); fn's nonzero return stops and is returned. */
int ivl_align(const struct ivl_input *in, int nin, struct ivl_aligned *a,
              int (*fn)(void *ctx, const struct ivl_aligned *a), void *ctx);

#endif
