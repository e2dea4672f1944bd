/*
 * worker.c - the event loop both backends share: deadlines, shutdown phases,
 * the dirty list and counter publication (see server.h for the layers).
 *
 * One loop turn: read the clock, apply a new stop phase, expire deadlines,
 * sync every connection whose wishes changed with its socket (the backend
 * sends, receives or closes), then let the backend wait for events up to
 * the next deadline.  Replies produced while handling a batch of events go
 * out together in the next sync (RFC 2920 3.2: one send per batch, never one
 * per reply).
 *
 * Deadlines: each connection state keeps its connections in a list ordered
 * by the time their clock started (conn.c), and all members of one list
 * share one timeout, so only list heads are ever looked at.
 *
 * Shutdown (server_stop): phase 1 gives sessions between transactions 421
 * 4.3.2 at once and lets messages in progress finish until the drain
 * deadline (the session itself refuses new transactions); then everyone
 * left gets 421 and closing connections get CONN_DRAIN_GRACE more before a
 * reset.  A worker leaves when it has no connections and no hand-off can
 * arrive any more.  Phase 3 (main's backstop at drain + 1 s) aborts
 * whatever is left.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "server.h"
#include "tls.h"

#define TICK_MAX_NS (1000ull * 1000 * 1000) /* wake at least this often */
#define PUBLISH_NS  (10ull * 1000 * 1000)   /* counters for main and --http */

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

/* server_admit - one more connection under --max-conns?  Also keeps the true
 * peak.  Touched on accept and close only, never per message. */
bool server_admit(struct server *srv)
{
	uint64_t n = atomic_fetch_add_explicit(&srv->conns, 1, memory_order_relaxed) + 1;
	uint64_t peak = atomic_load_explicit(&srv->conns_peak, memory_order_relaxed);

	if (srv->cfg.max_conns && n > srv->cfg.max_conns) {
		atomic_fetch_sub_explicit(&srv->conns, 1, memory_order_relaxed);
		return false;
	}
	while (n > peak &&
	       !atomic_compare_exchange_weak_explicit(&srv->conns_peak, &peak, n,
	                                              memory_order_relaxed, memory_order_relaxed))
		;
	return true;
}

void server_unadmit(struct server *srv)
{
	atomic_fetch_sub_explicit(&srv->conns, 1, memory_order_relaxed);
}

/* reject_busy - over --max-conns: one best-effort 421 and close, without
 * creating a session (Postfix: "421 4.7.0 <host> Error: too many
 * connections").  Input already received is read first, so the close sends
 * FIN rather than a reset that could destroy the reply. */
int reject_busy(struct server *srv, int fd)
{
	char msg[320], sink[512];
	int n = snprintf(msg, sizeof(msg), "421 4.7.0 %s Error: too many connections\r\n",
	                 srv->cfg.hostname);

	atomic_fetch_add_explicit(&srv->rejected, 1, memory_order_relaxed);
	(void)!send(fd, msg, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
	shutdown(fd, SHUT_WR);
	for (int i = 0; i < 8 && recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0; i++)
		;
	close(fd);
	return 0;
}

/* server_stop - raise the stop phase (from any thread; never lowered).
 * Phase 1 starts the drain clock, phase 2 ends it now, phase 3 aborts. */
void server_stop(struct server *srv, int phase, const char *why)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER; /* not a hot path */
	uint64_t now = now_ns();

	pthread_mutex_lock(&lock);
	int cur = atomic_load_explicit(&srv->stop_phase, memory_order_relaxed);
	if (phase > cur) {
		uint64_t dl = atomic_load_explicit(&srv->drain_deadline_ns, memory_order_relaxed);
		if (cur == 0) {
			dl = now + srv->cfg.drain_timeout_ns;
			atomic_store_explicit(&srv->stop_reason, why, memory_order_relaxed);
		}
		if (phase >= 2 && dl > now)
			dl = now;
		atomic_store_explicit(&srv->drain_deadline_ns, dl, memory_order_relaxed);
		atomic_store_explicit(&srv->stop_phase, phase, memory_order_release);
	}
	pthread_mutex_unlock(&lock);
	for (int i = 0; i < srv->nworkers; i++)
		worker_wake(&srv->workers[i]);
}

void worker_wake(struct worker *w)
{
	uint64_t one = 1;

	if (w->wake_fd >= 0)
		(void)!write(w->wake_fd, &one, sizeof(one));
}

