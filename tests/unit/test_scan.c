/*
 * test_scan.c - the scanner against an independent whole-buffer reference
 *
 * The reference model below works on the complete input at once (string
 * searches, no state machine), so it shares no logic with scan.c.  Every
 * vector is fed whole, split in two at every offset and byte by byte, under
 * every implementation the CPU has; random inputs rich in CR, LF and dots
 * are compared the same way (scalar vs SIMD vs reference); a guard page
 * after the input catches SIMD over-reads.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "sink/scan.h"

#if defined(__SANITIZE_ADDRESS__)
#define RANDOM_BUFFERS 200000 /* ASan build: same code, fewer rounds */
#else
#define RANDOM_BUFFERS 1000000
#endif

static const enum scan_impl impls[] = {SCAN_IMPL_SCALAR, SCAN_IMPL_SSE2, SCAN_IMPL_AVX2};

/* --- DATA reference -------------------------------------------------------- */

struct dres {
	char *content;
	size_t clen;
	long eod_end; /* input offset just past the terminator, -1 if none */
	struct scan_data_stats ds;
	unsigned dstate; /* only compared between implementations */
};

static int is_crlf_before(const char *in, size_t k)
{
	/* the state after 354 counts as "after CRLF" */
	return k == 0 || (k >= 2 && in[k - 2] == '\r' && in[k - 1] == '\n');
}

static void data_reference(const char *in, size_t n, struct dres *r)
{
	size_t end = n; /* transmitted octets that belong to the message */

	memset(r, 0, sizeof(*r));
	r->eod_end = -1;
	for (size_t k = 0; k + 3 <= n; k++) {
		if (in[k] == '.' && in[k + 1] == '\r' && in[k + 2] == '\n' &&
		    is_crlf_before(in, k)) {
			r->eod_end = (long)k + 3;
			end = k;
			break;
		}
	}
	r->content = malloc(n + 1);
	size_t line_start = 0;
	for (size_t k = 0; k < end; k++) {
		char c = in[k];
		if (c == '.' && is_crlf_before(in, k)) {
			/* counted once the next octet decides (".\r" waits for one more) */
			if ((k + 1 < end && in[k + 1] != '\r') || k + 2 < end)
				r->ds.stuffed++;
			continue; /* leading dot: never content */
		}
		if (c == '\r' && r->eod_end < 0 && k == end - 1 && k >= 1 && in[k - 1] == '.' &&
		    is_crlf_before(in, k - 1))
			continue; /* ".\r" at the very end: held, undecided */
		r->content[r->clen++] = c;
		if (c == '\n') {
			r->ds.lines++;
			if (k == 0 || in[k - 1] != '\r')
				r->ds.bare_lf++;
			if (k + 1 - line_start > 1000)
				r->ds.long_lines++;
			line_start = k + 1;
		}
		if (c == '\r' && k + 1 < end && in[k + 1] != '\n')
			r->ds.bare_cr++;
	}
	r->ds.octets = r->clen;
}

/* feed_data - cuts[] are ascending split offsets (ncut of them), or step>0
 * feeds step octets per call; stops at EOD. */
static void feed_data(const char *in, size_t n, const size_t *cuts, size_t ncut, size_t step,
                      struct dres *r)
{
	struct scan_state st;
	size_t off = 0, ci = 0;

	memset(r, 0, sizeof(*r));
	r->content = malloc(n + 1);
	r->eod_end = -1;
	scan_init(&st, NULL, 2048);
	scan_begin_data(&st);
	while (off < n) {
		size_t end = n;
		if (step)
			end = off + step < n ? off + step : n;
		else if (ci < ncut)
			end = cuts[ci++];
		while (off < end) {
			struct scan_seg seg;
			enum scan_ev ev;
			size_t used = scan_data(&st, in + off, end - off, &seg, &ev);
			cr_assert(used <= end - off);
			cr_assert(used > 0 || seg.len > 0, "no progress at %zu", off);
			memcpy(r->content + r->clen, seg.p, seg.len);
			r->clen += seg.len;
			off += used;
			if (ev == SCAN_EV_EOD) {
				cr_assert_eq(st.mode, SCAN_MODE_CMD);
				r->eod_end = (long)off;
				r->ds = st.ds;
				r->dstate = st.dstate;
				return;
			}
		}
	}
	r->ds = st.ds;
	r->dstate = st.dstate;
}

