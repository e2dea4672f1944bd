/*
 * scan.h - zero-copy SMTP line and DATA scanner (pure: no I/O, no allocation)
 *
 * The scanner turns a stream of received bytes, delivered in buffers of any
 * size and split at any offset, into protocol events.  It keeps O(1) state per
 * connection: a handful of bits for DATA mode, and a small caller-owned carry
 * (<= line_max octets) used only when a command line straddles two buffers.
 *
 * Three modes:
 *  - SCAN_MODE_CMD:  CRLF-terminated command lines (RFC 5321 2.3.8, 4.1.1).
 *    A line is returned as a view into the caller's buffer; only a line that
 *    straddles buffers is copied into the carry.  A bare LF also ends a line
 *    (flagged, the session applies the bare-LF policy); a CR not followed by
 *    LF is flagged as bare CR.  Lines longer than line_max (counting the line
 *    ending) are reported once as SCAN_EV_TOO_LONG at their line end; their
 *    excess is never buffered.
 *  - SCAN_MODE_DATA: message content after 354.  Ends ONLY on <CRLF>.<CRLF>
 *    (RFC 5321 4.1.1.4); never on <LF>.<LF>, <CRLF>.<LF>, <LF>.<CRLF> or
 *    <CR>.<CR><LF> (SMTP smuggling, CVE-2023-51764/51765/51766).  Leading
 *    dots are removed (RFC 5321 4.5.2) and the content is described as
 *    segments so a capture feature can write byte-exact mail without copying
 *    or re-scanning.  Size (RFC 1870: content octets, stuffing dots and the
 *    terminator excluded), lines, bare LF, bare CR and lines over 1000 octets
 *    (RFC 5321 4.5.3.1.6) are counted.
 *  - SCAN_MODE_BDAT: exactly n octets of chunk data (RFC 3030), no scanning.
 *
 * DATA state machine (one byte of state; see io-and-protocol.md 3.2):
 *   LS       line start after CRLF (initial state after 354)
 *   LS_BARE  line start after a bare LF: a dot here is plain content and can
 *            never begin the terminator (closes <LF>.<CRLF> smuggling)
 *   MID      inside a line
 *   CR       saw CR, waiting for LF
 *   LS_DOT   dot at the start of a CRLF line (held: stuffing or terminator)
 *   LS_DOT_CR  ".\r" at the start of a CRLF line; LF here ends the data
 *
 * Two implementations produce identical results: a scalar byte machine and
 * a SIMD path (SSE2 baseline, AVX2 picked at run time) that classifies 32 or
 * 64-byte blocks into CR/LF/dot bit masks and skips blocks that hold no
 * terminator candidate, bare LF or bare CR.  scan_set_impl() forces one for
 * tests and benchmarks.
 */
#ifndef SINK_SCAN_H
#define SINK_SCAN_H

#include <stddef.h>
#include <stdint.h>

enum scan_mode {
	SCAN_MODE_CMD = 0,
	SCAN_MODE_DATA,
	SCAN_MODE_BDAT,
};

enum scan_ev {
	SCAN_EV_NONE = 0,   /* input exhausted, nothing complete yet */
	SCAN_EV_LINE,       /* CMD: a complete line in *line */
	SCAN_EV_TOO_LONG,   /* CMD: a line over line_max ended; excess dropped */
	SCAN_EV_EOD,        /* DATA: <CRLF>.<CRLF> consumed; back to CMD mode */
	SCAN_EV_BDAT_DONE,  /* BDAT: the chunk's last octet consumed; back to CMD */
};

/* Line flags reported with SCAN_EV_LINE / SCAN_EV_TOO_LONG. */
#define SCAN_LINE_BARE_LF 0x1u /* ended by LF without CR */
#define SCAN_LINE_BARE_CR 0x2u /* contains a CR not followed by LF */
#define SCAN_LINE_NUL     0x4u /* contains a NUL octet */

/* DATA states (exposed for tests; treat as opaque). */
enum scan_dstate {
	SCAN_DS_LS = 0,
	SCAN_DS_LS_BARE,
	SCAN_DS_MID,
	SCAN_DS_CR,
	SCAN_DS_LS_DOT,
	SCAN_DS_LS_DOT_CR,
};

