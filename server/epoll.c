/*
 * epoll.c - smtpsink's epoll backend, for where io_uring is blocked
 * (Docker's default seccomp profile, kernel.io_uring_disabled) or when
 * --io epoll is asked for.  Same sessions, same worker logic (worker.c).
 *
 * Each worker has its own epoll instance with every listener registered
 * EPOLLEXCLUSIVE, so an incoming connection wakes one worker, which accepts
 * it and keeps it: no acceptor thread, no cross-thread queue.  Connections
 * are edge-triggered; a worker reads a socket until EAGAIN into one
 * per-worker buffer (the session copies nothing but a straddling command
 * line), then sends every dirty connection's replies once per epoll_wait
 * batch.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "server.h"

#define RBUF_SIZE  (64 * 1024)
#define MAX_EVENTS 256
#define LISTEN_TAG 1ull /* epoll data: listener index << 1 | 1; conns are pointers */

struct epoll_worker {
	int ep;
	bool listening;
	uint64_t relisten_ns; /* accept paused after EMFILE/ENFILE until then */
};

static void listeners_ctl(struct epoll_worker *e, struct server *srv, int op)
{
	for (int i = 0; i < srv->cfg.nlisten; i++) {
		struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE,
		                         .data.u64 = ((uint64_t)i << 1) | LISTEN_TAG};
		if (srv->cfg.listen[i].fd >= 0)
			epoll_ctl(e->ep, op, srv->cfg.listen[i].fd, &ev);
	}
	e->listening = op == EPOLL_CTL_ADD;
}

static void do_accept(struct epoll_worker *e, struct worker *w, int lfd)
{
	struct server *srv = w->srv;

	for (int k = 0; k < 64; k++) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOMEM ||
			    errno == ENOBUFS) {
				/* Out of descriptors: level-triggered listeners would
				 * spin; step back for 100 ms and let closes free some. */
				atomic_fetch_add(&srv->accept_errors, 1);
				listeners_ctl(e, srv, EPOLL_CTL_DEL);
				e->relisten_ns = now_ns() + 100ull * 1000 * 1000;
			}
			return;
		}
		if (server_over_limit(srv)) {
			atomic_fetch_add(&srv->rejected, 1);
			reject_busy(srv, fd);
			continue;
		}
		struct conn *c = conn_new(w, fd);
		if (!c) {
			close(fd);
			atomic_fetch_sub(&srv->conns, 1);
			continue;
		}
		struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
		                         .data.ptr = c};
		if (epoll_ctl(e->ep, EPOLL_CTL_ADD, fd, &ev)) {
			c->dead = 1;
			conn_mark_dirty(c);
		}
	}
}

/* feed_held - input kept from an earlier read while replies drained. */
static void feed_held(struct conn *c)
{
	size_t n = c->held_count - c->held_off;
	size_t k = conn_input(c, c->held + c->held_off, n);

	c->held_off += (uint32_t)k;
	if (c->held_off == c->held_count) {
		free(c->held);
		c->held = NULL;
		c->held_off = c->held_count = 0;
	}
}

/* do_read - drain the socket (edge-triggered) unless reading is paused. */
static void do_read(struct worker *w, struct conn *c)
{
	if (c->held && !c->read_paused)
		feed_held(c);
	while (!c->closing && !c->dead && !c->read_paused && !c->held) {
		ssize_t n = recv(c->fd, w->rbuf, RBUF_SIZE, 0);
		if (n > 0) {
			size_t k = conn_input(c, w->rbuf, (size_t)n);
			if (k < (size_t)n) {
				/* Backpressure: keep the tail (one read, <= 64 KiB)
				 * until the client has read its replies. */
				c->held = malloc((size_t)n - k);
				if (!c->held) {
					c->dead = 1;
					break;
				}
				memcpy(c->held, w->rbuf + k, (size_t)n - k);
				c->held_count = (uint32_t)((size_t)n - k);
				c->held_off = 0;
			}
			continue;
		}
		if (n == 0) {
			conn_peer_eof(c);
		} else if (errno == EINTR) {
			continue;
		} else if (errno != EAGAIN) {
			w->st.io_errors++;
			c->dead = 1;
			conn_mark_dirty(c);
		}
		break;
	}
}