static void same_dres(const struct dres *a, const struct dres *b, const char *what)
{
	cr_assert_eq(a->eod_end, b->eod_end, "%s: eod %ld vs %ld", what, a->eod_end, b->eod_end);
	cr_assert_eq(a->clen, b->clen, "%s: content length %zu vs %zu", what, a->clen, b->clen);
	cr_assert(!memcmp(a->content, b->content, a->clen), "%s: content differs", what);
	cr_assert_eq(a->ds.octets, b->ds.octets, "%s: octets", what);
	cr_assert_eq(a->ds.lines, b->ds.lines, "%s: lines %llu vs %llu", what,
	             (unsigned long long)a->ds.lines, (unsigned long long)b->ds.lines);
	cr_assert_eq(a->ds.bare_lf, b->ds.bare_lf, "%s: bare_lf", what);
	cr_assert_eq(a->ds.bare_cr, b->ds.bare_cr, "%s: bare_cr %llu vs %llu", what,
	             (unsigned long long)a->ds.bare_cr, (unsigned long long)b->ds.bare_cr);
	cr_assert_eq(a->ds.long_lines, b->ds.long_lines, "%s: long_lines", what);
	cr_assert_eq(a->ds.stuffed, b->ds.stuffed, "%s: stuffed %llu vs %llu", what,
	             (unsigned long long)a->ds.stuffed, (unsigned long long)b->ds.stuffed);
}

/* check_data_all_ways - whole, every 2-split, byte by byte, every impl. */
static void check_data_all_ways(const char *in, size_t n)
{
	struct dres ref, got;

	data_reference(in, n, &ref);
	for (size_t ii = 0; ii < sizeof(impls) / sizeof(impls[0]); ii++) {
		if (scan_set_impl(impls[ii]))
			continue;
		feed_data(in, n, NULL, 0, 0, &got);
		same_dres(&ref, &got, scan_impl_name());
		free(got.content);
		feed_data(in, n, NULL, 0, 1, &got);
		same_dres(&ref, &got, "byte by byte");
		free(got.content);
		for (size_t k = 1; k < n; k++) {
			feed_data(in, n, &k, 1, 0, &got);
			same_dres(&ref, &got, "split");
			free(got.content);
		}
	}
	scan_set_impl(SCAN_IMPL_AUTO);
	free(ref.content);
}

#define S(x) x, sizeof(x) - 1

Test(scan_data, terminator_only_crlf_dot_crlf)
{
	struct dres r;

	data_reference(S("Subject: x\r\n\r\nbody\r\n.\r\nMAIL"), &r);
	cr_assert_eq(r.eod_end, 23);
	cr_assert_eq(r.clen, 20);
	free(r.content);
	check_data_all_ways(S("Subject: x\r\n\r\nbody\r\n.\r\nMAIL FROM:<a@b>\r\n"));
	check_data_all_ways(S(".\r\n"));     /* empty message */
	check_data_all_ways(S("\r\n.\r\n")); /* one empty line */
	check_data_all_ways(S("a\r\n.\r\n"));
}

