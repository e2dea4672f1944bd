/*
 * stamp.h - end-to-end integrity stamp for load-generated mail
 *
 * smtpbench puts one header line first in every message:
 *
 *   X-Smtpbench-Stamp: <run:16 hex> <seq:16 hex> <sum:16 hex>\r\n
 *
 * run identifies the smtpbench run, seq is unique per message within it,
 * and sum = stamp_mix(run, seq) ^ H(rest), where H is a 64-bit hash of every
 * octet after the stamp line (the unstuffed content, exactly as the client
 * meant it).  A sink that verifies the stamp proves each message arrived
 * unaltered; with the seq numbers it also counts duplicates and, given the
 * sent count, losses.  The body after the stamp is shared by all messages
 * of a size, so the generator hashes it once at start.
 *
 * Server side: a streaming verifier of fixed size, fed the content in any
 * segmentation (e.g. the scanner's unstuffed segments).
 */
#ifndef SINK_STAMP_H
#define SINK_STAMP_H

#include <stddef.h>
#include <stdint.h>

#define STAMP_PREFIX   "X-Smtpbench-Stamp: "
#define STAMP_LINE_LEN (sizeof(STAMP_PREFIX) - 1 + 16 + 1 + 16 + 1 + 16 + 2)

/* Incremental 64-bit hash over a byte stream (any segmentation gives the
 * same value): 8-byte words mixed by multiply-xorshift, tail bytes folded. */
struct stamp_hash {
	uint64_t acc;
	uint64_t word;
	unsigned nbytes; /* bytes in word */
	uint64_t total;
};

void stamp_hash_init(struct stamp_hash *h);
void stamp_hash_feed(struct stamp_hash *h, const void *p, size_t n);
uint64_t stamp_hash_final(const struct stamp_hash *h);
uint64_t stamp_mix(uint64_t run, uint64_t seq);

/* stamp_format - write the stamp line (STAMP_LINE_LEN octets, no NUL)
 * for a body whose post-stamp hash is body_hash. */
void stamp_format(char *out, uint64_t run, uint64_t seq, uint64_t body_hash);

enum stamp_result { STAMP_NONE = 0, STAMP_OK, STAMP_CORRUPT };

struct stamp_verifier {
	char line[STAMP_LINE_LEN];
	unsigned have;
	int none; /* first line is not a stamp */
	struct stamp_hash h;
};

void stamp_verify_begin(struct stamp_verifier *v);
void stamp_verify_feed(struct stamp_verifier *v, const char *p, size_t n);
enum stamp_result stamp_verify_end(struct stamp_verifier *v, uint64_t *run, uint64_t *seq);

#endif
