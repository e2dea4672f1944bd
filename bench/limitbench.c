/*
 * limitbench.c - what this machine's loopback can do at all, so that every
 * SMTP throughput figure can be read as a fraction of it.
 *
 *   limitbench --mode pingpong --io uring --sessions 100 --size 1k --duration 2s
 *
 * Both ends live in this process: --server-threads threads each accept on
 * their own ephemeral 127.0.0.1 port, --threads client threads connect to
 * them (session i: client thread i % threads, server thread i % server
 * threads), and every thread then drives its own connections with its own
 * epoll instance or io_uring ring - the topology of smtpsink + smtpbench,
 * one thread per CPU each, minus SMTP.  Nothing is shared on the hot path:
 * each thread counts in its own struct and main sums after the join.  The
 * two sides even have separate descriptor tables (side_spawn), as the two
 * programs would.
 *
 * pingpong: the client sends SIZE octets, the server answers "250\n" once it
 * has them all, the client reads those 4 octets: one round trip, repeated.
 * stream: clients send min(SIZE, 64 KiB) chunks back to back, the server
 * reads and discards them; the octets the server received are counted.
 *
 * Timing: every session connects, then a barrier, then exactly --duration
 * on CLOCK_MONOTONIC.  A thread reads the clock before it handles a batch
 * of completions (io_uring) or an event (epoll, whose syscalls do the
 * work) and stops once the window has closed, so everything counted
 * completed inside it.  At the end main wakes every thread through its
 * eventfd; an interval timer ends the process (exit 1) if it is still
 * running --duration + 10 s after start.  The process CPU time over the
 * window (both ends together) is reported per round trip or per MiB.
 *
 * Exit status: 0 ok, 1 setup failure, io_uring unavailable, a connection
 * failed or the timer fired, 2 usage error.
 */
#include <errno.h>
#include <getopt.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "sink/config.h"
#include "sink/units.h"
#include "sink/uring.h"

#define CHUNK_MAX (64u << 10) /* largest single send or recv */
#define REPLY     "250\n"
#define REPLY_LEN 4u
/* epoll: syscalls per connection per event, so that one busy stream cannot
 * keep its thread from the clock */
#define BURST   16
#define ENDLESS UINT32_MAX /* stream: send_left/recv_left never run out */
#define WAKE_ID UINT64_MAX /* epoll data / CQE user_data of the eventfd */

enum mode { MODE_PINGPONG, MODE_STREAM };
enum io { IO_EPOLL, IO_URING };
enum { OP_SEND = 1, OP_RECV = 2 };

static struct {
	enum mode mode;
	enum io io;
	uint32_t sessions, size, chunk;
	uint32_t sends_max; /* io_uring: sends in flight per connection */
	uint64_t duration_ns;
	int threads, server_threads;
	const char *json_path;
	bool quiet;
} cfg;

/* One end of one connection.  send_left/recv_left: octets of the current
 * message still to move (ENDLESS in stream mode).  sbusy/rbusy: io_uring
 * has a send/recv in flight; with epoll sbusy means EPOLLOUT is armed. */
struct conn {
	int fd;
	uint32_t send_left, recv_left;
	uint8_t sbusy, rbusy, dead;
};

struct thr {
	pthread_t tid;
	int idx; /* among servers or among clients */
	bool server;
	struct conn *c;
	uint32_t n;
	int efd; /* eventfd: main's end-of-window wake-up */
	int epfd;
	struct epoll_event *ev;
	int maxev;
	struct io_uring ring;
	uint64_t wake_buf;
	char *scratch;  /* every recv lands here; nobody reads it */
	uint64_t units; /* round trips (client) or octets (server) */
	uint64_t errors;
	int first_err; /* errno of the first failure, 0 = closed by peer */
} __attribute__((aligned(64)));

