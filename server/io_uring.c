/*
 * io_uring.c - smtpsink's io_uring backend: acceptor ring + worker rings.
 * It only moves bytes; connection state, deadlines and backpressure are
 * conn.c's and worker.c's.
 *
 * Acceptor thread: one multishot accept per listener; each accepted fd goes
 * to the least-loaded worker with IORING_OP_MSG_RING (the target sees a CQE
 * with res = fd), so workers never touch the listeners (liburing
 * examples/proxy.c does the same hand-off).  When the server stops, every
 * hand-off already prepared is submitted and confirmed before the acceptor
 * says it is done, so no descriptor is lost on the way.
 *
 * Worker thread: its own ring, created in the thread because SINGLE_ISSUER
 * binds the ring to its creator (common/uring/uring.c picks the flags).
 * Receives select buffers from the worker's provided-buffer ring, and every
 * buffer goes back in the same completion batch: input the session cannot
 * take yet is copied out by conn.c, so a client that does not read can
 * never pin buffers (the pool is for in-flight receives only).  A session
 * gets one bounded receive at a time (single-shot, IORING_RECVSEND_POLL_FIRST:
 * the client is usually waiting for our reply, so the socket is empty) until
 * it is trusted (conn_bulk()), then one multishot receive; a multishot is
 * cancelled when the connection pauses.  Replies are sent once per batch,
 * one send in flight per connection, short sends resumed.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server.h"
#include "sink/uring.h"

/* user_data: conn pointer (8-byte aligned) | op in the low 3 bits. */
enum { OP_RECV = 1, OP_SEND = 2, OP_CANCEL = 3, OP_NEWCONN = 4, OP_WAKE = 5 };
/* acceptor user_data: (value << 8) | op */
enum { AOP_ACCEPT = 1, AOP_MSG = 2, AOP_REARM = 3, AOP_CANCEL = 4 };
#define OP_MASK 7ull
#define BGID    1

/* A turn that submitted sends waits for their completions plus one more
 * event, but no longer than this: the sends usually complete inline at
 * submission, and their CQEs alone must not end the wait (that cost a second
 * io_uring_enter per reply).  A send that does not complete inline (a full
 * socket) has its CQE looked at after this long at the latest. */
#define SEND_WAIT_CAP_NS (1000ull * 1000)

struct uring_worker {
	struct io_uring ring;
	struct uring_bufs bufs;
	uint64_t wake_val;
	unsigned sends; /* sends prepared since the last wait */
};

/* Per-connection backend state in conn.io. */
struct uconn {
	uint32_t refs;     /* operations in flight */
	uint32_t send_len; /* octets the in-flight send asked for */
	uint8_t recv;      /* 0 none, 1 single-shot, 2 multishot in flight */
	uint8_t recv_cancel;
	uint8_t send_busy;
	uint8_t cancel_all; /* CLOSED: everything in flight cancelled */
};

static inline struct uconn *UC(struct conn *c)
{
	_Static_assert(sizeof(struct uconn) <= CONN_IO_BYTES, "conn.io too small");
	return (struct uconn *)(void *)c->io.bytes;
}

static inline uint64_t ud(void *p, unsigned op)
{
	return (uint64_t)(uintptr_t)p | op;
}

static void arm_recv(struct uring_worker *u, struct conn *c)
{
	struct io_uring_sqe *sqe = uring_sqe(&u->ring);
	struct uconn *uc = UC(c);

	if (conn_bulk(c)) {
		io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
		uc->recv = 2;
	} else {
		io_uring_prep_recv(sqe, c->fd, NULL, 0, 0);
		sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
		uc->recv = 1;
	}
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = BGID;
	io_uring_sqe_set_data64(sqe, ud(c, OP_RECV));
	uc->refs++;
}

static void arm_send(struct uring_worker *u, struct conn *c)
{
	struct io_uring_sqe *sqe = uring_sqe(&u->ring);
	struct uconn *uc = UC(c);
	size_t n, window = conn_send_window(c);
	const char *p = obuf_send_begin(conn_outbuf(c), &n);

	if (n > window)
		n = window; /* a throttle= fault */
	io_uring_prep_send(sqe, c->fd, p, n, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, ud(c, OP_SEND));
	uc->send_len = (uint32_t)n;
	uc->send_busy = 1;
	uc->refs++;
	u->sends++;
}