Test(scan_data, smuggling_sequences_are_content)
{
	/* CVE-2023-51764 family: none of these may end DATA. */
	static const char *const smuggle[] = {
	    "a\n.\nMAIL FROM:<x@y>\r\n", /* <LF>.<LF> */
	    "a\r\n.\nRCPT TO:<x@y>\r\n", /* <CRLF>.<LF> */
	    "a\n.\r\nDATA\r\n",          /* <LF>.<CRLF> */
	    "a\r.\r\nQUIT\r\n",          /* <CR>.<CRLF> */
	    "a\r\n.\r\r\nx\r\n",         /* <CRLF>.<CR><CR><LF> */
	    "a\r.\r.\r\nb\r\n",          /* <CR>.<CR> */
	    "a\r\n\n.\r\nb\r\n",         /* dot after a bare LF line */
	};
	for (size_t i = 0; i < sizeof(smuggle) / sizeof(smuggle[0]); i++) {
		struct dres r;
		char buf[128];
		size_t n = strlen(smuggle[i]);
		memcpy(buf, smuggle[i], n);
		data_reference(buf, n, &r);
		cr_assert_eq(r.eod_end, -1, "reference ends on vector %zu", i);
		free(r.content);
		check_data_all_ways(buf, n);
		/* ... and the real terminator after it still works */
		memcpy(buf + n, "\r\n.\r\n", 5);
		data_reference(buf, n + 5, &r);
		cr_assert_eq(r.eod_end, (long)n + 5);
		free(r.content);
		check_data_all_ways(buf, n + 5);
	}
}

Test(scan_data, dot_stuffing_and_counts)
{
	struct dres r;

	data_reference(S("..\r\n...x\r\n.y\r\n. \r\n.\r\n"), &r);
	cr_assert_eq(r.clen, strlen(".\r\n..x\r\ny\r\n \r\n"));
	cr_assert(!memcmp(r.content, ".\r\n..x\r\ny\r\n \r\n", r.clen));
	cr_assert_eq(r.ds.stuffed, 4);
	cr_assert_eq(r.ds.lines, 4);
	free(r.content);
	check_data_all_ways(S("..\r\n...x\r\n.y\r\n. \r\n.\r\n"));
	/* ".\r" then x: dot stuffing removed, CR kept (bare) */
	check_data_all_ways(S("a\r\n.\rb\r\n.\r\n"));
	check_data_all_ways(S("line\nbare lf\r\nbare\rcr\r\n\r\r\n.\r\n"));
}

Test(scan_data, long_lines_counted_not_rejected)
{
	static char buf[4000];
	size_t n = 0;

	memset(buf, 'x', 999);
	n = 998;
	memcpy(buf + n, "\r\n", 2); /* 1000 octets: fine */
	n += 2;
	memset(buf + n, 'y', 999); /* 1001 octets: long */
	n += 999;
	memcpy(buf + n, "\r\n", 2);
	n += 2;
	memset(buf + n, 'z', 1500);
	n += 1500;
	memcpy(buf + n, "\n.\r\n", 4);
	n += 4;
	struct dres r;
	data_reference(buf, n, &r);
	cr_assert_eq(r.ds.long_lines, 2);
	free(r.content);
	check_data_all_ways(buf, n);
}

Test(scan_data, held_cr_across_reads)
{
	struct scan_state st;
	struct scan_seg seg;
	enum scan_ev ev;

	scan_init(&st, NULL, 2048);
	scan_begin_data(&st);
	/* the call stops after the leading dot, handing out "a\r\n" */
	cr_assert_eq(scan_data(&st, S("a\r\n.\r"), &seg, &ev), 4);
	cr_assert_eq(seg.len, 3);
	cr_assert_eq(scan_data(&st, S("\r"), &seg, &ev), 1);
	cr_assert_eq(seg.len, 0); /* the CR is held: ".\r" may still end the data */
	cr_assert_eq(scan_data(&st, S("x"), &seg, &ev), 0);
	cr_assert_eq(seg.len, 1);
	cr_assert_eq(seg.p[0], '\r');
	cr_assert_eq(scan_data(&st, S("x\r\n.\r\n"), &seg, &ev), 4); /* stops at the dot */
	cr_assert_eq(seg.len, 3);
	cr_assert_eq(scan_data(&st, S("\r\n"), &seg, &ev), 2);
	cr_assert_eq(ev, SCAN_EV_EOD);
	cr_assert_eq(st.ds.octets, 3 + 1 + 3);
	cr_assert_eq(st.ds.bare_cr, 1);
}

