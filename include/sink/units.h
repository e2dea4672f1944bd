/*
 * units.h - human units on the command line: "10k", "64M", "30s", "500ms"
 *
 * Sizes: an integer with an optional k/K, m/M, g/G suffix (powers of 1024,
 * as Postfix and wrk use them); an optional trailing "B"/"iB" is accepted.
 * Durations: a decimal number with ns, us, ms, s, m or h; a bare number is
 * seconds.  Counts: plain integers, with optional k/M/G (powers of 1000).
 * All return 0 on success and -EINVAL on malformed input or overflow, never
 * touching *out then.
 */
#ifndef SINK_UNITS_H
#define SINK_UNITS_H

#include <stdint.h>

int units_parse_size(const char *s, uint64_t *out);
int units_parse_duration_ns(const char *s, uint64_t *out);
int units_parse_count(const char *s, uint64_t *out);

#endif
