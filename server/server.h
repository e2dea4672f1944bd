/*
 * server.h - smtpsink's shared server types: configuration, connections,
 * workers and the two I/O backends that drive them.
 *
 * Threads: main (options, signals, progress, summary), one acceptor
 * (io_uring backend only) and N workers.  A connection lives on exactly one
 * worker for its whole life; workers share nothing on the hot path.  Cross-
 * thread traffic is limited to: the accepted fd handed to a worker
 * (IORING_OP_MSG_RING, or the kernel's accept queue for epoll), the stop
 * phase, a connection count for --max-conns, and stats snapshots read by the
 * main thread with relaxed atomics.
 */
#ifndef SINK_SERVER_H
#define SINK_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "sink/obuf.h"
#include "sink/sess.h"
#include "verify.h"

#define SINK_MAX_LISTEN 16

enum io_backend { IO_AUTO = 0, IO_URING, IO_EPOLL };

struct listen_addr {
	struct sockaddr_storage ss;
	socklen_t len;
	int fd;
	char text[64]; /* "127.0.0.1:2525" / "[::1]:2525" after bind */
};

struct server_cfg {
	struct sess_cfg sess;
	char hostname[256];
	struct listen_addr listen[SINK_MAX_LISTEN];
	int nlisten;
	int threads;
	enum io_backend io;
	bool reuseport;     /* --accept reuseport: per-worker listeners */
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
};

/* Server-level counters per worker (sessions' counters live in .sess). */
struct server_stats {
	struct sess_stats sess;
	uint64_t conns_accepted;
	uint64_t conns_closed;
	uint64_t conns_active;
	uint64_t conns_peak;
	uint64_t conns_rejected;         /* over --max-conns: 421 4.7.0 */
	uint64_t accept_errors;          /* EMFILE/ENFILE/ENOMEM on accept */
	uint64_t io_errors;              /* connection reset, broken pipe, ... */
	uint64_t peer_closed;            /* client hung up without QUIT */
	uint64_t peer_closed_in_content; /* ... in the middle of DATA/BDAT */
	uint64_t out_overflow;           /* reply or held-input backlog over its cap */
	uint64_t read_pauses;            /* reading stopped for reply backpressure */
	uint64_t enobufs;                /* provided-buffer ring ran dry (io_uring) */
	uint64_t short_sends;
	uint64_t recv_bytes;
	uint64_t loops; /* event loop iterations */
	uint64_t cqes;  /* completions handled (io_uring) */
	struct verify_stats verify;
};

struct conn;

struct worker {
	struct server *srv;
	int id;
	pthread_t thread;
	struct server_stats st;   /* owned by the worker thread */
	struct server_stats snap; /* published copy, read by main (relaxed atomics) */
	uint64_t id_seq;          /* queue-id counter */
	uint64_t published_msgs;  /* msgs already added to srv->total_msgs */
	/* idle list: least recently active first (O(1) touch, O(expired) tick) */
	struct conn *lru_head, *lru_tail;
	struct conn *free_conns; /* recycled connection objects */
	struct conn *dirty;      /* connections with replies to send */
	void *backend;           /* backend-private state */
	int ring_fd;             /* io_uring: target for MSG_RING hand-off */
	atomic_int ready;
	atomic_uint_fast64_t active; /* connections, for least-loaded placement */
	char *rbuf;                  /* epoll: receive buffer */
	struct verify_worker vw;     /* --verify: sequence numbers seen */
};

struct conn {
	struct worker *w;
	int fd;
	uint32_t refs;       /* io_uring operations in flight */
	uint32_t send_len;   /* bytes the in-flight send asked for */
	uint8_t recv_armed;  /* multishot recv active (io_uring) */
	uint8_t send_busy;   /* a send is in flight */
	uint8_t closing;     /* close once output is flushed */
	uint8_t dead;        /* socket unusable: close now, drop output */
	uint8_t read_paused; /* backpressure: output backlog too large */
	uint8_t peer_eof;    /* client sent FIN */
	uint8_t in_dirty;
	uint8_t in_lru;
	uint8_t cancel_sent;
	uint8_t recv_cancelling; /* backpressure cancel of the recv issued */
	uint8_t closed;          /* fd closed; waiting for refs to drain */
	/* Input received but not yet consumed while reading is paused for
	 * backpressure: io_uring keeps the provided buffers themselves (a chain
	 * through the worker's held_next[]), epoll a copy of one read's tail. */
	int32_t held_head, held_tail; /* buffer ids, -1 = none */
	uint32_t held_off;            /* consumed octets of the head buffer / held copy */
	uint32_t held_count;          /* buffers (io_uring) or octets (epoll) held */
	char *held;                   /* epoll: unconsumed tail of a read */
	uint64_t last_active_ns;
	struct conn *lru_prev, *lru_next;
	struct conn *dirty_next;
	struct sess sess;
	struct obuf out;
	struct stamp_verifier vc; /* --verify */
	char carry[];             /* scanner carry, line_max octets */
};

struct server {
	struct server_cfg cfg;
	struct worker *workers;
	int nworkers;
	enum io_backend backend;         /* actually used */
	char backend_note[160];          /* why auto picked what it picked */
	atomic_int stop_phase;           /* 0 run, 1 drain (graceful), 2 force */
	atomic_uint_fast64_t conns;      /* active connections, all workers */
	atomic_uint_fast64_t total_msgs; /* only maintained with --exit-after */
	atomic_int exit_reached;
	atomic_int acceptor_stopped;        /* no more hand-offs can arrive */
	atomic_uint_fast64_t accept_errors; /* EMFILE/ENFILE/... on accept */
	atomic_uint_fast64_t rejected;      /* over --max-conns */
	uint64_t drain_deadline_ns;
	pthread_t acceptor;
	bool have_acceptor;
	int acceptor_ring_fd;
	uint64_t start_ns;
	uint64_t verify_run; /* smtpbench run id seen by --verify */
};

/* worker.c - backend-independent connection handling */
uint64_t now_ns(void);
struct conn *conn_new(struct worker *w, int fd);
void conn_release(struct conn *c); /* return object to the worker's pool */
void conn_touch(struct conn *c);
void conn_mark_dirty(struct conn *c);
/* conn_input - feed received bytes.  Returns octets consumed: fewer than n
 * when replies pile up (c->read_paused is then set and the caller keeps the
 * rest for later).  Input after the session closed is consumed unread. */
size_t conn_input(struct conn *c, const char *p, size_t n);
void conn_peer_eof(struct conn *c);
void conn_lru_remove(struct conn *c);
/* worker_tick - idle timeouts and shutdown phases; returns ns until the
 * next deadline of interest (bounded). */
uint64_t worker_tick(struct worker *w, uint64_t now);
void worker_publish(struct worker *w);
void worker_init(struct worker *w, struct server *srv, int id);
void worker_fini(struct worker *w);
bool worker_done(struct worker *w);
void server_note_msgs(struct worker *w);
void set_nonblock(int fd);
int reject_busy(struct server *srv, int fd);
bool server_over_limit(struct server *srv);

/* Backends: run all workers (and the acceptor) until shutdown completes. */
int uring_probe(char *why, size_t n);
int uring_start(struct server *srv);
int epoll_start(struct server *srv);

/* stats.c */
void stats_sum(struct server *srv, struct server_stats *tot, bool live);
void stats_progress(struct server *srv, uint64_t now, uint64_t *last_msgs, uint64_t *last_bytes,
                    uint64_t *last_ns);
void stats_summary(struct server *srv, const struct server_stats *tot, double secs);
int stats_json(struct server *srv, const struct server_stats *tot, double secs, const char *path);

#endif