/* --- CMD reference ------------------------------------------------------- */

#define MAXL 520 /* lines per input: inputs are at most 512 octets */
#define MAXT 80  /* octets per stored line: every line limit used here is lower */

struct lines {
	int n;
	int ev[MAXL];
	unsigned flags[MAXL];
	char text[MAXL][MAXT];
	size_t len[MAXL];
};

static void cmd_reference(const char *in, size_t n, uint32_t line_max, struct lines *L)
{
	size_t start = 0;

	memset(L, 0, sizeof(*L));
	for (size_t k = 0; k < n; k++) {
		if (in[k] != '\n')
			continue;
		size_t total = k + 1 - start, clen = k - start;
		unsigned fl = 0;
		cr_assert(L->n < MAXL);
		if (clen && in[k - 1] == '\r')
			clen--;
		else
			fl |= SCAN_LINE_BARE_LF;
		if (memchr(in + start, '\r', clen))
			fl |= SCAN_LINE_BARE_CR;
		if (total > line_max) {
			L->ev[L->n] = SCAN_EV_TOO_LONG;
		} else {
			L->ev[L->n] = SCAN_EV_LINE;
			cr_assert(clen < MAXT);
			if (memchr(in + start, 0, clen))
				fl |= SCAN_LINE_NUL;
			memcpy(L->text[L->n], in + start, clen);
			L->len[L->n] = clen;
		}
		L->flags[L->n] = fl;
		L->n++;
		start = k + 1;
	}
}

static void feed_cmd(const char *in, size_t n, uint32_t line_max, const size_t *cuts, size_t ncut,
                     size_t step, struct lines *L)
{
	struct scan_state st;
	char *carry = malloc(line_max);
	size_t off = 0, ci = 0;

	memset(L, 0, sizeof(*L));
	scan_init(&st, carry, line_max);
	while (off < n) {
		size_t end = n;
		if (step)
			end = off + step < n ? off + step : n;
		else if (ci < ncut)
			end = cuts[ci++];
		/* a private copy per read: a view kept too long is a use after free */
		char *piece = malloc(end - off);
		memcpy(piece, in + off, end - off);
		size_t p = 0;
		while (p < end - off) {
			struct scan_line l;
			enum scan_ev ev;
			size_t used = scan_line(&st, piece + p, end - off - p, &l, &ev);
			cr_assert(used > 0);
			p += used;
			if (ev == SCAN_EV_NONE)
				continue;
			cr_assert(L->n < MAXL);
			L->ev[L->n] = ev;
			if (ev == SCAN_EV_LINE) {
				cr_assert(l.len < MAXT);
				L->flags[L->n] = l.flags;
				memcpy(L->text[L->n], l.p, l.len);
				L->len[L->n] = l.len;
			} else {
				/* flags of an over-long line are not meaningful */
				L->flags[L->n] = 0;
			}
			L->n++;
		}
		free(piece);
		off = end;
	}
	free(carry);
}

static void same_lines(const struct lines *a, const struct lines *b, const char *what)
{
	cr_assert_eq(a->n, b->n, "%s: %d vs %d lines", what, a->n, b->n);
	for (int i = 0; i < a->n; i++) {
		cr_assert_eq(a->ev[i], b->ev[i], "%s: line %d event", what, i);
		if (a->ev[i] != SCAN_EV_LINE)
			continue;
		cr_assert_eq(a->flags[i], b->flags[i], "%s: line %d flags %u vs %u", what, i,
		             a->flags[i], b->flags[i]);
		cr_assert_eq(a->len[i], b->len[i], "%s: line %d length", what, i);
		cr_assert(!memcmp(a->text[i], b->text[i], a->len[i]), "%s: line %d text", what, i);
	}
}