static void cancel(struct uring_worker *u, struct conn *c, uint64_t what, bool all)
{
	struct io_uring_sqe *sqe = uring_sqe(&u->ring);

	if (all)
		io_uring_prep_cancel_fd(sqe, c->fd, IORING_ASYNC_CANCEL_ALL);
	else
		io_uring_prep_cancel64(sqe, what, 0);
	io_uring_sqe_set_data64(sqe, ud(c, OP_CANCEL));
	UC(c)->refs++;
}

/* ur_sync - bring the socket's operations in line with what c wants. */
static bool ur_sync(struct worker *w, struct conn *c)
{
	struct uring_worker *u = w->backend;
	struct uconn *uc = UC(c);

	if (c->state == CONN_CLOSED) {
		/* A multishot recv holds its own file reference, so closing the
		 * fd alone would not end it: cancel, close once all is back. */
		if (uc->refs && !uc->cancel_all) {
			uc->cancel_all = 1;
			cancel(u, c, 0, true);
		}
		if (uc->refs == 0) {
			if (c->rst)
				conn_set_socket_reset(c->fd);
			close(c->fd);
			c->fd = -1;
			conn_release(c);
		}
		return false;
	}
	if (!uc->send_busy && obuf_pending(conn_outbuf(c)) && conn_send_window(c))
		arm_send(u, c);
	if (conn_wants_input(c)) {
		if (!uc->recv)
			arm_recv(u, c);
	} else if (uc->recv == 2 && !uc->recv_cancel) {
		/* Paused: stop the multishot.  What it still delivers before the
		 * cancel lands is held by conn.c (bounded, see CONN_HELD_MAX). */
		uc->recv_cancel = 1;
		cancel(u, c, ud(c, OP_RECV), false);
	}
	return false;
}

static void on_recv(struct uring_worker *u, struct worker *w, struct conn *c,
                    struct io_uring_cqe *cqe)
{
	struct uconn *uc = UC(c);
	int res = cqe->res;

	if (cqe->flags & IORING_CQE_F_BUFFER) {
		unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
		uring_buf_taken(&u->bufs);
		if (res > 0)
			conn_input(c, uring_buf(&u->bufs, bid), (size_t)res);
		uring_buf_put(&u->bufs, bid); /* never held: see conn.c */
	}
	if (!(cqe->flags & IORING_CQE_F_MORE)) {
		uc->recv = 0;
		uc->recv_cancel = 0;
		uc->refs--;
	}
	if (res == 0) {
		conn_eof(c);
	} else if (res == -ENOBUFS) {
		/* Not fatal: the ring ran dry within one batch.  Buffers return
		 * before the next submit, where sync re-arms the receive. */
		w->st.enobufs++;
	} else if (res < 0 && res != -ECANCELED) {
		conn_error(c, -res);
	}
	conn_mark_dirty(c);
}

static void on_send(struct worker *w, struct conn *c, int res)
{
	struct uconn *uc = UC(c);

	uc->send_busy = 0;
	uc->refs--;
	if (res < 0) {
		obuf_send_done(conn_outbuf(c), 0);
		if (res != -ECANCELED)
			conn_error(c, -res);
	} else {
		/* A stream socket may take less than asked; the rest stays pending
		 * and goes out with the next sync. */
		if ((uint32_t)res < uc->send_len)
			w->st.short_sends++;
		conn_sent(c, (size_t)res);
	}
	conn_mark_dirty(c);
}

/* arm_wake - poll the worker's eventfd (it is non-blocking, so a read SQE
 * would fail with -EAGAIN instead of waiting). */
static void arm_wake(struct uring_worker *u, struct worker *w)
{
	struct io_uring_sqe *sqe = uring_sqe(&u->ring);

	io_uring_prep_poll_add(sqe, w->wake_fd, POLLIN);
	io_uring_sqe_set_data64(sqe, OP_WAKE);
}

