/*
 * ivl.c - per-interval histograms: recording queues, collection, alignment
 * (see ivl.h)
 *
 * Pure code: no clock, no file, no jansson.  Times come in as arguments,
 * so the unit tests drive it with made-up clocks.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ivl.h"

struct ivl_slot *ivl_slot_new(void)
{
	struct ivl_slot *s = malloc(sizeof(*s));

	/* once per interval per busy thread; without memory there is no
	 * way to keep the log exact, and a wrong log is worse than none */
	if (!s) {
		fputs("smtpbench: --interval-log: out of memory\n", stderr);
		abort();
	}
	atomic_init(&s->next, NULL);
	s->k = 0;
	memset(s->n, 0, sizeof(s->n));
	hist_init(&s->h);
	return s;
}

static bool slot_empty(const struct ivl_slot *s)
{
	return !(s->n[IVL_DELIVERED] | s->n[IVL_PARTIAL] | s->n[IVL_FAILED]);
}

/* --- the worker's side ------------------------------------------------------------- */

void ivl_thread_init(struct ivl_thread *v, int64_t len, int64_t off)
{
	struct ivl_slot *stub = malloc(sizeof(*stub));

	if (!stub) {
		fputs("smtpbench: --interval-log: out of memory\n", stderr);
		abort();
	}
	atomic_init(&stub->next, NULL);
	v->len = len;
	v->off = off;
	v->head = v->tail = stub;
	v->cur = ivl_slot_new();
	v->end = 0;
	atomic_init(&v->done, IVL_NONE);
	atomic_init(&v->popped, 0);
	v->pushed = v->dropped = 0;
}

/* push - producer: s goes after the tail (Vyukov's SPSC queue: the release
 * store publishes s's contents with the link). */
static void push(struct ivl_thread *v, struct ivl_slot *s)
{
	atomic_store_explicit(&s->next, NULL, memory_order_relaxed);
	atomic_store_explicit(&v->tail->next, s, memory_order_release);
	v->tail = s;
}

static void begin(struct ivl_thread *v, uint64_t now)
{
	int64_t k = ivl_index((int64_t)now + v->off, v->len);

	v->cur->k = k;
	v->end = ivl_end_mono(k, v->len, v->off);
	/* every interval below k is queued (the push before happened first) */
	atomic_store_explicit(&v->done, k, memory_order_release);
}

void ivl_thread_start(struct ivl_thread *v, uint64_t now)
{
	if (v->cur)
		begin(v, now);
}

void ivl_rotate(struct ivl_thread *v, uint64_t now)
{
	if (!slot_empty(v->cur)) {
		uint64_t popped = atomic_load_explicit(&v->popped, memory_order_relaxed);
		if (v->pushed - popped >= IVL_QUEUE_MAX) {
			v->dropped++; /* the writer is stuck: keep memory bounded */
			memset(v->cur->n, 0, sizeof(v->cur->n));
			hist_init(&v->cur->h);
		} else {
			push(v, v->cur);
			v->pushed++;
			v->cur = ivl_slot_new();
		}
	}
	begin(v, now);
}

void ivl_thread_end(struct ivl_thread *v)
{
	if (!v->cur)
		return;
	if (!slot_empty(v->cur))
		push(v, v->cur);
	else
		free(v->cur);
	v->cur = NULL;
	atomic_store_explicit(&v->done, IVL_OVER, memory_order_release);
}

void ivl_thread_free(struct ivl_thread *v)
{
	struct ivl_slot *s = v->head;

	while (s) {
		struct ivl_slot *n = atomic_load_explicit(&s->next, memory_order_relaxed);
		free(s);
		s = n;
	}
	free(v->cur);
	v->head = v->tail = v->cur = NULL;
}

/* --- the collector's side ---------------------------------------------------------- */

/* pop - consumer: the oldest queued slot, or NULL.  It becomes the stub, so
 * it stays valid until the next pop (its contents are read, not kept). */
static struct ivl_slot *pop(struct ivl_thread *v)
{
	struct ivl_slot *n = atomic_load_explicit(&v->head->next, memory_order_acquire);

	if (!n)
		return NULL;
	free(v->head); /* the producer is past it: its tail is at n or later */
	v->head = n;
	atomic_fetch_add_explicit(&v->popped, 1, memory_order_relaxed);
	return n;
}

/* pending - the sum for interval k, created in order. */
static struct ivl_slot *pending(struct ivl_coll *c, int64_t k)
{
	size_t i = c->npend;

