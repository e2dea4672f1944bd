/*
 * server.h - smtpsink's shared server types: configuration, connections,
 * workers, and the small interface between the connection layer and the
 * two I/O backends.
 *
 * Layers, bottom to top (see shared/design/architecture.md):
 *   backend (io_uring.c | epoll.c)  moves bytes only: accept, receive,
 *                                   send, close; knows nothing of SMTP
 *   connection layer (conn.c)       one state machine per connection:
 *                                   SESSION -> CLOSING -> CLOSED, each state
 *                                   with a deadline; backpressure, held
 *                                   input, lingering close live here once
 *   worker (worker.c)               the loop both backends share: timers,
 *                                   shutdown phases, counters
 *   session (common/sess.c)         pure SMTP: bytes in, replies out
 *
 * Threads: main (options, signals, progress, summary), one acceptor
 * (io_uring backend only) and N workers.  A connection lives on exactly one
 * worker for its whole life; workers share nothing on the hot path.  Cross-
 * thread traffic: the accepted fd handed to a worker (IORING_OP_MSG_RING, or
 * the kernel's accept queue for epoll), the stop phase and its deadline, a
 * wake-up eventfd per worker, connection counts for --max-conns, the
 * --exit-after count (only with that option) and counter snapshots read by
 * the main thread.  All of these are atomics.
 */
#ifndef SINK_SERVER_H
#define SINK_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "sink/fault.h"
#include "sink/fault_policy.h"
#include "sink/obuf.h"
#include "sink/sess.h"
#include "verify.h"

#define SINK_MAX_LISTEN 16
#define SINK_MAX_EXPECT 64
#define SINK_MAX_FAULTS 256
#define SINK_MAX_PROXY  32 /* --proxy-protocol sources */

/* --expect NAME OP VALUE over the report's counters */
enum expect_op { EXP_EQ, EXP_NE, EXP_GE, EXP_LE, EXP_GT, EXP_LT };
struct expect {
	char name[64]; /* a key of "counters", or "verify.KEY" */
	enum expect_op op;
	uint64_t value;
	const char *text;
};

/* Connection-layer limits (per connection; see the README's memory bound). */
#define CONN_RECV_SMALL   (16u * 1024u)                /* one receive until a session is trusted */
#define CONN_HELD_MAX     (64u * 1024u)                /* input kept while replies back up */
#define CONN_CLOSE_NS     (3ull * 1000 * 1000 * 1000)  /* flush + linger deadline */
#define CONN_DRAIN_GRACE  (500ull * 1000 * 1000)       /* closing after the drain deadline */
#define CONN_HANDSHAKE_NS (10ull * 1000 * 1000 * 1000) /* TLS handshake deadline */
#define CONN_WIRE_MAX     (16u * 1024u) /* TLS: ciphertext queued before encrypting more */

enum io_backend { IO_AUTO = 0, IO_URING, IO_EPOLL };

struct listen_addr {
	struct sockaddr_storage ss;
	socklen_t len;
	int fd;
	bool tls;      /* --listen-tls: implicit TLS (RFC 8314) */
	char text[64]; /* "127.0.0.1:2525" / "[::1]:2525" after bind */
};

/* --auth FILE: user names and SHA-256 of their passwords (the passwords
 * themselves are never kept). */
struct auth_user {
	char *name;
	size_t len;
	unsigned char pass_sha256[32];
};

