/*
 * epoll.c - smtpsink's epoll backend, for where io_uring is blocked
 * (Docker's default seccomp profile, kernel.io_uring_disabled) or when
 * --io epoll is asked for.  It only moves bytes; connection state, deadlines
 * and backpressure are conn.c's and worker.c's.
 *
 * Each worker has its own epoll instance with every listener registered
 * EPOLLEXCLUSIVE, so an incoming connection wakes one worker, which accepts
 * it and keeps it: no acceptor thread, no cross-thread queue.  Sockets are
 * edge-triggered; the backend remembers "readable"/"writable" until a call
 * returns EAGAIN, and sync() reads and writes as far as the connection
 * wants, into one per-worker receive buffer (the session copies nothing but
 * a straddling command line).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "server.h"

#define RBUF_SIZE         (64 * 1024)
#define MAX_EVENTS        256
#define SYSCALLS_PER_SYNC 8    /* then let other connections have a turn */
#define TAG_LISTEN        1ull /* epoll data: (index << 2) | tag; conns are pointers */
#define TAG_WAKE          2ull

struct epoll_worker {
	int ep;
	bool listening;
	bool spread_woken;    /* worker 0: the others were told to listen too */
	uint64_t relisten_ns; /* accept paused after EMFILE/ENFILE until then */
	char *rbuf;
};

/* Per-connection backend state in conn.io. */
struct econn {
	uint8_t readable; /* an edge said so and no read has hit EAGAIN since */
	uint8_t writable;
	uint8_t registered;
	uint8_t hup; /* the peer shut down (or failed): read to the end */
};

static inline struct econn *EC(struct conn *c)
{
	_Static_assert(sizeof(struct econn) <= CONN_IO_BYTES, "conn.io too small");
	return (struct econn *)(void *)c->io.bytes;
}

static void listeners_ctl(struct epoll_worker *e, struct server *srv, int op)
{
	for (int i = 0; i < srv->cfg.nlisten; i++) {
		struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE,
		                         .data.u64 = ((uint64_t)i << 2) | TAG_LISTEN};
		if (srv->cfg.listen[i].fd >= 0)
			epoll_ctl(e->ep, op, srv->cfg.listen[i].fd, &ev);
	}
	e->listening = op == EPOLL_CTL_ADD;
}

static void do_accept(struct epoll_worker *e, struct worker *w, int idx)
{
	struct server *srv = w->srv;
	int lfd = srv->cfg.listen[idx].fd;

	for (int k = 0; k < 64 && e->listening; k++) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOMEM ||
			    errno == ENOBUFS) {
				/* Out of descriptors: level-triggered listeners would
				 * spin; step back for 100 ms and let closes free some. */
				atomic_fetch_add(&srv->accept_errors, 1);
				listeners_ctl(e, srv, EPOLL_CTL_DEL);
				e->relisten_ns = w->now + 100ull * 1000 * 1000;
			}
			return;
		}
		if (!server_admit(srv)) {
			reject_busy(srv, fd);
			continue;
		}
		if (!e->spread_woken &&
		    atomic_load_explicit(&srv->conns, memory_order_relaxed) >= WORKER_PACK_CONNS) {
			/* Past packing: the others listen too (see want_listen). */
			e->spread_woken = true;
			for (int i = 0; i < srv->nworkers; i++)
				if (i != w->id)
					worker_wake(&srv->workers[i]);
		}
		struct conn *c = conn_open(w, fd, srv->cfg.listen[idx].tls);
		if (!c)
			continue;
		struct econn *ec = EC(c);
		struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
		                         .data.ptr = c};
		ec->writable = 1; /* a new socket has room for the greeting */
		if (epoll_ctl(e->ep, EPOLL_CTL_ADD, fd, &ev) == 0)
			ec->registered = 1;
		else
			conn_error(c, errno);
	}
}

/* ep_read - receive while the connection wants input, up to budget
 * syscalls; returns what is left of the budget. */
static int ep_read(struct worker *w, struct conn *c, int budget)
{
	struct epoll_worker *e = w->backend;
	struct econn *ec = EC(c);

	while (budget > 0 && c->state != CONN_CLOSED && ec->readable && conn_wants_input(c)) {
		size_t want = conn_bulk(c) ? RBUF_SIZE : CONN_RECV_SMALL;
		ssize_t n = recv(c->fd, e->rbuf, want, 0);
		budget--;
		if (n > 0) {
			/* Less than asked: the socket is empty now, and new input
			 * brings a new edge; without this every round trip paid a
			 * second recv for its EAGAIN.  After a hang-up the edge has
			 * been spent, so read on to the end of stream. */
			if ((size_t)n < want && !ec->hup)
				ec->readable = 0;
			conn_input(c, e->rbuf, (size_t)n);
		} else if (n == 0) {
			ec->readable = 0;
			conn_eof(c);
		} else if (errno == EAGAIN) {
			ec->readable = 0;
		} else if (errno != EINTR) {
			conn_error(c, errno);
		}
	}
	return budget;
}

/* ep_sync - send what is pending; read again if replies drained and the
 * connection resumed (its input was read in ep_wait, before any reply of
 * the batch went out: RFC 2920 3.2, one send per batch).  The budget keeps
 * one busy connection (say, one pipelining without reading, whose replies
 * drain as fast as its TCP window opens) from holding up the others: past
 * it, the connection waits for the next loop turn. */