static void handle_cqe(struct uring_worker *u, struct worker *w, struct io_uring_cqe *cqe)
{
	uint64_t data = io_uring_cqe_get_data64(cqe);
	unsigned op = (unsigned)(data & OP_MASK);
	struct conn *c = (struct conn *)(uintptr_t)(data & ~OP_MASK);

	switch (op) {
	case OP_NEWCONN:
		/* single writer: the acceptor reads it for placement */
		atomic_store_explicit(&w->arrived,
		                      atomic_load_explicit(&w->arrived, memory_order_relaxed) + 1,
		                      memory_order_relaxed);
		if (cqe->res >= 0)
			conn_open(w, cqe->res, (data >> 32) & 1);
		break;
	case OP_RECV:
		on_recv(u, w, c, cqe);
		break;
	case OP_SEND:
		on_send(w, c, cqe->res);
		break;
	case OP_CANCEL:
		UC(c)->refs--;
		conn_mark_dirty(c);
		break;
	case OP_WAKE:
		(void)!read(w->wake_fd, &u->wake_val, sizeof(u->wake_val));
		arm_wake(u, w);
		break;
	default:
		break;
	}
}

static int ur_init(struct worker *w)
{
	struct server *srv = w->srv;
	struct uring_worker *u = calloc(1, sizeof(*u));
	int ret;

	if (!u)
		return -ENOMEM;
	ret = uring_init(&u->ring, 4096, 16384, NULL);
	if (ret) {
		free(u);
		return ret;
	}
	ret = uring_bufs_init(&u->ring, &u->bufs, srv->cfg.recv_buf_count, srv->cfg.recv_buf_size,
	                      BGID);
	if (ret || w->wake_fd < 0) {
		io_uring_queue_exit(&u->ring);
		uring_bufs_free(&u->bufs);
		free(u);
		return ret ? ret : -EMFILE;
	}
	w->backend = u;
	w->ring_fd = u->ring.ring_fd;
	arm_wake(u, w);
	return 0;
}

static void ur_fini(struct worker *w)
{
	struct uring_worker *u = w->backend;

	io_uring_queue_exit(&u->ring);
	uring_bufs_free(&u->bufs);
	free(u);
	w->backend = NULL;
}

static void ur_wait(struct worker *w, uint64_t timeout_ns)
{
	struct uring_worker *u = w->backend;
	struct io_uring_cqe *cqe;
	unsigned head, n = 0, want = 1;
	int ret;

	/* One io_uring_enter submits every send and re-arm of the last sync
	 * and waits for the next batch (DEFER_TASKRUN runs completions here).
	 * Sends on a socket with room complete during the submission, and
	 * their CQEs would satisfy a wait for one: count them in, so a
	 * request/reply client costs one enter per round trip, not two. */
	if (u->sends && timeout_ns) {
		want += u->sends;
		if (timeout_ns > SEND_WAIT_CAP_NS)
			timeout_ns = SEND_WAIT_CAP_NS;
	}
	u->sends = 0;
	struct __kernel_timespec ts = {.tv_sec = (long long)(timeout_ns / 1000000000ull),
	                               .tv_nsec = (long long)(timeout_ns % 1000000000ull)};
	ret = io_uring_submit_and_wait_timeout(&u->ring, &cqe, want, &ts, NULL);
	if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EBUSY)
		fprintf(stderr, "smtpsink: worker %d: io_uring_enter: %s\n", w->id, strerror(-ret));
	w->now = now_ns();
	io_uring_for_each_cqe(&u->ring, head, cqe)
	{
		handle_cqe(u, w, cqe);
		n++;
	}
	io_uring_cq_advance(&u->ring, n);
	uring_bufs_commit(&u->bufs);
	w->st.cqes += n;
}

static void ur_stop_accepting(struct worker *w)
{
	(void)w; /* the acceptor thread owns the listeners */
}

const struct backend_ops uring_ops = {
    .name = "io_uring",
    .init = ur_init,
    .fini = ur_fini,
    .wait = ur_wait,
    .sync = ur_sync,
    .stop_accepting = ur_stop_accepting,
};

/* --- acceptor ------------------------------------------------------------ */

static void arm_accept(struct io_uring *ring, struct server *srv, int i)
{
	struct io_uring_sqe *sqe = uring_sqe(ring);

	io_uring_prep_multishot_accept(sqe, srv->cfg.listen[i].fd, NULL, NULL, SOCK_NONBLOCK);
	io_uring_sqe_set_data64(sqe, ((uint64_t)i << 8) | AOP_ACCEPT);
}