struct server_cfg {
	struct sess_cfg sess;
	char hostname[256];
	struct listen_addr listen[SINK_MAX_LISTEN];
	int nlisten;
	int threads;
	enum io_backend io;
	uint32_t max_conns; /* 0 = unlimited */
	uint64_t idle_timeout_ns;
	uint64_t drain_timeout_ns;
	uint64_t stats_interval_ns;
	uint64_t exit_after; /* messages; 0 = never */
	const char *json_path;
	const char *ready_file;
	bool quiet;
	bool verify;
	uint32_t recv_buf_size;  /* io_uring provided buffer size */
	uint32_t recv_buf_count; /* per worker */
	/* TLS and AUTH */
	const char *tls_cert, *tls_key, *tls_cert_out;
	bool tls_self_signed;
	int tls_min; /* 12 or 13 */
	struct expect expects[SINK_MAX_EXPECT];
	int nexpects;
	uint64_t max_runtime_ns; /* 0 = none */
	struct listen_addr http; /* --http; http.len == 0: off */
	/* faults (issue 12; docs/faults.md) */
	const char *fault_rules[SINK_MAX_FAULTS]; /* --fault, in order */
	int nfault_rules;
	const char *fault_files[SINK_MAX_FAULTS]; /* --fault-file */
	int nfault_files;
	uint64_t seed;
	bool address_faults;
	uint64_t greylist_ns, greylist_expiry_ns;
	uint32_t greylist_max;
	const char *rate_limit, *rate_limit_reply;
	uint32_t max_conns_per_ip;
	/* --proxy-protocol (issue 14): sources whose connections begin with a
	 * PROXY header; --proxy-timeout */
	struct fault_cidr proxy_from[SINK_MAX_PROXY];
	int nproxy_from;
	uint64_t proxy_timeout_ns;
	/* --capture */
	const char *capture_dir;
	uint64_t capture_sample; /* --capture-sample 1/N */
	uint64_t capture_first, capture_max_bytes;
	bool capture_strict;
	const char *auth_file;   /* NULL with --auth any */
	struct auth_user *users; /* --auth FILE */
	size_t nusers;
};

/* Server-level counters per worker, declared once for the struct, the
 * summary and the JSON report: X(field, "json name", "what it counts"). */
#define SERVER_COUNTERS(X)                                                                         \
	X(conns_accepted, "conns_accepted", "connections given a session")                         \
	X(conns_closed, "conns_closed", "connections closed and released")                         \
	X(io_errors, "io_errors", "connection reset or other socket error during a session")       \
	X(peer_closed, "peer_closed", "client hung up without QUIT")                               \
	X(peer_closed_in_content, "peer_closed_in_content", "... in the middle of DATA/BDAT")      \
	X(out_overflow, "out_overflow", "reply backlog over its hard cap: connection dropped")     \
	X(in_overflow, "in_overflow",                                                              \
	  "client pipelined more than 64 KiB past replies it did not read: dropped")               \
	X(close_timeouts, "close_timeouts",                                                        \
	  "final reply not taken or peer not closing within the close deadline: reset")            \
	X(read_pauses, "read_pauses", "reading stopped because the client did not read replies")   \
	X(enobufs, "enobufs", "io_uring provided-buffer ring ran dry (receives re-armed)")         \
	X(short_sends, "short_sends", "sends the kernel took only partly")                         \
	X(recv_bytes, "recv_bytes", "octets received from clients")                                \
	X(faults_injected, "faults_injected",                                                      \
	  "faults injected by --fault rules and address faults")                                   \
	X(greylisted, "greylisted", "RCPTs answered 451 by --greylist")                            \
	X(rate_limited, "rate_limited", "MAILs answered 451 by --rate-limit")                      \
	X(conns_rejected_per_ip, "conns_rejected_per_ip", "421 over --max-conns-per-ip")           \
	X(capture_dropped, "capture_dropped", "messages not captured: the writer was behind")      \
	X(capture_skipped, "capture_skipped", "messages not captured: --capture-sample/-first")    \
	X(tls_handshakes, "tls_handshakes", "TLS handshakes completed")                            \
	X(tls_handshake_failures, "tls_handshake_failures", "TLS handshakes that failed")          \
	X(tls_handshake_timeouts, "tls_handshake_timeouts", "TLS handshakes not done in 10 s")     \
	X(tls_resumed, "tls_resumed", "... of them resumed sessions (tickets or cache)")           \
	X(tls_v1_2, "tls_v1_2", "... of them TLS 1.2")                                             \
	X(tls_v1_3, "tls_v1_3", "... of them TLS 1.3")                                             \
	X(proxy_headers, "proxy_headers", "PROXY headers taken from --proxy-protocol sources")     \
	X(proxy_proxied, "proxy_proxied",                                                          \
	  "... of them carrying a client address (used from then on)")                             \
	X(proxy_local, "proxy_local",                                                              \
	  "... of them LOCAL/UNKNOWN (balancer health checks): real address kept")                 \
	X(proxy_untrusted, "proxy_untrusted",                                                      \
	  "PROXY headers from sources not in --proxy-protocol: 421, closed")                       \
	X(proxy_timeouts, "proxy_timeouts", "no complete PROXY header within --proxy-timeout")     \
	X(proxy_truncated, "proxy_truncated", "balancer closed inside its PROXY header")           \
	X(proxy_bad_not_proxy, "proxy_bad_not_proxy",                                              \
	  "trusted source sent no PROXY header (e.g. plain SMTP): 421, closed")                    \
	X(proxy_bad_v1_too_long, "proxy_bad_v1_too_long", "PROXY v1 line over 107 octets")         \
	X(proxy_bad_v1_syntax, "proxy_bad_v1_syntax", "PROXY v1 protocol, address or port bad")    \
	X(proxy_bad_v2_version, "proxy_bad_v2_version", "PROXY v2 version or command unknown")     \
	X(proxy_bad_v2_family, "proxy_bad_v2_family", "PROXY v2 family unknown or not TCP")        \
	X(proxy_bad_v2_length, "proxy_bad_v2_length", "PROXY v2 addresses shorter than family")    \
	X(proxy_bad_too_long, "proxy_bad_too_long", "PROXY v2 header over 1024 octets")            \
	X(loops, "loops", "event loop iterations")                                                 \
	X(cqes, "cqes", "io_uring completions handled")

