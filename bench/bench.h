/*
 * bench.h - smtpbench internals shared by its files
 *
 *   main.c      options, bodies, threads, signals, the no-progress watchdog
 *   loop.c      per-thread session driver: connects (paced), timers,
 *               accounting; calls the client core (common/client.c) for
 *               every protocol decision and a backend to move bytes
 *   io_epoll.c  backend: non-blocking sockets, epoll, writev/recv
 *   io_uring.c  backend: connect, sendmsg, multishot recv on provided buffers
 *   tls.c       the TLS layer between backend and client core: OpenSSL on
 *               a tlsbio, ciphertext to and from the backend, plaintext
 *               to and from the client core; absent on plaintext sessions
 *   retryq.c    per-thread retry queue (--retry): a bounded min-heap on due
 *               time, pure code
 *   report.c    text report, JSON report (jansson), merge
 *   ivl.c       --interval-log: per-thread interval histograms, their
 *               lock-free hand-over and collection, merge's alignment
 *   ivllog.c    --interval-log: the JSON Lines file, written and read
 */
#ifndef SINK_BENCH_H
#define SINK_BENCH_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "sink/client.h"
#include "sink/tlsbio.h"
#include "sink/hist.h"
#include "sink/pace.h"
#include "sink/proxy.h"
#include "sink/stamp.h"
#include "sink/uring.h"
#include "retryq.h"
#include "ivl.h"

#define BENCH_MAX_TARGETS  16
#define BENCH_MAX_SIZES    16
#define BENCH_MAX_BIND     64
#define BENCH_FIRST_ERRORS 5
#define BENCH_NAMES        12 /* distinct TLS versions / ciphers counted, "other" beyond */

/* OpenSSL's types, named without including its headers everywhere. */
struct ssl_ctx_st;
struct ssl_st;
struct bio_st;
struct ssl_session_st;

struct body {
	uint32_t size; /* content octets after the stamp line */
	uint32_t weight;
	char *wire; /* dot-stuffed content + ".\r\n" (DATA) */
	size_t wire_len;
	char *raw;     /* content as the server must see it (BDAT, hash) */
	uint64_t hash; /* stamp hash of raw */
};

struct bench_cfg {
	struct sockaddr_storage target[BENCH_MAX_TARGETS];
	socklen_t target_len[BENCH_MAX_TARGETS];
	char target_host[BENCH_MAX_TARGETS][256]; /* as given, without [] */
	bool target_ip[BENCH_MAX_TARGETS];        /* an address literal: no SNI */
	int ntargets;
	struct sockaddr_in bind[BENCH_MAX_BIND];
	int nbind;
	uint32_t sessions;
	int threads;
	uint64_t messages; /* 0 with duration */
	uint64_t duration_ns;
	uint64_t warmup_ns;
	uint64_t msgs_per_session; /* 0 = reuse for the whole run */
	struct body bodies[BENCH_MAX_SIZES];
	int nbodies;
	uint32_t weight_total;
	struct client_cfg client;   /* ehlo, pipelining, bdat, rcpts, templates, tls, auth */
	bool tls_verify;            /* verify the server's certificate and name */
	const char *tls_ca;         /* CA file for --tls-verify, NULL: system store */
	bool tls_resume;            /* resume TLS sessions across a slot's reconnects */
	struct ssl_ctx_st *tls_ctx; /* one per run, shared by the threads */
	double rate;                /* messages/s, 0 = closed loop */
	double connect_rate;        /* connections/s per run, 0 = unlimited */
	uint64_t timeout_ns;
	uint64_t stall_ns;     /* no progress this long after a failure: stop */
	uint32_t max_attempts; /* consecutive failed attempts before a session gives up */
	uint32_t retry;        /* --retry: attempts after the first for a transient failure */
	uint64_t retry_delay_ns;
	uint64_t retry_queue; /* --retry-queue: entries in all threads, 0 = default */
	const char *json_path;
	FILE *json; /* opened before the run so a bad path fails early */
	/* --interval-log (ivllog.c) */
	const char *ivl_path;
	FILE *ivl;       /* opened before the run, as json */
	uint64_t ivl_ns; /* --interval: a whole number of ms */
	bool quiet;
	/* --proxy: a PROXY header first on every connection (loop.c) */
	uint8_t proxy;         /* 0 none, 1 or 2: the header version */
	bool proxy_src_given;  /* --proxy-source: else the connection's own address */
	bool proxy_port_given; /* its :PORT: else the connection's own port */
	struct fault_ip proxy_src;
	uint16_t proxy_port;
	/* --segment I/N (segment.h): 1/1 without; sessions, messages, rate
	 * and connect_rate above are then this instance's shares of these */
	bool segmented; /* --segment given (even 1/1) */
	uint32_t seg_index, seg_count;
	uint32_t sessions_total;
	uint64_t messages_total;
	double rate_total, connect_rate_total;
	bool start_at_given;  /* --start-at: wait for that wall-clock time */
	uint64_t start_at_ns; /* ns since the epoch */
	uint64_t started_ns;  /* wall clock (ns since the epoch) when the run began */
	int io;               /* 0 auto, 1 io_uring, 2 epoll */
	bool use_uring;       /* what auto decided */
	uint64_t run_id;
	char *argv_line;
};

