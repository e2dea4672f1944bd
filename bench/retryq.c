/*
 * retryq.c - smtpbench's per-thread retry queue (see retryq.h)
 */
#include "retryq.h"

#include <errno.h>
#include <stdlib.h>

int retryq_init(struct retryq *q, uint32_t cap)
{
	q->n = 0;
	q->cap = 0;
	q->e = malloc((size_t)(cap ? cap : 1) * sizeof(*q->e));
	if (!q->e)
		return -ENOMEM;
	q->cap = cap ? cap : 1;
	return 0;
}

void retryq_free(struct retryq *q)
{
	free(q->e);
	q->e = NULL;
	q->n = q->cap = 0;
}

/* before - a comes out of the queue before b */
static bool before(const struct retry_ent *a, const struct retry_ent *b)
{
	return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

bool retryq_push(struct retryq *q, const struct retry_ent *e)
{
	uint32_t i;

	if (q->n == q->cap)
		return false;
	/* sift up: move parents down until e's place is found */
	for (i = q->n++; i > 0; i = (i - 1) / 2) {
		const struct retry_ent *p = &q->e[(i - 1) / 2];
		if (!before(e, p))
			break;
		q->e[i] = *p;
	}
	q->e[i] = *e;
	return true;
}

bool retryq_pop(struct retryq *q, struct retry_ent *out)
{
	struct retry_ent last;
	uint32_t i = 0;

	if (!q->n)
		return false;
	*out = q->e[0];
	last = q->e[--q->n];
	/* sift down: the last entry falls from the root to its place */
	for (;;) {
		uint32_t c = 2 * i + 1;
		if (c >= q->n)
			break;
		if (c + 1 < q->n && before(&q->e[c + 1], &q->e[c]))
			c++;
		if (!before(&q->e[c], &last))
			break;
		q->e[i] = q->e[c];
		i = c;
	}
	if (q->n)
		q->e[i] = last;
	return true;
}