/* Session durations for a histogram (smtpsink_session_duration_seconds):
 * upper bounds in seconds; the last bucket is +Inf. */
#define SERVER_SESSION_BUCKETS 8
extern const double server_session_bounds[SERVER_SESSION_BUCKETS - 1];

struct server_stats {
	struct sess_stats sess;
#define SERVER_X_FIELD(f, name, doc) uint64_t f;
	SERVER_COUNTERS(SERVER_X_FIELD)
#undef SERVER_X_FIELD
	uint64_t session_hist[SERVER_SESSION_BUCKETS];
	uint64_t session_ms; /* sum of session durations */
	struct verify_stats verify;
};

enum conn_state {
	/* --proxy-protocol: a trusted balancer's connection, before its PROXY
	 * header is complete (it precedes the greeting and TLS-on-connect).
	 * Deadline: --proxy-timeout since accept. */
	CONN_PROXY,
	/* TLS handshake (implicit TLS from accept, or after STARTTLS's 220).
	 * Deadline: CONN_HANDSHAKE_NS since entering, then reset. */
	CONN_HANDSHAKE,
	/* SMTP session (the greeting is queued at once).  Deadline: the idle
	 * timeout since the last progress (input consumed or output sent), so
	 * a client that stops reading its replies expires too. */
	CONN_SESSION,
	/* Final reply queued: flush it, shut the write side, read and drop
	 * until the client closes (lingering close: closing with unread input
	 * would make the kernel answer RST and destroy the reply).  Deadline:
	 * CONN_CLOSE_NS since entering, then reset. */
	CONN_CLOSING,
	/* Done: the backend closes the socket once nothing is in flight.  No
	 * deadline needed: cancellation completes promptly. */
	CONN_CLOSED,
	CONN_NSTATES,
};

/* A list of connections in one state, oldest first: every member has the
 * same timeout, so the head is always the next to expire (O(1) touch, a
 * tick looks only at expired entries). */
struct conn_list {
	struct conn *head, *tail;
	uint32_t n;
};

struct conn;
struct worker;

/* What a backend provides to the shared worker loop. */
struct backend_ops {
	const char *name;
	int (*init)(struct worker *w); /* in the worker thread; 0 or -errno */
	void (*fini)(struct worker *w);
	/* wait - submit what is queued, wait up to timeout_ns (0 = poll) or a
	 * wake-up, and dispatch events to the connection layer. */
	void (*wait)(struct worker *w, uint64_t timeout_ns);
	/* sync - make the socket match what c wants: send pending output,
	 * receive when conn_wants_input(), close (and conn_release) when
	 * CLOSED.  Marks made meanwhile are absorbed; returns true to be synced
	 * again next turn (never after releasing c). */
	bool (*sync)(struct worker *w, struct conn *c);
	/* stop_accepting - the server is stopping (epoll: leave listeners). */
	void (*stop_accepting)(struct worker *w);
};