/* Counts by name (TLS version, cipher): a few distinct names, the rest
 * under "other". */
struct bench_names {
	int n;
	struct {
		char name[48];
		uint64_t count;
	} e[BENCH_NAMES];
};

void bench_names_add(struct bench_names *t, const char *name, uint64_t k);

/* Per-thread results, merged at the end (no sharing while running). */
struct bench_stats {
	/* messages: attempted = delivered + partial + failed */
	uint64_t attempted, delivered, partial, failed;
	uint64_t failed_by[CLIENT_FAIL_N];
	uint64_t unsent;   /* --messages never started (the run ended early) */
	uint64_t measured; /* delivered + partial inside the measured window */
	uint64_t bytes;    /* content octets of delivered + partial, whole run */
	uint64_t measured_bytes;
	uint64_t sent_bytes; /* every octet written to servers */
	/* connections */
	uint64_t conn_attempts;
	uint64_t conn_established; /* greeting and EHLO/HELO accepted */
	uint64_t conn_quit;        /* ended with QUIT */
	uint64_t conn_failed;      /* ended abnormally before any definite message reply */
	uint64_t conn_failed_by[CLIENT_FAIL_N];
	uint64_t conn_closed_early;     /* ended abnormally after some progress */
	uint64_t gave_up;               /* sessions retired after max_attempts */
	uint64_t tls_full, tls_resumed; /* TLS handshakes completed, by kind */
	/* --retry.  messages.* above are final outcomes, one per message;
	 * these count attempts and what became of the transient failures */
	uint64_t retry_sent;         /* retry attempts begun */
	uint64_t retry_first_failed; /* messages whose first attempt failed transiently */
	uint64_t retry_recovered;    /* delivered or partial after >= 1 retry */
	uint64_t retry_exhausted;    /* transient failure with no retry left */
	uint64_t retry_queue_full;   /* transient failure that found the queue full */
	uint64_t retry_aborted;      /* still queued when the run ended */
	uint64_t attempt_failed_by[CLIENT_FAIL_N]; /* every failed attempt, by class */
	/* connections that ended abnormally because a message attempt failed
	 * and was queued again (421, drop, timeout): not a failure of the run
	 * once that message recovers (exit status only, not reported) */
	uint64_t conn_retried;
	struct bench_names tls_versions, tls_ciphers;
	struct client_stats replies;             /* and the AUTH counts */
	struct hist connect;                     /* connect() -> 220 */
	struct hist msg;                         /* intended start -> final reply (corrected) */
	struct hist msg_raw;                     /* actual MAIL write -> final reply */
	struct hist cmd;                         /* write -> first reply of that round trip */
	struct hist tls_hs_full, tls_hs_resumed; /* connect() -> TLS established */
	struct hist delivery; /* first attempt's intended start -> final success */
};

struct bench_live { /* published by the thread every 100 ms, read by main */
	uint64_t delivered, bytes, errors, sessions, p99_ns;
	uint64_t retries, retry_waiting; /* retry attempts begun, queued now */
	uint64_t last_progress_ns;       /* last definite message reply */
	uint64_t stall_since_ns;         /* first failure since then, 0 if none */
};

struct bench_thread {
	struct bench *b;
	int id;
	pthread_t th;
	uint32_t nsess;
	uint64_t quota;     /* messages this thread may start (messages mode) */
	uint32_t retry_cap; /* its retry queue's entries (--retry) */
	double rate;        /* this thread's share */
	struct bench_stats st;
	struct bench_live live;
	struct hist interval; /* for the live p99, reset each second */
	/* --interval-log: this thread's intervals; all zero when off */
	struct ivl_thread ivl;
	char first_errors[BENCH_FIRST_ERRORS][200];
	int nfirst;
	uint64_t end_ns;    /* when this thread's last session ended */
	uint32_t first_sid; /* session number of its first slot ({s}) */
	bool failed_setup;
};

