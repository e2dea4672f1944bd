/*
 * conn.c - smtpsink's connection layer: one state machine per connection,
 * the same under both I/O backends (see server.h for the layering).
 *
 *   PROXY   --(a valid PROXY header from a --proxy-protocol source)-->
 *   HANDSHAKE (implicit TLS) --(handshake done)-->
 *   SESSION --(QUIT, 421, error limit, idle timeout, shutdown, peer EOF)-->
 *   CLOSING --(flushed, write side shut, peer closed | deadline)-->
 *   CLOSED  --(backend: nothing in flight, socket closed)--> released
 *
 * Every state has a deadline (worker.c walks the per-state lists): the idle
 * timeout since the last progress in SESSION, --proxy-timeout in PROXY,
 * CONN_HANDSHAKE_NS in HANDSHAKE, CONN_CLOSE_NS in CLOSING, and at shutdown
 * the drain deadline.  CLOSED needs none: the backend
 * only waits for cancelled operations, which the kernel completes at once.
 *
 * Backpressure (RFC 2920 3.2: the server must never lose buffered input):
 * when a client pipelines without reading its replies, sess_feed() stops
 * taking input above OBUF_SOFT_MAX octets of unsent replies.  The rest of
 * that receive is copied into the connection's held buffer and the backend
 * stops receiving (conn_wants_input() turns false).  Replies drained below
 * half the soft cap resume: held input is fed first, then the socket again.
 * Copying means no backend ever holds a receive buffer for a client that
 * does not read, so such clients cannot starve the io_uring buffer pool;
 * and since untrusted connections receive at most CONN_RECV_SMALL octets at
 * a time (conn_bulk()), the held copy of a client that never read anything
 * stays under that size.  Memory per client that pipelines and never reads:
 * a reply buffer of at most 16 KiB (OBUF_SOFT_MAX 8 KiB + one reply), held
 * input of at most 16 KiB (64 KiB for a session that was trusted before it
 * stopped reading; beyond that it is dropped, see held_append) and ~3 KiB
 * of state: <= 36 KiB.  The rest of its input waits in the kernel's socket
 * buffer, bounded by TCP flow control.
 */
#include <errno.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server.h"
#include "sink/proxy.h"
#include "tls.h"

/* smtpsink_session_duration_seconds bucket bounds (seconds) */
const double server_session_bounds[SERVER_SESSION_BUCKETS - 1] = {0.01, 0.1, 1, 10, 60, 300, 3600};

/* --- per-state lists (timers) --------------------------------------- */

static void list_append(struct conn_list *l, struct conn *c)
{
	c->next = NULL;
	c->prev = l->tail;
	if (l->tail)
		l->tail->next = c;
	else
		l->head = c;
	l->tail = c;
	l->n++;
}

void conn_list_remove(struct conn *c)
{
	struct conn_list *l = &c->w->lists[c->state];

	if (c->prev)
		c->prev->next = c->next;
	else
		l->head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	else
		l->tail = c->prev;
	c->prev = c->next = NULL;
	l->n--;
}

/* set_state - move c to the list of its new state; the state's clock
 * starts now. */
static void set_state(struct conn *c, enum conn_state st)
{
	conn_list_remove(c);
	c->state = (uint8_t)st;
	c->since_ns = c->w->now;
	list_append(&c->w->lists[st], c);
}

/* progress - the session moved (input consumed or output sent): its idle
 * deadline starts again, so it goes to the tail of the SESSION list. */
