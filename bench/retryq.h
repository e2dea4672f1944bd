/*
 * retryq.h - smtpbench's per-thread retry queue (pure: no I/O, no clock)
 *
 * Messages whose attempt failed transiently (client_retryable()) wait here
 * until their due time, as in an MTA's deferred queue; a free session slot
 * takes the earliest due one before it starts a new message.  One queue per
 * thread, never shared, so there is no lock.
 *
 * A binary min-heap on (due, seq) in one array allocated once, at start:
 * push and pop are O(log n) and allocate nothing, and a full queue says so
 * (the caller counts it and fails the message for good).  seq is unique
 * within a thread, so the order is total and the same inputs always give
 * the same order.  An entry holds what it takes to send the same message
 * again: its stamp sequence number (also the {n} of the templates), its
 * body, the intended start of its first attempt and the attempts so far.
 */
#ifndef SINK_BENCH_RETRYQ_H
#define SINK_BENCH_RETRYQ_H

#include <stdbool.h>
#include <stdint.h>

struct retry_ent {
	uint64_t due;      /* may be attempted again from this time (ns) */
	uint64_t seq;      /* stamp sequence number and {n} */
	uint64_t t_first;  /* intended start of the first attempt (ns) */
	uint16_t body;     /* index into the run's bodies */
	uint16_t attempts; /* attempts made so far, >= 1 */
};

struct retryq {
	struct retry_ent *e;
	uint32_t n, cap;
};

/* retryq_init - room for cap entries (cap >= 1); 0 or -ENOMEM.  The
 * array is touched only as far as it fills, so a generous cap costs
 * address space, not memory. */
int retryq_init(struct retryq *q, uint32_t cap);
void retryq_free(struct retryq *q);

/* retryq_push - queue a copy of e; false when the queue is full. */
bool retryq_push(struct retryq *q, const struct retry_ent *e);

/* retryq_pop - take the entry with the earliest (due, seq); false when
 * empty.  The caller checks retryq_next_due() against the clock first. */
bool retryq_pop(struct retryq *q, struct retry_ent *out);

/* retryq_next_due - due time of the earliest entry, UINT64_MAX if none. */
static inline uint64_t retryq_next_due(const struct retryq *q)
{
	return q->n ? q->e[0].due : UINT64_MAX;
}

#endif
