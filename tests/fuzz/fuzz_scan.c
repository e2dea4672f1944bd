/*
 * fuzz_scan.c - libFuzzer target: scanner + session, SIMD vs scalar
 *
 * Input layout: byte 0 picks the mode (DATA or command) and the read size
 * pattern; the rest is client data.  The same data is scanned with every
 * implementation the CPU has, split into reads of the chosen pattern, and
 * all results (events, lines, segments, counters) must agree; the session
 * core then consumes the data whole and byte by byte and must produce the
 * same replies.  Any difference aborts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sink/scan.h"
#include "sink/sess.h"

struct trace {
	uint64_t h; /* running hash of everything observable */
	size_t n;
};

static void mix(struct trace *t, const void *p, size_t n)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < n; i++)
		t->h = (t->h ^ b[i]) * 0x100000001b3ull;
	t->n += n;
}

static void run_scan(const uint8_t *d, size_t n, int data, unsigned pat, struct trace *t)
{
	struct scan_state st;
	char carry[128];
	size_t off = 0, step = 0;

	memset(t, 0, sizeof(*t));
	t->h = 0xcbf29ce484222325ull;
	scan_init(&st, carry, sizeof(carry));
	if (data)
		scan_begin_data(&st);
	while (off < n) {
		size_t len = 1 + ((pat >> (step++ % 8 * 4)) & 15) * 7;
		if (len > n - off)
			len = n - off;
		size_t p = 0;
		while (p < len) {
			enum scan_ev ev;
			size_t used;
			if (st.mode == SCAN_MODE_DATA) {
				struct scan_seg seg;
				used =
				    scan_data(&st, (const char *)d + off + p, len - p, &seg, &ev);
				mix(t, seg.p, seg.len);
			} else {
				struct scan_line l;
				used = scan_line(&st, (const char *)d + off + p, len - p, &l, &ev);
				if (ev == SCAN_EV_LINE) {
					mix(t, l.p, l.len);
					mix(t, &l.flags, sizeof(l.flags));
				}
			}
			mix(t, &used, sizeof(used));
			mix(t, &ev, sizeof(ev));
			p += used;
		}
		off += len;
	}
	mix(t, &st.ds, sizeof(st.ds));
	mix(t, &st.dstate, 1);
}

static void run_sess(const uint8_t *d, size_t n, size_t step, struct trace *t)
{
	struct sess_cfg cfg;
	struct sess s;
	struct sess_stats stats = {0};
	struct obuf out;
	uint64_t seq = 0;
	char carry[2048];
	size_t off = 0;

	sess_cfg_defaults(&cfg);
	cfg.max_size = 4096;
	cfg.max_rcpt = 3;
	obuf_init(&out);
	memset(t, 0, sizeof(*t));
	t->h = 0xcbf29ce484222325ull;
	sess_start(&s, &cfg, &stats, &out, carry, &seq, 0);
	sess_greet(&s);
	while (off < n && s.state != SESS_ST_CLOSING) {
		size_t len = step && step < n - off ? step : n - off;
		size_t done = 0;
		while (done < len && s.state != SESS_ST_CLOSING) {
			unsigned act;
			done += sess_feed(&s, (const char *)d + off + done, len - done, &act);
			mix(t, out.p + out.off, obuf_pending(&out));
			obuf_consume(&out, obuf_pending(&out));
		}
		off += len;
	}
	obuf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	static const enum scan_impl impls[] = {SCAN_IMPL_SCALAR, SCAN_IMPL_SSE2, SCAN_IMPL_AVX2};
	struct trace ref, got;
	unsigned pat;

	if (n < 5)
		return 0;
	pat = (unsigned)d[1] | (unsigned)d[2] << 8 | (unsigned)d[3] << 16 | (unsigned)d[4] << 24;
	for (int ii = 0; ii < 3; ii++) {
		if (scan_set_impl(impls[ii]))
			continue;
		run_scan(d + 5, n - 5, d[0] & 1, pat, ii ? &got : &ref);
		if (ii && (got.h != ref.h || got.n != ref.n))
			abort(); /* SIMD and scalar disagree */
	}
	scan_set_impl(SCAN_IMPL_AUTO);
	run_sess(d + 5, n - 5, 0, &ref);
	run_sess(d + 5, n - 5, 1 + (d[0] >> 1) % 13, &got);
	if (got.h != ref.h || got.n != ref.n)
		abort(); /* replies depend on read boundaries */
	return 0;
}