static void check_cmd_all_ways(const char *in, size_t n, uint32_t line_max)
{
	static struct lines ref, got;

	cmd_reference(in, n, line_max, &ref);
	for (size_t ii = 0; ii < sizeof(impls) / sizeof(impls[0]); ii++) {
		if (scan_set_impl(impls[ii]))
			continue;
		feed_cmd(in, n, line_max, NULL, 0, 0, &got);
		same_lines(&ref, &got, "whole");
		feed_cmd(in, n, line_max, NULL, 0, 1, &got);
		same_lines(&ref, &got, "byte by byte");
		for (size_t k = 1; k < n; k++) {
			feed_cmd(in, n, line_max, &k, 1, 0, &got);
			same_lines(&ref, &got, "split");
		}
	}
	scan_set_impl(SCAN_IMPL_AUTO);
}

Test(scan_cmd, lines_and_flags)
{
	static struct lines r;

	cmd_reference(S("EHLO a\r\nNOOP\nX\rY\r\n\r\nNO\0OP\r\npartial"), 64, &r);
	cr_assert_eq(r.n, 5);
	cr_assert_eq(r.flags[1], SCAN_LINE_BARE_LF);
	cr_assert_eq(r.flags[2], SCAN_LINE_BARE_CR);
	cr_assert_eq(r.flags[4], SCAN_LINE_NUL);
	check_cmd_all_ways(S("EHLO a\r\nNOOP\nX\rY\r\n\r\nNO\0OP\r\npartial"), 64);
	check_cmd_all_ways(S("MAIL FROM:<a@b>\r\r\nRCPT\r\r\r\nQUIT\r\n\r"), 64);
}

Test(scan_cmd, long_lines_resync)
{
	char buf[300];
	size_t n = 0;

	memcpy(buf, "NOOP ", 5);
	n = 5;
	memset(buf + n, 'x', 200);
	n += 200;
	memcpy(buf + n, "\r\nRSET\r\n", 8);
	n += 8;
	static struct lines r;
	cmd_reference(buf, n, 64, &r);
	cr_assert_eq(r.n, 2);
	cr_assert_eq(r.ev[0], SCAN_EV_TOO_LONG);
	cr_assert_eq(r.ev[1], SCAN_EV_LINE);
	check_cmd_all_ways(buf, n, 64);
	/* exactly at the limit: 62 + CRLF = 64 is fine, 63 + CRLF is not */
	memset(buf, 'a', 62);
	memcpy(buf + 62, "\r\n", 2);
	memset(buf + 64, 'b', 63);
	memcpy(buf + 127, "\r\n", 2);
	cmd_reference(buf, 129, 64, &r);
	cr_assert_eq(r.ev[0], SCAN_EV_LINE);
	cr_assert_eq(r.ev[1], SCAN_EV_TOO_LONG);
	check_cmd_all_ways(buf, 129, 64);
}

Test(scan_cmd, zero_copy_when_line_fits)
{
	struct scan_state st;
	struct scan_line l;
	enum scan_ev ev;
	char carry[64];
	const char *in = "NOOP\r\nQUIT\r\n";

	scan_init(&st, carry, sizeof(carry));
	cr_assert_eq(scan_line(&st, in, 12, &l, &ev), 6);
	cr_assert_eq(l.p, in); /* a view, not a copy */
	cr_assert_eq(scan_line(&st, in + 6, 3, &l, &ev), 3);
	cr_assert_eq(ev, SCAN_EV_NONE);
	cr_assert_eq(scan_line(&st, in + 9, 3, &l, &ev), 3);
	cr_assert_eq(l.p, carry); /* straddling: copied once */
	cr_assert_eq(l.len, 4);
}