static bool ep_sync(struct worker *w, struct conn *c)
{
	struct econn *ec = EC(c);
	int budget = SYSCALLS_PER_SYNC;

	while (c->state != CONN_CLOSED && budget > 0) {
		struct obuf *ob = conn_outbuf(c);
		size_t window = obuf_pending(ob) ? conn_send_window(c) : 0;
		if (ec->writable && obuf_pending(ob) && window) {
			size_t want = obuf_pending(ob) < window ? obuf_pending(ob) : window;
			ssize_t n = send(c->fd, ob->p + ob->off, want, MSG_NOSIGNAL);
			budget--;
			if (n > 0) {
				if ((size_t)n < want)
					w->st.short_sends++;
				conn_sent(c, (size_t)n);
			} else if (n < 0 && errno == EAGAIN) {
				ec->writable = 0; /* EPOLLOUT (edge) says when to go on */
			} else if (!(n < 0 && errno == EINTR)) {
				conn_error(c, n < 0 ? errno : EPIPE);
			}
		} else if (ec->readable && conn_wants_input(c)) {
			budget = ep_read(w, c, budget);
		} else {
			break;
		}
	}
	if (c->state != CONN_CLOSED && budget <= 0 &&
	    ((ec->writable && obuf_pending(conn_outbuf(c)) && conn_send_window(c)) ||
	     (ec->readable && conn_wants_input(c))))
		return true; /* more next turn */
	if (c->state == CONN_CLOSED) {
		if (c->rst)
			conn_set_socket_reset(c->fd);
		close(c->fd); /* also leaves the epoll set */
		c->fd = -1;
		conn_release(c);
	}
	return false;
}

/* want_listen - should this worker take new connections?  Worker 0 always
 * (unless stopping or out of descriptors); the others only once the server
 * holds WORKER_PACK_CONNS connections, and until it is down to half that.
 * A few request/reply sessions then share one worker instead of waking two
 * threads that compete with the client for the CPUs (EPOLLEXCLUSIVE wakes
 * whichever worker is idle, which spread them over all workers). */
static bool want_listen(struct epoll_worker *e, struct worker *w)
{
	uint64_t n = atomic_load_explicit(&w->srv->conns, memory_order_relaxed);

	if (w->now < e->relisten_ns)
		return false;
	if (n < WORKER_PACK_CONNS / 2)
		e->spread_woken = false;
	return w->id == 0 || n >= WORKER_PACK_CONNS || (e->listening && n >= WORKER_PACK_CONNS / 2);
}

static int ep_init(struct worker *w)
{
	struct epoll_worker *e = calloc(1, sizeof(*e));
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_WAKE};

	if (!e)
		return -ENOMEM;
	e->ep = epoll_create1(EPOLL_CLOEXEC);
	e->rbuf = malloc(RBUF_SIZE);
	if (e->ep < 0 || !e->rbuf || w->wake_fd < 0 ||
	    epoll_ctl(e->ep, EPOLL_CTL_ADD, w->wake_fd, &ev)) {
		int err = errno ? errno : ENOMEM;
		if (e->ep >= 0)
			close(e->ep);
		free(e->rbuf);
		free(e);
		return -err;
	}
	w->backend = e;
	if (!atomic_load(&w->srv->stop_phase) && want_listen(e, w))
		listeners_ctl(e, w->srv, EPOLL_CTL_ADD);
	return 0;
}

static void ep_fini(struct worker *w)
{
	struct epoll_worker *e = w->backend;

	close(e->ep);
	free(e->rbuf);
	free(e);
	w->backend = NULL;
}

static void ep_stop_accepting(struct worker *w)
{
	struct epoll_worker *e = w->backend;

	if (e->listening)
		listeners_ctl(e, w->srv, EPOLL_CTL_DEL);
	e->relisten_ns = UINT64_MAX;
}

static void ep_wait(struct worker *w, uint64_t timeout_ns)
{
	struct epoll_worker *e = w->backend;
	struct epoll_event evs[MAX_EVENTS];
	int timeout = (int)((timeout_ns + 999999) / 1000000);
	int n;

	if (want_listen(e, w) != e->listening)
		listeners_ctl(e, w->srv, e->listening ? EPOLL_CTL_DEL : EPOLL_CTL_ADD);
	n = epoll_wait(e->ep, evs, MAX_EVENTS, timeout);
	w->now = now_ns();
	for (int i = 0; i < n; i++) {
		uint64_t d = evs[i].data.u64;
		if (d & TAG_LISTEN) {
			do_accept(e, w, (int)(d >> 2));
			continue;
		}
		if (d == TAG_WAKE) {
			uint64_t v;
			(void)!read(w->wake_fd, &v, sizeof(v));
			continue;
		}
		struct conn *c = evs[i].data.ptr;
		if (evs[i].events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
			EC(c)->writable = 1;
		if (evs[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
			EC(c)->hup = 1;
		if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
			EC(c)->readable = 1;
			ep_read(w, c, SYSCALLS_PER_SYNC);
		}
		conn_mark_dirty(c);
	}
}

const struct backend_ops epoll_ops = {
    .name = "epoll",
    .init = ep_init,
    .fini = ep_fini,
    .wait = ep_wait,
    .sync = ep_sync,
    .stop_accepting = ep_stop_accepting,
};

int epoll_start(struct server *srv)
{
	/* No acceptor thread: listeners close in main after the workers stop. */
	atomic_store(&srv->acceptor_stopped, 1);
	for (int i = 0; i < srv->nworkers; i++) {
		int err =
		    pthread_create(&srv->workers[i].thread, NULL, worker_main, &srv->workers[i]);
		if (err)
			return -err;
	}
	for (int i = 0; i < srv->nworkers; i++) {
		while (atomic_load(&srv->workers[i].ready) == 0)
			usleep(1000);
		if (atomic_load(&srv->workers[i].ready) < 0)
			return -EIO;
	}
	return 0;
}