static void progress(struct conn *c)
{
	struct worker *w = c->w;

	c->since_ns = w->now;
	if (w->lists[CONN_SESSION].tail != c) {
		conn_list_remove(c);
		list_append(&w->lists[CONN_SESSION], c);
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

/* conn_set_socket_reset - make the coming close() send RST (SO_LINGER 0):
 * for a client that does not take its final reply, nothing is gained by
 * letting the kernel keep trying. */
void conn_set_socket_reset(int fd)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
}

/* --- wake-ups: fault delays and throttles ---------------------------------- */

/* A min-heap of connections by wake_ns per worker (only connections with a
 * delayed reply or a throttle are in it, so it is empty unless faults are
 * configured). */
static void heap_swap(struct conn **h, uint32_t a, uint32_t b)
{
	struct conn *t = h[a];

	h[a] = h[b];
	h[b] = t;
	h[a]->heap_i = a + 1;
	h[b]->heap_i = b + 1;
}

static void heap_fix(struct worker *w, uint32_t i)
{
	struct conn **h = w->wakes;

	while (i > 0 && h[(i - 1) / 2]->wake_ns > h[i]->wake_ns) {
		heap_swap(h, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
	for (;;) {
		uint32_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < w->nwakes && h[l]->wake_ns < h[m]->wake_ns)
			m = l;
		if (r < w->nwakes && h[r]->wake_ns < h[m]->wake_ns)
			m = r;
		if (m == i)
			break;
		heap_swap(h, i, m);
		i = m;
	}
}

static void heap_remove(struct conn *c)
{
	struct worker *w = c->w;
	uint32_t i = c->heap_i - 1;

	if (!c->heap_i)
		return;
	c->heap_i = 0;
	if (--w->nwakes != i) {
		w->wakes[i] = w->wakes[w->nwakes];
		w->wakes[i]->heap_i = i + 1;
		heap_fix(w, i);
	}
}

/* schedule - wake c at t (or earlier, if it is already due earlier). */
static void schedule(struct conn *c, uint64_t t)
{
	struct worker *w = c->w;

	if (c->heap_i) {
		if (t >= c->wake_ns)
			return;
		c->wake_ns = t;
		heap_fix(w, c->heap_i - 1);
		return;
	}
	if (w->nwakes == w->capwakes) {
		uint32_t cap = w->capwakes ? w->capwakes * 2 : 64;
		struct conn **h = realloc(w->wakes, cap * sizeof(*h));
		if (!h) {
			conn_abort(c, true); /* cannot keep its promise of a later reply */
			return;
		}
		w->wakes = h;
		w->capwakes = cap;
	}
	c->wake_ns = t;
	w->wakes[w->nwakes++] = c;
	c->heap_i = w->nwakes;
	heap_fix(w, w->nwakes - 1);
}

/* refill - a throttle's token buckets (one per direction, at most a tenth
 * of a second's worth, so a quiet client cannot save up a burst). */
static void refill(struct conn *c)
{
	uint64_t now = c->w->now, burst = c->throttle_bps / 10 ? c->throttle_bps / 10 : 1;
	int64_t add = (int64_t)((now - c->tokens_ns) * c->throttle_bps / 1000000000ull);

	if (add <= 0)
		return;
	c->tokens_ns = now;
	c->send_tokens =
	    c->send_tokens + add > (int64_t)burst ? (int64_t)burst : c->send_tokens + add;
	c->recv_tokens =
	    c->recv_tokens + add > (int64_t)burst ? (int64_t)burst : c->recv_tokens + add;
}

/* throttle_wait - wake c when its bucket will hold n octets again. */
static void throttle_wait(struct conn *c, int64_t tokens, uint64_t n)
{
	uint64_t need = (uint64_t)((int64_t)n - tokens);

	schedule(c, c->w->now + need * 1000000000ull / c->throttle_bps + 1);
}

size_t conn_send_window(struct conn *c)
{
	size_t pending = obuf_pending(conn_outbuf(c));

	if (!c->throttle_bps)
		return SIZE_MAX;
	refill(c);
	if (c->send_tokens > 0)
		return (size_t)c->send_tokens;
	if (pending)
		throttle_wait(c, c->send_tokens, pending < 64 ? pending : 64);
	return 0;
}

/* --- held input --------------------------------------------------------- */

static void held_free(struct conn *c)
{
	free(c->held);
	c->held = NULL;
	c->held_len = c->held_off = c->held_cap = 0;
}

static inline uint32_t held_pending(const struct conn *c)
{
	return c->held_len - c->held_off;
}

/* held_append - keep input the session cannot take yet.  Past
 * CONN_HELD_MAX the client has pipelined far beyond what it reads: that
 * connection is dropped (in_overflow) rather than grow server memory. */
static bool held_append(struct conn *c, const char *p, size_t n)
{
	uint32_t keep = held_pending(c);

	if ((size_t)keep + n > CONN_HELD_MAX) {
		c->w->st.in_overflow++;
		conn_abort(c, true);
		return false;
	}
	if (c->held_off) {
		memmove(c->held, c->held + c->held_off, keep);
		c->held_off = 0;
		c->held_len = keep;
	}
	if (keep + n > c->held_cap) {
		uint32_t cap = c->held_cap ? c->held_cap : 4096;
		while (cap < keep + n)
			cap *= 2;
		char *h = realloc(c->held, cap);
		if (!h) {
			c->w->st.in_overflow++;
			conn_abort(c, true);
			return false;
		}
		c->held = h;
		c->held_cap = cap;
	}
	memcpy(c->held + c->held_len, p, n);
	c->held_len += (uint32_t)n;
	return true;
}

/* --- feeding the session ---------------------------------------------- */

static void tls_flush(struct conn *c);
static void tls_pump(struct conn *c);

/* suspend - a fault deferred a reply: hold input until the session's time
 * comes (never, for a stall: until the client leaves or idles out). */
static void suspend(struct conn *c)
{
	c->suspended = 1;
	c->suspend_until = c->sess.suspend_ns ? c->w->now + c->sess.suspend_ns : 0;
	if (c->suspend_until)
		schedule(c, c->suspend_until);
	conn_mark_dirty(c); /* replies before the deferred one go out now */
}

static void fault_end(struct conn *c, unsigned act);

/* after_feed - act on what the session did with used of n octets. */
static void after_feed(struct conn *c, size_t used, size_t n, unsigned act)
{
	if (c->out.overflow) {
		c->w->st.out_overflow++;
		conn_abort(c, true);
		return;
	}
	if (act & (SESS_ACT_DROP | SESS_ACT_RESET)) {
		fault_end(c, act); /* a fault: no reply */
		return;
	}
	if (used)
		progress(c);
	if (act & SESS_ACT_SUSPEND) {
		if (obuf_pending(&c->out))
			tls_flush(c);
		suspend(c); /* the caller holds the rest of the input */
		return;
	}
	if (act & SESS_ACT_STARTTLS) {
		/* TLS starts once the 220 is out (conn_sent); until then the
		 * session drops input (RFC 3207 4.2). */
		c->starttls = 1;
		conn_mark_dirty(c);
		return;
	}
	if (obuf_pending(&c->out)) {
		tls_flush(c);
		conn_mark_dirty(c);
	}
	if (act & SESS_ACT_CLOSE) {
		conn_close(c, act);
		return;
	}
	if (used < n) {
		/* Replies pile up: the client pipelines without reading them. */
		if (!c->paused)
			c->w->st.read_pauses++;
		c->paused = 1;
		c->ever_paused = 1;
		c->trusted = 0;
		conn_mark_dirty(c); /* the backend stops receiving */
	} else if (!c->trusted && !c->ever_paused && c->sess.msgs) {
		c->trusted = 1; /* finished a message without backing up */
	}
}

/* feed - plaintext for the session: straight from the socket, or
 * decrypted. */
static void feed(struct conn *c, const char *p, size_t n)
{
	unsigned act = 0;
	size_t used;

	if (c->paused || c->suspended || held_pending(c)) {
		/* Arrived before the pause reached the backend (or while a fault
		 * delays a reply): keep order. */
		held_append(c, p, n);
		return;
	}
	used = sess_feed(&c->sess, p, n, &act);
	after_feed(c, used, n, act);
	if (c->state == CONN_SESSION && used < n)
		held_append(c, p + used, n - used);
}

static void proxy_input(struct conn *c, const char *p, size_t n);
static bool untrusted_proxy(struct conn *c, const char *p, size_t n);
static void conn_begin(struct conn *c, bool tls, bool listed);

/* deliver - octets from the socket for the session, or for TLS to decrypt. */
static void deliver(struct conn *c, const char *p, size_t n)
{
	if (c->state != CONN_SESSION && c->state != CONN_HANDSHAKE)
		return; /* closing: lingering drain, dropped */
	if (!c->tls) {
		feed(c, p, n);
		return;
	}
	/* Ciphertext waits in the read BIO until it is parsed; a paused
	 * connection stops receiving, so this stays small. */
	if (tls_in_pending(c->tls) + n > CONN_HELD_MAX) {
		c->w->st.in_overflow++;
		conn_abort(c, true);
		return;
	}
	tls_in(c->tls, p, n);
	tls_pump(c);
	/* p goes back to the backend; the rest of it is copied only for a
	 * connection that may still read it */
	if (c->tls && tls_in_done(c->tls, c->state == CONN_SESSION || c->state == CONN_HANDSHAKE)) {
		conn_abort(c, true);
	}
}

void conn_input(struct conn *c, const char *p, size_t n)
{
	c->w->st.recv_bytes += n;
	if (c->throttle_bps) {
		refill(c);
		c->recv_tokens -= (int64_t)n;
		if (c->recv_tokens <= 0)
			throttle_wait(c, c->recv_tokens, 1);
	}
	if (c->state == CONN_PROXY) {
		proxy_input(c, p, n);
		return;
	}
	if (c->first_in) {
		c->first_in = 0;
		/* (a first read that comes after the session has ended, e.g.
		 * during the lingering close, is drained like any other) */
		if ((c->state == CONN_SESSION || c->state == CONN_HANDSHAKE) &&
		    untrusted_proxy(c, p, n))
			return;
	}
	deliver(c, p, n);
}

/* --- TLS: a byte transform between socket and session --------------------- */

/* tls_flush - encrypt queued replies while the ciphertext queue has room
 * (so a client that does not read backs the replies up in the plaintext
 * buffer, where the session's backpressure sees them); when closing, end
 * with close_notify. */
static void tls_flush(struct conn *c)
{
	if (!c->tls || c->state == CONN_HANDSHAKE || c->state == CONN_CLOSED)
		return;
	while (obuf_pending(&c->out) && obuf_pending(&c->wire) < CONN_WIRE_MAX) {
		size_t n = obuf_pending(&c->out);
		long k = tls_write(c->tls, c->out.p + c->out.off, n > 16384 ? 16384 : n);
		if (k <= 0) {
			conn_abort(c, true);
			return;
		}
		obuf_consume(&c->out, (size_t)k);
	}
	if (c->state == CONN_CLOSING && !obuf_pending(&c->out) && !c->tls_notified) {
		tls_close_notify(c->tls);
		c->tls_notified = 1;
	}
	if (tls_out(c->tls, &c->wire)) {
		c->w->st.out_overflow++;
		conn_abort(c, true);
		return;
	}
	if (obuf_pending(&c->wire))
		conn_mark_dirty(c);
}

static void closing_progress(struct conn *c);

/* handshake_failed - the alert (if any) goes out, then the connection. */
static void handshake_failed(struct conn *c)
{
	c->w->st.tls_handshake_failures++;
	c->out.len = c->out.off = 0; /* the greeting is not for this client */
	c->tls_notified = 1;
	set_state(c, CONN_CLOSING);
	closing_progress(c);
	conn_mark_dirty(c);
}

/* tls_pump - advance the handshake, then decrypt for the session until it
 * pauses or the records run out. */
static void tls_pump(struct conn *c)
{
	struct worker *w = c->w;

	if (c->state == CONN_HANDSHAKE) {
		enum tls_res r = tls_handshake(c->tls);
		if (tls_out(c->tls, &c->wire)) {
			conn_abort(c, true);
			return;
		}
		if (obuf_pending(&c->wire))
			conn_mark_dirty(c);
		if (r == TLS_FAIL) {
			handshake_failed(c);
			return;
		}
		if (r != TLS_DONE)
			return;
		w->st.tls_handshakes++;
		w->st.tls_v1_2 += tls_version(c->tls) == 12;
		w->st.tls_v1_3 += tls_version(c->tls) == 13;
		w->st.tls_resumed += tls_resumed(c->tls);
		set_state(c, CONN_SESSION);
		sess_tls_started(&c->sess);
		if (atomic_load_explicit(&w->srv->stop_phase, memory_order_relaxed))
			conn_close(c, sess_shutdown(&c->sess, true));
		tls_flush(c); /* implicit TLS: the greeting */
	}
	while (c->state == CONN_SESSION && !c->paused && !held_pending(c) &&
	       tls_has_input(c->tls)) {
		long r = tls_read(c->tls, w->tls_buf, 16384);
		if (r > 0) {
			feed(c, w->tls_buf, (size_t)r);
			continue;
		}
		if (r == TLS_CLOSED) {
			conn_eof(c); /* close_notify: the client is done */
		} else if (r == TLS_FAIL) {
			w->st.io_errors++;
			conn_abort(c, true);
		}
		break;
	}
}

/* start_tls - STARTTLS's 220 is out: TLS begins with the next octet. */
static void start_tls(struct conn *c)
{
	c->starttls = 0;
	c->tls = tls_conn_new(&c->wire);
	if (!c->tls) {
		conn_abort(c, true);
		return;
	}
	c->wire.len = c->wire.off = 0;
	c->tls_notified = 0;
	set_state(c, CONN_HANDSHAKE);
	conn_mark_dirty(c);
}

/* resume - replies drained: feed held input, then read the socket again. */
static void resume(struct conn *c)
{
	c->paused = 0;
	while (held_pending(c) && c->state == CONN_SESSION && !c->paused && !c->suspended) {
		unsigned act = 0;
		size_t n = held_pending(c);
		size_t used = sess_feed(&c->sess, c->held + c->held_off, n, &act);

		c->held_off += (uint32_t)used;
		after_feed(c, used, n, act);
	}
	if (c->state != CONN_SESSION || c->suspended)
		return;
	if (!held_pending(c)) {
		held_free(c);
		if (c->tls)
			tls_pump(c); /* records already received come before the socket */
		if (c->state != CONN_SESSION || c->paused || c->suspended)
			return;
		if (c->peer_eof) {
			c->peer_eof = 0; /* the EOF is acted on now */
			conn_eof(c);
			return;
		}
	}
	conn_mark_dirty(c);
}

/* shut_write - everything is sent: FIN, then drain until the client closes
 * (or the CLOSING deadline). */
static void shut_write(struct conn *c)
{
	shutdown(c->fd, SHUT_WR);
	c->wr_shut = 1;
	if (c->peer_eof)
		conn_abort(c, false);
	else
		conn_mark_dirty(c);
}

/* closing_progress - in CLOSING: once every reply (and, with TLS, the
 * close_notify) is sent, shut the write side. */
static void closing_progress(struct conn *c)
{
	if (c->state != CONN_CLOSING || c->wr_shut)
		return;
	tls_flush(c);
	if (c->state == CONN_CLOSING && !obuf_pending(conn_outbuf(c)) &&
	    (!c->tls || (c->tls_notified && !obuf_pending(&c->out))))
		shut_write(c);
}

void conn_sent(struct conn *c, size_t n)
{
	obuf_send_done(conn_outbuf(c), n);
	if (c->throttle_bps)
		c->send_tokens -= (int64_t)n;
	switch (c->state) {
	case CONN_SESSION:
		if (n)
			progress(c);
		tls_flush(c);
		if (c->starttls && !obuf_pending(&c->out))
			start_tls(c);
		else if (c->paused && obuf_pending(&c->out) < OBUF_SOFT_MAX / 2)
			resume(c);
		break;
	case CONN_CLOSING:
		closing_progress(c);
		break;
	default:
		break;
	}
	conn_mark_dirty(c);
}

/* conn_close - the session is over (its final reply, if any, is queued). */
void conn_close(struct conn *c, unsigned act)
{
	if (!(act & SESS_ACT_CLOSE) || c->state != CONN_SESSION)
		return;
	set_state(c, CONN_CLOSING);
	c->paused = 0;
	held_free(c); /* RFC 5321 4.1.1.10: nothing after QUIT is read */
	closing_progress(c);
	conn_mark_dirty(c);
}

/* conn_abort - close now; rst: reset instead of FIN (unsent data dropped). */
void conn_abort(struct conn *c, bool rst)
{
	if (c->state == CONN_CLOSED)
		return;
	set_state(c, CONN_CLOSED);
	c->rst = rst;
	c->paused = 0;
	c->suspended = 0;
	heap_remove(c);
	held_free(c);
	conn_mark_dirty(c);
}

/* fault_end - a drop or reset fault ends the connection.  reset: at once,
 * with RST (unsent replies are lost, as when a server crashes).  drop: the
 * command the fault hit gets no reply, but replies already due to the
 * commands before it - earlier transactions of a pipelined group (RFC 2920,
 * smtpbench --depth) - still go out before the FIN, so the fault costs
 * exactly the message it names. */
static void fault_end(struct conn *c, unsigned act)
{
	if (!(act & SESS_ACT_RESET) && c->state == CONN_SESSION && obuf_pending(&c->out)) {
		tls_flush(c);
		conn_close(c, SESS_ACT_CLOSE);
		return;
	}
	conn_abort(c, (act & SESS_ACT_RESET) != 0);
}

/* wake - a fault's delay is over: the deferred reply, then held input. */
static void wake(struct conn *c)
{
	unsigned act;

	c->suspended = 0;
	c->suspend_until = 0;
	act = sess_resume(&c->sess);
	progress(c);
	if (act & (SESS_ACT_DROP | SESS_ACT_RESET)) {
		fault_end(c, act);
		return;
	}
	if (obuf_pending(&c->out)) {
		tls_flush(c);
		conn_mark_dirty(c);
	}
	if (act & SESS_ACT_SUSPEND) {
		suspend(c);
		return;
	}
	if (act & SESS_ACT_STARTTLS) {
		c->starttls = 1;
		held_free(c); /* RFC 3207 4.2: nothing pipelined after STARTTLS runs */
		return;
	}
	if (act & SESS_ACT_CLOSE) {
		conn_close(c, act);
		return;
	}
	resume(c);
}

void conn_resume_now(struct conn *c)
{
	if (c->state != CONN_SESSION || !c->suspended)
		return;
	c->suspend_until = c->w->now ? c->w->now : 1;
	schedule(c, c->suspend_until);
}

void conn_wake_due(struct worker *w)
{
	while (w->nwakes && w->wakes[0]->wake_ns <= w->now) {
		struct conn *c = w->wakes[0];
		heap_remove(c);
		conn_mark_dirty(c); /* a throttle's window has reopened */
		if (c->state != CONN_SESSION || !c->suspended)
			continue;
		if (c->suspend_until && c->suspend_until <= w->now)
			wake(c);
		else if (c->suspend_until)
			schedule(c, c->suspend_until);
	}
}

void conn_eof(struct conn *c)
{
	switch (c->state) {
	case CONN_SESSION:
		c->peer_eof = 1;
		if (c->suspended) {
			/* a client that leaves a delayed or stalled reply */
			c->w->st.peer_closed++;
			conn_abort(c, false);
			return;
		}
		if (held_pending(c))
			return; /* held input (maybe a QUIT) is answered first */
		if (sess_in_content(&c->sess))
			c->w->st.peer_closed_in_content++;
		else if (c->sess.state != SESS_ST_CLOSING)
			c->w->st.peer_closed++;
		/* A half-closed client may still read what is queued. */
		set_state(c, CONN_CLOSING);
		closing_progress(c);
		conn_mark_dirty(c);
		break;
	case CONN_HANDSHAKE:
		c->w->st.tls_handshake_failures++;
		conn_abort(c, false);
		break;
	case CONN_PROXY:
		/* a balancer's plain TCP check connects and closes */
		if (held_pending(c))
			c->w->st.proxy_truncated++;
		else
			c->w->st.peer_closed++;
		conn_abort(c, false);
		break;
	case CONN_CLOSING:
		c->peer_eof = 1;
		if (c->wr_shut)
			conn_abort(c, false);
		break;
	default:
		break;
	}
}

void conn_error(struct conn *c, int err)
{
	(void)err;
	/* While closing, a reset is how many clients say goodbye. */
	if (c->state == CONN_SESSION || c->state == CONN_PROXY)
		c->w->st.io_errors++;
	else if (c->state == CONN_HANDSHAKE)
		c->w->st.tls_handshake_failures++;
	conn_abort(c, false);
}

/* --- the session's host: policy and per-message hooks -------------------- */

/* host_may_start - no new transaction once the server is stopping. */
static bool host_may_start(void *ctx)
{
	const struct conn *c = ctx;

	return atomic_load_explicit(&c->w->srv->stop_phase, memory_order_relaxed) == 0;
}

/* host_auth - --auth any accepts everything; --auth FILE compares the
 * SHA-256 of the password with the file's, in constant time. */
static bool host_auth(void *ctx, const char *user, size_t ulen, const char *pass, size_t plen)
{
	const struct server_cfg *cfg = &((const struct conn *)ctx)->w->srv->cfg;
	unsigned char md[32];
	bool ok = false;

	if (!cfg->auth_file)
		return true;
	SHA256((const unsigned char *)pass, plen, md);
	for (size_t i = 0; i < cfg->nusers; i++)
		if (cfg->users[i].len == ulen && !memcmp(cfg->users[i].name, user, ulen))
			ok = CRYPTO_memcmp(md, cfg->users[i].pass_sha256, 32) == 0;
	OPENSSL_cleanse(md, sizeof(md));
	return ok;
}

/* host_fault - the session's "what now?": the plan (swapped on SIGHUP)
 * with the client's address and the time since start; counts the decision
 * and applies a throttle (the connection's business, not the session's). */
static bool host_fault(void *ctx, enum fault_stage st, struct fault_ctx *fc,
                       struct fault_decision *d)
{
	struct conn *c = ctx;
	struct worker *w = c->w;
	const struct fault_plan *p = atomic_load_explicit(&w->srv->plan, memory_order_acquire);

	fc->client = &c->fip;
	fc->now_ns = w->now - w->srv->start_ns;
	if (!fault_decide(p, st, fc, d))
		return false;
	switch (d->src) {
	case FAULT_SRC_GREYLIST:
		w->st.greylisted++;
		break;
	case FAULT_SRC_RATE:
		w->st.rate_limited++;
		break;
	default:
		w->st.faults_injected++;
		break;
	}
	if (d->throttle_bps && d->throttle_bps != c->throttle_bps) {
		c->throttle_bps = d->throttle_bps;
		c->tokens_ns = w->now;
		c->send_tokens = c->recv_tokens =
		    (int64_t)(d->throttle_bps / 10 ? d->throttle_bps / 10 : 1);
		c->trusted = 0; /* bounded receives from now on */
	}
	return true;
}

static const struct sess_policy_ops host_policy = {host_may_start, host_auth, host_fault};

static void host_begin(void *ctx)
{
	struct conn *c = ctx;

	if (c->w->srv->cfg.verify)
		stamp_verify_begin(&c->vc);
	if (c->w->capring)
		capture_begin(c);
}

static void host_content(void *ctx, const char *p, size_t n)
{
	struct conn *c = ctx;

	if (c->w->srv->cfg.verify)
		stamp_verify_feed(&c->vc, p, n);
	if (c->w->capring)
		capture_content(c, p, n);
}

static void host_envelope(void *ctx, char kind, const char *addr, size_t n)
{
	capture_envelope(ctx, kind, addr, n);
}

static int host_commit(void *ctx)
{
	return capture_commit(ctx);
}

/* host_end - --verify's check and --exit-after's count.  The count is one
 * shared atomic add per accepted message, paid only with --exit-after; the
 * N-th message stops the server at once, so every session's next MAIL is
 * refused (sess.c may_start). */
static void host_end(void *ctx, bool accepted)
{
	struct conn *c = ctx;
	struct server *srv = c->w->srv;

	if (srv->cfg.verify)
		verify_message_end(c->w, &c->vc, accepted);
	if (c->w->capring)
		capture_end(c, accepted);
	if (accepted && srv->cfg.exit_after &&
	    atomic_fetch_add_explicit(&srv->total_msgs, 1, memory_order_relaxed) + 1 ==
	        srv->cfg.exit_after)
		server_stop(srv, 1, "--exit-after reached");
}

static const struct sess_content_ops host_verify_ops = {host_begin, host_content, host_end, NULL,
                                                        NULL};
static const struct sess_content_ops host_capture_ops = {host_begin, host_content, host_end,
                                                         host_envelope, host_commit};
static const struct sess_content_ops host_count_ops = {NULL, NULL, host_end, NULL, NULL};

/* --- open and release ------------------------------------------------- */

/* --- PROXY protocol (--proxy-protocol; HAProxy doc/proxy-protocol.txt) --- */

static bool proxy_trusted(const struct server_cfg *cfg, const struct fault_ip *ip)
{
	for (int i = 0; i < cfg->nproxy_from; i++)
		if (fault_cidr_match(&cfg->proxy_from[i], ip))
			return true;
	return false;
}

/* close_421 - one final reply and a lingering close, for connections that
 * never became a session (c->out may still hold the greeting). */
static void close_421(struct conn *c, const char *esc, const char *text)
{
	char msg[400];
	int k = snprintf(msg, sizeof(msg), "421 %s %s %s\r\n", esc, c->w->srv->cfg.hostname, text);

	held_free(c);
	obuf_append(&c->out, msg, k > 0 && (size_t)k < sizeof(msg) ? (size_t)k : 0);
	set_state(c, CONN_CLOSING);
	closing_progress(c);
	conn_mark_dirty(c);
}

static uint64_t *proxy_bad_counter(struct server_stats *st, enum proxy_reason why)
{
	switch (why) {
	case PROXY_R_V1_TOO_LONG:
		return &st->proxy_bad_v1_too_long;
	case PROXY_R_V1_SYNTAX:
		return &st->proxy_bad_v1_syntax;
	case PROXY_R_V2_VERSION:
		return &st->proxy_bad_v2_version;
	case PROXY_R_V2_FAMILY:
		return &st->proxy_bad_v2_family;
	case PROXY_R_V2_LENGTH:
		return &st->proxy_bad_v2_length;
	case PROXY_R_TOO_LONG:
		return &st->proxy_bad_too_long;
	default:
		return &st->proxy_bad_not_proxy;
	}
}

/* proxy_input - octets from a balancer whose header is not complete yet.
 * The parser re-reads everything received so far (at most PROXY_MAX
 * octets: a longer prefix is already refused), usually one receive, since
 * balancers write the header in one piece before the client speaks. */
static void proxy_input(struct conn *c, const char *p, size_t n)
{
	struct worker *w = c->w;
	char head[PROXY_MAX];
	size_t have = held_pending(c), take = 0, hn = n;
	const char *hp = p;
	struct proxy_hdr h;
	enum proxy_reason why = PROXY_R_NONE;
	enum proxy_status r;

	if (have) {
		take = n < PROXY_MAX - have ? n : PROXY_MAX - have;
		memcpy(head, c->held + c->held_off, have);
		memcpy(head + have, p, take);
		hp = head;
		hn = have + take;
	}
	r = proxy_parse(hp, hn, &h, &why);
	if (r == PROXY_MORE && hn >= PROXY_MAX) {
		r = PROXY_BAD; /* cannot happen with a correct parser; bounded anyway */
		why = PROXY_R_TOO_LONG;
	}
	if (r == PROXY_MORE) {
		held_append(c, p, n);
		return;
	}
	if (r == PROXY_BAD) {
		(*proxy_bad_counter(&w->st, why))++;
		if (c->proxy_tls)
			conn_abort(c, false); /* an implicit-TLS client expects no plaintext */
		else
			close_421(c, "4.7.0", "Error: PROXY protocol header expected");
		return;
	}
	w->st.proxy_headers++;
	if (h.local) {
		w->st.proxy_local++; /* health check: the balancer's own address stands */
	} else {
		w->st.proxy_proxied++;
		c->fip = h.src;
	}
	held_free(c); /* hp may point at head[], never at held */
	conn_begin(c, c->proxy_tls, true);
	/* What followed the header is the client's: SMTP, or its ClientHello. */
	if (hn > h.len)
		deliver(c, hp + h.len, hn - h.len);
	if (take < n && have)
		deliver(c, p + take, n - take);
}

/* conn_proxy_expired - no complete header within --proxy-timeout (stop:
 * the server is stopping first).  Nothing was promised yet: close, telling
 * a misconfigured plain client why it never got a greeting. */
void conn_proxy_expired(struct conn *c, bool stop)
{
	if (!stop)
		c->w->st.proxy_timeouts++;
	if (c->proxy_tls || stop)
		conn_abort(c, false);
	else
		close_421(c, "4.4.2",
		          "Error: timeout exceeded waiting for the PROXY protocol header");
}

/* untrusted_proxy - the first octets of a connection not from a
 * --proxy-protocol source look like a PROXY header: it is refused, never
 * believed (anyone could claim any address).  Six octets are enough to
 * tell: no SMTP command starts with "PROXY " or CR LF CR LF. */
static bool untrusted_proxy(struct conn *c, const char *p, size_t n)
{
	struct proxy_hdr h;
	enum proxy_reason why;

	if (n < 6 || proxy_parse(p, n, &h, &why) == PROXY_BAD)
		return false;
	c->w->st.proxy_untrusted++;
	if (c->tls)
		conn_abort(c, false);
	else
		close_421(c, "4.7.0", "Error: PROXY protocol header from an untrusted address");
	return true;
}

/* conn_begin - the session starts: TLS-on-connect's handshake or the
 * greeting.  listed: c is already on a state list (it was in PROXY). */
static void conn_begin(struct conn *c, bool tls, bool listed)
{
	struct worker *w = c->w;
	struct server *srv = w->srv;
	const struct server_cfg *cfg = &srv->cfg;

	/* The SMTP session starts here, not at accept: a balancer's health
	 * check or a bad PROXY header never was one. */
	sess_start(&c->sess, &cfg->sess, &w->st.sess, &c->out, c->carry, &w->id_seq,
	           (uint32_t)w->id);
	c->sess.policy_ops = &host_policy;
	c->sess.content_ctx = c;
	if (w->capring)
		c->sess.content_ops = &host_capture_ops;
	else if (cfg->verify)
		c->sess.content_ops = &host_verify_ops;
	else if (cfg->exit_after)
		c->sess.content_ops = &host_count_ops;
	/* RFC 8314: on an implicit-TLS port the handshake comes first; the
	 * greeting waits in the plaintext buffer until it is done. */
	c->tls = tls ? tls_conn_new(&c->wire) : NULL;
	if (listed) {
		set_state(c, c->tls ? CONN_HANDSHAKE : CONN_SESSION);
	} else {
		c->state = c->tls ? CONN_HANDSHAKE : CONN_SESSION;
		c->since_ns = w->now;
		list_append(&w->lists[c->state], c);
	}
	conn_mark_dirty(c); /* the 220 greeting, or receiving the ClientHello */
	if (tls && !c->tls) {
		conn_abort(c, true);
		return;
	}
	if (srv->connlimit) {
		enum fault_conn r = fault_connlimit_inc(srv->connlimit, &c->fip);
		if (r == FAULT_CONN_LIMIT && c->tls) {
			w->st.conns_rejected_per_ip++;
			conn_abort(c, true); /* no plaintext 421 on a TLS port */
			return;
		}
		if (r == FAULT_CONN_LIMIT) {
			/* --max-conns-per-ip: like Postfix smtpd_client_connection_count_limit */
			char msg[320];
			int k = snprintf(
			    msg, sizeof(msg),
			    "421 4.7.0 %s Error: too many connections from your address\r\n",
			    cfg->hostname);
			w->st.conns_rejected_per_ip++;
			obuf_append(&c->out, msg, (size_t)k);
			if (c->state == CONN_SESSION) {
				set_state(c, CONN_CLOSING);
				closing_progress(c);
			}
			return;
		}
		c->connlimited = r == FAULT_CONN_OK;
	}
	unsigned act = sess_greet(&c->sess);
	if (act & (SESS_ACT_DROP | SESS_ACT_RESET)) {
		fault_end(c, act);
		return;
	}
	if (act & SESS_ACT_SUSPEND)
		suspend(c);
	else if (act & SESS_ACT_CLOSE)
		conn_close(c, act);
	if (c->state == CONN_SESSION && !c->suspended &&
	    atomic_load_explicit(&srv->stop_phase, memory_order_acquire))
		conn_close(c, sess_shutdown(&c->sess, true)); /* handed over as we stop */
}

struct conn *conn_open(struct worker *w, int fd, bool tls)
{
	struct server *srv = w->srv;
	const struct server_cfg *cfg = &srv->cfg;
	struct conn *c = w->free_conns;
	int one = 1;

	if (c) {
		w->free_conns = c->next;
	} else {
		c = malloc(sizeof(*c) + cfg->sess.line_max);
		if (!c) {
			close(fd);
			server_unadmit(srv);
			return NULL;
		}
		obuf_init(&c->out);
		obuf_init(&c->wire);
	}
	/* Keep the obufs' memory across reuse: their growth is sticky. */
	struct obuf keep = c->out, keep_wire = c->wire;
	memset(c, 0, sizeof(*c));
	c->out = keep;
	c->out.len = c->out.off = 0;
	c->out.overflow = 0;
	c->out.inflight = NULL;
	c->wire = keep_wire;
	c->wire.len = c->wire.off = 0;
	c->wire.overflow = 0;
	c->wire.inflight = NULL;
	c->w = w;
	c->fd = fd;
	c->opened_ns = w->now;
	/* Replies are already batched per read; Nagle would only add delay
	 * when a reply follows an unacknowledged one. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	bool gone = false;
	if (srv->need_peer) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0)
			fault_ip_from_sockaddr((struct sockaddr *)&ss, &c->fip);
		else
			gone = true; /* ENOTCONN: reset before we got to it */
	}
	w->st.conns_accepted++;
	atomic_fetch_add_explicit(&w->active, 1, memory_order_relaxed);
	if (gone) {
		/* Without its address no rule can be applied to it (nor can a
		 * balancer be told from a client); it is dead anyway. */
		w->st.io_errors++;
		c->state = CONN_CLOSED;
		list_append(&w->lists[CONN_CLOSED], c);
		conn_mark_dirty(c);
		return c;
	}
	if (cfg->nproxy_from && proxy_trusted(cfg, &c->fip)) {
		/* A balancer: its PROXY header comes before anything else, so
		 * the greeting (and TLS-on-connect) wait for it. */
		c->state = CONN_PROXY;
		c->proxy_tls = tls;
		c->since_ns = w->now;
		list_append(&w->lists[CONN_PROXY], c);
		conn_mark_dirty(c); /* receive the header */
		return c;
	}
	c->first_in = 1;
	conn_begin(c, tls, false);
	return c;
}

/* conn_release - the socket is closed and no operation refers to c. */
void conn_release(struct conn *c)
{
	struct worker *w = c->w;

	/* Only a backend's sync() releases, and the flush that called it
	 * forgets c afterwards (see worker_flush). */
	conn_list_remove(c);
	heap_remove(c);
	held_free(c);
	if (w->capring)
		capture_release(c);
	if (c->cap_waiting) {
		for (struct conn **pc = &w->capwait; *pc; pc = &(*pc)->cap_next)
			if (*pc == c) {
				*pc = c->cap_next;
				break;
			}
		c->cap_waiting = 0;
	}
	free(c->env);
	c->env = NULL;
	c->env_len = c->env_cap = 0;
	tls_conn_free(c->tls);
	c->tls = NULL;
	if (c->connlimited)
		fault_connlimit_dec(w->srv->connlimit, &c->fip);
	w->st.conns_closed++;
	{
		uint64_t ms = (w->now - c->opened_ns) / 1000000;
		unsigned b = 0;
		while (b < SERVER_SESSION_BUCKETS - 1 &&
		       (double)ms > server_session_bounds[b] * 1e3)
			b++;
		w->st.session_hist[b]++;
		w->st.session_ms += ms;
	}
	atomic_fetch_sub_explicit(&w->active, 1, memory_order_relaxed);
	server_unadmit(w->srv);
	/* Big buffers from a pathological client are not kept in the pool. */
	if (c->out.cap > 16 * 1024)
		obuf_free(&c->out);
	if (c->wire.cap > 32 * 1024)
		obuf_free(&c->wire);
	c->next = w->free_conns;
	w->free_conns = c;
}