static struct thr **thr; /* servers first, then clients */
static int *listen_fd;
static uint16_t *ports;
static char *payload; /* cfg.chunk octets of request/stream data */
static pthread_barrier_t ready, go, stopped;
static uint64_t end_ns; /* written before the go barrier, read-only after */
static char alarm_msg[128];

static void *thr_main(void *arg);

__attribute__((format(printf, 1, 2), noreturn)) static void usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "limitbench: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'limitbench --help'.\n");
	exit(2);
}

__attribute__((format(printf, 1, 2), noreturn)) static void die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "limitbench: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static void usage(void)
{
	printf("Usage: limitbench --mode pingpong|stream --io epoll|uring [OPTION]...\n"
	       "The loopback ceiling of this machine: both ends in one process.\n\n"
	       "  -m, --mode pingpong|stream  pingpong: SIZE octets up, 4 octets back per\n"
	       "                           round trip; stream: send continuously\n"
	       "      --io epoll|uring     event backend of every thread\n"
	       "  -c, --sessions N         concurrent connections [100]\n"
	       "  -s, --size SIZE          request size; stream chunk min(SIZE, 64k) [1k]\n"
	       "  -d, --duration DUR       measured window [2s]\n"
	       "  -T, --threads N          client threads [online CPUs]\n"
	       "      --server-threads N   server threads [online CPUs]\n"
	       "  -j, --json FILE          write the result as a JSON object\n"
	       "  -q, --quiet              no result line on stdout\n"
	       "  -V, --version, -h, --help\n\n"
	       "Exit status: 0 ok, 1 setup failure, io_uring unavailable, a failed\n"
	       "connection or no end within DUR + 10s, 2 usage error.\n");
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double cpu_now(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void on_alarm(int sig)
{
	(void)sig;
	if (write(2, alarm_msg, strlen(alarm_msg)) < 0)
		_exit(1);
	_exit(1);
}

/* conn_fail - a connection broke inside the window; count it and leave it
 * (the socket closes with its side's descriptor table at the end). */
static void conn_fail(struct thr *t, struct conn *c, int err)
{
	if (c->dead)
		return;
	c->dead = 1;
	if (!t->errors++)
		t->first_err = err;
	if (cfg.io == IO_EPOLL)
		epoll_ctl(t->epfd, EPOLL_CTL_DEL, c->fd, NULL);
}

static uint32_t min32(uint32_t a, uint32_t b)
{
	return a < b ? a : b;
}

static const char *send_ptr(const struct thr *t, const struct conn *c)
{
	return t->server ? REPLY + (REPLY_LEN - c->send_left) : payload;
}

static uint32_t send_len(const struct thr *t, const struct conn *c)
{
	return min32(c->send_left, t->server ? REPLY_LEN : cfg.chunk);
}

static void conn_sent(struct conn *c, uint32_t n)
{
	if (cfg.mode == MODE_PINGPONG)
		c->send_left -= n;
}

/* conn_recvd - n octets arrived; true when that completed a message.  The
 * server queues its reply and at once expects the next request (the client
 * cannot send it before the reply, so reading ahead is harmless); the
 * client counts the round trip and starts the next one. */
static bool conn_recvd(struct thr *t, struct conn *c, uint32_t n)
{
	if (cfg.mode == MODE_STREAM) {
		t->units += n;
		return false;
	}
	c->recv_left -= n;
	if (c->recv_left)
		return false;
	if (t->server) {
		c->send_left = REPLY_LEN;
		c->recv_left = cfg.size;
	} else {
		t->units++;
		c->send_left = cfg.size;
		c->recv_left = REPLY_LEN;
	}
	return true;
}

/* ---- epoll: level-triggered, EPOLLIN always, EPOLLOUT only while a
 * pingpong message is stuck half-sent (stream clients: EPOLLOUT only). */

static void ep_ctl(struct thr *t, int op, uint32_t i, uint32_t events)
{
	struct epoll_event e = {.events = events, .data.u64 = i};

	if (epoll_ctl(t->epfd, op, t->c[i].fd, &e))
		conn_fail(t, &t->c[i], errno);
}

static void ep_send(struct thr *t, uint32_t i)
{
	struct conn *c = &t->c[i];

	for (int k = 0; k < BURST && c->send_left; k++) {
		uint32_t len = send_len(t, c);
		ssize_t r = send(c->fd, send_ptr(t, c), len, MSG_NOSIGNAL);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno != EAGAIN) {
			conn_fail(t, c, errno);
			return;
		}
		if (r < 0)
			break;
		conn_sent(c, (uint32_t)r);
		if ((uint32_t)r < len)
			break; /* the socket buffer is full */
	}
	if (cfg.mode == MODE_PINGPONG && (c->send_left > 0) != c->sbusy) {
		c->sbusy = c->send_left > 0;
		ep_ctl(t, EPOLL_CTL_MOD, i, EPOLLIN | (c->sbusy ? EPOLLOUT : 0));
	}
}

/* ep_recv - read until a short read (the queue is empty: level-triggered
 * epoll tells when more comes, so no extra recv just to see EAGAIN) or a
 * complete pingpong message (nothing can follow it before our answer). */
static void ep_recv(struct thr *t, uint32_t i)
{
	struct conn *c = &t->c[i];

	for (int k = 0; k < BURST && c->recv_left && !c->dead; k++) {
		uint32_t len = min32(c->recv_left, CHUNK_MAX);
		ssize_t r = recv(c->fd, t->scratch, len, 0);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			if (r == 0 || errno != EAGAIN)
				conn_fail(t, c, r == 0 ? 0 : errno);
			return;
		}
		if (conn_recvd(t, c, (uint32_t)r)) {
			ep_send(t, i);
			return;
		}
		if ((uint32_t)r < len)
			return;
	}
}

