/* test_retryq.c - smtpbench's retry queue: earliest (due, seq) first, against
 * a sorted-array oracle; bounded, allocation-free once set up */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "retryq.h"

static int cmp(const void *a, const void *b)
{
	const struct retry_ent *x = a, *y = b;

	if (x->due != y->due)
		return x->due < y->due ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static uint64_t rng(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

Test(retryq, empty_and_full)
{
	struct retryq q;
	struct retry_ent e = {.due = 5, .seq = 1, .attempts = 1}, out;

	cr_assert_eq(retryq_init(&q, 2), 0);
	cr_assert_eq(retryq_next_due(&q), UINT64_MAX);
	cr_assert_not(retryq_pop(&q, &out));
	cr_assert(retryq_push(&q, &e));
	e.seq = 2;
	cr_assert(retryq_push(&q, &e));
	e.seq = 3;
	cr_assert_not(retryq_push(&q, &e), "a full queue must refuse, not grow");
	cr_assert_eq(q.n, 2);
	cr_assert(retryq_pop(&q, &out));
	cr_assert_eq(out.seq, 1);
	cr_assert(retryq_push(&q, &e), "room again after a pop");
	retryq_free(&q);
}

Test(retryq, keeps_every_field)
{
	struct retryq q;
	struct retry_ent e = {.due = 42,
	                      .seq = 7ull << 40 | 9,
	                      .t_first = 11,
	                      .body = 3,
	                      .attempts = 65535},
	                 out;

	retryq_init(&q, 1);
	retryq_push(&q, &e);
	cr_assert_eq(retryq_next_due(&q), 42);
	retryq_pop(&q, &out);
	cr_assert_eq(out.due, e.due);
	cr_assert_eq(out.seq, e.seq);
	cr_assert_eq(out.t_first, e.t_first);
	cr_assert_eq(out.body, e.body);
	cr_assert_eq(out.attempts, e.attempts);
	retryq_free(&q);
}

/* Random pushes and pops, interleaved, with many equal due times (a fixed
 * --retry-delay makes those common): every pop must return the smallest
 * (due, seq) the oracle holds. */
Test(retryq, earliest_first_against_an_oracle)
{
	enum { CAP = 4096 };
	uint64_t s = 88172645463325252ull, seq = 0;

	for (int round = 0; round < 20; round++) {
		struct retryq q;
		static struct retry_ent model[CAP];
		size_t nm = 0;
		uint64_t spread = round % 5 == 0 ? 3 : 1000000;

		retryq_init(&q, CAP);
		for (int op = 0; op < 20000; op++) {
			bool push = nm == 0 || (nm < CAP && rng(&s) % 3 != 0);
			if (push) {
				struct retry_ent e = {.due = rng(&s) % spread,
				                      .seq = seq++,
				                      .t_first = rng(&s),
				                      .body = (uint16_t)(rng(&s) % 16),
				                      .attempts = 1};
				cr_assert(retryq_push(&q, &e));
				model[nm++] = e;
			} else {
				struct retry_ent out;
				size_t m = 0;
				for (size_t i = 1; i < nm; i++)
					if (cmp(&model[i], &model[m]) < 0)
						m = i;
				cr_assert_eq(retryq_next_due(&q), model[m].due);
				cr_assert(retryq_pop(&q, &out));
				cr_assert_eq(out.seq, model[m].seq, "round %d op %d", round, op);
				cr_assert_eq(out.due, model[m].due);
				cr_assert_eq(out.t_first, model[m].t_first);
				model[m] = model[--nm];
			}
			cr_assert_eq(q.n, nm);
		}
		/* drain: non-decreasing (due, seq) to the end */
		struct retry_ent prev = {0}, out;
		bool first = true;
		while (retryq_pop(&q, &out)) {
			cr_assert(first || cmp(&prev, &out) < 0);
			prev = out;
			first = false;
		}
		retryq_free(&q);
	}
}

/* A fixed delay queues in due order already: the queue is then a FIFO. */
Test(retryq, fixed_delay_is_fifo)
{
	struct retryq q;
	struct retry_ent out;

	retryq_init(&q, 1000);
	for (uint64_t i = 0; i < 1000; i++) {
		struct retry_ent e = {.due = 1000000 + i / 3, .seq = i, .attempts = 1};
		retryq_push(&q, &e);
	}
	for (uint64_t i = 0; i < 1000; i++) {
		cr_assert(retryq_pop(&q, &out));
		cr_assert_eq(out.seq, i);
	}
	retryq_free(&q);
}
