/*
 * scan.c - zero-copy SMTP line and DATA scanner (see scan.h for the contract)
 *
 * The scalar byte machine below is the reference: every implementation must
 * produce exactly its results.  The SIMD paths only accelerate the two hot
 * loops - finding a line end in command mode, and skipping over "clean"
 * DATA content - and hand every interesting byte back to the scalar machine:
 *
 *  - command mode: first CR or LF, 16 (SSE2) or 32 (AVX2) bytes at a time;
 *  - DATA mode: 64-byte blocks are classified into CR, LF and dot bit masks
 *    (the simdjson stage-1 idea).  A prefix with no bare LF, no bare CR and
 *    no dot right after a CRLF can only contain ordinary content and CRLF
 *    line ends, so it is accounted with popcount/ctz and skipped; the first
 *    unclean byte goes to the scalar machine.
 *
 * No implementation reads outside [buf, buf+len): blocks are only loaded
 * when 64 (or 16/32) bytes remain; tails are scalar.
 */
#include "sink/scan.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SCAN_X86 1
#else
#define SCAN_X86 0
#endif

/* RFC 5321 4.5.3.1.6: text lines are at most 1000 octets including CRLF. */
#define TEXT_LINE_MAX 1000u

static const char held_cr[1] = {'\r'};

/* skip_fn - advance over clean DATA content from i (state MID or LS_BARE);
 * returns the new position and updates state and counters. */
typedef size_t (*skip_fn)(struct scan_state *st, const char *buf, size_t i, size_t len);
/* eol_fn - first CR or LF in [p, e), or e. */
typedef const char *(*eol_fn)(const char *p, const char *e);

static const char *eol_scalar(const char *p, const char *e);

static skip_fn data_skip; /* NULL: pure scalar */
static eol_fn find_eol = eol_scalar;
static enum scan_impl cur_impl = SCAN_IMPL_SCALAR;

/* --- command mode ------------------------------------------------------- */

static const char *eol_scalar(const char *p, const char *e)
{
	for (; p < e; p++)
		if (*p == '\r' || *p == '\n')
			return p;
	return e;
}

/* scan_pick_default - the best implementation, chosen once at load time:
 * choosing lazily in scan_init() would write these globals from whichever
 * worker thread gets there first (a data race). */
__attribute__((constructor)) static void scan_pick_default(void)
{
	scan_set_impl(SCAN_IMPL_AUTO);
}

void scan_init(struct scan_state *st, char *carry, uint32_t line_max)
{
	memset(st, 0, sizeof(*st));
	st->mode = SCAN_MODE_CMD;
	st->carry = carry;
	st->line_max = line_max;
}

/* carry_add - keep part of a line that continues in the next buffer.
 * Returns 0, or -1 when the line is over the limit (discard mode). */
static int carry_add(struct scan_state *st, const char *p, size_t n)
{
	if ((uint64_t)st->carry_len + n > st->line_max) {
		st->cmd_discard = 1;
		st->carry_len = 0;
		st->cmd_flags = 0;
		return -1;
	}
	memcpy(st->carry + st->carry_len, p, n);
	st->carry_len += (uint32_t)n;
	return 0;
}

/* line_done - a line end was found: content is buf[0..cend) after whatever
 * the carry holds; the line's total size including its ending is total. */
static void line_done(struct scan_state *st, const char *buf, size_t cend, uint64_t total,
                      unsigned flags, struct scan_line *line, enum scan_ev *ev)
{
	if (total > st->line_max) {
		/* RFC 5321 4.5.3.1.4: over-long command line */
		line->p = buf;
		line->len = 0;
		line->flags = flags;
		*ev = SCAN_EV_TOO_LONG;
	} else if (st->carry_len) {
		memcpy(st->carry + st->carry_len, buf, cend);
		line->p = st->carry;
		line->len = st->carry_len + cend;
		line->flags = flags;
		*ev = SCAN_EV_LINE;
	} else {
		line->p = buf; /* zero copy: a view into the caller's buffer */
		line->len = cend;
		line->flags = flags;
		*ev = SCAN_EV_LINE;
	}
	if (*ev == SCAN_EV_LINE && line->len && memchr(line->p, 0, line->len))
		line->flags |= SCAN_LINE_NUL;
	st->carry_len = 0;
	st->cmd_flags = 0;
	st->cmd_prev_cr = 0;
}