static void ep_run(struct thr *t)
{
	if (cfg.mode == MODE_PINGPONG && !t->server)
		for (uint32_t i = 0; i < t->n; i++)
			ep_send(t, i);
	for (;;) {
		int n = epoll_wait(t->epfd, t->ev, t->maxev, -1);

		for (int k = 0; k < n; k++) {
			uint64_t i = t->ev[k].data.u64;
			uint32_t e = t->ev[k].events;
			struct conn *c;

			/* the work happens in the syscalls below, and thousands of
			 * ready sockets take long enough for the window to close
			 * inside one batch: look at the clock before each */
			if (i == WAKE_ID || now_ns() >= end_ns)
				return;
			c = &t->c[i];
			if (c->dead)
				continue;
			if (e & EPOLLERR) {
				int err = 0;
				socklen_t l = sizeof(err);
				getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
				conn_fail(t, c, err);
				continue;
			}
			if (e & EPOLLIN)
				ep_recv(t, (uint32_t)i);
			else if (e & EPOLLHUP)
				conn_fail(t, c, 0);
			if ((e & EPOLLOUT) && !c->dead)
				ep_send(t, (uint32_t)i);
		}
	}
}

/* ---- io_uring: pingpong ends have at most one send and one recv in
 * flight; a stream client keeps cfg.sends_max sends queued (the
 * counterpart of epoll's BURST writes per event; their order does not
 * matter, the server discards).  One
 * io_uring_submit_and_wait per batch submits everything queued while the
 * previous batch was drained and waits for the next. */

static void ur_post(struct thr *t, uint32_t i)
{
	struct conn *c = &t->c[i];
	struct io_uring_sqe *sqe;

	if (c->dead)
		return;
	while (c->send_left && c->sbusy < cfg.sends_max) {
		sqe = uring_sqe(&t->ring);
		io_uring_prep_send(sqe, c->fd, send_ptr(t, c), send_len(t, c), MSG_NOSIGNAL);
		io_uring_sqe_set_data64(sqe, (uint64_t)i << 2 | OP_SEND);
		c->sbusy++;
	}
	if (c->recv_left && !c->rbusy) {
		sqe = uring_sqe(&t->ring);
		io_uring_prep_recv(sqe, c->fd, t->scratch, min32(c->recv_left, CHUNK_MAX), 0);
		io_uring_sqe_set_data64(sqe, (uint64_t)i << 2 | OP_RECV);
		c->rbusy = 1;
	}
}

