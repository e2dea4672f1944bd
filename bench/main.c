/*
 * main.c - smtpbench: an SMTP load generator that reports numbers people can
 * trust.
 *
 *   smtpbench --target 127.0.0.1:2525 --sessions 1000 --messages 100k --size 1k
 *   smtpbench --target HOST:PORT --rate 5000 --duration 30s      (open loop)
 *   smtpbench merge run1.json run2.json ...
 *
 * Bodies are built and dot-stuffed once at start and shared read-only by all
 * threads; each message carries an integrity stamp (stamp.h) that
 * `smtpsink --verify` checks.  Every run ends: by count or duration, by
 * sessions giving up after --max-attempts failed connections, by the
 * no-progress watchdog below, or at once on SIGINT/SIGTERM.  Exit status:
 * 0 when every message was delivered, 1 when anything failed or the run
 * ended early, 2 on a usage error.  With --retry a transient failure is
 * tried again later (loop.c) and counts against the run only when the
 * message's last attempt fails.
 *
 * TLS (--starttls, --tls) and AUTH (--auth-user/--auth-pass) are options of
 * the client core and the TLS layer (tls.c); the password is never printed
 * and never written to the report: the command line in the JSON shows it
 * as "***".  --proxy puts a PROXY header before all of it (loop.c).
 *
 * Many hosts (segment.h): --segment I/N makes this instance one of N that
 * together are one run - its share of the sessions, messages and rates, its
 * own stamp sequence numbers, the run id all instances derive from
 * --start-at and N - and --start-at holds it, set up and connected to
 * nothing, until that wall-clock time, so all instances start together.
 */
#include <errno.h>
#include <getopt.h>
#include <arpa/inet.h>
#include <math.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "sink/addr.h"
#include "sink/config.h"
#include "sink/segment.h"
#include "sink/units.h"
#include "sink/uring.h"

__attribute__((format(printf, 1, 2), noreturn)) static void usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "smtpbench: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'smtpbench --help'.\n");
	exit(2);
}

static void usage(void)
{
	printf(
	    "Usage: smtpbench --target HOST:PORT [OPTION]...\n"
	    "       smtpbench merge [--json OUT] [--csv OUT] FILE.json|FILE.jsonl|-...\n"
	    "SMTP load generator: many concurrent sessions, honest latency.\n\n"
	    "  -t, --target HOST:PORT   server (repeatable: sessions spread over targets)\n"
	    "  -c, --sessions N         concurrent sessions [10]\n"
	    "  -T, --threads N          event-loop threads [online CPUs]\n"
	    "  -m, --messages N         messages in total (default 1000 unless --duration)\n"
	    "  -d, --duration DUR       run this long instead, e.g. 30s\n"
	    "      --warmup DUR         not measured: first DUR of the run [0]\n"
	    "      --msgs-per-session N QUIT and reconnect after N messages; 0 = reuse [0]\n"
	    "  -r, --rcpts N            recipients per message [1]\n"
	    "  -s, --size SIZE|MIX      body size, or weighted mix like 1k:60,10k:30,100k:10 [1k]\n"
	    "      --from TPL           envelope sender, {n} = message number "
	    "[bench{n}@client.test]\n"
	    "      --to TPL             recipients, {n} message, {r} recipient "
	    "[rcpt{r}@server.test]\n"
	    "      --ehlo NAME          EHLO name [client.test]; --helo sends HELO instead\n"
	    "      --pipelining auto|on|off  RFC 2920 when advertised (auto) [auto]\n"
	    "      --bdat               use BDAT (RFC 3030 CHUNKING) instead of DATA\n"
	    "      --depth N            up to N messages in flight per session [1]: BDAT\n"
	    "                           transactions back to back, or with DATA the next\n"
	    "                           envelope behind each content (at most 2); needs\n"
	    "                           PIPELINING\n"
	    "      --starttls           STARTTLS (RFC 3207) before anything else; a server\n"
	    "                           that does not offer it fails the session\n"
	    "      --tls                implicit TLS from the first octet (RFC 8314, port 465)\n"
	    "      --tls-verify         verify the server certificate and name [off]\n"
	    "      --tls-ca FILE        CA certificates (PEM) to verify with; implies\n"
	    "                           --tls-verify [system store]\n"
	    "      --tls-resume         resume TLS sessions when a session slot reconnects\n"
	    "      --auth-user TPL      AUTH (RFC 4954) as this user, {s} = session number\n"
	    "      --auth-pass TPL      its password, {s} = session number\n"
	    "      --auth-mech PLAIN|LOGIN  mechanism [first of PLAIN, LOGIN offered]\n"
	    "  -R, --rate R             open loop: R messages/s in total, latency from the\n"
	    "                           intended send time (no coordinated omission)\n"
	    "      --connect-rate R     connections per second, first and re-connects\n"
	    "                           [unlimited]\n"
	    "      --timeout DUR        per reply and per connect [30s]; the run stops\n"
	    "                           when failures go on 3 x DUR without progress\n"
	    "      --max-attempts N     consecutive failed connections before a session\n"
	    "                           gives up [5]\n"
	    "      --retry N            send a message again after a transient failure\n"
	    "                           (4xx, dropped, timeout), at most N more times [0]\n"
	    "      --retry-delay DUR    wait before a retry; the session sends other mail\n"
	    "                           meanwhile [1s]\n"
	    "      --retry-queue N      messages waiting for a retry, all threads\n"
	    "                           [sessions x 256, at least 65536 a thread]\n"
	    "      --bind ADDR[,ADDR]   source addresses (127.x) to spread ephemeral ports\n"
	    "      --proxy v1|v2        send a PROXY protocol header first on every\n"
	    "                           connection (before the greeting and TLS)\n"
	    "      --proxy-source ADDR[:PORT]  the client address it claims [each\n"
	    "                           connection's own address and port]\n"
	    "      --segment I/N        instance I of N that together are one run: its\n"
	    "                           share of sessions, messages and rates (all\n"
	    "                           totals); needs --start-at\n"
	    "      --start-at TIME      set up, then wait until TIME (RFC 3339 such as\n"
	    "                           2026-11-30T01:00:00Z, or Unix seconds) to start\n"
	    "      --io auto|uring|epoll  event backend; auto falls back to epoll [auto]\n"
	    "  -j, --json FILE          full report with raw histogram counts (docs/json.md)\n"
	    "      --interval-log FILE  per-interval latency histograms and counts, aligned\n"
	    "                           to wall-clock multiples of --interval, JSON Lines\n"
	    "                           (docs/json.md), for merge across hosts\n"
	    "      --interval DUR       its interval, 100ms to 1h in whole ms [1s]\n"
	    "  -q, --quiet              no live line\n"
	    "  -V, --version, -h, --help\n\n"
	    "merge adds the counts of reports and/or interval logs (never percentiles);\n"
	    "--csv OUT writes one row per aligned interval (start, msgs/s, p50, p99,\n"
	    "max, inputs).\n\n"
	    "Exit status: 0 all delivered, 1 any failure, early end or signal, 2 usage\n"
	    "error (merge: unreadable or incompatible report or interval log).\n");
}