	while (i > 0 && c->pend[i - 1]->k > k)
		i--;
	if (i > 0 && c->pend[i - 1]->k == k)
		return c->pend[i - 1];
	if (c->npend == c->cap) {
		size_t cap = c->cap ? 2 * c->cap : 8;
		struct ivl_slot **p = realloc(c->pend, cap * sizeof(*p));
		if (!p) {
			fputs("smtpbench: --interval-log: out of memory\n", stderr);
			abort();
		}
		c->pend = p;
		c->cap = cap;
	}
	memmove(c->pend + i + 1, c->pend + i, (c->npend - i) * sizeof(*c->pend));
	c->npend++;
	c->pend[i] = ivl_slot_new();
	c->pend[i]->k = k;
	return c->pend[i];
}

static int emit_one(struct ivl_coll *c, int64_t k, ivl_emit_fn emit, void *ctx)
{
	struct ivl_slot *s = c->npend && c->pend[0]->k == k ? c->pend[0] : NULL;
	int ret = emit(ctx, k, s);

	if (s) {
		for (int i = 0; i < IVL_N; i++)
			c->n[i] += s->n[i];
		free(s);
		memmove(c->pend, c->pend + 1, (c->npend - 1) * sizeof(*c->pend));
		c->npend--;
	}
	c->emitted++;
	c->next = k + 1;
	return ret;
}

int ivl_collect(struct ivl_coll *c, int64_t first, int64_t last, bool final, ivl_emit_fn emit,
                void *ctx)
{
	int64_t w = IVL_OVER;

	/* the marks first, then the queues: every slot below a mark read
	 * here is in its queue by now */
	for (int i = 0; i < c->nth; i++) {
		int64_t d = atomic_load_explicit(&c->th[i]->done, memory_order_acquire);
		w = d < w ? d : w;
	}
	for (int i = 0; i < c->nth; i++)
		for (struct ivl_slot *s; (s = pop(c->th[i]));) {
			struct ivl_slot *p = pending(c, s->k);
			for (int j = 0; j < IVL_N; j++)
				p->n[j] += s->n[j];
			hist_merge(&p->h, &s->h);
		}
	if (final) {
		w = last + 1;
		if (c->npend && c->pend[c->npend - 1]->k >= w)
			w = c->pend[c->npend - 1]->k + 1;
	} else if (w == IVL_NONE || w == IVL_OVER) {
		/* a thread has not started yet; or every thread has ended,
		 * and only the final call knows where the run ended */
		return 0;
	}
	if (c->next == IVL_NONE) {
		c->next = first;
		if (c->npend && c->pend[0]->k < first)
			c->next = c->pend[0]->k;
	}
	while (c->next < w) {
		int ret = emit_one(c, c->next, emit, ctx);
		if (ret)
			return ret;
	}
	return 0;
}

void ivl_coll_free(struct ivl_coll *c)
{
	for (size_t i = 0; i < c->npend; i++)
		free(c->pend[i]);
	free(c->pend);
	c->pend = NULL;
	c->npend = c->cap = 0;
}

/* --- merge ------------------------------------------------------------------------- */

void ivl_line_add(struct hist *h, const struct ivl_line *l)
{
	for (uint32_t j = 0; j < l->nb; j++)
		h->c[l->bi[j]] += l->bc[j];
	h->count += l->count;
	h->sum += l->sum;
	if (l->count) {
		if (l->max > h->max)
			h->max = l->max;
		if (l->min < h->min)
			h->min = l->min;
	}
}

int ivl_align(const struct ivl_input *in, int nin, struct ivl_aligned *a,
              int (*fn)(void *ctx, const struct ivl_aligned *a), void *ctx)
{
	size_t *pos = calloc((size_t)nin + 1, sizeof(*pos));

	if (!pos)
		return -1;
	for (;;) {
		int64_t k = IVL_OVER;
		int ret;

		/* k-way merge: the smallest next interval of any input */
		for (int i = 0; i < nin; i++)
			if (pos[i] < in[i].n && in[i].v[pos[i]].k < k)
				k = in[i].v[pos[i]].k;
		if (k == IVL_OVER)
			break;
		a->k = k;
		memset(a->n, 0, sizeof(a->n));
		hist_init(&a->h);
		a->inputs = 0;
		a->covered_ms = 0;
		a->warmup = a->partial = false;
		for (int i = 0; i < nin; i++) {
			const struct ivl_line *l;
			if (pos[i] >= in[i].n || in[i].v[pos[i]].k != k)
				continue;
			l = &in[i].v[pos[i]++];
			for (int j = 0; j < IVL_N; j++)
				a->n[j] += l->n[j];
			ivl_line_add(&a->h, l);
			a->inputs++;
			if (l->covered_ms > a->covered_ms)
				a->covered_ms = l->covered_ms;
			a->warmup |= l->warmup;
			a->partial |= l->partial;
		}
		ret = fn(ctx, a);
		if (ret) {
			free(pos);
			return ret;
		}
	}
	free(pos);
	return 0;
}