static void ur_cqe(struct thr *t, const struct io_uring_cqe *cqe)
{
	uint64_t d = io_uring_cqe_get_data64(cqe);
	uint32_t i = (uint32_t)(d >> 2);
	struct conn *c;
	int res = cqe->res;

	if (d == WAKE_ID)
		return; /* the window is over; the clock check ends the loop */
	c = &t->c[i];
	if ((d & 3) == OP_SEND)
		c->sbusy--;
	else
		c->rbusy = 0;
	if (c->dead)
		return;
	if (res == -EINTR || res == -EAGAIN)
		; /* nothing moved: post it again */
	else if (res <= 0)
		conn_fail(t, c, res == 0 && (d & 3) == OP_SEND ? EIO : -res);
	else if ((d & 3) == OP_SEND)
		conn_sent(c, (uint32_t)res);
	else
		conn_recvd(t, c, (uint32_t)res);
	ur_post(t, i);
}

static void ur_run(struct thr *t)
{
	struct io_uring_sqe *sqe = uring_sqe(&t->ring);

	io_uring_prep_read(sqe, t->efd, &t->wake_buf, sizeof(t->wake_buf), 0);
	io_uring_sqe_set_data64(sqe, WAKE_ID);
	for (uint32_t i = 0; i < t->n; i++)
		ur_post(t, i);
	for (;;) {
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;

		io_uring_submit_and_wait(&t->ring, 1);
		if (now_ns() >= end_ns)
			return;
		io_uring_for_each_cqe(&t->ring, head, cqe)
		{
			ur_cqe(t, cqe);
			n++;
		}
		io_uring_cq_advance(&t->ring, n);
	}
}

/* ---- setup, in each thread: its connections, then its epoll or ring. */

static unsigned pow2_at_least(unsigned v, unsigned lo, unsigned hi)
{
	unsigned p = lo;

	while (p < v && p < hi)
		p <<= 1;
	return p;
}

static const char emfile_hint[] = " (RLIMIT_NOFILE: one descriptor a session on each side)";

static int open_conn(struct thr *t, uint32_t j)
{
	int one = 1, fd;

	if (t->server) {
		fd = accept4(listen_fd[t->idx], NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			die("accept: %s%s", strerror(errno), errno == EMFILE ? emfile_hint : "");
	} else {
		/* session idx + j * threads goes to server thread (that % server_threads) */
		uint32_t s = (uint32_t)t->idx + j * (uint32_t)cfg.threads;
		struct sockaddr_in a = {.sin_family = AF_INET,
		                        .sin_port = htons(ports[s % (uint32_t)cfg.server_threads]),
		                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};

		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)))
			die("connect to 127.0.0.1:%u: %s%s", ntohs(a.sin_port), strerror(errno),
			    errno == EMFILE ? emfile_hint : "");
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* epoll needs non-blocking sockets; io_uring wants blocking ones (it
	 * polls internally, while O_NONBLOCK would hand us -EAGAIN). */
	if (cfg.io == IO_EPOLL)
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	return fd;
}

