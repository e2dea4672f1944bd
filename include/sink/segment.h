/*
 * segment.h - one smtpbench run split across N instances (--segment I/N,
 * --start-at), as k6's execution segments are for HTTP: pure arithmetic,
 * no I/O, no clock.
 *
 * Instance I of N (1-based) takes
 *   - segment_share(total, I, N) of --sessions and of --messages: total / N
 *     each and the remainder one apiece to the lowest I, so the N shares add
 *     up to the total exactly.  Inside an instance the same split gives each
 *     of its T threads its sessions and messages (thread t is share t+1 of T).
 *   - R / N of --rate (and of --connect-rate), its open-loop schedule offset
 *     so that the N schedules interleave into the one schedule of a single
 *     generator at R: slot g of the whole run is due at start + g / R, and
 *     thread t of instance I owns the slots g = segment_slot(I, N, t, T, j),
 *     j = 0, 1, ...  The N * T schedules are disjoint and together every g.
 *   - its own stamp sequence numbers: seq = segment_seq(I, N, t, j) =
 *     t << 40 | ((I-1) + N * j) for message j of thread t (stamp.h; the
 *     thread id stays in seq >> 40, where smtpsink --verify keeps one bitmap
 *     per generator thread).  Residues mod N keep instances apart, so no two
 *     instances ever use one number; with the same --threads everywhere each
 *     thread id's numbers are exactly 0 .. (its messages in the run) - 1.
 *     The counter has 40 bits: 2^40 / N messages per thread and instance
 *     (16 M with N = 65536) before it would reach the thread id.
 * Without --segment I = N = 1: the single-instance numbering and schedule.
 *
 * Every instance of a run stamps one run id, derived from --start-at and N
 * (segment_run_id), so smtpsink --verify counts them as one run.
 */
#ifndef SINK_SEGMENT_H
#define SINK_SEGMENT_H

#include <stdint.h>

#define SEGMENT_MAX 65536u /* instances in one run */

/* segment_parse - "I/N" with 1 <= I <= N <= SEGMENT_MAX, digits only;
 * 0, or -EINVAL without touching the outputs. */
int segment_parse(const char *s, uint32_t *index, uint32_t *count);

/* segment_share - instance index's (1-based) part of total over count. */
static inline uint64_t segment_share(uint64_t total, uint32_t index, uint32_t count)
{
	return total / count + (index - 1 < total % count);
}

/* segment_seq - stamp sequence number of message j (0-based, per thread)
 * of thread t in instance index of count. */
static inline uint64_t segment_seq(uint32_t index, uint32_t count, uint32_t t, uint64_t j)
{
	return (uint64_t)t << 40 | ((uint64_t)(index - 1) + (uint64_t)count * j);
}

/* segment_slot - the run's open-loop slot number of slot j of thread t
 * (of threads) in instance index of count: due at start + slot / rate. */
static inline uint64_t segment_slot(uint32_t index, uint32_t count, uint32_t t, uint32_t threads,
                                    uint64_t j)
{
	return (uint64_t)(index - 1) + (uint64_t)count * ((uint64_t)t + (uint64_t)threads * j);
}

/* segment_run_id - the stamp run id every instance of a segmented run
 * computes alike: a 64-bit mix of the start time (ns since the epoch) and
 * the instance count; never 0. */
uint64_t segment_run_id(uint64_t start_ns, uint32_t count);

/* segment_parse_time - --start-at: an RFC 3339 date-time
 * (2026-11-30T01:00:00Z, 2026-11-30T02:00:00.25+01:00; "t", "z" and a space
 * for "T" accepted, RFC 3339 5.6) or Unix seconds with an optional fraction
 * (1764464400, 1764464400.125).  Years 1970..9999.  *ns: nanoseconds since
 * the epoch (UTC).  0, or -EINVAL without touching *ns. */
int segment_parse_time(const char *s, uint64_t *ns);

#endif
