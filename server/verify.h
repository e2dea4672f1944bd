/*
 * verify.h - smtpsink --verify: check smtpbench's integrity stamps
 *
 * Every accepted message is fed through a streaming stamp verifier (the
 * scanner's unstuffed segments, so the check covers exactly what a capture
 * would store).  Sequence numbers are remembered per worker in bitmaps
 * indexed by (generator thread, counter); the main thread adds the bitmaps
 * up at exit to count duplicates across workers.  Nothing here is shared
 * while the server runs.
 *
 * The client picks the sequence numbers, so a bitmap may only grow in
 * proportion to the messages this worker has verified (VERIFY_SLACK per
 * message, 2^20 to start): smtpbench numbers densely from 0 per thread, and
 * a forged stamp with a huge number is counted out_of_range instead of
 * allocating memory.
 */
#ifndef SINK_VERIFY_H
#define SINK_VERIFY_H

#include <stdbool.h>
#include <stdint.h>

#include "sink/sess.h"
#include "sink/stamp.h"

#define VERIFY_TIDS  256 /* smtpbench thread ids live in seq >> 40 */
#define VERIFY_SLACK 64  /* bitmap bits allowed per verified message */

struct verify_stats {
	uint64_t ok;
	uint64_t corrupt;
	uint64_t unstamped;
	uint64_t duplicate;
	uint64_t other_run;    /* stamped by another smtpbench run than the first seen */
	uint64_t out_of_range; /* sequence number too far ahead to be remembered */
};

struct verify_worker {
	uint64_t run_id;
	bool have_run;
	uint64_t *bits[VERIFY_TIDS];
	uint64_t nwords[VERIFY_TIDS];
};

struct worker;

/* verify_message_end - a message's content has ended (accepted: with 250);
 * count its stamp in the worker's verify_stats. */
void verify_message_end(struct worker *w, struct stamp_verifier *vc, bool accepted);
void verify_worker_free(struct verify_worker *vw);
/* verify_merge - fold the workers' seen sets; returns cross-worker dups
 * and sets *run to the run id seen (0 when none). */
uint64_t verify_merge(struct verify_worker *ws, int n, size_t stride, uint64_t *run);

#endif