struct bench {
	struct bench_cfg cfg;
	struct bench_thread *th;
	/* --interval-log: the writer (ivllog.c), NULL when off */
	struct ivl_log *ilog;
	uint64_t start_ns;       /* after warm-up: measurement begins */
	uint64_t t0_ns;          /* the run begins: set by main before the threads go */
	atomic_int stop;         /* set: every thread ends now (signal, no progress) */
	pthread_barrier_t ready; /* every thread has set up its backend */
	pthread_barrier_t go;    /* ... and main has waited for --start-at and set
	                          * t0_ns: a slow setup cannot start late */
	char stop_reason[200];
};

/* --- per-thread driver (loop.c) and its backends ----------------------------- */

enum { D_WAIT = 0, D_BACKOFF, D_CONNECTING, D_LIVE, D_DONE };

/* A message in flight on a session: --depth N keeps up to N per session,
 * in the order they were begun (results come back in that order). */
struct bmsg {
	uint64_t t_intended, t_start;
	uint64_t t_first; /* intended start of the message's first attempt */
	uint64_t seq;     /* stamp sequence number and {n} */
	const struct body *body;
	uint16_t attempt; /* attempts of this message before this one */
	char stamp[STAMP_LINE_LEN];
};

struct csess {
	struct client cl;
	struct bmsg *m;     /* ring of cfg.client.depth (at least 1) messages */
	uint8_t mq_h, mq_n; /* its head and how many are in flight */
	int fd;
	uint32_t gen;     /* bumped at close: late io_uring completions are stale */
	uint8_t st;       /* D_* */
	uint8_t fails;    /* consecutive failed attempts */
	uint8_t progress; /* this connection got a definite message reply */
	uint8_t want_close;
	uint8_t established;
	uint8_t send_busy;    /* io_uring: a sendmsg in flight */
	uint8_t kick;         /* the core queued output: send it at settle() */
	uint8_t end_by_retry; /* the connection ends with a message queued again */
	uint8_t claim;        /* --messages: connecting for one of the unstarted messages */
	int target;
	uint64_t deadline; /* reply/connect deadline, or end of back-off */
	uint64_t t_connect, t_rt;
	uint64_t msgs; /* messages started on this connection */
	/* --proxy: the connection's PROXY header, sent before anything else
	 * (before the greeting is read, before a ClientHello); pre_off of
	 * pre_len octets are out */
	char pre[PROXY_V1_MAX];
	uint8_t pre_off, pre_len;
	struct msghdr mh;  /* io_uring: snapshot of the output being sent */
	struct iovec *iov; /* client_iov_max() entries */
	/* TLS (tls.c); ssl is NULL on a plaintext connection */
	struct ssl_st *ssl;
	struct tlsbio tb;              /* ssl's BIO: input in place, output to obuf */
	struct ssl_session_st *resume; /* --tls-resume: this slot's last session */
	char *obuf;                    /* ciphertext for the backend, per slot */
	uint32_t ooff, olen;
	uint8_t tls_hs;    /* 0 up, 1 handshake in progress, 2 failed (tls.c) */
	struct iovec tiov; /* drv_out() of the PROXY header or of obuf */
};

struct loop;

/* A backend moves bytes; loop.c decides everything else. */
struct bench_io {
	const char *name;
	int (*init)(struct loop *L);
	void (*fini)(struct loop *L);
	/* start connecting s->fd to a; completion via drv_connected() */
	int (*connect)(struct loop *L, struct csess *s, const struct sockaddr *a, socklen_t n);
	void (*send)(struct loop *L, struct csess *s); /* output was queued */
	void (*close)(struct loop *L, struct csess *s);
	void (*poll)(struct loop *L, int timeout_ms); /* wait, dispatch events */
};

extern const struct bench_io bench_io_epoll, bench_io_uring;

struct loop {
	struct bench_thread *t;
	struct bench *b;
	const struct bench_io *io;
	struct csess *s;
	char *cmdbufs;
	struct bmsg *msgs;  /* every session's ring, one block */
	struct iovec *iovs; /* every session's io_uring send snapshot, one block */
	uint32_t depth;     /* ring size: --depth, at least 1 */
	uint32_t *cq;       /* FIFO of sessions waiting for a connect slot */
	uint32_t cq_head, cq_len;
	uint64_t cr_next; /* --connect-rate: next connect allowed */
	uint64_t cr_interval;
	uint64_t seq_next;
	struct pace pace;       /* open loop: intended start times */
	uint64_t next_sched_ns; /* = pace_next(&pace), cached */
	uint64_t started;       /* messages started (first attempts) */
	uint64_t claimed;       /* --messages: slots connecting for an unstarted message */
	struct retryq rq;       /* --retry: messages waiting for their next attempt */
	uint32_t open;          /* sessions not yet D_DONE */
	uint32_t connecting;    /* sessions in D_CONNECTING (pump_connects) */
	uint32_t rr;
	uint64_t last_progress, stall_since;
	/* backends */
	int ep;
	struct io_uring ring;
	struct uring_bufs bufs;
	char rbuf[65536];
	char tls_in[16384], tls_out[16384]; /* plaintext scratch of the TLS layer */
};