/* worker_publish - copy counters for the main thread, field by field with
 * atomic stores (no lock; a snapshot may mix fields of two instants). */
void worker_publish(struct worker *w)
{
	uint64_t *d = (uint64_t *)&w->snap;
	const uint64_t *s = (const uint64_t *)&w->st;

	for (size_t i = 0; i < sizeof(w->st) / sizeof(uint64_t); i++)
		__atomic_store_n(&d[i], s[i], __ATOMIC_RELAXED);
	w->last_publish = w->now;
	w->published_loops = w->st.loops;
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

/* shutdown_sessions - 421 4.3.2 to every session (force: also those inside
 * a message). */
static void shutdown_sessions(struct worker *w, bool force)
{
	struct conn *c = w->lists[CONN_SESSION].head, *nx;

	for (; c; c = nx) {
		nx = c->next; /* conn_close moves c to the CLOSING list */
		conn_close(c, sess_shutdown(&c->sess, force));
	}
}

/* worker_tick - deadlines and stop phases; returns the next deadline. */
static uint64_t worker_tick(struct worker *w, int phase)
{
	struct server *srv = w->srv;
	uint64_t now = w->now, next = now + TICK_MAX_NS, idle = srv->cfg.idle_timeout_ns;
	uint64_t close_cut = UINT64_MAX;
	struct conn *c;

	if (phase >= 1) {
		uint64_t dl = atomic_load_explicit(&srv->drain_deadline_ns, memory_order_relaxed);
		if (w->phase_seen == 0) {
			w->ops->stop_accepting(w);
			shutdown_sessions(w, false);
		}
		if (!w->forced && now >= dl) {
			w->forced = true;
			shutdown_sessions(w, true);
		}
		if (!w->forced)
			next = min_u64(next, dl);
		close_cut = dl + CONN_DRAIN_GRACE;
		next = min_u64(next, close_cut);
	}
	w->phase_seen = phase;

	/* Idle sessions, paused ones included: 421 4.4.2 (RFC 5321 4.5.3.2.7). */
	while (idle && (c = w->lists[CONN_SESSION].head) && now - c->since_ns >= idle)
		conn_close(c, sess_timeout(&c->sess));
	if (idle && (c = w->lists[CONN_SESSION].head))
		next = min_u64(next, c->since_ns + idle);

	/* --proxy-protocol: no complete header in time (or the server stops
	 * before it came): nothing was promised yet, close. */
	{
		uint64_t pt = srv->cfg.proxy_timeout_ns;
		while ((c = w->lists[CONN_PROXY].head) && (now - c->since_ns >= pt || phase >= 1))
			conn_proxy_expired(c, phase >= 1);
		if ((c = w->lists[CONN_PROXY].head))
			next = min_u64(next, c->since_ns + pt);
	}

	/* TLS handshakes that do not finish: reset. */
	while ((c = w->lists[CONN_HANDSHAKE].head) &&
	       (now - c->since_ns >= CONN_HANDSHAKE_NS || now >= close_cut)) {
		w->st.tls_handshake_timeouts++;
		conn_abort(c, true);
	}
	if ((c = w->lists[CONN_HANDSHAKE].head))
		next = min_u64(next, c->since_ns + CONN_HANDSHAKE_NS);

	/* Closing connections whose client neither takes its last reply nor
	 * closes: reset. */
	while ((c = w->lists[CONN_CLOSING].head) &&
	       (now - c->since_ns >= CONN_CLOSE_NS || now >= close_cut)) {
		w->st.close_timeouts++;
		conn_abort(c, true);
	}
	if ((c = w->lists[CONN_CLOSING].head))
		next = min_u64(next, c->since_ns + CONN_CLOSE_NS);
	return next;
}

/* worker_flush - sync every dirty connection with its socket.  A
 * connection stays marked while it is synced (the backend handles what the
 * connection layer does meanwhile); one that asks for another turn waits
 * for the next loop turn, which then does not block. */
static void worker_flush(struct worker *w)
{
	struct conn *c = w->dirty, *nx, *again = NULL;

	w->dirty = NULL;
	for (; c; c = nx) {
		nx = c->dirty_next;
		if (w->ops->sync(w, c)) {
			c->dirty_next = again;
			again = c;
		} else {
			c->in_dirty = 0; /* c may be released (pooled) by now */
		}
	}
	while (again) {
		c = again;
		again = c->dirty_next;
		c->dirty_next = w->dirty;
		w->dirty = c;
	}
}

static bool worker_empty(const struct worker *w)
{
	for (int s = 0; s < CONN_NSTATES; s++)
		if (w->lists[s].head)
			return false;
	return true;
}

/* abort_all - phase 3: close every socket without ceremony. */
static void abort_all(struct worker *w)
{
	for (int s = 0; s < CONN_NSTATES; s++)
		for (struct conn *c = w->lists[s].head; c; c = c->next)
			if (c->fd >= 0) {
				conn_set_socket_reset(c->fd);
				close(c->fd);
				c->fd = -1;
			}
}

static void free_all(struct worker *w)
{
	struct conn *c, *nx;

	for (int s = 0; s < CONN_NSTATES; s++) {
		for (c = w->lists[s].head; c; c = nx) {
			nx = c->next;
			obuf_free(&c->out);
			obuf_free(&c->wire);
			tls_conn_free(c->tls);
			free(c->held);
			free(c);
		}
		memset(&w->lists[s], 0, sizeof(w->lists[s]));
	}
	for (c = w->free_conns; c; c = nx) {
		nx = c->next;
		obuf_free(&c->out);
		obuf_free(&c->wire);
		free(c);
	}
	w->free_conns = NULL;
	free(w->tls_buf);
	w->tls_buf = NULL;
	free(w->wakes);
	w->wakes = NULL;
	w->nwakes = w->capwakes = 0;
}

void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct server *srv = w->srv;
	uint64_t next = 0;
	int ret;

	w->now = now_ns();
	w->tls_buf = tls_enabled() ? malloc(16384) : NULL;
	ret = w->tls_buf || !tls_enabled() ? w->ops->init(w) : -ENOMEM;
	if (ret) {
		fprintf(stderr, "smtpsink: worker %d: %s setup: %s\n", w->id, w->ops->name,
		        strerror(-ret));
		atomic_store(&w->ready, -1);
		return NULL;
	}
	atomic_store(&w->ready, 1);
	for (;;) {
		int phase = atomic_load_explicit(&srv->stop_phase, memory_order_acquire);
		/* Hand-offs sent before the acceptor stopped are in the ring once a
		 * wait has run after we saw it stop (MSG_RING task work). */
		bool handoffs_done = w->handoffs_done;

		w->now = now_ns();
		if (phase >= 3)
			break;
		if (phase != w->phase_seen || w->now >= next)
			next = worker_tick(w, phase);
		if (w->capring)
			capture_poll_done(w); /* --capture-strict verdicts */
		if (w->nwakes) {
			conn_wake_due(w);
			if (w->nwakes && w->wakes[0]->wake_ns < next)
				next = w->wakes[0]->wake_ns;
		}
		worker_flush(w);
		if (phase >= 1 && handoffs_done && worker_empty(w))
			break;
		bool just_stopped = false;
		if (phase >= 1 && !w->handoffs_done) {
			w->handoffs_done =
			    atomic_load_explicit(&srv->acceptor_stopped, memory_order_acquire);
			just_stopped = w->handoffs_done; /* one more pass, without waiting */
		}
		uint64_t timeout = w->dirty || just_stopped ? 0 : next > w->now ? next - w->now : 0;
		/* fault delays and throttles scheduled during the flush */
		if (w->nwakes && timeout)
			timeout = w->wakes[0]->wake_ns <= w->now ? 0
			          : w->wakes[0]->wake_ns - w->now < timeout
			              ? w->wakes[0]->wake_ns - w->now
			              : timeout;
		/* About to sleep: publish what happened since the last snapshot,
		 * so readers (progress line, --http) never see stale counts. */
		if (timeout >= PUBLISH_NS && w->published_loops != w->st.loops)
			worker_publish(w);
		w->ops->wait(w, timeout);
		w->st.loops++;
		if (w->now - w->last_publish >= PUBLISH_NS)
			worker_publish(w);
	}
	abort_all(w);
	w->ops->fini(w);
	free_all(w);
	worker_publish(w);
	return NULL;
}

void worker_init(struct worker *w, struct server *srv, int id, const struct backend_ops *ops)
{
	memset(w, 0, sizeof(*w));
	w->srv = srv;
	w->id = id;
	w->ops = ops;
	w->ring_fd = -1;
	w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

void worker_fini(struct worker *w)
{
	if (w->wake_fd >= 0)
		close(w->wake_fd);
	w->wake_fd = -1;
}
