/*
 * worker.c - backend-independent connection life cycle for smtpsink
 *
 * Both I/O backends (io_uring.c, epoll.c) call into here: a new socket
 * becomes a conn with a session, received bytes go through conn_input(),
 * connections with replies are queued on the worker's dirty list and the
 * backend sends each dirty connection's output once per loop iteration
 * (RFC 2920 3.2: one batch per read, never one send per reply).
 *
 * Idle timeouts use an LRU list instead of a timer wheel: there is a single
 * timeout value, so the least recently active connection is always the
 * next to expire; touch is O(1) and a tick looks only at expired entries.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "server.h"

#define TICK_MAX_NS (250ull * 1000 * 1000)

uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl >= 0)
		fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* server_over_limit - admit one more connection under --max-conns? The
 * counter is only touched on accept and close, never per message. */
bool server_over_limit(struct server *srv)
{
	uint64_t n = atomic_fetch_add_explicit(&srv->conns, 1, memory_order_relaxed);

	if (srv->cfg.max_conns && n >= srv->cfg.max_conns) {
		atomic_fetch_sub_explicit(&srv->conns, 1, memory_order_relaxed);
		return true;
	}
	return false;
}

/* reject_busy - over --max-conns: one best-effort 421 and close, without
 * creating a session (Postfix: "421 4.7.0 <host> Error: too many
 * connections").  Non-blocking: a client that does not read loses it. */