struct worker {
	struct server *srv;
	const struct backend_ops *ops;
	int id;
	pthread_t thread;
	struct server_stats st;   /* owned by the worker thread */
	struct server_stats snap; /* published copy, read by main (atomic loads) */
	uint64_t id_seq;          /* queue-id counter */
	uint64_t now;             /* clock at the top of this loop turn */
	uint64_t last_publish;
	uint64_t published_loops; /* st.loops at the last publish */
	struct conn_list lists[CONN_NSTATES];
	struct conn *free_conns;  /* recycled connection objects */
	struct conn *dirty;       /* connections to sync with their sockets */
	struct cap_ring *capring; /* --capture: records for the writer thread */
	struct conn *capwait;     /* --capture-strict: sessions waiting for a verdict */
	struct conn **wakes;      /* min-heap by wake_ns: fault delays, throttles */
	uint32_t nwakes, capwakes;
	char *tls_buf;                /* TLS: plaintext scratch, one record */
	int phase_seen;               /* stop phase this worker has applied */
	bool forced;                  /* drain deadline applied */
	bool handoffs_done;           /* no more new connections can arrive */
	void *backend;                /* backend-private state */
	int ring_fd;                  /* io_uring: target for MSG_RING hand-off */
	int wake_fd;                  /* eventfd: main/other threads wake the loop */
	atomic_int ready;             /* 1 running, -1 setup failed */
	atomic_uint_fast64_t active;  /* connections, for least-loaded placement */
	atomic_uint_fast64_t arrived; /* io_uring: hand-offs received (placement) */
	struct verify_worker vw;      /* --verify: sequence numbers seen */
};

/* Connections one worker takes before the next worker is used: a few
 * request/reply sessions stay on one thread (io_uring: pick_worker, epoll:
 * want_listen). */
#define WORKER_PACK_CONNS 16

/* Backend-private per-connection state lives in conn.io (no backend fields
 * in the shared struct). */
#define CONN_IO_BYTES 32

struct conn {
	struct worker *w;
	int fd;
	uint8_t state;   /* enum conn_state */
	uint8_t paused;  /* replies back up: not reading (held input waits) */
	uint8_t trusted; /* finished a message and never paused: bulk receive */
	uint8_t wr_shut; /* CLOSING: output flushed, write side shut */
	uint8_t peer_eof;
	uint8_t rst;      /* CLOSED: reset (SO_LINGER 0) rather than FIN */
	uint8_t in_dirty; /* on the worker's dirty list */
	uint8_t ever_paused;
	uint8_t starttls;       /* 220 to STARTTLS queued: TLS starts once it is sent */
	uint8_t suspended;      /* a fault deferred a reply: input is held, not fed */
	uint8_t connlimited;    /* counted in --max-conns-per-ip */
	uint8_t proxy_tls;      /* CONN_PROXY on an implicit-TLS port: TLS after the header */
	uint8_t first_in;       /* nothing received yet (an untrusted PROXY header is refused) */
	uint32_t heap_i;        /* in w->wakes (1-based; 0 = not there) */
	uint64_t wake_ns;       /* when the heap wakes it */
	uint64_t suspend_until; /* 0: not suspended on a timer */
	uint64_t throttle_bps;  /* a throttle= fault: octets per second each way */
	int64_t send_tokens, recv_tokens;
	uint64_t tokens_ns;
	struct fault_ip fip; /* the client, for fault rules and policies */
	/* --capture: this message's record id (0: not captured) and state */
	uint64_t cap_id, cap_size;
	uint8_t cap_failed, cap_waiting;
	int8_t cap_verdict;    /* --capture-strict: 1 stored, -1 not */
	struct conn *cap_next; /* in w->capwait */
	char *env;             /* envelope for the index: "Mfrom\0Rrcpt\0..." */
	size_t env_len, env_cap;
	uint32_t env_omitted; /* RCPTs past CAPTURE_ENV_MAX: counted, not listed */
	uint8_t tls_notified; /* close_notify queued */
	struct tls_conn *tls; /* NULL: plaintext */
	/* Input the session could not take yet (reply backpressure), copied out
	 * of the receive buffer so no backend ever holds buffers: at most
	 * CONN_HELD_MAX octets, freed once consumed. */
	char *held;
	uint32_t held_len, held_off, held_cap;
	uint32_t sess_msgs_seen;
	uint64_t since_ns; /* SESSION: last progress; CLOSING: entered */
	uint64_t opened_ns;
	struct conn *prev, *next; /* in w->lists[state] */
	struct conn *dirty_next;
	union {
		uint64_t align;
		unsigned char bytes[CONN_IO_BYTES];
	} io;
	struct sess sess;
	struct obuf out;          /* the session's replies (plaintext) */
	struct obuf wire;         /* TLS: ciphertext for the socket */
	struct stamp_verifier vc; /* --verify */
	char carry[];             /* scanner carry, line_max octets */
};