size_t scan_line(struct scan_state *st, const char *buf, size_t len, struct scan_line *line,
                 enum scan_ev *ev)
{
	const char *e = buf + len, *p = buf;
	unsigned flags;

	*ev = SCAN_EV_NONE;
	if (len == 0)
		return 0;
	if (st->cmd_discard) {
		/* Over-long line: drop octets up to its LF, never buffer them. */
		const char *lf = memchr(buf, '\n', len);
		if (!lf)
			return len;
		st->cmd_discard = 0;
		st->cmd_prev_cr = 0;
		line->p = buf;
		line->len = 0;
		line->flags = 0;
		*ev = SCAN_EV_TOO_LONG;
		return (size_t)(lf - buf) + 1;
	}
	flags = st->cmd_flags;
	if (st->cmd_prev_cr) {
		/* The carry ends in CR: is it half of a CRLF split by the read? */
		st->cmd_prev_cr = 0;
		if (buf[0] == '\n') {
			st->carry_len--; /* drop the CR from the content */
			line_done(st, buf, 0, (uint64_t)st->carry_len + 2, flags, line, ev);
			return 1;
		}
		flags |= SCAN_LINE_BARE_CR;
	}
	for (;;) {
		p = find_eol(p, e);
		if (p == e)
			break;
		if (*p == '\n') {
			size_t cend = (size_t)(p - buf);
			line_done(st, buf, cend, (uint64_t)st->carry_len + cend + 1,
			          flags | SCAN_LINE_BARE_LF, line, ev);
			return cend + 1;
		}
		/* CR */
		if (p + 1 == e) {
			/* undecided until the next read */
			st->cmd_prev_cr = 1;
			break;
		}
		if (p[1] == '\n') {
			size_t cend = (size_t)(p - buf);
			line_done(st, buf, cend, (uint64_t)st->carry_len + cend + 2, flags, line,
			          ev);
			return cend + 2;
		}
		flags |= SCAN_LINE_BARE_CR;
		p++;
	}
	/* No line end here: carry the partial line. */
	st->cmd_flags = (uint8_t)flags;
	if (carry_add(st, buf, len))
		st->cmd_prev_cr = 0;
	return len;
}

/* --- DATA mode --------------------------------------------------------- */

void scan_begin_data(struct scan_state *st)
{
	st->mode = SCAN_MODE_DATA;
	st->dstate = SCAN_DS_LS; /* the DATA line's CRLF starts the first line */
	st->cur_line = 0;
	memset(&st->ds, 0, sizeof(st->ds));
}

/* line_end - account one line ending (the LF itself was already counted in
 * cur_line). */
static inline void line_end(struct scan_state *st)
{
	st->ds.lines++;
	if (st->cur_line > TEXT_LINE_MAX)
		st->ds.long_lines++;
	st->cur_line = 0;
}

size_t scan_data(struct scan_state *st, const char *buf, size_t len, struct scan_seg *seg,
                 enum scan_ev *ev)
{
	size_t i = 0, seg_start = 0;
	uint8_t s = st->dstate;