static void add_target(struct bench_cfg *c, const char *arg)
{
	char err[128], *host = c->target_host[c->ntargets];
	const char *colon = strrchr(arg, ':');
	struct in6_addr a6;

	if (c->ntargets == BENCH_MAX_TARGETS)
		usage_error("too many --target (max %d)", BENCH_MAX_TARGETS);
	if (addr_parse(arg, 0, &c->target[c->ntargets], &c->target_len[c->ntargets], err,
	               sizeof(err)))
		usage_error("invalid --target '%s': %s", arg, err);
	/* the host as written, for SNI and certificate name checks: a name,
	 * or an address literal (RFC 6066 3: never sent as SNI) */
	if (arg[0] == '[') {
		size_t n = strcspn(arg + 1, "]");
		snprintf(host, sizeof(c->target_host[0]), "%.*s", (int)n, arg + 1);
	} else {
		size_t n = colon ? (size_t)(colon - arg) : strlen(arg);
		snprintf(host, sizeof(c->target_host[0]), "%.*s", (int)n, arg);
	}
	c->target_ip[c->ntargets] =
	    inet_pton(AF_INET, host, &a6) == 1 || inet_pton(AF_INET6, host, &a6) == 1;
	c->ntargets++;
}

static void add_binds(struct bench_cfg *c, const char *arg)
{
	char buf[1024], *save = NULL;

	snprintf(buf, sizeof(buf), "%s", arg);
	for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		if (c->nbind == BENCH_MAX_BIND)
			usage_error("too many --bind addresses");
		struct sockaddr_in *a = &c->bind[c->nbind++];
		a->sin_family = AF_INET;
		if (inet_pton(AF_INET, t, &a->sin_addr) != 1)
			usage_error("invalid --bind address '%s'", t);
	}
}

/* parse_proxy_source - --proxy-source ADDR, ADDR:PORT, [IPv6] or
 * [IPv6]:PORT; numeric (the header carries addresses, not names).  A bare
 * IPv6 address has no port: its colons are its own. */
static void parse_proxy_source(struct bench_cfg *c, const char *arg)
{
	char buf[128], *host = buf, *port = NULL;

	if (strlen(arg) >= sizeof(buf))
		usage_error("invalid --proxy-source '%s'", arg);
	strcpy(buf, arg);
	if (buf[0] == '[') {
		char *e = strchr(buf, ']');
		if (!e || (e[1] && e[1] != ':'))
			usage_error("invalid --proxy-source '%s' (unbalanced [ ])", arg);
		*e = 0;
		host = buf + 1;
		if (e[1] == ':')
			port = e + 2;
	} else if (strchr(buf, ':') && strchr(buf, ':') == strrchr(buf, ':')) {
		port = strchr(buf, ':'); /* one colon: IPv4:PORT */
		*port++ = 0;
	}
	if (fault_ip_parse(host, &c->proxy_src))
		usage_error("invalid --proxy-source '%s' (a numeric IPv4 or IPv6 address, "
		            "ADDR:PORT or [IPv6]:PORT)",
		            arg);
	c->proxy_src_given = true;
	if (port) {
		unsigned long v = 0;
		if (!*port)
			usage_error("invalid --proxy-source '%s' (empty port)", arg);
		for (const char *q = port; *q; q++)
			if (*q < '0' || *q > '9' ||
			    (v = v * 10 + (unsigned long)(*q - '0')) > 65535)
				usage_error("invalid --proxy-source '%s' (port 0..65535)", arg);
		c->proxy_port = (uint16_t)v;
		c->proxy_port_given = true;
	}
}

static void parse_sizes(struct bench_cfg *c, const char *arg)
{
	char buf[512], *save = NULL;

	snprintf(buf, sizeof(buf), "%s", arg);
	c->nbodies = 0;
	c->weight_total = 0;
	for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		char *w = strchr(t, ':');
		uint64_t sz, wt = 1;
		if (w)
			*w++ = 0;
		if (units_parse_size(t, &sz) || sz > (256u << 20))
			usage_error("invalid --size '%s'", t);
		if (w && (units_parse_count(w, &wt) || wt == 0 || wt > 1000000))
			usage_error("invalid weight '%s' in --size", w);
		if (c->nbodies == BENCH_MAX_SIZES)
			usage_error("too many sizes in --size");
		c->bodies[c->nbodies].size = (uint32_t)sz;
		c->bodies[c->nbodies++].weight = (uint32_t)wt;
		c->weight_total += (uint32_t)wt;
	}
	if (!c->nbodies)
		usage_error("invalid --size '%s'", arg);
}