struct server {
	struct server_cfg cfg;
	struct worker *workers;
	int nworkers;
	enum io_backend backend; /* actually used */
	/* 0 run, 1 stopping (drain), 2 forced (second signal), 3 abort now.
	 * drain_deadline_ns is stored before stop_phase is raised (release)
	 * and read after it is seen (acquire). */
	atomic_int stop_phase;
	atomic_uint_fast64_t drain_deadline_ns;
	const char *_Atomic stop_reason;    /* written once, by whoever stopped */
	atomic_uint_fast64_t conns;         /* open connections, all workers */
	atomic_uint_fast64_t conns_peak;    /* high-water mark of conns */
	atomic_uint_fast64_t total_msgs;    /* only maintained with --exit-after */
	atomic_int acceptor_stopped;        /* no more hand-offs can arrive */
	atomic_int acceptor_ready;          /* 1 running, -1 setup failed */
	atomic_uint_fast64_t accept_errors; /* EMFILE/ENFILE/... on accept */
	atomic_uint_fast64_t rejected;      /* over --max-conns */
	pthread_t acceptor;
	bool have_acceptor;
	uint64_t start_ns;
	double start_unix;
	/* POST /api/v1/reset: counters are reported relative to this */
	pthread_mutex_t base_lock;
	/* faults: the plan workers ask (swapped on SIGHUP; retired plans are
	 * kept until exit, so no worker can be inside a freed one) */
	_Atomic(struct fault_plan *) plan;
	struct fault_plan *retired[64];
	int nretired;
	struct fault_greylist *greylist;
	struct fault_rate *rate;
	struct fault_connlimit *connlimit;
	bool need_peer; /* look up each client's address (faults, limits) */
	/* --capture: counted by the writer thread */
	_Atomic uint64_t captured, capture_write_errors, capture_over_max;
	struct server_stats base;
	uint64_t base_rejected, base_accept_errors;
	uint64_t verify_run; /* smtpbench run id seen by --verify */
};

/* conn.c - the connection state machine; backends call these. */
/* conn_open - a new socket (tls: from an implicit-TLS listener); NULL: the
 * fd was closed and counted. */
struct conn *conn_open(struct worker *w, int fd, bool tls);
void conn_input(struct conn *c, const char *p, size_t n);
void conn_eof(struct conn *c);
void conn_error(struct conn *c, int err); /* socket error (positive errno) */
void conn_sent(struct conn *c, size_t n);
void conn_release(struct conn *c);             /* socket closed, nothing in flight */
void conn_close(struct conn *c, unsigned act); /* SESS_ACT_CLOSE: begin closing */
void conn_abort(struct conn *c, bool rst);
void conn_proxy_expired(struct conn *c, bool stop); /* CONN_PROXY past its deadline */
void conn_mark_dirty(struct conn *c);
void conn_list_remove(struct conn *c);
void conn_set_socket_reset(int fd);

/* conn_wants_input - should the backend receive for c now?  In a session
 * unless paused; in CLOSING once the write side is shut (lingering). */
static inline bool conn_wants_input(const struct conn *c)
{
	if (c->state == CONN_SESSION)
		return !c->paused && !c->peer_eof && (!c->throttle_bps || c->recv_tokens > 0);
	if (c->state == CONN_HANDSHAKE || c->state == CONN_PROXY)
		return !c->peer_eof;
	return c->state == CONN_CLOSING && c->wr_shut && !c->peer_eof;
}