static void do_write(struct worker *w, struct conn *c)
{
	while (obuf_pending(&c->out) && !c->dead) {
		ssize_t n = send(c->fd, c->out.p + c->out.off, obuf_pending(&c->out), MSG_NOSIGNAL);
		if (n > 0) {
			if ((size_t)n < obuf_pending(&c->out))
				w->st.short_sends++;
			obuf_consume(&c->out, (size_t)n);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return; /* EPOLLOUT (edge) tells us when to go on */
		w->st.io_errors++;
		c->dead = 1;
	}
	if (c->read_paused && obuf_pending(&c->out) < OBUF_SOFT_MAX / 2 && !c->closing) {
		/* Backlog drained: resume, and read what arrived meanwhile (the
		 * edge for it has already passed). */
		c->read_paused = 0;
		do_read(w, c);
		if (obuf_pending(&c->out))
			conn_mark_dirty(c);
	}
}

static void flush_dirty(struct worker *w)
{
	while (w->dirty) {
		struct conn *c = w->dirty;
		w->dirty = c->dirty_next;
		c->in_dirty = 0;
		do_write(w, c);
		if (c->in_dirty)
			continue; /* re-queued by a resumed read; handled this pass */
		if (c->dead || (c->closing && !obuf_pending(&c->out))) {
			close(c->fd); /* also removes it from the epoll set */
			free(c->held);
			c->held = NULL;
			conn_release(c);
		}
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct server *srv = w->srv;
	struct epoll_worker e = {.ep = epoll_create1(EPOLL_CLOEXEC)};
	struct epoll_event evs[MAX_EVENTS];
	uint64_t next_tick = 0;

	w->rbuf = malloc(RBUF_SIZE);
	if (e.ep < 0 || !w->rbuf) {
		fprintf(stderr, "smtpsink: worker %d: epoll setup: %s\n", w->id, strerror(errno));
		atomic_store(&w->ready, -1);
		return NULL;
	}
	w->backend = &e;
	listeners_ctl(&e, srv, EPOLL_CTL_ADD);
	atomic_store(&w->ready, 1);

	for (;;) {
		uint64_t now = now_ns();
		int phase = atomic_load_explicit(&srv->stop_phase, memory_order_relaxed);

		if (phase >= 1 && e.listening)
			listeners_ctl(&e, srv, EPOLL_CTL_DEL);
		if (phase == 0 && !e.listening && now >= e.relisten_ns)
			listeners_ctl(&e, srv, EPOLL_CTL_ADD);
		if (now >= next_tick) {
			next_tick = now + worker_tick(w, now);
			flush_dirty(w);
			if (worker_done(w) || phase >= 3)
				break;
		}
		int timeout = (int)((next_tick - now) / 1000000) + 1;
		int n = epoll_wait(e.ep, evs, MAX_EVENTS, timeout);
		for (int i = 0; i < n; i++) {
			uint64_t d = evs[i].data.u64;
			if (d & LISTEN_TAG) {
				do_accept(&e, w, srv->cfg.listen[d >> 1].fd);
				continue;
			}
			struct conn *c = evs[i].data.ptr;
			if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
				do_read(w, c);
			if (evs[i].events & EPOLLOUT)
				conn_mark_dirty(c);
		}
		w->st.loops++;
		flush_dirty(w);
		server_note_msgs(w);
	}
	worker_publish(w);
	close(e.ep);
	w->backend = NULL;
	return NULL;
}

int epoll_start(struct server *srv)
{
	/* No acceptor thread: listeners close in main after the workers stop. */
	atomic_store(&srv->acceptor_stopped, 1);
	for (int i = 0; i < srv->nworkers; i++)
		if (pthread_create(&srv->workers[i].thread, NULL, worker_main, &srv->workers[i]))
			return -errno;
	for (int i = 0; i < srv->nworkers; i++) {
		while (atomic_load(&srv->workers[i].ready) == 0)
			usleep(1000);
		if (atomic_load(&srv->workers[i].ready) < 0)
			return -EIO;
	}
	return 0;
}