	*ev = SCAN_EV_NONE;
	seg->p = buf;
	seg->len = 0;
	if (len && s == SCAN_DS_LS_DOT_CR && buf[0] != '\n') {
		/* ".\r" then not LF: the dot was stuffing, the CR held from the
		 * previous read is content (a bare CR).  It is not in this buffer,
		 * so it is reported on its own. */
		st->ds.stuffed++;
		st->ds.bare_cr++;
		st->ds.octets++;
		st->dstate = SCAN_DS_MID;
		seg->p = held_cr;
		seg->len = 1;
		return 0;
	}
	/* The SIMD skip classifies a whole 64-octet block to find the first
	 * unclean octet.  The octet where it stopped is known to need the scalar
	 * machine, so the skip is not asked again before it.  Content full of
	 * bare LFs or CRs would still have it run for nearly every octet (64
	 * times the work of the scalar machine), so after a skip that gains
	 * less than half a block the scalar machine keeps going for a while
	 * (8, 16, ... 256 octets) before the next try. */
	size_t skip_at = 0;
	unsigned backoff = 8;
	while (i < len) {
		if ((s == SCAN_DS_MID || s == SCAN_DS_LS_BARE) && data_skip && len - i >= 64 &&
		    i >= skip_at) {
			st->dstate = s;
			size_t j = data_skip(st, buf, i, len);
			s = st->dstate;
			if (j - i < 32) {
				skip_at = j + backoff;
				backoff = backoff < 256 ? backoff * 2 : 256;
			} else {
				skip_at = j + 1;
				backoff = 8;
			}
			if (j != i) {
				i = j;
				continue;
			}
		}
		char c = buf[i];
		st->cur_line++;
		switch (s) {
		case SCAN_DS_LS:
			if (c == '.') {
				/* RFC 5321 4.5.2: a leading dot is never content; it is
				 * either stuffing or the start of the terminator. */
				s = SCAN_DS_LS_DOT;
				if (i > seg_start) {
					st->dstate = s;
					seg->p = buf + seg_start;
					seg->len = i - seg_start;
					return i + 1;
				}
				seg_start = i + 1;
				break;
			}
			/* any other byte is handled as inside a line */
			__attribute__((fallthrough));
		case SCAN_DS_LS_BARE:
		case SCAN_DS_MID:
			st->ds.octets++;
			if (c == '\r') {
				s = SCAN_DS_CR;
			} else if (c == '\n') {
				st->ds.bare_lf++;
				line_end(st);
				s = SCAN_DS_LS_BARE; /* no terminator can start here */
			} else {
				s = SCAN_DS_MID;
			}
			break;
		case SCAN_DS_CR:
			st->ds.octets++;
			if (c == '\n') {
				line_end(st);
				s = SCAN_DS_LS;
			} else if (c == '\r') {
				st->ds.bare_cr++; /* the previous CR was bare */
			} else {
				st->ds.bare_cr++;
				s = SCAN_DS_MID;
			}
			break;
		case SCAN_DS_LS_DOT:
			if (c == '\r') {
				s = SCAN_DS_LS_DOT_CR; /* held: content or terminator */
				break;
			}
			st->ds.stuffed++;
			st->ds.octets++;
			if (c == '\n') {
				/* <CRLF>.<LF> does not end DATA (smuggling) */
				st->ds.bare_lf++;
				line_end(st);
				s = SCAN_DS_LS_BARE;
			} else {
				s = SCAN_DS_MID;
			}
			break;
		case SCAN_DS_LS_DOT_CR:
			if (c == '\n') {
				/* <CRLF>.<CRLF>: end of data (RFC 5321 4.1.1.4) */
				st->cur_line = 0;
				st->dstate = SCAN_DS_LS;
				st->mode = SCAN_MODE_CMD;
				seg->p = buf + seg_start;
				seg->len = 0;
				*ev = SCAN_EV_EOD;
				return i + 1;
			}
			/* <CRLF>.<CR>x: the dot was stuffing, the CR (at i-1, which
			 * is seg_start) is content and bare; x is examined again. */
			st->ds.stuffed++;
			st->ds.bare_cr++;
			st->ds.octets++;
			st->cur_line--;
			s = SCAN_DS_MID;
			continue;
		}
		i++;
	}
	st->dstate = s;
	seg->p = buf + seg_start;
	seg->len = len - seg_start;
	/* A CR held for ".\r" is not content yet. */
	if (s == SCAN_DS_LS_DOT_CR && seg->len)
		seg->len--;
	return len;
}

/* Counters of a skip run, kept in registers and written back once. */
struct skip_acc {
	uint64_t octets, lines, long_lines, cur_line;
	uint8_t state;
};