/* build_body - message content after the stamp line: a few headers, then
 * 76-octet lines; every 20th line starts with a dot so dot-stuffing is
 * exercised (RFC 5321 4.5.2).  raw is exactly what the server must hand to
 * its verifier after unstuffing, and the stamp hash covers exactly raw.
 *
 * DATA content ends with CRLF: the CRLF before the terminating "." belongs
 * to the content (RFC 5321 4.1.1.4).  So size 0 sends the stamp line and
 * "." at once (the stamp's own CRLF starts the terminator), and size 1 -
 * which cannot end with CRLF - is sent as 2 octets (an empty line). */
static void build_body(struct body *b)
{
	static const char hdr[] = "From: smtpbench <bench@client.test>\r\n"
	                          "To: sink <sink@server.test>\r\nSubject: smtpbench\r\n\r\n";
	size_t n, k = 0, line = 0;
	char *raw, *w;
	struct stamp_hash h;

	if (b->size == 1)
		b->size = 2;
	n = b->size;
	raw = malloc(n + 1);
	if (!raw)
		exit(1);
	while (k < n) {
		if (k < sizeof(hdr) - 1) {
			size_t m = sizeof(hdr) - 1 - k < n - k ? sizeof(hdr) - 1 - k : n - k;
			memcpy(raw + k, hdr + k, m);
			k += m;
			continue;
		}
		size_t m = n - k;
		if (m > 78)
			m = 78;
		for (size_t i = 0; i < m; i++)
			raw[k + i] = (char)('a' + (line * 7 + i) % 26);
		if (m >= 2) {
			raw[k + m - 2] = '\r';
			raw[k + m - 1] = '\n';
		}
		if (line % 20 == 0)
			raw[k] = '.';
		k += m;
		line++;
	}
	if (n >= 2) {
		raw[n - 2] = '\r';
		raw[n - 1] = '\n';
	}
	b->raw = raw;
	stamp_hash_init(&h);
	stamp_hash_feed(&h, raw, n);
	b->hash = stamp_hash_final(&h);
	/* stuffed wire form: double a dot at each line start, then ".\r\n";
	 * the stamp line before raw ends in CRLF, so raw starts a line */
	w = malloc(n + n / 2 + 8);
	if (!w)
		exit(1);
	k = 0;
	for (size_t i = 0; i < n; i++) {
		if (raw[i] == '.' &&
		    (i == 0 || (i >= 2 && raw[i - 2] == '\r' && raw[i - 1] == '\n')))
			w[k++] = '.';
		w[k++] = raw[i];
	}
	memcpy(w + k, ".\r\n", 3);
	b->wire = w;
	b->wire_len = k + 3;
}

static struct bench B;

/* wall_now - CLOCK_REALTIME in ns since the epoch (--start-at, the report). */
static uint64_t wall_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* fmt_time - ns since the epoch as RFC 3339 UTC with milliseconds. */
static void fmt_time(uint64_t ns, char *out, size_t n)
{
	time_t sec = (time_t)(ns / 1000000000ull);
	struct tm tm;
	size_t k;

	gmtime_r(&sec, &tm);
	k = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + k, n - k, ".%03uZ", (unsigned)(ns % 1000000000ull / 1000000ull));
}

/* start_at_late - a --start-at more than 1 s past is a mistake (a stale
 * command line, a host clock off): the instances would not start together,
 * so it is refused rather than started late. */
static void start_at_late(const struct bench_cfg *c)
{
	uint64_t now = wall_now();

	if (c->start_at_given && now > c->start_at_ns + 1000000000ull)
		usage_error("--start-at is %.1f s in the past",
		            (double)(now - c->start_at_ns) / 1e9);
}

/* wait_start - hold until --start-at (wall clock).  Signals stay blocked and
 * are taken here: SIGINT/SIGTERM while waiting stops the run before any
 * connection.  The last 200 ms are one absolute sleep on CLOCK_REALTIME, so
 * the instances' starts differ by their clocks' offsets, not by slices. */
static void wait_start(const struct bench_cfg *c, const sigset_t *set)
{
	char when[40];
	uint64_t now = wall_now();

	if (now >= c->start_at_ns)
		return;
	fmt_time(c->start_at_ns, when, sizeof(when));
	if (c->segmented)
		fprintf(stderr, "smtpbench: segment %u/%u waiting %.1f s for --start-at %s\n",
		        c->seg_index, c->seg_count, (double)(c->start_at_ns - now) / 1e9, when);
	else
		fprintf(stderr, "smtpbench: waiting %.1f s for --start-at %s\n",
		        (double)(c->start_at_ns - now) / 1e9, when);
	while ((now = wall_now()) + 200000000ull < c->start_at_ns) {
		uint64_t d = c->start_at_ns - now - 200000000ull;
		if (d > 1000000000ull)
			d = 1000000000ull;
		struct timespec ts = {(time_t)(d / 1000000000ull), (long)(d % 1000000000ull)};
		int sig = sigtimedwait(set, NULL, &ts);
		if (sig > 0) {
			snprintf(B.stop_reason, sizeof(B.stop_reason),
			         "interrupted by %s while waiting for --start-at",
			         sig == SIGINT ? "SIGINT" : "SIGTERM");
			atomic_store(&B.stop, 1);
			return;
		}
	}
	struct timespec at = {(time_t)(c->start_at_ns / 1000000000ull),
	                      (long)(c->start_at_ns % 1000000000ull)};
	while (clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &at, NULL) == EINTR)
		;
}

/* retry_cap - entries of thread t's retry queue: its share of
 * --retry-queue, or 256 per session and at least 65536 (32 octets each,
 * and only the part in use is ever touched).  With --messages a
 * thread never has more messages waiting than it starts, so the default
 * never needs more than its quota: then the queue cannot be full. */