int reject_busy(struct server *srv, int fd)
{
	char msg[320];
	int n = snprintf(msg, sizeof(msg), "421 4.7.0 %s Error: too many connections\r\n",
	                 srv->cfg.hostname);

	(void)!send(fd, msg, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
	close(fd);
	return 0;
}

static void lru_append(struct worker *w, struct conn *c)
{
	c->lru_next = NULL;
	c->lru_prev = w->lru_tail;
	if (w->lru_tail)
		w->lru_tail->lru_next = c;
	else
		w->lru_head = c;
	w->lru_tail = c;
	c->in_lru = 1;
}

void conn_lru_remove(struct conn *c)
{
	struct worker *w = c->w;

	if (!c->in_lru)
		return;
	if (c->lru_prev)
		c->lru_prev->lru_next = c->lru_next;
	else
		w->lru_head = c->lru_next;
	if (c->lru_next)
		c->lru_next->lru_prev = c->lru_prev;
	else
		w->lru_tail = c->lru_prev;
	c->lru_prev = c->lru_next = NULL;
	c->in_lru = 0;
}

void conn_touch(struct conn *c)
{
	c->last_active_ns = now_ns();
	if (c->in_lru && c->w->lru_tail != c) {
		conn_lru_remove(c);
		lru_append(c->w, c);
	}
}

void conn_mark_dirty(struct conn *c)
{
	if (c->in_dirty)
		return;
	c->in_dirty = 1;
	c->dirty_next = c->w->dirty;
	c->w->dirty = c;
}

/* conn_new - adopt an accepted socket: session, greeting, idle clock. */
struct conn *conn_new(struct worker *w, int fd)
{
	const struct server_cfg *cfg = &w->srv->cfg;
	struct conn *c = w->free_conns;
	int one = 1;

	if (c) {
		w->free_conns = c->dirty_next;
	} else {
		c = malloc(sizeof(*c) + cfg->sess.line_max);
		if (!c)
			return NULL;
		obuf_init(&c->out);
	}
	/* Keep the obuf's memory across reuse: its growth is sticky. */
	struct obuf keep = c->out;
	memset(c, 0, sizeof(*c));
	c->out = keep;
	c->out.len = c->out.off = 0;
	c->out.overflow = 0;
	c->out.inflight = NULL;
	c->w = w;
	c->fd = fd;
	c->held_head = c->held_tail = -1;
	/* Replies are already batched per read; Nagle would only add delay
	 * when a reply follows an unacknowledged one. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	sess_start(&c->sess, &cfg->sess, &w->st.sess, &c->out, c->carry, &w->id_seq,
	           (uint32_t)w->id);
	if (cfg->verify)
		verify_attach(c);
	w->st.conns_accepted++;
	w->st.conns_active++;
	if (w->st.conns_active > w->st.conns_peak)
		w->st.conns_peak = w->st.conns_active;
	atomic_fetch_add_explicit(&w->active, 1, memory_order_relaxed);
	c->last_active_ns = now_ns();
	lru_append(w, c);
	conn_mark_dirty(c); /* the 220 greeting */
	return c;
}

/* conn_release - the socket is closed and no operation refers to c. */
void conn_release(struct conn *c)
{
	struct worker *w = c->w;

	conn_lru_remove(c);
	w->st.conns_closed++;
	w->st.conns_active--;
	atomic_fetch_sub_explicit(&w->active, 1, memory_order_relaxed);
	atomic_fetch_sub_explicit(&w->srv->conns, 1, memory_order_relaxed);
	/* Big buffers from a pathological client are not kept in the pool. */
	if (c->out.cap > 16 * 1024)
		obuf_free(&c->out);
	c->dirty_next = w->free_conns;
	w->free_conns = c;
}

/* conn_input - bytes from the peer; see server.h. */
size_t conn_input(struct conn *c, const char *p, size_t n)
{
	unsigned act;
	size_t used;

	if (c->closing || c->dead)
		return n;
	c->w->st.recv_bytes += n;
	conn_touch(c);
	used = sess_feed(&c->sess, p, n, &act);
	if (c->out.overflow) {
		c->w->st.out_overflow++;
		c->dead = 1;
		conn_mark_dirty(c);
		return n;
	}
	if (obuf_pending(&c->out))
		conn_mark_dirty(c);
	if (act & SESS_ACT_CLOSE) {
		c->closing = 1;
		conn_lru_remove(c);
		return n;
	}
	if (used < n) {
		/* Replies pile up: the client pipelines without reading them. */
		if (!c->read_paused)
			c->w->st.read_pauses++;
		c->read_paused = 1;
		c->w->st.recv_bytes -= n - used; /* counted again when fed */
	}
	return used;
}

/* conn_peer_eof - the client closed its side; what was queued still goes
 * out (it may be half-closed and reading), then the connection closes. */
void conn_peer_eof(struct conn *c)
{
	if (c->closing || c->dead)
		return;
	c->peer_eof = 1;
	if (sess_in_content(&c->sess))
		c->w->st.peer_closed_in_content++;
	else
		c->w->st.peer_closed++;
	c->closing = 1;
	conn_lru_remove(c);
	conn_mark_dirty(c);
}

static void conn_stop(struct conn *c, unsigned act)
{
	if (act & SESS_ACT_CLOSE) {
		c->closing = 1;
		conn_lru_remove(c);
		conn_mark_dirty(c);
	}
}

/* worker_tick - expire idle sessions and run the shutdown phases. */
uint64_t worker_tick(struct worker *w, uint64_t now)
{
	struct server *srv = w->srv;
	uint64_t idle = srv->cfg.idle_timeout_ns, next = TICK_MAX_NS;
	int phase = atomic_load_explicit(&srv->stop_phase, memory_order_relaxed);

	while (idle && w->lru_head && now - w->lru_head->last_active_ns >= idle)
		conn_stop(w->lru_head, sess_timeout(&w->lru_head->sess));
	if (idle && w->lru_head) {
		uint64_t left = w->lru_head->last_active_ns + idle - now;
		if (left < next)
			next = left;
	}
	if (phase >= 1) {
		/* Graceful: 421 to sessions between transactions at once; those
		 * inside DATA/BDAT get until the drain deadline (or a second
		 * signal) to finish their message. */
		bool force = phase >= 2 || now >= srv->drain_deadline_ns;
		struct conn *c = w->lru_head, *nx;
		for (; c; c = nx) {
			nx = c->lru_next;
			conn_stop(c, sess_shutdown(&c->sess, force));
		}
		next = 50ull * 1000 * 1000;
	}
	server_note_msgs(w);
	worker_publish(w);
	return next;
}

/* server_note_msgs - --exit-after bookkeeping: one shared atomic add per
 * loop iteration and only when the option is set. */
void server_note_msgs(struct worker *w)
{
	struct server *srv = w->srv;
	uint64_t d;

	if (!srv->cfg.exit_after)
		return;
	d = w->st.sess.msgs - w->published_msgs;
	if (!d)
		return;
	w->published_msgs = w->st.sess.msgs;
	if (atomic_fetch_add_explicit(&srv->total_msgs, d, memory_order_relaxed) + d >=
	    srv->cfg.exit_after)
		atomic_store_explicit(&srv->exit_reached, 1, memory_order_relaxed);
}

/* worker_publish - copy counters for the main thread, field by field with
 * relaxed atomics (no lock; a snapshot may mix fields of two instants). */
void worker_publish(struct worker *w)
{
	uint64_t *d = (uint64_t *)&w->snap;
	const uint64_t *s = (const uint64_t *)&w->st;

	for (size_t i = 0; i < sizeof(w->st) / sizeof(uint64_t); i++)
		__atomic_store_n(&d[i], s[i], __ATOMIC_RELAXED);
}

bool worker_done(struct worker *w)
{
	return atomic_load_explicit(&w->srv->stop_phase, memory_order_relaxed) >= 1 &&
	       atomic_load_explicit(&w->srv->acceptor_stopped, memory_order_relaxed) &&
	       w->st.conns_active == 0;
}

void worker_init(struct worker *w, struct server *srv, int id)
{
	memset(w, 0, sizeof(*w));
	w->srv = srv;
	w->id = id;
	w->ring_fd = -1;
}

void worker_fini(struct worker *w)
{
	struct conn *c, *nx;

	for (c = w->free_conns; c; c = nx) {
		nx = c->dirty_next;
		obuf_free(&c->out);
		free(c);
	}
	w->free_conns = NULL;
	free(w->rbuf);
	w->rbuf = NULL;
	worker_publish(w);
}