/* skip_block64 - account the clean prefix of a 64-byte block at buf+i given
 * its CR/LF/dot masks (bit k = byte i+k).  State on entry is MID or LS_BARE:
 * the byte before the block is neither CR nor the LF of a CRLF.  Returns the
 * number of octets accounted (64 = the whole block, and the skip goes on
 * only if the state is still MID). */
static inline unsigned skip_block64(struct skip_acc *a, uint64_t cr, uint64_t lf, uint64_t dot)
{
	uint64_t crlf = lf & (cr << 1);
	uint64_t bare_lf = lf & ~(cr << 1);
	/* a CR not followed by LF; the block's last CR is decided later */
	uint64_t bare_cr = cr & ~(lf >> 1) & ~(1ull << 63);
	uint64_t dot_cand = dot & (crlf << 1);
	uint64_t unclean = bare_lf | bare_cr | dot_cand;
	unsigned p = unclean ? (unsigned)__builtin_ctzll(unclean) : 64;
	uint64_t lfm = p == 64 ? lf : lf & ((1ull << p) - 1);

	if (p == 0)
		return 0;
	a->octets += p;
	if (!lfm) {
		a->cur_line += p;
	} else {
		unsigned first = (unsigned)__builtin_ctzll(lfm);
		unsigned last = 63u - (unsigned)__builtin_clzll(lfm);
		/* Only the first line ending here can be long: the others began
		 * inside this block. */
		a->long_lines += a->cur_line + first + 1 > TEXT_LINE_MAX;
		a->lines += (uint64_t)__builtin_popcountll(lfm);
		a->cur_line = p - (last + 1);
	}
	if ((lf >> (p - 1)) & 1)
		a->state = SCAN_DS_LS;
	else if ((cr >> (p - 1)) & 1)
		a->state = SCAN_DS_CR;
	else
		a->state = SCAN_DS_MID;
	return p;
}

static inline void skip_begin(struct skip_acc *a, const struct scan_state *st)
{
	a->octets = a->lines = a->long_lines = 0;
	a->cur_line = st->cur_line;
	a->state = st->dstate;
}

static inline void skip_end(struct scan_state *st, const struct skip_acc *a)
{
	st->ds.octets += a->octets;
	st->ds.lines += a->lines;
	st->ds.long_lines += a->long_lines;
	st->cur_line = a->cur_line;
	st->dstate = a->state;
}

#if SCAN_X86
static inline uint64_t movemask16(__m128i v)
{
	return (uint64_t)(uint16_t)_mm_movemask_epi8(v);
}

/* skip_sse2 - whole clean blocks of 64 bytes while they are clean. */
static size_t skip_sse2(struct scan_state *st, const char *buf, size_t i, size_t len)
{
	const __m128i vcr = _mm_set1_epi8('\r'), vlf = _mm_set1_epi8('\n'),
	              vdot = _mm_set1_epi8('.');
	struct skip_acc a;

	skip_begin(&a, st);
	while (len - i >= 64) {
		uint64_t cr = 0, lf = 0, dot = 0;
		for (int k = 0; k < 4; k++) {
			__m128i v =
			    _mm_loadu_si128((const __m128i *)(const void *)(buf + i + 16 * k));
			cr |= movemask16(_mm_cmpeq_epi8(v, vcr)) << (16 * k);
			lf |= movemask16(_mm_cmpeq_epi8(v, vlf)) << (16 * k);
			dot |= movemask16(_mm_cmpeq_epi8(v, vdot)) << (16 * k);
		}
		unsigned n = skip_block64(&a, cr, lf, dot);
		i += n;
		if (n != 64 || a.state != SCAN_DS_MID)
			break;
	}
	skip_end(st, &a);
	return i;
}

static const char *eol_sse2(const char *p, const char *e)
{
	const __m128i vcr = _mm_set1_epi8('\r'), vlf = _mm_set1_epi8('\n');

	while (e - p >= 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
		unsigned m = (unsigned)_mm_movemask_epi8(
		    _mm_or_si128(_mm_cmpeq_epi8(v, vcr), _mm_cmpeq_epi8(v, vlf)));
		if (m)
			return p + __builtin_ctz(m);
		p += 16;
	}
	return eol_scalar(p, e);
}