static uint32_t retry_cap(const struct bench_cfg *c, const struct bench_thread *t)
{
	uint64_t n;

	if (c->retry_queue)
		return (uint32_t)(c->retry_queue / (uint64_t)c->threads +
		                  ((uint64_t)t->id < c->retry_queue % (uint64_t)c->threads));
	n = (uint64_t)t->nsess * 256;
	if (n < 65536)
		n = 65536;
	if (c->messages && t->quota < n)
		n = t->quota ? t->quota : 1;
	return n > (1u << 28) ? 1u << 28 : (uint32_t)n;
}

static void *thread_main(void *arg)
{
	struct bench_thread *t = arg;

	bench_run(t);
	return NULL;
}

static double cpu_now(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* join_argv - the command line for the report, unbounded (a long --to
 * must not be cut); report.c makes it valid UTF-8 for JSON.  The password
 * (secret: the optarg getopt gave for --auth-pass, a pointer into argv,
 * as its own argument or after "=") is shown as "***". */
static char *join_argv(int argc, char **argv, const char *secret)
{
	size_t n = 4;
	char *p;

	for (int i = 0; i < argc; i++)
		n += strlen(argv[i]) + 4;
	p = malloc(n);
	if (!p)
		exit(1);
	p[0] = 0;
	for (int i = 0, k = 0; i < argc; i++) {
		const char *a = argv[i];
		size_t len = strlen(a);
		k += sprintf(p + k, "%s", i ? " " : "");
		if (secret && secret >= a && secret <= a + len) {
			k += sprintf(p + k, "%.*s***", (int)(secret - a), a);
			continue;
		}
		k += sprintf(p + k, "%s", a);
	}
	return p;
}

/* watchdog - the global no-progress deadline.  Failures that go on for
 * stall_ns with no definite message reply anywhere stop the run.  The
 * stall starts at the last progress or, if later, one --timeout before
 * the first failure since (that failure's work began at most then), so an
 * open-loop run that is merely idle between slots is never stopped. */
static bool watchdog(uint64_t now)
{
	const struct bench_cfg *c = &B.cfg;
	uint64_t p = B.t0_ns, s = 0;

	for (int i = 0; i < c->threads; i++) {
		uint64_t lp = __atomic_load_n(&B.th[i].live.last_progress_ns, __ATOMIC_RELAXED);
		uint64_t ss = __atomic_load_n(&B.th[i].live.stall_since_ns, __ATOMIC_RELAXED);
		if (lp > p)
			p = lp;
		if (ss && (!s || ss < s))
			s = ss;
	}
	if (!s)
		return false;
	uint64_t from = s > c->timeout_ns && s - c->timeout_ns > p ? s - c->timeout_ns : p;
	if (now < from + c->stall_ns)
		return false;
	snprintf(B.stop_reason, sizeof(B.stop_reason),
	         "no progress for %.1f s (3 x --timeout) while connections or messages failed",
	         (double)(now - from) / 1e9);
	return true;
}

int main(int argc, char **argv)
{
	enum {
		O_INTERVAL_LOG = 200, /* --interval-log, --interval */
		O_INTERVAL,
		O_WARMUP = 256,
		O_MPS,
		O_FROM,
		O_TO,
		O_EHLO,
		O_HELO,
		O_PIPE,
		O_BDAT,
		O_DEPTH,
		O_CRATE,
		O_TIMEOUT,
		O_ATTEMPTS,
		O_BIND,
		O_IO,
		O_STARTTLS,
		O_TLS,
		O_TLS_VERIFY,
		O_TLS_CA,
		O_TLS_RESUME,
		O_AUTH_USER,
		O_AUTH_PASS,
		O_AUTH_MECH,
		O_RETRY,
		O_RETRY_DELAY,
		O_RETRY_QUEUE,
		O_PROXY,
		O_PROXY_SOURCE,
		O_SEGMENT,
		O_START_AT
	};
	static const struct option opts[] = {
	    {"target", required_argument, NULL, 't'},
	    {"sessions", required_argument, NULL, 'c'},
	    {"threads", required_argument, NULL, 'T'},
	    {"messages", required_argument, NULL, 'm'},
	    {"duration", required_argument, NULL, 'd'},
	    {"warmup", required_argument, NULL, O_WARMUP},
	    {"msgs-per-session", required_argument, NULL, O_MPS},
	    {"rcpts", required_argument, NULL, 'r'},
	    {"size", required_argument, NULL, 's'},
	    {"from", required_argument, NULL, O_FROM},
	    {"to", required_argument, NULL, O_TO},
	    {"ehlo", required_argument, NULL, O_EHLO},
	    {"helo", no_argument, NULL, O_HELO},
	    {"pipelining", required_argument, NULL, O_PIPE},
	    {"bdat", no_argument, NULL, O_BDAT},
	    {"depth", required_argument, NULL, O_DEPTH},
	    {"rate", required_argument, NULL, 'R'},
	    {"connect-rate", required_argument, NULL, O_CRATE},
	    {"timeout", required_argument, NULL, O_TIMEOUT},
	    {"max-attempts", required_argument, NULL, O_ATTEMPTS},
	    {"bind", required_argument, NULL, O_BIND},
	    {"io", required_argument, NULL, O_IO},
	    {"starttls", no_argument, NULL, O_STARTTLS},
	    {"tls", no_argument, NULL, O_TLS},
	    {"tls-verify", no_argument, NULL, O_TLS_VERIFY},
	    {"tls-ca", required_argument, NULL, O_TLS_CA},
	    {"tls-resume", no_argument, NULL, O_TLS_RESUME},
	    {"auth-user", required_argument, NULL, O_AUTH_USER},
	    {"auth-pass", required_argument, NULL, O_AUTH_PASS},
	    {"auth-mech", required_argument, NULL, O_AUTH_MECH},
	    {"retry", required_argument, NULL, O_RETRY},
	    {"retry-delay", required_argument, NULL, O_RETRY_DELAY},
	    {"retry-queue", required_argument, NULL, O_RETRY_QUEUE},
	    {"proxy", required_argument, NULL, O_PROXY},
	    {"proxy-source", required_argument, NULL, O_PROXY_SOURCE},
	    {"segment", required_argument, NULL, O_SEGMENT},
	    {"start-at", required_argument, NULL, O_START_AT},
	    {"json", required_argument, NULL, 'j'},
	    {"interval-log", required_argument, NULL, O_INTERVAL_LOG},
	    {"interval", required_argument, NULL, O_INTERVAL},
	    {"quiet", no_argument, NULL, 'q'},
	    {"version", no_argument, NULL, 'V'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct bench_cfg *c = &B.cfg;
	struct client_cfg *cc = &c->client;
	uint64_t v;
	int o;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	const char *auth_user = NULL, *auth_pass = NULL;
	bool starttls = false, implicit = false, retry_given = false, retry_opts = false;

	if (argc > 1 && !strcmp(argv[1], "merge"))
		return bench_merge(argc - 2, argv + 2);
	c->sessions = 10;
	c->threads = ncpu > 0 ? (int)ncpu : 1;
	cc->rcpts = 1;
	cc->from_tpl = "bench{n}@client.test";
	cc->to_tpl = "rcpt{r}@server.test";
	cc->ehlo = "client.test";
	cc->pipelining = -1;
	c->timeout_ns = 30ull * 1000000000ull;
	c->max_attempts = 5;
	c->retry_delay_ns = 1000000000ull;
	c->seg_index = c->seg_count = 1;
	parse_sizes(c, "1k");
	opterr = 0;
	while ((o = getopt_long(argc, argv, ":t:c:T:m:d:r:s:R:j:qVh", opts, NULL)) != -1) {
		switch (o) {
		case 't':
			add_target(c, optarg);
			break;
		case 'c':
			if (units_parse_count(optarg, &v) || !v || v > 1000000)
				usage_error("invalid --sessions '%s'", optarg);
			c->sessions = (uint32_t)v;
			break;
		case 'T':
			if (units_parse_count(optarg, &v) || !v || v > 256)
				usage_error("invalid --threads '%s'", optarg);
			c->threads = (int)v;
			break;
		case 'm':
			if (units_parse_count(optarg, &v) || !v)
				usage_error("invalid --messages '%s'", optarg);
			c->messages = v;
			break;
		case 'd':
			if (units_parse_duration_ns(optarg, &c->duration_ns) || !c->duration_ns)
				usage_error("invalid --duration '%s'", optarg);
			break;
		case O_WARMUP:
			if (units_parse_duration_ns(optarg, &c->warmup_ns))
				usage_error("invalid --warmup '%s'", optarg);
			break;
		case O_MPS:
			if (units_parse_count(optarg, &c->msgs_per_session))
				usage_error("invalid --msgs-per-session '%s'", optarg);
			break;
		case 'r':
			if (units_parse_count(optarg, &v) || !v || v > 1000)
				usage_error("invalid --rcpts '%s' (1..1000)", optarg);
			cc->rcpts = (uint32_t)v;
			break;
		case 's':
			parse_sizes(c, optarg);
			break;
		case O_FROM:
			cc->from_tpl = optarg;
			break;
		case O_TO:
			cc->to_tpl = optarg;
			break;
		case O_EHLO:
			cc->ehlo = optarg;
			break;
		case O_HELO:
			cc->helo = true;
			break;
		case O_PIPE:
			if (!strcmp(optarg, "auto"))
				cc->pipelining = -1;
			else if (!strcmp(optarg, "on"))
				cc->pipelining = 1;
			else if (!strcmp(optarg, "off"))
				cc->pipelining = 0;
			else
				usage_error("invalid --pipelining '%s' (auto, on, off)", optarg);
			break;
		case O_BDAT:
			cc->bdat = true;
			break;
		case O_DEPTH:
			if (units_parse_count(optarg, &v) || !v || v > CLIENT_DEPTH_MAX)
				usage_error("invalid --depth '%s' (1..%d)", optarg,
				            CLIENT_DEPTH_MAX);
			cc->depth = (uint32_t)v;
			break;
		case 'R':
			c->rate = strtod(optarg, NULL);
			if (!(c->rate > 0) || !isfinite(c->rate))
				usage_error("invalid --rate '%s'", optarg);
			break;
		case O_CRATE:
			c->connect_rate = strtod(optarg, NULL);
			if (!(c->connect_rate > 0) || !isfinite(c->connect_rate) ||
			    c->connect_rate > 1e7)
				usage_error("invalid --connect-rate '%s'", optarg);
			break;
		case O_TIMEOUT:
			if (units_parse_duration_ns(optarg, &c->timeout_ns) || !c->timeout_ns ||
			    c->timeout_ns > 3600ull * 1000000000ull)
				usage_error("invalid --timeout '%s' (up to 1h)", optarg);
			break;
		case O_ATTEMPTS:
			if (units_parse_count(optarg, &v) || !v || v > 100)
				usage_error("invalid --max-attempts '%s' (1..100)", optarg);
			c->max_attempts = (uint32_t)v;
			break;
		case O_RETRY:
			if (units_parse_count(optarg, &v) || v > 1000)
				usage_error("invalid --retry '%s' (0..1000)", optarg);
			c->retry = (uint32_t)v;
			retry_given = true;
			break;
		case O_RETRY_DELAY:
			/* 0 is allowed: a test may want retries at once (RFC 5321
			 * 4.5.4.1 asks a real sender to wait) */
			if (units_parse_duration_ns(optarg, &c->retry_delay_ns) ||
			    c->retry_delay_ns > 24ull * 3600 * 1000000000ull)
				usage_error("invalid --retry-delay '%s' (up to 24h)", optarg);
			retry_opts = true;
			break;
		case O_RETRY_QUEUE:
			if (units_parse_count(optarg, &c->retry_queue) || !c->retry_queue ||
			    c->retry_queue > (1ull << 28))
				usage_error("invalid --retry-queue '%s' (1..268435456)", optarg);
			retry_opts = true;
			break;
		case O_BIND:
			add_binds(c, optarg);
			break;
		case O_PROXY:
			if (!strcmp(optarg, "v1"))
				c->proxy = 1;
			else if (!strcmp(optarg, "v2"))
				c->proxy = 2;
			else
				usage_error("invalid --proxy '%s' (v1 or v2)", optarg);
			break;
		case O_PROXY_SOURCE:
			parse_proxy_source(c, optarg);
			break;
		case O_SEGMENT:
			if (segment_parse(optarg, &c->seg_index, &c->seg_count))
				usage_error("invalid --segment '%s' (I/N with 1 <= I <= N <= %u)",
				            optarg, SEGMENT_MAX);
			c->segmented = true;
			break;
		case O_START_AT:
			if (segment_parse_time(optarg, &c->start_at_ns))
				usage_error("invalid --start-at '%s' (RFC 3339 such as "
				            "2026-11-30T01:00:00Z, or Unix seconds)",
				            optarg);
			c->start_at_given = true;
			break;
		case O_IO:
			if (!strcmp(optarg, "auto"))
				c->io = 0;
			else if (!strcmp(optarg, "uring") || !strcmp(optarg, "io_uring"))
				c->io = 1;
			else if (!strcmp(optarg, "epoll"))
				c->io = 2;
			else
				usage_error("invalid --io '%s' (auto, uring or epoll)", optarg);
			break;
		case O_STARTTLS:
			starttls = true;
			break;
		case O_TLS:
			implicit = true;
			break;
		case O_TLS_VERIFY:
			c->tls_verify = true;
			break;
		case O_TLS_CA:
			c->tls_ca = optarg;
			c->tls_verify = true;
			break;
		case O_TLS_RESUME:
			c->tls_resume = true;
			break;
		case O_AUTH_USER:
			auth_user = optarg;
			break;
		case O_AUTH_PASS:
			auth_pass = optarg; /* never echoed in a message */
			break;
		case O_AUTH_MECH:
			if (!strcasecmp(optarg, "PLAIN"))
				cc->auth_mech = CLIENT_MECH_PLAIN;
			else if (!strcasecmp(optarg, "LOGIN"))
				cc->auth_mech = CLIENT_MECH_LOGIN;
			else
				usage_error("invalid --auth-mech '%s' (PLAIN or LOGIN)", optarg);
			break;
		case 'j':
			c->json_path = optarg;
			break;
		case O_INTERVAL_LOG:
			c->ivl_path = optarg;
			break;
		case O_INTERVAL:
			if (units_parse_duration_ns(optarg, &c->ivl_ns) || c->ivl_ns % 1000000 ||
			    c->ivl_ns < 100000000ull || c->ivl_ns > 3600ull * 1000000000ull)
				usage_error("invalid --interval '%s' (100ms to 1h, whole ms)",
				            optarg);
			break;
		case 'q':
			c->quiet = true;
			break;
		case 'V':
			printf("smtpbench %s (git %s)\n", SINK_VERSION, SINK_GIT_REV);
			return 0;
		case 'h':
			usage();
			return 0;
		case ':':
			usage_error("option '%s' needs a value", argv[optind - 1]);
		default:
			usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		usage_error("unexpected argument '%s'", argv[optind]);
	if (!c->ntargets)
		usage_error("--target HOST:PORT is required");
	if (c->messages && c->duration_ns)
		usage_error("--messages and --duration exclude each other");
	if (!c->messages && !c->duration_ns)
		c->messages = 1000;
	if (!*cc->ehlo || strpbrk(cc->ehlo, " \r\n"))
		usage_error("invalid --ehlo '%s'", cc->ehlo);
	if (strpbrk(cc->from_tpl, "\r\n<>") || strpbrk(cc->to_tpl, "\r\n<>"))
		usage_error("--from/--to must not hold CR, LF, '<' or '>'");
	if (starttls && implicit)
		usage_error("--starttls and --tls exclude each other");
	if (cc->depth > 1 && (cc->pipelining == 0 || cc->helo))
		usage_error(
		    "--depth needs PIPELINING (RFC 2920): not with --pipelining off or --helo");
	cc->tls = starttls ? CLIENT_TLS_STARTTLS : implicit ? CLIENT_TLS_IMPLICIT : CLIENT_TLS_NONE;
	if (!cc->tls && (c->tls_verify || c->tls_resume))
		usage_error("--tls-verify, --tls-ca and --tls-resume need --starttls or --tls");
	if (starttls && cc->helo)
		usage_error("--starttls needs EHLO (RFC 3207), not --helo");
	if (!auth_user != !auth_pass)
		usage_error("--auth-user and --auth-pass go together");
	if (cc->auth_mech && !auth_user)
		usage_error("--auth-mech needs --auth-user");
	if (auth_user) {
		if (cc->helo)
			usage_error("AUTH needs EHLO (RFC 4954), not --helo");
		if (!*auth_user)
			usage_error("--auth-user must not be empty");
		/* RFC 4616 2: up to 255 octets each are what servers must take */
		if (client_tpl_s_max(auth_user) > CLIENT_AUTH_MAX)
			usage_error("--auth-user is longer than %d octets (with {s} expanded)",
			            CLIENT_AUTH_MAX);
		if (client_tpl_s_max(auth_pass) > CLIENT_AUTH_MAX)
			usage_error("--auth-pass is longer than %d octets (with {s} expanded)",
			            CLIENT_AUTH_MAX);
		cc->auth_user = auth_user;
		cc->auth_pass = auth_pass;
	}
	if (retry_opts && !retry_given)
		usage_error("--retry-delay and --retry-queue need --retry N");
	if (c->proxy_src_given && !c->proxy)
		usage_error("--proxy-source needs --proxy v1|v2");
	c->sessions_total = c->sessions;
	c->messages_total = c->messages;
	c->rate_total = c->rate;
	c->connect_rate_total = c->connect_rate;
	if (c->segmented) {
		uint32_t i = c->seg_index, n = c->seg_count;
		/* the run id comes from the start time: without one, instances
		 * would stamp different runs */
		if (!c->start_at_given)
			usage_error("--segment needs --start-at: every instance derives the run "
			            "id from it and starts at it");
		if (c->sessions < n)
			usage_error("--sessions %u is fewer than the %u segments", c->sessions, n);
		if (c->messages && c->messages < n)
			usage_error("--messages %llu is fewer than the %u segments",
			            (unsigned long long)c->messages, n);
		c->sessions = (uint32_t)segment_share(c->sessions, i, n);
		c->messages = segment_share(c->messages, i, n);
		c->rate = c->rate / n;
		c->connect_rate = c->connect_rate / n;
	}
	start_at_late(c);
	c->argv_line = join_argv(argc, argv, auth_pass);
	if ((uint64_t)c->threads > c->sessions)
		c->threads = (int)c->sessions;
	c->stall_ns = 3 * c->timeout_ns;
	/* a dropped or timed-out attempt followed by a wait for its retry is
	 * no stall: the watchdog allows one --retry-delay more */
	if (c->retry)
		c->stall_ns += c->retry_delay_ns;
	if (c->retry_queue && c->retry_queue < (uint64_t)c->threads)
		usage_error("--retry-queue %llu is less than one entry per thread (%d)",
		            (unsigned long long)c->retry_queue, c->threads);
	/* --interval-log: checked like --json, before any traffic */
	if (c->ivl_ns && !c->ivl_path)
		usage_error("--interval needs --interval-log FILE");
	if (c->ivl_path) {
		if (!c->ivl_ns)
			c->ivl_ns = 1000000000ull;
		if (!strcmp(c->ivl_path, "-") && c->json_path && !strcmp(c->json_path, "-"))
			usage_error("--json - and --interval-log - would both write to stdout");
		if (ivl_log_open(c)) {
			fprintf(stderr, "smtpbench: cannot write --interval-log '%s': %s\n",
			        c->ivl_path, strerror(errno));
			return 2;
		}
	}
	/* open the report now: a bad --json path is a usage error before any
	 * traffic, not a lost report after it */
	if (c->json_path) {
		c->json = !strcmp(c->json_path, "-") ? stdout : fopen(c->json_path, "w");
		if (!c->json) {
			fprintf(stderr, "smtpbench: cannot write --json '%s': %s\n", c->json_path,
			        strerror(errno));
			return 2;
		}
	}

	{
		struct rlimit rl;
		if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {
			rl.rlim_cur = rl.rlim_max;
			setrlimit(RLIMIT_NOFILE, &rl);
		}
		if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < c->sessions + 64)
			fprintf(stderr, "smtpbench: warning: RLIMIT_NOFILE %llu < sessions %u\n",
			        (unsigned long long)rl.rlim_cur, c->sessions);
	}
	signal(SIGPIPE, SIG_IGN);
	if (c->io != 2) {
		char why[128];
		int ret = uring_probe(why, sizeof(why));
		if (ret && c->io == 1) {
			fprintf(stderr, "smtpbench: --io uring: %s\n", why);
			return 1;
		}
		if (ret)
			fprintf(stderr, "smtpbench: %s; using epoll\n", why);
		c->use_uring = ret == 0;
	}
	if (cc->tls) {
		char err[256];
		if (tls_ctx_new(c, err, sizeof(err))) {
			fprintf(stderr, "smtpbench: TLS setup: %s\n", err);
			return 2;
		}
	}
	for (int i = 0; i < c->nbodies; i++)
		build_body(&c->bodies[i]);
	if (c->segmented) {
		c->run_id = segment_run_id(c->start_at_ns, c->seg_count);
	} else {
		FILE *f = fopen("/dev/urandom", "rb");
		if (!f || fread(&c->run_id, sizeof(c->run_id), 1, f) != 1)
			c->run_id = (uint64_t)bench_now() ^ (uint64_t)getpid() << 32;
		if (f)
			fclose(f);
	}
	start_at_late(c); /* set-up took too long: the others would be ahead */

	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	B.th = calloc((size_t)c->threads, sizeof(*B.th));
	if (!B.th)
		return 1;
	/* --interval-log: header, clock offset, each thread's queue (t0 is
	 * read at each collection, so --start-at may set it later) */
	if (c->ivl && ivl_log_start(&B)) {
		fprintf(stderr, "smtpbench: --interval-log: out of memory\n");
		return 1;
	}
	double cpu0 = cpu_now();
	/* main waits at both barriers too: the threads set up their backends,
	 * then main waits for --start-at, and none starts before t0 is set */
	pthread_barrier_init(&B.ready, NULL, (unsigned)c->threads + 1);
	pthread_barrier_init(&B.go, NULL, (unsigned)c->threads + 1);
	for (int i = 0, sid = 0; i < c->threads; i++) {
		struct bench_thread *t = &B.th[i];
		t->b = &B;
		t->id = i;
		t->first_sid = (uint32_t)sid;
		t->nsess = c->sessions / (uint32_t)c->threads +
		           ((uint32_t)i < c->sessions % (uint32_t)c->threads);
		sid += (int)t->nsess;
		t->quota = c->messages / (uint64_t)c->threads +
		           ((uint64_t)i < c->messages % (uint64_t)c->threads);
		t->rate = c->rate / c->threads;
		if (c->retry)
			t->retry_cap = retry_cap(c, t);
		bench_stats_init(&t->st);
		hist_init(&t->interval);
		pthread_create(&t->th, NULL, thread_main, t);
	}
	/* every thread has set up (rings, sessions) before the clock starts, so
	 * instances with slow setup do not begin behind a shared --start-at */
	pthread_barrier_wait(&B.ready);
	if (c->start_at_given)
		wait_start(c, &set);
	/* the run, its warm-up and its measured window begin now */
	B.t0_ns = bench_now();
	c->started_ns = wall_now();
	B.start_ns = B.t0_ns + c->warmup_ns;
	for (int i = 0; i < c->threads; i++)
		B.th[i].live.last_progress_ns = B.t0_ns;
	pthread_barrier_wait(&B.go);

	/* live line once a second; a signal or the watchdog stops the run */
	uint64_t last = B.t0_ns, last_msgs = 0, last_bytes = 0;
	int joined = 0;
	bool *done = calloc((size_t)c->threads, sizeof(bool));
	while (joined < c->threads) {
		struct timespec ts = {0, 50 * 1000 * 1000};
		int sig = sigtimedwait(&set, NULL, &ts);
		uint64_t now = bench_now();
		if (sig > 0 && !atomic_load(&B.stop)) {
			snprintf(B.stop_reason, sizeof(B.stop_reason), "interrupted by %s",
			         sig == SIGINT ? "SIGINT" : "SIGTERM");
			atomic_store(&B.stop, 1);
		}
		if (!atomic_load(&B.stop) && watchdog(now))
			atomic_store(&B.stop, 1);
		ivl_log_poll(&B); /* --interval-log: write the intervals closed by now */
		for (int i = 0; i < c->threads; i++)
			if (!done[i] && pthread_tryjoin_np(B.th[i].th, NULL) == 0) {
				done[i] = true;
				joined++;
			}
		if (!c->quiet && now - last >= 1000000000ull) {
			uint64_t m = 0, by = 0, er = 0, se = 0, p99 = 0, rs = 0, rw = 0;
			char retries[64] = "";
			for (int i = 0; i < c->threads; i++) {
				rs += __atomic_load_n(&B.th[i].live.retries, __ATOMIC_RELAXED);
				rw +=
				    __atomic_load_n(&B.th[i].live.retry_waiting, __ATOMIC_RELAXED);
				m += __atomic_load_n(&B.th[i].live.delivered, __ATOMIC_RELAXED);
				by += __atomic_load_n(&B.th[i].live.bytes, __ATOMIC_RELAXED);
				er += __atomic_load_n(&B.th[i].live.errors, __ATOMIC_RELAXED);
				se += __atomic_load_n(&B.th[i].live.sessions, __ATOMIC_RELAXED);
				uint64_t p =
				    __atomic_load_n(&B.th[i].live.p99_ns, __ATOMIC_RELAXED);
				p99 = p > p99 ? p : p99;
			}
			double dt = (double)(now - last) / 1e9;
			if (c->retry)
				snprintf(retries, sizeof(retries), "  retries %llu (%llu waiting)",
				         (unsigned long long)rs, (unsigned long long)rw);
			fprintf(
			    stderr,
			    "[%6.1fs] %8.0f msg/s  %7.2f MB/s  sessions %llu  errors %llu%s  p99 "
			    "%.2f ms\n",
			    (double)(now - B.t0_ns) / 1e9, (double)(m - last_msgs) / dt,
			    (double)(by - last_bytes) / dt / 1e6, (unsigned long long)se,
			    (unsigned long long)er, retries, (double)p99 / 1e6);
			last = now;
			last_msgs = m;
			last_bytes = by;
		}
	}
	free(done);
	pthread_barrier_destroy(&B.ready);
	pthread_barrier_destroy(&B.go);
	double cpu = cpu_now() - cpu0;
	uint64_t end = B.t0_ns;
	bool setup_failed = false;
	for (int i = 0; i < c->threads; i++) {
		end = B.th[i].end_ns > end ? B.th[i].end_ns : end;
		setup_failed |= B.th[i].failed_setup;
	}
	/* the measured window is [end of warm-up, end of run]; a run that ended
	 * inside its warm-up measured nothing (and says so) */
	double secs = end > B.start_ns ? (double)(end - B.start_ns) / 1e9 : 0.0;
	if (end <= B.start_ns && c->warmup_ns && !atomic_load(&B.stop))
		snprintf(B.stop_reason, sizeof(B.stop_reason),
		         "the run ended during --warmup: nothing was measured");

	struct bench_stats *tot = malloc(sizeof(*tot));
	if (!tot)
		return 1;
	bench_stats_init(tot);
	for (int i = 0; i < c->threads; i++)
		bench_stats_add(tot, &B.th[i].st);
	if (!B.stop_reason[0] && tot->gave_up == c->sessions)
		snprintf(B.stop_reason, sizeof(B.stop_reason),
		         "every session gave up after %u failed connection attempts in a row",
		         c->max_attempts);
	if (setup_failed && !B.stop_reason[0])
		snprintf(B.stop_reason, sizeof(B.stop_reason), "backend setup failed");
	/* --interval-log: the rest, the last (partial) interval, the end line */
	bool ivl_failed = ivl_log_finish(&B, end) != 0;
	if (ivl_failed)
		fprintf(stderr, "smtpbench: cannot write --interval-log %s: %s\n", c->ivl_path,
		        strerror(errno));
	bench_report(&B, tot, secs, cpu);
	if (c->json && bench_json(&B, tot, secs, cpu, c->json)) {
		fprintf(stderr, "smtpbench: cannot write %s: %s\n", c->json_path, strerror(errno));
		return 1;
	}
	if (c->tls_ctx)
		tls_ctx_free(c);
	/* a connection that ended because a message attempt failed and was
	 * queued again is part of that retry: the message's final outcome
	 * decides (conn_retried is 0 without --retry) */
	bool ok = tot->failed == 0 && tot->partial == 0 && tot->unsent == 0 &&
	          tot->conn_failed + tot->conn_closed_early == tot->conn_retried &&
	          !B.stop_reason[0] && (!c->messages || tot->delivered == c->messages);
	free(tot);
	return ok && !ivl_failed ? 0 : 1;
}