/* pick_worker - where a new connection goes.  While load is low, pack:
 * the first worker with fewer than WORKER_PACK_CONNS connections takes it, so a
 * few request/reply sessions share one worker (and its core) instead of
 * waking two threads that compete with the client for the CPUs; with
 * WORKER_PACK_CONNS everywhere, least connections, round robin among equals.
 * A worker's load counts hand-offs it has not opened yet, so a burst of
 * connects spreads by what was sent, not by stale counts. */
static struct worker *pick_worker(struct server *srv, const uint64_t *sent, unsigned *rr, int *wid)
{
	int best = 0;
	uint64_t best_n = UINT64_MAX;

	for (int i = 0; i < srv->nworkers; i++) {
		struct worker *w = &srv->workers[i];
		uint64_t in_flight =
		    sent[i] - atomic_load_explicit(&w->arrived, memory_order_relaxed);
		uint64_t n = atomic_load_explicit(&w->active, memory_order_relaxed) + in_flight;
		if (n < WORKER_PACK_CONNS) {
			*wid = i;
			return w;
		}
	}
	for (int k = 0; k < srv->nworkers; k++) {
		int i = (int)((*rr + (unsigned)k) % (unsigned)srv->nworkers);
		struct worker *w = &srv->workers[i];
		uint64_t in_flight =
		    sent[i] - atomic_load_explicit(&w->arrived, memory_order_relaxed);
		uint64_t n = atomic_load_explicit(&w->active, memory_order_relaxed) + in_flight;
		if (n < best_n) {
			best_n = n;
			best = i;
		}
	}
	(*rr)++;
	*wid = best;
	return &srv->workers[best];
}

struct acceptor {
	struct server *srv;
	struct io_uring ring;
	uint64_t *sent; /* hand-offs per worker */
	unsigned rr;
	unsigned handoffs; /* MSG_RINGs not yet confirmed */
	unsigned accepts;  /* multishot accepts armed (or re-arm pending) */
	bool stopping;
};

static void acceptor_cqe(struct acceptor *a, struct io_uring_cqe *cqe)
{
	struct server *srv = a->srv;
	uint64_t data = io_uring_cqe_get_data64(cqe);
	unsigned op = (unsigned)(data & 0xff);
	int idx = (int)((data >> 8) & 0xffffffff); /* listener, or fd for AOP_MSG */

	switch (op) {
	case AOP_ACCEPT:
		if (cqe->res >= 0) {
			int fd = cqe->res;
			if (a->stopping) {
				/* raced with the stop: nobody will serve it */
				reject_busy(srv, fd);
			} else if (!server_admit(srv)) {
				reject_busy(srv, fd);
			} else {
				int wid;
				struct worker *w = pick_worker(srv, a->sent, &a->rr, &wid);
				struct io_uring_sqe *sqe = uring_sqe(&a->ring);
				/* the target's user_data: OP_NEWCONN, and whether the
				 * listener is implicit TLS */
				uint64_t tag =
				    (uint64_t)srv->cfg.listen[idx].tls << 32 | OP_NEWCONN;
				io_uring_prep_msg_ring(sqe, w->ring_fd, (unsigned)fd, tag, 0);
				io_uring_sqe_set_data64(sqe, (uint64_t)wid << 40 |
				                                 (uint64_t)fd << 8 | AOP_MSG);
				a->sent[wid]++;
				a->handoffs++;
			}
		} else if (cqe->res != -ECANCELED) {
			atomic_fetch_add(&srv->accept_errors, 1);
		}
		if (!(cqe->flags & IORING_CQE_F_MORE)) {
			if (a->stopping) {
				a->accepts--;
			} else {
				/* An error (EMFILE/ENFILE above all) ends the multishot:
				 * re-arm after a pause so a descriptor shortage cannot
				 * spin the acceptor.  A full completion queue during a
				 * connect burst ends it with a success (the last
				 * connection): re-arm at once - a 100 ms pause there let
				 * the listen backlog overflow, and dropped SYNs come back
				 * only after TCP's 1 s and 3 s retransmissions. */
				if (cqe->res < 0) {
					static struct __kernel_timespec pause = {
					    .tv_sec = 0, .tv_nsec = 100 * 1000 * 1000};
					struct io_uring_sqe *sqe = uring_sqe(&a->ring);
					io_uring_prep_timeout(sqe, &pause, 0, 0);
					io_uring_sqe_set_data64(sqe,
					                        ((uint64_t)idx << 8) | AOP_REARM);
				} else {
					arm_accept(&a->ring, srv, idx);
				}
			}
		}
		break;
	case AOP_MSG:
		a->handoffs--;
		if (cqe->res < 0) {
			/* The worker could not be told: drop the connection. */
			close(idx);
			a->sent[data >> 40]--;
			server_unadmit(srv);
			atomic_fetch_add(&srv->accept_errors, 1);
		}
		break;
	case AOP_REARM:
		if (a->stopping)
			a->accepts--;
		else
			arm_accept(&a->ring, srv, idx);
		break;
	default:
		break;
	}
}