/* Backend -> driver: each may close s (and even start a new connection in
 * the same slot); a backend compares s->gen before and after. */
void drv_connected(struct loop *L, struct csess *s, int err);
void drv_input(struct loop *L, struct csess *s, const char *p, size_t n);
void drv_eof(struct loop *L, struct csess *s, int err);
void drv_wrote(struct loop *L, struct csess *s, size_t n);

/* What the backend sends: the PROXY header while any of it is unsent,
 * then the client core's output as it is, or the TLS layer's ciphertext.
 * Backends use only these two. */
static inline bool drv_has_output(const struct csess *s)
{
	if (s->pre_off < s->pre_len)
		return true;
	return s->ssl ? s->olen > 0 : client_has_output(&s->cl);
}

static inline const struct iovec *drv_out(struct csess *s, int *n)
{
	if (s->pre_off < s->pre_len) { /* alone: drv_wrote() never gets more than it */
		s->tiov.iov_base = s->pre + s->pre_off;
		s->tiov.iov_len = (size_t)(s->pre_len - s->pre_off);
		*n = 1;
		return &s->tiov;
	}
	if (!s->ssl)
		return client_out(&s->cl, n);
	s->tiov.iov_base = s->obuf + s->ooff;
	s->tiov.iov_len = s->olen;
	*n = 1;
	return &s->tiov;
}

/* Driver internals the TLS layer calls back into (loop.c). */
void drv_feed(struct loop *L, struct csess *s, const char *p, size_t n, uint64_t now);
void drv_act(struct loop *L, struct csess *s, unsigned act, uint64_t now);

/* TLS layer (tls.c). */
int tls_ctx_new(struct bench_cfg *c, char *err, size_t errlen);
void tls_ctx_free(struct bench_cfg *c);
unsigned tls_begin(struct loop *L, struct csess *s, uint64_t now);
void tls_input(struct loop *L, struct csess *s, const char *p, size_t n, uint64_t now);
void tls_pump(struct loop *L, struct csess *s);
void tls_wrote(struct loop *L, struct csess *s, size_t n);
void tls_close(struct loop *L, struct csess *s);
void tls_slot_free(struct csess *s);

uint64_t bench_now(void);
int bench_run(struct bench_thread *t);
void bench_report(struct bench *b, const struct bench_stats *tot, double secs, double cpu);
int bench_json(struct bench *b, const struct bench_stats *tot, double secs, double cpu, FILE *f);
int bench_merge(int argc, char **argv);
void bench_stats_init(struct bench_stats *s);
void bench_stats_add(struct bench_stats *dst, const struct bench_stats *src);
char *bench_utf8_clean(const char *s); /* malloc'd valid UTF-8 copy (report.c) */

/* --- --interval-log (ivllog.c) ------------------------------------------------------- */

/* A run: open the file before anything else (exit 2 when it cannot be
 * written), start before the threads (header, clock offset, per-thread
 * queues), poll from the reporting loop, finish after the threads ended
 * (the rest, the end line; -1 with errno when a write failed). */
int ivl_log_open(struct bench_cfg *c);
int ivl_log_start(struct bench *b);
void ivl_log_poll(struct bench *b);
int ivl_log_finish(struct bench *b, uint64_t end_ns);

/* merge: logs read so far, aligned by wall-clock start. */
struct ivl_totals {
	int logs;
	int64_t interval_ms;
	uint64_t aligned;            /* intervals with at least one log in them */
	uint64_t measured_intervals; /* those not marked warm-up */
	int64_t first_ms, last_ms;   /* start of the first and last of them */
	uint64_t n[IVL_N];           /* outcomes, every interval */
	uint64_t measured;           /* delivered + partial outside warm-up */
	uint64_t measured_ms;        /* time covered outside warm-up */
	struct hist h;               /* message latency outside warm-up */
};
struct ivl_merge;
struct ivl_merge *ivl_merge_new(void);
bool ivl_merge_is_log(const char *buf, size_t n);
/* ivl_merge_add - check and keep one log (buf NUL-terminated); -1 with
 * the line and key in err. */
int ivl_merge_add(struct ivl_merge *m, const char *file, const char *buf, size_t n, char *err,
                  size_t errlen);
int ivl_merge_nlogs(const struct ivl_merge *m);
/* ivl_merge_finish - align, write the CSV rows (csv may be NULL), sum. */
int ivl_merge_finish(struct ivl_merge *m, FILE *csv, struct ivl_totals *t);
void ivl_merge_free(struct ivl_merge *m);

#endif
