/*
 * verify.h - smtpsink --verify: check smtpbench's integrity stamps
 *
 * Every accepted message is fed through a streaming stamp verifier (the
 * scanner's unstuffed segments, so the check covers exactly what a capture
 * would store).  Sequence numbers are remembered per worker in bitmaps
 * indexed by (generator thread, counter); the main thread adds the bitmaps
 * up at exit to count duplicates across workers.  Nothing here is shared
 * while the server runs.
 */
#ifndef SINK_VERIFY_H
#define SINK_VERIFY_H

#include <stdbool.h>
#include <stdint.h>

#include "sink/sess.h"
#include "sink/stamp.h"

#define VERIFY_TIDS 256 /* smtpbench thread ids live in seq >> 40 */

struct verify_stats {
	uint64_t ok;
	uint64_t corrupt;
	uint64_t unstamped;
	uint64_t duplicate;
	uint64_t other_run; /* stamped by another smtpbench run than the first seen */
};

struct verify_worker {
	uint64_t run_id;
	bool have_run;
	uint64_t *bits[VERIFY_TIDS];
	uint64_t nwords[VERIFY_TIDS];
};

struct server_stats;
struct conn;

extern const struct sess_content_ops verify_ops;
void verify_attach(struct conn *c);
void verify_worker_free(struct verify_worker *vw);
/* verify_merge - fold the workers' seen sets; returns cross-worker dups
 * and sets *run to the run id seen (0 when none). */
uint64_t verify_merge(struct verify_worker *ws, int n, size_t stride, uint64_t *run);

#endif
