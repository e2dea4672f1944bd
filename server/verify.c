/*
 * verify.c - integrity stamp checking for smtpsink --verify (see verify.h)
 */
#include <stdlib.h>
#include <string.h>

#include "server.h"

enum seen_res { SEEN_NEW, SEEN_DUP, SEEN_RANGE };

/* seen - set the bit for seq.  Bitmaps grow by doubling, so a run of N
 * messages reallocates O(log N) times in all; never beyond what the
 * verified count justifies (see verify.h). */
static enum seen_res seen(struct verify_worker *vw, uint64_t seq, uint64_t verified)
{
	unsigned tid = (unsigned)(seq >> 40) % VERIFY_TIDS;
	uint64_t idx = seq & ((1ull << 40) - 1), w = idx / 64;
	uint64_t limit = (1ull << 20) + verified * VERIFY_SLACK;

	if (idx >= limit)
		return SEEN_RANGE;
	if (w >= vw->nwords[tid]) {
		uint64_t n = vw->nwords[tid] ? vw->nwords[tid] : 1024;
		while (n <= w)
			n *= 2;
		uint64_t *b = realloc(vw->bits[tid], n * sizeof(uint64_t));
		if (!b)
			return SEEN_RANGE;
		memset(b + vw->nwords[tid], 0, (n - vw->nwords[tid]) * sizeof(uint64_t));
		vw->bits[tid] = b;
		vw->nwords[tid] = n;
	}
	bool was = (vw->bits[tid][w] >> (idx % 64)) & 1;
	vw->bits[tid][w] |= 1ull << (idx % 64);
	return was ? SEEN_DUP : SEEN_NEW;
}

void verify_message_end(struct worker *w, struct stamp_verifier *vc, bool accepted)
{
	struct verify_stats *vs = &w->st.verify;
	uint64_t run, seq;

	if (!accepted)
		return; /* rejected mail was never promised to anyone */
	switch (stamp_verify_end(vc, &run, &seq)) {
	case STAMP_NONE:
		vs->unstamped++;
		break;
	case STAMP_CORRUPT:
		vs->corrupt++;
		break;
	case STAMP_OK:
		vs->ok++;
		if (!w->vw.have_run) {
			w->vw.have_run = true;
			w->vw.run_id = run;
		}
		if (run != w->vw.run_id) {
			vs->other_run++;
			break;
		}
		switch (seen(&w->vw, seq, vs->ok)) {
		case SEEN_DUP:
			vs->duplicate++;
			break;
		case SEEN_RANGE:
			vs->out_of_range++;
			break;
		default:
			break;
		}
		break;
	}
}

void verify_worker_free(struct verify_worker *vw)
{
	for (int i = 0; i < VERIFY_TIDS; i++)
		free(vw->bits[i]);
	memset(vw, 0, sizeof(*vw));
}

uint64_t verify_merge(struct verify_worker *ws, int n, size_t stride, uint64_t *run)
{
	uint64_t dups = 0;
	struct verify_worker *first = NULL;

	*run = 0;
	for (int i = 0; i < n; i++) {
		struct verify_worker *vw =
		    (struct verify_worker *)((char *)ws + (size_t)i * stride);
		if (!vw->have_run)
			continue;
		if (!first) {
			first = vw;
			*run = vw->run_id;
			continue;
		}
		if (vw->run_id != first->run_id)
			continue;
		for (int t = 0; t < VERIFY_TIDS; t++) {
			uint64_t nw = vw->nwords[t];
			if (nw > first->nwords[t]) {
				uint64_t *b = realloc(first->bits[t], nw * sizeof(uint64_t));
				if (!b)
					continue;
				memset(b + first->nwords[t], 0,
				       (nw - first->nwords[t]) * sizeof(uint64_t));
				first->bits[t] = b;
				first->nwords[t] = nw;
			}
			for (uint64_t k = 0; k < nw; k++) {
				dups += (uint64_t)__builtin_popcountll(first->bits[t][k] &
				                                       vw->bits[t][k]);
				first->bits[t][k] |= vw->bits[t][k];
			}
		}
	}
	return dups;
}
