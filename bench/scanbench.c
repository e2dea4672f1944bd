/*
 * scanbench.c - scanner throughput beside memchr over the same buffers
 *
 * DATA mode: 16 MiB bodies fed in 16 KiB reads (the server's receive buffer
 * size): plain text (72-octet lines), dot-heavy text (every third line
 * stuffed, dots inside lines) and 8-bit text.  Reported in GB/s per
 * implementation, next to memchr(buf, '\0') over the same bytes (pure
 * bandwidth: the byte never occurs) and a memchr('\n') line walk.
 * Command mode: lines/s for pipelined MAIL/RCPT/DATA lines.
 * Each figure is the median of 7 runs.  Not a test: numbers only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>

#include "sink/config.h"
#include "sink/scan.h"

#define BODY (16u << 20)
#define READ 16384u
#define REPS 7

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp);
	return v[n / 2];
}

static uint64_t seed = 88172645463325252ull;

static unsigned rnd(void)
{
	seed ^= seed << 13;
	seed ^= seed >> 7;
	seed ^= seed << 17;
	return (unsigned)seed;
}

/* fill - body of 72-octet lines; kind 0 plain, 1 dot-heavy, 2 8-bit,
 * 3 bare-LF line ends, 4 LF-dense (a bare LF every other octet: the worst
 * case for the SIMD skip, which finds nothing to skip). */
static void fill(char *b, size_t n, int kind)
{
	static const char words[] = "the quick brown fox jumps over the lazy dog 0123456789 ";
	size_t i = 0, line = 0;

	if (kind == 4) {
		for (i = 0; i < n; i++)
			b[i] = (i & 1) ? '\n' : 'x';
		return;
	}
	while (i + 74 <= n) {
		for (int k = 0; k < 72; k++) {
			char c;
			if (kind == 2)
				c = (rnd() % 4) ? (char)(0x80 + rnd() % 0x7f) : ' ';
			else
				c = words[rnd() % (sizeof(words) - 1)];
			if (kind == 1 && rnd() % 9 == 0)
				c = '.';
			b[i + (size_t)k] = c;
		}
		if (kind == 1 && line % 3 == 0)
			b[i] = b[i + 1] = '.'; /* a stuffed leading dot */
		if (b[i] == '.' && kind != 1)
			b[i] = 'x';
		i += 72;
		b[i++] = kind == 3 ? 'x' : '\r';
		b[i++] = '\n';
		line++;
	}
	while (i < n)
		b[i++] = 'x';
}

static double run_data(const char *b, size_t n, uint64_t *octets)
{
	struct scan_state st;
	double t0 = now();

	scan_init(&st, NULL, 2048);
	scan_begin_data(&st);
	for (size_t off = 0; off < n; off += READ) {
		size_t len = n - off < READ ? n - off : READ, p = 0;
		while (p < len) {
			struct scan_seg seg;
			enum scan_ev ev;
			p += scan_data(&st, b + off + p, len - p, &seg, &ev);
		}
	}
	*octets = st.ds.octets;
	return now() - t0;
}

static volatile size_t sink_lines;

static double run_memchr0(const char *b, size_t n)
{
	double t0 = now();

	for (size_t off = 0; off < n; off += READ) {
		size_t len = n - off < READ ? n - off : READ;
		if (memchr(b + off, 0, len))
			sink_lines++;
	}
	return now() - t0;
}

static double run_memchr_lines(const char *b, size_t n)
{
	double t0 = now();
	const char *p = b, *e = b + n;
	size_t lines = 0;

	while ((p = memchr(p, '\n', (size_t)(e - p))) != NULL) {
		lines++;
		p++;
	}
	sink_lines = lines;
	return now() - t0;
}

static double run_cmd(const char *b, size_t n, size_t *lines)
{
	struct scan_state st;
	char carry[2048];
	double t0 = now();
	size_t cnt = 0;

	scan_init(&st, carry, sizeof(carry));
	for (size_t off = 0; off < n; off += READ) {
		size_t len = n - off < READ ? n - off : READ, p = 0;
		while (p < len) {
			struct scan_line l;
			enum scan_ev ev;
			p += scan_line(&st, b + off + p, len - p, &l, &ev);
			cnt += ev == SCAN_EV_LINE;
		}
	}
	*lines = cnt;
	return now() - t0;
}