static void thr_setup(struct thr *t)
{
	t->c = calloc(t->n ? t->n : 1, sizeof(*t->c));
	t->scratch = malloc(CHUNK_MAX);
	if (!t->c || !t->scratch)
		die("out of memory");
	for (uint32_t j = 0; j < t->n; j++) {
		struct conn *c = &t->c[j];

		c->fd = open_conn(t, j);
		if (cfg.mode == MODE_STREAM) {
			c->send_left = t->server ? 0 : ENDLESS;
			c->recv_left = t->server ? ENDLESS : 0;
		} else {
			c->send_left = t->server ? 0 : cfg.size;
			c->recv_left = t->server ? cfg.size : REPLY_LEN;
		}
	}
	if (cfg.io == IO_URING) {
		/* a CQ twice the operations in flight never overflows (above
		 * 65536 the kernel keeps the overflow until we drain) */
		unsigned inflight = (cfg.sends_max + 1) * t->n + 1;
		int ret = uring_init(&t->ring, pow2_at_least(inflight, 64, 4096),
		                     pow2_at_least(2 * inflight, 128, 65536), NULL);
		if (ret)
			die("io_uring setup: %s", strerror(-ret));
		return;
	}
	t->epfd = epoll_create1(EPOLL_CLOEXEC);
	t->maxev = (int)min32(t->n + 1, 4096);
	t->ev = calloc((size_t)t->maxev, sizeof(*t->ev));
	if (t->epfd < 0 || !t->ev)
		die("epoll setup: %s", strerror(errno));
	for (uint32_t j = 0; j < t->n; j++)
		ep_ctl(t, EPOLL_CTL_ADD, j,
		       cfg.mode == MODE_STREAM && !t->server ? EPOLLOUT : EPOLLIN);
	struct epoll_event e = {.events = EPOLLIN, .data.u64 = WAKE_ID};
	if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, t->efd, &e))
		die("epoll_ctl: %s", strerror(errno));
}

static void spawn_rest(int base, int n)
{
	for (int k = base + 1; k < base + n; k++)
		if (pthread_create(&thr[k]->tid, NULL, thr_main, thr[k]))
			die("pthread_create failed");
}

/* side_spawn - the first thread of a side (servers, clients) starts the
 * others of its side; when one descriptor table cannot hold both ends, it
 * first takes a table of its own, and its side's threads share that.
 * Two tables, like the two programs this stands in for: each side holds one
 * descriptor a session, so 10,000 sessions fit a hard RLIMIT_NOFILE of
 * 20,000 (one table would need 20,000 plus a few).  Docker's default
 * seccomp profile refuses unshare(): then one table must do. */
static void side_spawn(struct thr *t)
{
	int base = t->server ? 0 : cfg.server_threads;
	int n = t->server ? cfg.server_threads : cfg.threads;
	struct rlimit rl;

	/* one table when it fits: ThreadSanitizer models descriptors by number,
	 * process-wide, and took fd 10 of one table and fd 10 of the other for
	 * one descriptor (a race report on every run) */
	if (!getrlimit(RLIMIT_NOFILE, &rl) && 2 * (rlim_t)cfg.sessions + 64 <= rl.rlim_cur) {
		spawn_rest(base, n);
		return;
	}
	if (unshare(CLONE_FILES))
		fprintf(stderr,
		        "limitbench: unshare(CLONE_FILES): %s; both ends share one "
		        "descriptor table\n",
		        strerror(errno));
	spawn_rest(base, n);
}

static void *thr_main(void *arg)
{
	struct thr *t = arg;

	if (t->idx == 0)
		side_spawn(t);
	thr_setup(t);
	pthread_barrier_wait(&ready);
	pthread_barrier_wait(&go);
	if (cfg.io == IO_URING)
		ur_run(t);
	else
		ep_run(t);
	/* a thread's exit may close its side's sockets: not while a peer
	 * still counts (it would see a reset inside its window) */
	pthread_barrier_wait(&stopped);
	if (cfg.io == IO_URING)
		io_uring_queue_exit(&t->ring);
	return NULL;
}

/* raise_nofile - the soft limit to the hard one; when even that is short of
 * what a side's table holds (a descriptor a session, a few a thread), root
 * may lift the hard limit too.  Still short: accept or connect fails with
 * EMFILE and says so. */
static void raise_nofile(void)
{
	rlim_t need = (rlim_t)cfg.sessions + 4 * (rlim_t)(cfg.threads + cfg.server_threads) + 64;
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl))
		return;
	if (rl.rlim_max < need) {
		struct rlimit up = {need, need};
		if (!setrlimit(RLIMIT_NOFILE, &up))
			return;
	}
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
}