/* Per-message DATA counters, reset by scan_begin_data(). */
struct scan_data_stats {
	uint64_t octets;     /* content octets after unstuffing (RFC 1870 size) */
	uint64_t lines;      /* line endings seen (CRLF and bare LF) */
	uint64_t bare_lf;    /* LF not preceded by CR */
	uint64_t bare_cr;    /* CR not followed by LF */
	uint64_t long_lines; /* lines over 1000 octets including the line ending */
	uint64_t stuffed;    /* leading dots removed */
};

struct scan_state {
	uint8_t mode;        /* enum scan_mode */
	uint8_t dstate;      /* enum scan_dstate, DATA mode */
	uint8_t cmd_prev_cr; /* CMD: last octet of the carry is CR */
	uint8_t cmd_flags;   /* CMD: SCAN_LINE_* accumulated for the carried line */
	uint8_t cmd_discard; /* CMD: over-long line, dropping to its end */
	uint32_t line_max;   /* CMD: limit including the line ending */
	uint32_t carry_len;  /* CMD: octets held in carry */
	char *carry;         /* CMD: caller-owned, line_max octets */
	uint64_t cur_line;   /* DATA: octets of the current line so far;
	                        CMD: octets of a line being discarded */
	uint64_t bdat_left;  /* BDAT: octets still to consume */
	struct scan_data_stats ds;
};

/* A complete command line (without its line ending). Valid until the next
 * scanner call or until the caller's buffer is released. */
struct scan_line {
	const char *p;
	size_t len;
	unsigned flags; /* SCAN_LINE_* */
};

/* A piece of message content (after dot-unstuffing). p points into the
 * caller's buffer or, for a CR held back across a buffer boundary, to a
 * static "\r". */
struct scan_seg {
	const char *p;
	size_t len;
};

/* scan_init - start in CMD mode. carry must hold line_max octets; it may be
 * NULL only if the caller guarantees lines never straddle buffers (tests). */
void scan_init(struct scan_state *st, char *carry, uint32_t line_max);

/* scan_line - CMD mode: consume input up to and including the next line end.
 * Returns octets consumed (always > 0 when len > 0) and sets *ev to
 * SCAN_EV_LINE / SCAN_EV_TOO_LONG (with *line filled) or SCAN_EV_NONE when the
 * input ran out mid-line (partial line kept in the carry). */
size_t scan_line(struct scan_state *st, const char *buf, size_t len, struct scan_line *line,
                 enum scan_ev *ev);

/* scan_begin_data - enter DATA mode (after sending 354); resets ds. */
void scan_begin_data(struct scan_state *st);

/* scan_data - DATA mode: consume input, describe content in *seg (possibly
 * empty).  Returns octets consumed.  *ev is SCAN_EV_EOD when the terminator
 * was consumed (the scanner is back in CMD mode; the bytes after it are the
 * next pipelined commands).  One call yields at most one segment: it stops
 * early after a stuffing dot.  It may return 0 octets consumed with a
 * non-empty segment (the held-back "\r" of ".\r" followed by another byte);
 * callers loop while input remains. */
size_t scan_data(struct scan_state *st, const char *buf, size_t len, struct scan_seg *seg,
                 enum scan_ev *ev);

/* scan_begin_bdat - enter BDAT mode for n octets (n may be 0). */
void scan_begin_bdat(struct scan_state *st, uint64_t n);

/* scan_bdat - BDAT mode: consume min(len, left) octets, all content. */
size_t scan_bdat(struct scan_state *st, const char *buf, size_t len, struct scan_seg *seg,
                 enum scan_ev *ev);

/* Implementation selection (tests, fuzzing, benchmarks). */
enum scan_impl {
	SCAN_IMPL_AUTO = 0, /* best the CPU supports */
	SCAN_IMPL_SCALAR,
	SCAN_IMPL_SSE2,
	SCAN_IMPL_AVX2,
};
/* Returns 0, or -ENOTSUP when the CPU lacks the requested ISA. Not thread
 * safe: call before starting threads. */
int scan_set_impl(enum scan_impl impl);
const char *scan_impl_name(void);

#endif