/* conn_outbuf - what the backend sends: the replies, or their ciphertext. */
static inline struct obuf *conn_outbuf(struct conn *c)
{
	return c->tls ? &c->wire : &c->out;
}

/* conn_bulk - may the backend receive without bounds (multishot recv, large
 * reads)?  Only for sessions that finished a message and never let replies
 * back up: everyone else gets one bounded receive at a time, so a client
 * that pipelines without reading can never make the server take in more
 * than CONN_RECV_SMALL octets past what it could answer. */
static inline bool conn_bulk(const struct conn *c)
{
	return c->trusted && !c->throttle_bps;
}

/* conn_send_window - octets the backend may send now (a throttle= fault
 * paces it; otherwise unlimited). */
size_t conn_send_window(struct conn *c);

/* conn.c - timers for fault delays and throttles */
void conn_wake_due(struct worker *w); /* run every wake whose time has come */

/* capture.c - --capture DIR */
struct cap_ring;
int capture_setup(struct server *srv, char *err, size_t errlen);
void capture_stop(struct server *srv);
const char *capture_dir(void);
void capture_begin(struct conn *c);
void capture_content(struct conn *c, const char *p, size_t n);
void capture_end(struct conn *c, bool accepted);
void capture_release(struct conn *c);
void capture_envelope(struct conn *c, char kind, const char *addr, size_t n);
int capture_commit(struct conn *c);
void capture_poll_done(struct worker *w);
void conn_resume_now(struct conn *c); /* conn.c: wake a session a host suspended */

/* faults.c - the fault plan and policies from the options */
int faults_setup(struct server *srv, char *err, size_t errlen);
int faults_reload(struct server *srv, char *err, size_t errlen); /* SIGHUP */
void faults_teardown(struct server *srv);
struct json_t;
struct json_t *faults_report(struct server *srv); /* the JSON "faults" list */

/* worker.c - the loop both backends share */
uint64_t now_ns(void);
void *worker_main(void *arg);
void worker_init(struct worker *w, struct server *srv, int id, const struct backend_ops *ops);
void worker_fini(struct worker *w);
void worker_wake(struct worker *w);
void worker_publish(struct worker *w);
void server_stop(struct server *srv, int phase, const char *why);
bool server_admit(struct server *srv); /* count a new connection; false over --max-conns */
void server_unadmit(struct server *srv);
int reject_busy(struct server *srv, int fd);
void set_nonblock(int fd);

/* cfg.c - options (flags and SMTPSINK_* environment variables) */
extern const char *prog;
__attribute__((format(printf, 1, 2), noreturn)) void usage_error(const char *fmt, ...);
__attribute__((format(printf, 1, 2), noreturn)) void die(const char *fmt, ...);
void cfg_parse(struct server_cfg *cfg, int argc, char **argv);
char *file_slurp(const char *path, size_t *len); /* whole file, NUL-terminated */

/* Backends. */
int uring_start(struct server *srv);
int epoll_start(struct server *srv);
extern const struct backend_ops uring_ops, epoll_ops;

/* stats.c */
void stats_sum(struct server *srv, struct server_stats *tot, bool live);
/* stats_current - the sum since the last reset (what every report shows) */
void stats_current(struct server *srv, struct server_stats *tot, bool live);
void stats_reset(struct server *srv);
uint64_t stats_rejected(struct server *srv);
uint64_t stats_accept_errors(struct server *srv);

/* http.c - --http admin endpoint */
int http_start(struct server *srv, char *err, size_t errlen);
void http_stop(void);
void stats_progress(struct server *srv, uint64_t now, uint64_t *last_msgs, uint64_t *last_bytes,
                    uint64_t *last_ns);
void stats_summary(struct server *srv, const struct server_stats *tot, double secs);
struct json_t;
struct json_t *stats_report(struct server *srv, const struct server_stats *tot, double secs);
int stats_write(struct json_t *report, int fd);
/* stats_expect - check --expect against the report; prints each failure,
 * returns how many failed.  With report NULL: only checks that every name
 * exists (a usage error otherwise). */
int stats_expect(struct server *srv, struct json_t *report);

#endif
