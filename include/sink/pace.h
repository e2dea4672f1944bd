/*
 * pace.h - open-loop schedule for smtpbench --rate (wrk2's method)
 *
 * Message k of a thread is due at start + k / rate.  The time is computed
 * from k each time (no accumulated rounding, so no drift over long runs),
 * and it never moves: when the server stalls and sessions are busy, due
 * messages wait and their latency is measured from this intended time, so
 * the stall is reported instead of hidden (coordinated omission).
 */
#ifndef SINK_PACE_H
#define SINK_PACE_H

#include <stdint.h>

struct pace {
	uint64_t start_ns;
	double rate;     /* messages per second of the whole schedule, > 0 */
	uint64_t phase;  /* this consumer's first slot of it */
	uint64_t stride; /* and every stride-th after it, >= 1 */
	uint64_t k;      /* next slot (of this consumer's) */
};

static inline void pace_init(struct pace *p, uint64_t start_ns, double rate)
{
	p->start_ns = start_ns;
	p->rate = rate;
	p->phase = 0;
	p->stride = 1;
	p->k = 0;
}

/* pace_init_share - one of several consumers of one schedule at rate (in
 * all): slots phase, phase + stride, ... of it, at rate / stride.  The
 * consumers phase = 0 .. stride-1 together take every slot once, on the one
 * schedule's grid, so their starts interleave instead of coinciding (the
 * threads of smtpbench, and its instances with --segment; segment.h). */
static inline void pace_init_share(struct pace *p, uint64_t start_ns, double rate, uint64_t phase,
                                   uint64_t stride)
{
	pace_init(p, start_ns, rate);
	p->phase = phase;
	p->stride = stride;
}

/* pace_at - intended start of slot k (of this consumer's). */
static inline uint64_t pace_at(const struct pace *p, uint64_t k)
{
	return p->start_ns + (uint64_t)((double)(p->phase + k * p->stride) * 1e9 / p->rate);
}

/* pace_next - intended start of the next slot (not taken). */
static inline uint64_t pace_next(const struct pace *p)
{
	return pace_at(p, p->k);
}

/* pace_take - take the next slot; returns its intended start. */
static inline uint64_t pace_take(struct pace *p)
{
	return pace_at(p, p->k++);
}

#endif