int main(void)
{
	static const char *kinds[] = {"plain text", "dot-heavy", "8-bit", "bare-LF", "LF-dense"};
	static const enum scan_impl impls[] = {SCAN_IMPL_SCALAR, SCAN_IMPL_SSE2, SCAN_IMPL_AVX2};
	char *b = malloc(BODY), cpu[128] = "?";
	struct utsname un;
	FILE *f = fopen("/proc/cpuinfo", "r");
	double t[REPS];

	if (!b)
		return 1;
	if (f) {
		char line[512];
		while (fgets(line, sizeof(line), f))
			if (!strncmp(line, "model name", 10)) {
				snprintf(cpu, sizeof(cpu), "%s", strchr(line, ':') + 2);
				cpu[strcspn(cpu, "\n")] = 0;
				break;
			}
		fclose(f);
	}
	uname(&un);
	printf("scanbench git %s, %s %s, cpu: %s, compiler: %s\n", SINK_GIT_REV, un.sysname,
	       un.release, cpu, __VERSION__);
	printf("DATA: %u MiB per run in %u-byte reads, median of %d runs\n", BODY >> 20, READ,
	       REPS);
	printf("%-11s %-8s %8s %10s\n", "body", "impl", "GB/s", "vs memchr");
	for (int k = 0; k < 5; k++) {
		double mc, ml;
		fill(b, BODY, k);
		for (int r = 0; r < REPS; r++)
			t[r] = run_memchr0(b, BODY);
		mc = (double)BODY / median(t, REPS) / 1e9;
		for (int r = 0; r < REPS; r++)
			t[r] = run_memchr_lines(b, BODY);
		ml = (double)BODY / median(t, REPS) / 1e9;
		printf("%-11s %-8s %8.2f %10s\n", kinds[k], "memchr", mc, "1.00");
		printf("%-11s %-8s %8.2f %10.2f\n", kinds[k], "memchr-ln", ml, ml / mc);
		for (size_t i = 0; i < sizeof(impls) / sizeof(impls[0]); i++) {
			uint64_t oct = 0;
			if (scan_set_impl(impls[i]))
				continue;
			for (int r = 0; r < REPS; r++)
				t[r] = run_data(b, BODY, &oct);
			double g = (double)BODY / median(t, REPS) / 1e9;
			printf("%-11s %-8s %8.2f %10.2f\n", kinds[k], scan_impl_name(), g, g / mc);
		}
	}
	/* command lines: a pipelined transaction, repeated */
	{
		static const char grp[] = "MAIL FROM:<sender@example.test> SIZE=1024\r\n"
		                          "RCPT TO:<rcpt-0001@example.test>\r\n"
		                          "RCPT TO:<rcpt-0002@example.test>\r\n"
		                          "DATA\r\n";
		size_t gl = sizeof(grp) - 1, n = 0, lines = 0;
		while (n + gl <= BODY) {
			memcpy(b + n, grp, gl);
			n += gl;
		}
		printf("\ncommand lines (%zu-octet group of 4, %u-byte reads)\n", gl, READ);
		for (size_t i = 0; i < sizeof(impls) / sizeof(impls[0]); i++) {
			if (scan_set_impl(impls[i]))
				continue;
			for (int r = 0; r < REPS; r++)
				t[r] = run_cmd(b, n, &lines);
			double sec = median(t, REPS);
			printf("%-8s %8.1f M lines/s  %6.2f GB/s\n", scan_impl_name(),
			       (double)lines / sec / 1e6, (double)n / sec / 1e9);
		}
		for (int r = 0; r < REPS; r++)
			t[r] = run_memchr_lines(b, n);
		printf("%-8s %8.1f M lines/s  %6.2f GB/s\n", "memchr",
		       (double)(n / gl * 4) / median(t, REPS) / 1e6,
		       (double)n / median(t, REPS) / 1e9);
	}
	free(b);
	return 0;
}