static void report(uint64_t units, uint64_t errors, double secs, double cpu, FILE *jf)
{
	bool pp = cfg.mode == MODE_PINGPONG;
	const char *mode = pp ? "pingpong" : "stream", *io = cfg.io == IO_URING ? "uring" : "epoll";
	double rate = (double)units / secs;
	double per = units ? cpu * 1e6 / (pp ? (double)units : (double)units / 1048576.0) : 0;

	if (!cfg.quiet && pp)
		printf("%s %s sessions=%u size=%u: %.0f rt/s  cpu %.2f us/rt\n", mode, io,
		       cfg.sessions, cfg.size, rate, per);
	else if (!cfg.quiet)
		printf("%s %s sessions=%u size=%u: %.1f MiB/s  cpu %.1f us/MiB\n", mode, io,
		       cfg.sessions, cfg.size, rate / 1048576.0, per);
	if (!jf)
		return;
	json_t *o =
	    json_pack("{s:s, s:s, s:I, s:I, s:f, s:i, s:i, s:I, s:f, s:f, s:f, s:s, s:I, "
	              "s:s}",
	              "mode", mode, "io", io, "sessions", (json_int_t)cfg.sessions, "size",
	              (json_int_t)cfg.size, "duration_s", secs, "threads", cfg.threads,
	              "server_threads", cfg.server_threads, pp ? "round_trips" : "bytes",
	              (json_int_t)units, pp ? "round_trips_per_s" : "bytes_per_s", rate, "cpu_s",
	              cpu, "cpu_us_per_unit", per, "cpu_unit", pp ? "round_trip" : "MiB", "errors",
	              (json_int_t)errors, "git", SINK_GIT_REV);
	if (!o || json_dumpf(o, jf, JSON_INDENT(2) | JSON_PRESERVE_ORDER) || fputc('\n', jf) < 0 ||
	    fclose(jf))
		die("cannot write --json %s", cfg.json_path);
	json_decref(o);
}

static int parse_threads(const char *opt, const char *arg)
{
	uint64_t v;

	if (units_parse_count(arg, &v) || !v || v > 256)
		usage_error("invalid %s '%s' (1..256)", opt, arg);
	return (int)v;
}