__attribute__((target("avx2"))) static size_t skip_avx2(struct scan_state *st, const char *buf,
                                                        size_t i, size_t len)
{
	const __m256i vcr = _mm256_set1_epi8('\r'), vlf = _mm256_set1_epi8('\n'),
	              vdot = _mm256_set1_epi8('.');
	struct skip_acc a;

	skip_begin(&a, st);
	while (len - i >= 64) {
		__m256i x = _mm256_loadu_si256((const __m256i *)(const void *)(buf + i));
		__m256i y = _mm256_loadu_si256((const __m256i *)(const void *)(buf + i + 32));
		uint64_t cr = (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(x, vcr)) |
		              (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(y, vcr))
		                  << 32;
		uint64_t lf = (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(x, vlf)) |
		              (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(y, vlf))
		                  << 32;
		uint64_t dot =
		    (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(x, vdot)) |
		    (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(y, vdot)) << 32;
		unsigned n = skip_block64(&a, cr, lf, dot);
		i += n;
		if (n != 64 || a.state != SCAN_DS_MID)
			break;
	}
	skip_end(st, &a);
	return i;
}

__attribute__((target("avx2"))) static const char *eol_avx2(const char *p, const char *e)
{
	const __m256i vcr = _mm256_set1_epi8('\r'), vlf = _mm256_set1_epi8('\n');

	while (e - p >= 32) {
		__m256i v = _mm256_loadu_si256((const __m256i *)(const void *)p);
		unsigned m = (unsigned)_mm256_movemask_epi8(
		    _mm256_or_si256(_mm256_cmpeq_epi8(v, vcr), _mm256_cmpeq_epi8(v, vlf)));
		if (m)
			return p + __builtin_ctz(m);
		p += 32;
	}
	return eol_sse2(p, e);
}
#endif

/* --- BDAT mode (RFC 3030: exactly n octets, no scanning) ---------------- */

void scan_begin_bdat(struct scan_state *st, uint64_t n)
{
	st->mode = SCAN_MODE_BDAT;
	st->bdat_left = n;
}

size_t scan_bdat(struct scan_state *st, const char *buf, size_t len, struct scan_seg *seg,
                 enum scan_ev *ev)
{
	size_t n = len < st->bdat_left ? len : (size_t)st->bdat_left;

	st->bdat_left -= n;
	seg->p = buf;
	seg->len = n;
	*ev = SCAN_EV_NONE;
	if (st->bdat_left == 0) {
		st->mode = SCAN_MODE_CMD;
		*ev = SCAN_EV_BDAT_DONE;
	}
	return n;
}

/* --- implementation choice ---------------------------------------------- */

int scan_set_impl(enum scan_impl impl)
{
#if SCAN_X86
	bool avx2;
	__builtin_cpu_init();
	avx2 = __builtin_cpu_supports("avx2");
	if (impl == SCAN_IMPL_AUTO)
		impl = avx2 ? SCAN_IMPL_AVX2 : SCAN_IMPL_SSE2;
	if (impl == SCAN_IMPL_AVX2 && !avx2)
		return -ENOTSUP;
	switch (impl) {
	case SCAN_IMPL_AVX2:
		data_skip = skip_avx2;
		find_eol = eol_avx2;
		break;
	case SCAN_IMPL_SSE2:
		data_skip = skip_sse2;
		find_eol = eol_sse2;
		break;
	default:
		data_skip = NULL;
		find_eol = eol_scalar;
		impl = SCAN_IMPL_SCALAR;
		break;
	}
#else
	if (impl == SCAN_IMPL_SSE2 || impl == SCAN_IMPL_AVX2)
		return -ENOTSUP;
	data_skip = NULL;
	find_eol = eol_scalar;
	impl = SCAN_IMPL_SCALAR;
#endif
	cur_impl = impl;
	return 0;
}

const char *scan_impl_name(void)
{
	static const char *const names[] = {"auto", "scalar", "sse2", "avx2"};

	return names[cur_impl];
}