static void acceptor_turn(struct acceptor *a, long long wait_ns)
{
	struct io_uring_cqe *cqe;
	struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = wait_ns};
	unsigned head, n = 0;

	io_uring_submit_and_wait_timeout(&a->ring, &cqe, 1, &ts, NULL);
	io_uring_for_each_cqe(&a->ring, head, cqe)
	{
		acceptor_cqe(a, cqe);
		n++;
	}
	io_uring_cq_advance(&a->ring, n);
}

static void *acceptor_main(void *arg)
{
	struct acceptor a = {.srv = arg};
	struct server *srv = a.srv;
	int ret;

	a.sent = calloc((size_t)srv->nworkers, sizeof(*a.sent));
	/* a CQ for a 10,000-connection burst: an overflow ends the multishot
	 * accept (and hand-off completions share the queue) */
	ret = a.sent ? uring_init(&a.ring, 1024, 16384, NULL) : -ENOMEM;
	if (ret) {
		free(a.sent);
		fprintf(stderr, "smtpsink: acceptor: io_uring setup: %s\n", strerror(-ret));
		atomic_store(&srv->acceptor_ready, -1);
		return NULL;
	}
	for (int i = 0; i < srv->cfg.nlisten; i++)
		arm_accept(&a.ring, srv, i);
	a.accepts = (unsigned)srv->cfg.nlisten;
	atomic_store(&srv->acceptor_ready, 1);

	while (atomic_load_explicit(&srv->stop_phase, memory_order_relaxed) == 0)
		acceptor_turn(&a, 50 * 1000 * 1000);

	/* Stop: cancel the accepts and see every prepared hand-off through
	 * (submitted and confirmed), so no accepted descriptor is dropped. */
	a.stopping = true;
	for (int i = 0; i < srv->cfg.nlisten; i++) {
		struct io_uring_sqe *sqe = uring_sqe(&a.ring);
		io_uring_prep_cancel_fd(sqe, srv->cfg.listen[i].fd, IORING_ASYNC_CANCEL_ALL);
		io_uring_sqe_set_data64(sqe, AOP_CANCEL);
	}
	uint64_t give_up = now_ns() + 1000ull * 1000 * 1000;
	while ((a.handoffs || a.accepts) && now_ns() < give_up)
		acceptor_turn(&a, 10 * 1000 * 1000);
	io_uring_queue_exit(&a.ring);
	free(a.sent);
	for (int i = 0; i < srv->cfg.nlisten; i++) {
		close(srv->cfg.listen[i].fd);
		srv->cfg.listen[i].fd = -1;
	}
	atomic_store_explicit(&srv->acceptor_stopped, 1, memory_order_release);
	for (int i = 0; i < srv->nworkers; i++)
		worker_wake(&srv->workers[i]);
	return NULL;
}

int uring_start(struct server *srv)
{
	int err;

	for (int i = 0; i < srv->nworkers; i++) {
		struct worker *w = &srv->workers[i];
		err = pthread_create(&w->thread, NULL, worker_main, w);
		if (err)
			return -err;
	}
	/* The acceptor needs every worker's ring fd for MSG_RING. */
	for (int i = 0; i < srv->nworkers; i++) {
		while (atomic_load(&srv->workers[i].ready) == 0)
			usleep(1000);
		if (atomic_load(&srv->workers[i].ready) < 0)
			return -EIO;
	}
	err = pthread_create(&srv->acceptor, NULL, acceptor_main, srv);
	if (err)
		return -err;
	srv->have_acceptor = true;
	while (atomic_load(&srv->acceptor_ready) == 0)
		usleep(1000);
	return atomic_load(&srv->acceptor_ready) < 0 ? -EIO : 0;
}