static void parse_args(int argc, char **argv)
{
	enum { O_IO = 256, O_SERVER_THREADS };
	static const struct option opts[] = {
	    {"mode", required_argument, NULL, 'm'},
	    {"io", required_argument, NULL, O_IO},
	    {"sessions", required_argument, NULL, 'c'},
	    {"size", required_argument, NULL, 's'},
	    {"duration", required_argument, NULL, 'd'},
	    {"threads", required_argument, NULL, 'T'},
	    {"server-threads", required_argument, NULL, O_SERVER_THREADS},
	    {"json", required_argument, NULL, 'j'},
	    {"quiet", no_argument, NULL, 'q'},
	    {"version", no_argument, NULL, 'V'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	int mode = -1, io = -1, o;
	uint64_t v;

	cfg.sessions = 100;
	cfg.size = 1024;
	cfg.duration_ns = 2000000000ull;
	cfg.threads = cfg.server_threads = ncpu > 0 ? (int)ncpu : 1;
	opterr = 0;
	while ((o = getopt_long(argc, argv, ":m:c:s:d:T:j:qVh", opts, NULL)) != -1) {
		switch (o) {
		case 'm':
			if (!strcmp(optarg, "pingpong"))
				mode = MODE_PINGPONG;
			else if (!strcmp(optarg, "stream"))
				mode = MODE_STREAM;
			else
				usage_error("invalid --mode '%s' (pingpong or stream)", optarg);
			break;
		case O_IO:
			if (!strcmp(optarg, "epoll"))
				io = IO_EPOLL;
			else if (!strcmp(optarg, "uring") || !strcmp(optarg, "io_uring"))
				io = IO_URING;
			else
				usage_error("invalid --io '%s' (epoll or uring)", optarg);
			break;
		case 'c':
			if (units_parse_count(optarg, &v) || !v || v > 100000)
				usage_error("invalid --sessions '%s' (1..100000)", optarg);
			cfg.sessions = (uint32_t)v;
			break;
		case 's':
			if (units_parse_size(optarg, &v) || !v || v > (1u << 30))
				usage_error("invalid --size '%s' (1 octet to 1G)", optarg);
			cfg.size = (uint32_t)v;
			break;
		case 'd':
			if (units_parse_duration_ns(optarg, &cfg.duration_ns) || !cfg.duration_ns ||
			    cfg.duration_ns > 86400ull * 1000000000ull)
				usage_error("invalid --duration '%s' (up to 24h)", optarg);
			break;
		case 'T':
			cfg.threads = parse_threads("--threads", optarg);
			break;
		case O_SERVER_THREADS:
			cfg.server_threads = parse_threads("--server-threads", optarg);
			break;
		case 'j':
			cfg.json_path = optarg;
			break;
		case 'q':
			cfg.quiet = true;
			break;
		case 'V':
			printf("limitbench %s (git %s)\n", SINK_VERSION, SINK_GIT_REV);
			exit(0);
		case 'h':
			usage();
			exit(0);
		case ':':
			usage_error("option '%s' needs a value", argv[optind - 1]);
		default:
			usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		usage_error("unexpected argument '%s'", argv[optind]);
	if (mode < 0)
		usage_error("--mode pingpong|stream is required");
	if (io < 0)
		usage_error("--io epoll|uring is required");
	cfg.mode = (enum mode)mode;
	cfg.io = (enum io)io;
	cfg.chunk = min32(cfg.size, CHUNK_MAX);
	/* io_uring stream clients keep 128 KiB queued, 2 to BURST sends: small
	 * chunks need many to keep up with epoll's BURST writes per event, but
	 * 16 x 64 KiB a connection only overfill the socket buffers (at 1000
	 * sessions 2 sends moved 1.3-1.7x the octets/s of 16 on this machine) */
	cfg.sends_max = cfg.mode == MODE_STREAM ? min32(BURST, (128u << 10) / cfg.chunk) : 1;
}

/* arm_watchdog - the backstop: connecting, the window and the stop
 * together get --duration + 10 s, then the process ends with exit 1. */
static void arm_watchdog(void)
{
	uint64_t ns = cfg.duration_ns + 10000000000ull;
	struct itimerval it = {
	    .it_value = {(time_t)(ns / 1000000000ull), (suseconds_t)(ns % 1000000000ull / 1000)}};

	snprintf(alarm_msg, sizeof(alarm_msg),
	         "limitbench: not finished %.1f s after start (duration + 10 s): stuck\n",
	         (double)ns / 1e9);
	signal(SIGALRM, on_alarm);
	setitimer(ITIMER_REAL, &it, NULL);
}

/* spawn - listeners, per-thread state and eventfds in main's descriptor
 * table, then the first thread of each side, which starts the rest. */
static void spawn(void)
{
	int nthr = cfg.server_threads + cfg.threads;

	payload = malloc(cfg.chunk);
	listen_fd = calloc((size_t)cfg.server_threads, sizeof(*listen_fd));
	ports = calloc((size_t)cfg.server_threads, sizeof(*ports));
	thr = calloc((size_t)nthr, sizeof(*thr));
	if (!payload || !listen_fd || !ports || !thr)
		die("out of memory");
	memset(payload, 'x', cfg.chunk);
	for (int k = 0; k < cfg.server_threads; k++) {
		struct sockaddr_in a = {.sin_family = AF_INET,
		                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		socklen_t l = sizeof(a);
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

		if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, 65535) ||
		    getsockname(fd, (struct sockaddr *)&a, &l))
			die("listen on 127.0.0.1: %s", strerror(errno));
		listen_fd[k] = fd;
		ports[k] = ntohs(a.sin_port);
	}
	pthread_barrier_init(&ready, NULL, (unsigned)nthr + 1);
	pthread_barrier_init(&go, NULL, (unsigned)nthr + 1);
	pthread_barrier_init(&stopped, NULL, (unsigned)nthr);
	for (int k = 0; k < nthr; k++) {
		struct thr *t = aligned_alloc(64, sizeof(struct thr));
		bool server = k < cfg.server_threads;
		uint32_t nt = (uint32_t)(server ? cfg.server_threads : cfg.threads);

		if (!t)
			die("out of memory");
		memset(t, 0, sizeof(*t));
		t->server = server;
		t->idx = server ? k : k - cfg.server_threads;
		/* sessions i with i % nt == idx */
		t->n = cfg.sessions / nt + ((uint32_t)t->idx < cfg.sessions % nt);
		t->efd = eventfd(0, EFD_CLOEXEC); /* in main's table: main writes it */
		if (t->efd < 0)
			die("eventfd: %s", strerror(errno));
		thr[k] = t;
	}
	if (pthread_create(&thr[0]->tid, NULL, thr_main, thr[0]) ||
	    pthread_create(&thr[cfg.server_threads]->tid, NULL, thr_main, thr[cfg.server_threads]))
		die("pthread_create failed");
}

int main(int argc, char **argv)
{
	int nthr;
	FILE *jf = NULL;

	parse_args(argc, argv);
	nthr = cfg.server_threads + cfg.threads;
	if (cfg.io == IO_URING) {
		char why[128];
		if (uring_probe(why, sizeof(why))) {
			fprintf(stderr, "limitbench: --io uring: %s\n", why);
			return 1;
		}
	}
	/* before the run, so a bad path costs nothing */
	if (cfg.json_path && !(jf = fopen(cfg.json_path, "w")))
		die("cannot open --json %s: %s", cfg.json_path, strerror(errno));
	raise_nofile();
	signal(SIGPIPE, SIG_IGN);
	arm_watchdog();

	spawn();
	pthread_barrier_wait(&ready);
	double cpu0 = cpu_now();
	uint64_t start = now_ns();
	end_ns = start + cfg.duration_ns;
	pthread_barrier_wait(&go);

	struct timespec ts = {(time_t)(end_ns / 1000000000ull), (long)(end_ns % 1000000000ull)};
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
	double cpu = cpu_now() - cpu0;
	for (int k = 0; k < nthr; k++) {
		uint64_t one = 1;
		if (write(thr[k]->efd, &one, sizeof(one)) < 0)
			die("eventfd write: %s", strerror(errno));
	}

	uint64_t units = 0, errors = 0;
	int first_err = 0;
	for (int k = 0; k < nthr; k++) {
		struct thr *t = thr[k];
		pthread_join(t->tid, NULL);
		/* pingpong counts at the client, stream at the server */
		if (t->server == (cfg.mode == MODE_STREAM))
			units += t->units;
		if (t->errors && !errors)
			first_err = t->first_err;
		errors += t->errors;
	}
	report(units, errors, (double)(end_ns - start) / 1e9, cpu, jf);
	for (int k = 0; k < nthr; k++) {
		struct thr *t = thr[k];
		/* its sockets and epoll went with its side's descriptor table */
		close(t->efd);
		free(t->c);
		free(t->ev);
		free(t->scratch);
		free(t);
	}
	for (int k = 0; k < cfg.server_threads; k++)
		close(listen_fd[k]);
	free(thr);
	free(listen_fd);
	free(ports);
	free(payload);
	if (errors) {
		fprintf(stderr, "limitbench: %llu connection(s) failed in the window (first: %s)\n",
		        (unsigned long long)errors,
		        first_err ? strerror(first_err) : "closed by the peer");
		return 1;
	}
	return 0;
}