Test(scan_bdat, exact_octets)
{
	struct scan_state st;
	struct scan_seg seg;
	enum scan_ev ev;

	scan_init(&st, NULL, 64);
	scan_begin_bdat(&st, 10);
	cr_assert_eq(scan_bdat(&st, S("0123456"), &seg, &ev), 7);
	cr_assert_eq(ev, SCAN_EV_NONE);
	cr_assert_eq(scan_bdat(&st, S("789MAIL"), &seg, &ev), 3);
	cr_assert_eq(ev, SCAN_EV_BDAT_DONE);
	cr_assert_eq(seg.len, 3);
	cr_assert_eq(st.mode, SCAN_MODE_CMD);
}

/* --- random differential ---------------------------------------------------- */

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* rich_input - text with many CR, LF, dots and the odd long run. */
static size_t rich_input(char *buf, size_t max)
{
	static const char alpha[] = "\r\n\r\n..\r\n.ab\r\n\r\nxyz \t\n\r.";
	size_t n = rnd() % max;

	for (size_t i = 0; i < n; i++) {
		uint64_t r = rnd();
		if ((r & 63) == 0 && i + 80 < n) { /* a clean stretch for the SIMD skip */
			for (int k = 0; k < 70; k++)
				buf[i + (size_t)k] = (char)('a' + (r >> 8) % 26);
			i += 69;
			continue;
		}
		buf[i] = alpha[(r >> 8) % (sizeof(alpha) - 1)];
	}
	return n;
}

Test(scan_random, simd_equals_scalar_equals_reference, .timeout = 240)
{
	static char buf[512];

	for (int round = 0; round < RANDOM_BUFFERS; round++) {
		size_t n = rich_input(buf, round % 10 == 0 ? sizeof(buf) : 160);
		size_t cuts[3] = {rnd() % (n + 1), rnd() % (n + 1), rnd() % (n + 1)};
		struct dres ref, got;

		for (int a = 0; a < 3; a++) /* ascending */
			for (int b = a + 1; b < 3; b++)
				if (cuts[b] < cuts[a]) {
					size_t t = cuts[a];
					cuts[a] = cuts[b];
					cuts[b] = t;
				}
		data_reference(buf, n, &ref);
		for (size_t ii = 0; ii < sizeof(impls) / sizeof(impls[0]); ii++) {
			if (scan_set_impl(impls[ii]))
				continue;
			feed_data(buf, n, cuts, 3, 0, &got);
			same_dres(&ref, &got, scan_impl_name());
			free(got.content);
		}
		free(ref.content);
		if (round % 8 == 0) {
			static struct lines lref, lgot;
			cmd_reference(buf, n, 48, &lref);
			for (size_t ii = 0; ii < sizeof(impls) / sizeof(impls[0]); ii++) {
				if (scan_set_impl(impls[ii]))
					continue;
				feed_cmd(buf, n, 48, cuts, 3, 0, &lgot);
				same_lines(&lref, &lgot, scan_impl_name());
			}
		}
	}
	scan_set_impl(SCAN_IMPL_AUTO);
}

/* Input placed right before a PROT_NONE page: any read past the end
 * faults (picohttpparser's test trick). */
Test(scan_guard, no_overread)
{
	long pg = sysconf(_SC_PAGESIZE);
	char *mem =
	    mmap(NULL, (size_t)pg * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	cr_assert_neq(mem, MAP_FAILED);
	cr_assert_eq(mprotect(mem + pg, (size_t)pg, PROT_NONE), 0);
	for (size_t n = 0; n <= 256; n++) {
		char *in = mem + pg - n;
		for (size_t k = 0; k < n; k++)
			in[k] = (k % 70 == 69) ? '\n' : (k % 70 == 68) ? '\r' : 'q';
		for (size_t ii = 0; ii < sizeof(impls) / sizeof(impls[0]); ii++) {
			struct dres got;
			static struct lines lg;
			if (scan_set_impl(impls[ii]))
				continue;
			feed_data(in, n, NULL, 0, 0, &got);
			free(got.content);
			feed_cmd(in, n, 2048, NULL, 0, 0, &lg);
		}
	}
	scan_set_impl(SCAN_IMPL_AUTO);
	munmap(mem, (size_t)pg * 2);
}
