/*
 * io_uring.c - smtpsink's io_uring backend: acceptor ring + worker rings
 *
 * Acceptor thread: one multishot accept per listener; each accepted fd goes
 * to the least-loaded worker with IORING_OP_MSG_RING (the target sees a CQE
 * with res = fd), so workers never touch the listeners (liburing
 * examples/proxy.c does the same hand-off).
 *
 * Worker thread: its own ring, created in the thread because SINGLE_ISSUER
 * binds the ring to its creator; DEFER_TASKRUN so completions are processed
 * only when we enter the kernel to wait (fewer interruptions, better
 * batching); fallback COOP_TASKRUN on kernels before 6.1.  Every connection
 * has one multishot recv selecting buffers from the worker's provided-buffer
 * ring; a buffer returns to the ring as soon as the session has consumed it
 * (the scanner never keeps a pointer into it).  Replies are sent once per
 * completion batch, one send in flight per connection, short sends resumed.
 * One io_uring_enter per loop iteration submits all sends and re-arms and
 * waits for the next batch.
 */
#include <errno.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "server.h"

/* user_data: conn pointer (8-byte aligned) | op in the low 3 bits. */
enum { OP_RECV = 1, OP_SEND = 2, OP_CANCEL = 3, OP_NEWCONN = 4, OP_MSG = 5, OP_REARM = 6 };
#define OP_MASK 7ull
#define BGID    1

struct uring_worker {
	struct io_uring ring;
	struct io_uring_buf_ring *br;
	char *bufs;
	size_t br_bytes;
	uint32_t nbufs, bufsz;
	int returned;       /* buffers added since the last advance */
	int32_t *held_next; /* per buffer id: next held buffer of the same conn */
	uint32_t *held_len; /* per buffer id: octets received into it */
};

static inline uint64_t ud(void *p, unsigned op)
{
	return (uint64_t)(uintptr_t)p | op;
}

/* get_sqe - never fails: a full SQ is submitted first. */
static struct io_uring_sqe *get_sqe(struct io_uring *ring)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);

	while (!sqe) {
		io_uring_submit(ring);
		sqe = io_uring_get_sqe(ring);
	}
	return sqe;
}

/* ring_init - SINGLE_ISSUER|DEFER_TASKRUN (6.1+), else COOP_TASKRUN (5.19+),
 * else plain.  The CQ is 4x the SQ: multishot recv on thousands of sockets
 * can post many CQEs per submission, and an overflowing CQ costs a slow path.
 */
static int ring_init(struct io_uring *ring, unsigned entries, bool *deferred)
{
	static const unsigned flag_sets[] = {
	    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL,
	    IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_SUBMIT_ALL,
	    0,
	};
	int ret = -EINVAL;

	for (size_t i = 0; i < sizeof(flag_sets) / sizeof(flag_sets[0]); i++) {
		struct io_uring_params p;
		memset(&p, 0, sizeof(p));
		p.flags = flag_sets[i] | IORING_SETUP_CQSIZE;
		p.cq_entries = entries * 4;
		ret = io_uring_queue_init_params(entries, ring, &p);
		if (ret == 0) {
			if (deferred)
				*deferred = i == 0;
			return 0;
		}
		if (ret != -EINVAL)
			break;
	}
	return ret;
}

/* uring_probe - can this process use io_uring with what we need?  Docker's
 * default seccomp profile and kernel.io_uring_disabled make setup fail with
 * -EPERM/-ENOSYS; old kernels lack multishot recv or MSG_RING. */
int uring_probe(char *why, size_t n)
{
	struct io_uring ring;
	struct io_uring_probe *p;
	int ret = ring_init(&ring, 8, NULL);

	if (ret) {
		snprintf(why, n, "io_uring setup failed: %s%s", strerror(-ret),
		         (ret == -EPERM || ret == -ENOSYS)
		             ? " (seccomp profile or kernel.io_uring_disabled?)"
		             : "");
		return ret;
	}
	p = io_uring_get_probe_ring(&ring);
	if (!p || !io_uring_opcode_supported(p, IORING_OP_MSG_RING) ||
	    !io_uring_opcode_supported(p, IORING_OP_RECV) ||
	    !io_uring_opcode_supported(p, IORING_OP_SEND) ||
	    !io_uring_opcode_supported(p, IORING_OP_ACCEPT)) {
		snprintf(why, n, "io_uring lacks MSG_RING/RECV/SEND/ACCEPT");
		if (p)
			io_uring_free_probe(p);
		io_uring_queue_exit(&ring);
		return -ENOTSUP;
	}
	io_uring_free_probe(p);
	/* Provided buffer rings (5.19) are needed for multishot recv. */
	{
		struct io_uring_buf_reg reg;
		void *mem =
		    mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		memset(&reg, 0, sizeof(reg));
		reg.ring_addr = (uint64_t)(uintptr_t)mem;
		reg.ring_entries = 8;
		reg.bgid = 7;
		ret = mem == MAP_FAILED ? -ENOMEM : io_uring_register_buf_ring(&ring, &reg, 0);
		if (mem != MAP_FAILED)
			munmap(mem, 4096);
		if (ret) {
			snprintf(why, n, "io_uring provided buffer rings unavailable: %s",
			         strerror(-ret));
			io_uring_queue_exit(&ring);
			return ret;
		}
	}
	io_uring_queue_exit(&ring);
	snprintf(why, n, "io_uring available");
	return 0;
}

/* bufs_init - provided buffer ring, the liburing 2.3 way (2.4 wraps this as
 * io_uring_setup_buf_ring): page-aligned ring memory, register, fill. */
static int bufs_init(struct uring_worker *u, uint32_t nbufs, uint32_t bufsz)
{
	struct io_uring_buf_reg reg;
	int ret;

	u->nbufs = nbufs;
	u->bufsz = bufsz;
	u->br_bytes = (size_t)nbufs * sizeof(struct io_uring_buf);
	u->br = mmap(NULL, u->br_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (u->br == MAP_FAILED)
		return -ENOMEM;
	u->bufs = malloc((size_t)nbufs * bufsz);
	u->held_next = calloc(nbufs, sizeof(*u->held_next));
	u->held_len = calloc(nbufs, sizeof(*u->held_len));
	if (!u->bufs || !u->held_next || !u->held_len)
		return -ENOMEM;
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (uint64_t)(uintptr_t)u->br;
	reg.ring_entries = nbufs;
	reg.bgid = BGID;
	ret = io_uring_register_buf_ring(&u->ring, &reg, 0);
	if (ret)
		return ret;
	io_uring_buf_ring_init(u->br);
	for (uint32_t i = 0; i < nbufs; i++)
		io_uring_buf_ring_add(u->br, u->bufs + (size_t)i * bufsz, bufsz, (unsigned short)i,
		                      io_uring_buf_ring_mask(nbufs), (int)i);
	io_uring_buf_ring_advance(u->br, (int)nbufs);
	return 0;
}

static void buf_return(struct uring_worker *u, unsigned bid)
{
	io_uring_buf_ring_add(u->br, u->bufs + (size_t)bid * u->bufsz, u->bufsz,
	                      (unsigned short)bid, io_uring_buf_ring_mask(u->nbufs), u->returned++);
}

static void arm_recv(struct uring_worker *u, struct conn *c)
{
	struct io_uring_sqe *sqe = get_sqe(&u->ring);

	io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = BGID;
	io_uring_sqe_set_data64(sqe, ud(c, OP_RECV));
	c->recv_armed = 1;
	c->refs++;
}

static void arm_send(struct uring_worker *u, struct conn *c)
{
	struct io_uring_sqe *sqe = get_sqe(&u->ring);
	size_t n;
	const char *p = obuf_send_begin(&c->out, &n);

	io_uring_prep_send(sqe, c->fd, p, n, MSG_NOSIGNAL);
	c->send_len = (uint32_t)n;
	io_uring_sqe_set_data64(sqe, ud(c, OP_SEND));
	c->send_busy = 1;
	c->refs++;
}

static void drop_held(struct uring_worker *u, struct conn *c);

/* settle - close a connection that is done, once nothing is in flight.
 * The multishot recv holds its own file reference, so closing the fd alone
 * would not end it: cancel first, close when the last CQE has arrived. */
static void settle(struct uring_worker *u, struct conn *c)
{
	if (!c->dead && !(c->closing && !obuf_pending(&c->out) && !c->send_busy))
		return;
	if (!c->closed) {
		conn_lru_remove(c);
		if ((c->recv_armed || c->send_busy) && !c->cancel_sent) {
			struct io_uring_sqe *sqe = get_sqe(&u->ring);
			io_uring_prep_cancel_fd(sqe, c->fd, IORING_ASYNC_CANCEL_ALL);
			io_uring_sqe_set_data64(sqe, ud(c, OP_CANCEL));
			c->cancel_sent = 1;
			c->refs++;
		}
		c->closed = 1;
	}
	if (c->refs == 0) {
		drop_held(u, c);
		close(c->fd);
		conn_release(c);
	}
}

static void flush_dirty(struct uring_worker *u, struct worker *w)
{
	struct conn *c = w->dirty;

	w->dirty = NULL;
	while (c) {
		struct conn *nx = c->dirty_next;
		c->in_dirty = 0;
		if (!c->dead && !c->closed && !c->send_busy && obuf_pending(&c->out))
			arm_send(u, c);
		settle(u, c);
		c = nx;
	}
}

/* hold - keep a received buffer for later (backpressure); a connection
 * may not sit on more than a quarter of the worker's pool. */
static void hold(struct uring_worker *u, struct worker *w, struct conn *c, unsigned bid,
                 uint32_t len, uint32_t off)
{
	if (c->held_count >= u->nbufs / 4) {
		w->st.out_overflow++;
		c->dead = 1;
		buf_return(u, bid);
		return;
	}
	u->held_len[bid] = len;
	u->held_next[bid] = -1;
	if (c->held_tail >= 0)
		u->held_next[c->held_tail] = (int32_t)bid;
	else {
		c->held_head = (int32_t)bid;
		c->held_off = off;
	}
	c->held_tail = (int32_t)bid;
	c->held_count++;
}

/* pause_recv - stop the multishot recv until the reply backlog drains. */
static void pause_recv(struct uring_worker *u, struct conn *c)
{
	struct io_uring_sqe *sqe;

	if (!c->recv_armed || c->recv_cancelling || c->cancel_sent)
		return;
	sqe = get_sqe(&u->ring);
	io_uring_prep_cancel64(sqe, ud(c, OP_RECV), 0);
	io_uring_sqe_set_data64(sqe, ud(c, OP_CANCEL));
	c->recv_cancelling = 1;
	c->refs++;
}

/* feed_held - resume: feed kept buffers in order until paused again. */
static void feed_held(struct uring_worker *u, struct conn *c)
{
	while (c->held_head >= 0 && !c->read_paused) {
		unsigned bid = (unsigned)c->held_head;
		uint32_t len = u->held_len[bid];
		size_t k = conn_input(c, u->bufs + (size_t)bid * u->bufsz + c->held_off,
		                      len - c->held_off);
		c->held_off += (uint32_t)k;
		if (c->held_off < len)
			break;
		c->held_head = u->held_next[bid];
		if (c->held_head < 0)
			c->held_tail = -1;
		c->held_off = 0;
		c->held_count--;
		buf_return(u, bid);
	}
}

/* drop_held - the connection is going away: every kept buffer goes back. */
static void drop_held(struct uring_worker *u, struct conn *c)
{
	while (c->held_head >= 0) {
		unsigned bid = (unsigned)c->held_head;
		c->held_head = u->held_next[bid];
		buf_return(u, bid);
	}
	c->held_tail = -1;
	c->held_count = 0;
}

static void on_recv(struct uring_worker *u, struct worker *w, struct conn *c,
                    struct io_uring_cqe *cqe)
{
	int res = cqe->res;

	if (res > 0) {
		unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
		if (c->closed || c->closing || c->dead) {
			buf_return(u, bid);
		} else if (c->held_head >= 0 || c->read_paused) {
			hold(u, w, c, bid, (uint32_t)res, 0); /* keep order behind held input */
		} else {
			size_t k = conn_input(c, u->bufs + (size_t)bid * u->bufsz, (size_t)res);
			if (k < (size_t)res) {
				hold(u, w, c, bid, (uint32_t)res, (uint32_t)k);
				pause_recv(u, c);
			} else {
				buf_return(u, bid);
			}
		}
	}
	if (cqe->flags & IORING_CQE_F_MORE)
		return;
	/* The multishot recv has ended. */
	c->recv_armed = 0;
	c->recv_cancelling = 0;
	c->refs--;
	if (res == -ENOBUFS) {
		/* Not fatal: the buffer ring ran dry; buffers come back at the end
		 * of this batch, before the re-armed recv is submitted. */
		w->st.enobufs++;
	} else if (res == 0) {
		/* EOF: but input held for backpressure comes first. */
		if (c->held_head >= 0)
			c->peer_eof = 1;
		else
			conn_peer_eof(c);
	} else if (res < 0 && res != -ECANCELED) {
		w->st.io_errors++;
		c->dead = 1;
	}
	if (!c->closed && !c->closing && !c->dead && !c->read_paused && !c->peer_eof &&
	    c->held_head < 0)
		arm_recv(u, c);
	conn_mark_dirty(c);
}

static void on_send(struct uring_worker *u, struct worker *w, struct conn *c, int res)
{
	c->send_busy = 0;
	c->refs--;
	if (res < 0) {
		obuf_send_done(&c->out, 0);
		if (res != -ECANCELED)
			w->st.io_errors++;
		c->dead = 1;
	} else {
		/* A stream socket may take less than asked; the rest stays pending
		 * and goes out with the next flush. */
		if ((uint32_t)res < c->send_len)
			w->st.short_sends++;
		obuf_send_done(&c->out, (size_t)res);
		if (c->read_paused && obuf_pending(&c->out) < OBUF_SOFT_MAX / 2 && !c->closed &&
		    !c->closing && !c->dead) {
			/* Backlog drained: held input first, then the socket again. */
			c->read_paused = 0;
			feed_held(u, c);
			if (c->held_head < 0 && c->peer_eof)
				conn_peer_eof(c);
			else if (c->held_head < 0 && !c->read_paused && !c->recv_armed &&
			         !c->closing)
				arm_recv(u, c);
		}
	}
	conn_mark_dirty(c);
}

static void handle_cqe(struct uring_worker *u, struct worker *w, struct io_uring_cqe *cqe)
{
	uint64_t data = io_uring_cqe_get_data64(cqe);
	unsigned op = (unsigned)(data & OP_MASK);
	struct conn *c = (struct conn *)(uintptr_t)(data & ~OP_MASK);

	switch (op) {
	case OP_NEWCONN:
		if (cqe->res >= 0) {
			c = conn_new(w, cqe->res);
			if (!c) {
				close(cqe->res);
				atomic_fetch_sub_explicit(&w->srv->conns, 1, memory_order_relaxed);
				break;
			}
			arm_recv(u, c);
		}
		break;
	case OP_RECV:
		on_recv(u, w, c, cqe);
		break;
	case OP_SEND:
		on_send(u, w, c, cqe->res);
		break;
	case OP_CANCEL:
		c->refs--;
		conn_mark_dirty(c);
		break;
	default:
		break;
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct server *srv = w->srv;
	struct uring_worker *u = calloc(1, sizeof(*u));
	uint64_t next_tick = 0;
	int ret;

	ret = u ? ring_init(&u->ring, 4096, NULL) : -ENOMEM;
	if (!ret)
		ret = bufs_init(u, srv->cfg.recv_buf_count, srv->cfg.recv_buf_size);
	if (ret) {
		fprintf(stderr, "smtpsink: worker %d: io_uring setup: %s\n", w->id, strerror(-ret));
		atomic_store(&w->ready, -1);
		return NULL;
	}
	w->backend = u;
	w->ring_fd = u->ring.ring_fd;
	atomic_store(&w->ready, 1);

	for (;;) {
		struct io_uring_cqe *cqe;
		struct __kernel_timespec ts;
		unsigned head, n = 0;
		uint64_t now = now_ns(), wait;

		if (now >= next_tick) {
			wait = worker_tick(w, now);
			next_tick = now + wait;
			flush_dirty(u, w);
			if (worker_done(w) || (atomic_load(&srv->stop_phase) >= 3))
				break;
		}
		wait = next_tick - now;
		ts.tv_sec = (long long)(wait / 1000000000ull);
		ts.tv_nsec = (long long)(wait % 1000000000ull);
		ret = io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, &ts, NULL);
		if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EBUSY) {
			fprintf(stderr, "smtpsink: worker %d: io_uring_enter: %s\n", w->id,
			        strerror(-ret));
			break;
		}
		io_uring_for_each_cqe(&u->ring, head, cqe)
		{
			handle_cqe(u, w, cqe);
			n++;
		}
		io_uring_cq_advance(&u->ring, n);
		if (u->returned) {
			io_uring_buf_ring_advance(u->br, u->returned);
			u->returned = 0;
		}
		w->st.cqes += n;
		w->st.loops++;
		flush_dirty(u, w);
		server_note_msgs(w);
	}
	worker_publish(w);
	io_uring_queue_exit(&u->ring);
	munmap(u->br, u->br_bytes);
	free(u->bufs);
	free(u->held_next);
	free(u->held_len);
	free(u);
	w->backend = NULL;
	return NULL;
}

/* --- acceptor ------------------------------------------------------------ */

static void arm_accept(struct io_uring *ring, struct server *srv, int i)
{
	struct io_uring_sqe *sqe = get_sqe(ring);

	io_uring_prep_multishot_accept(sqe, srv->cfg.listen[i].fd, NULL, NULL, SOCK_NONBLOCK);
	io_uring_sqe_set_data64(sqe, ((uint64_t)i << 8) | OP_NEWCONN);
}

/* pick_worker - least connections, round-robin among equals. */
static struct worker *pick_worker(struct server *srv, unsigned *rr)
{
	struct worker *best = NULL;
	uint64_t best_n = UINT64_MAX;

	for (int k = 0; k < srv->nworkers; k++) {
		struct worker *w = &srv->workers[(*rr + (unsigned)k) % (unsigned)srv->nworkers];
		uint64_t n = atomic_load_explicit(&w->active, memory_order_relaxed);
		if (n < best_n) {
			best_n = n;
			best = w;
		}
	}
	(*rr)++;
	return best;
}

static void *acceptor_main(void *arg)
{
	struct server *srv = arg;
	struct io_uring ring;
	unsigned rr = 0;
	int ret = ring_init(&ring, 256, NULL);

	if (ret) {
		fprintf(stderr, "smtpsink: acceptor: io_uring setup: %s\n", strerror(-ret));
		atomic_store(&srv->stop_phase, 3);
		return NULL;
	}
	for (int i = 0; i < srv->cfg.nlisten; i++)
		arm_accept(&ring, srv, i);

	while (atomic_load_explicit(&srv->stop_phase, memory_order_relaxed) == 0) {
		struct io_uring_cqe *cqe;
		struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = 100 * 1000 * 1000};
		unsigned head, n = 0;

		io_uring_submit_and_wait_timeout(&ring, &cqe, 1, &ts, NULL);
		io_uring_for_each_cqe(&ring, head, cqe)
		{
			uint64_t data = io_uring_cqe_get_data64(cqe);
			unsigned op = (unsigned)(data & 0xff);
			int idx = (int)(data >> 8);
			n++;
			if (op == OP_NEWCONN) {
				if (cqe->res >= 0) {
					int fd = cqe->res;
					if (server_over_limit(srv)) {
						atomic_fetch_add(&srv->rejected, 1);
						reject_busy(srv, fd);
					} else {
						struct worker *w = pick_worker(srv, &rr);
						struct io_uring_sqe *sqe = get_sqe(&ring);
						io_uring_prep_msg_ring(sqe, w->ring_fd,
						                       (unsigned)fd, OP_NEWCONN, 0);
						io_uring_sqe_set_data64(sqe, ((uint64_t)fd << 8) |
						                                 OP_MSG);
					}
				} else if (cqe->res != -ECANCELED) {
					atomic_fetch_add(&srv->accept_errors, 1);
				}
				if (!(cqe->flags & IORING_CQE_F_MORE)) {
					/* EMFILE/ENFILE end the multishot: re-arm after a pause
					 * so a descriptor shortage cannot spin the acceptor. */
					struct io_uring_sqe *sqe = get_sqe(&ring);
					static struct __kernel_timespec pause = {
					    .tv_sec = 0, .tv_nsec = 100 * 1000 * 1000};
					io_uring_prep_timeout(sqe, &pause, 0, 0);
					io_uring_sqe_set_data64(sqe,
					                        ((uint64_t)idx << 8) | OP_REARM);
				}
			} else if (op == OP_MSG && cqe->res < 0) {
				/* The worker could not be told: drop the connection. */
				close((int)(data >> 8));
				atomic_fetch_sub(&srv->conns, 1);
				atomic_fetch_add(&srv->accept_errors, 1);
			} else if (op == OP_REARM) {
				arm_accept(&ring, srv, idx);
			}
		}
		io_uring_cq_advance(&ring, n);
	}
	io_uring_queue_exit(&ring); /* cancels the multishot accepts */
	for (int i = 0; i < srv->cfg.nlisten; i++) {
		close(srv->cfg.listen[i].fd);
		srv->cfg.listen[i].fd = -1;
	}
	atomic_store(&srv->acceptor_stopped, 1);
	return NULL;
}

int uring_start(struct server *srv)
{
	for (int i = 0; i < srv->nworkers; i++) {
		struct worker *w = &srv->workers[i];
		if (pthread_create(&w->thread, NULL, worker_main, w))
			return -errno;
	}
	/* The acceptor needs every worker's ring fd for MSG_RING. */
	for (int i = 0; i < srv->nworkers; i++) {
		while (atomic_load(&srv->workers[i].ready) == 0)
			usleep(1000);
		if (atomic_load(&srv->workers[i].ready) < 0)
			return -EIO;
	}
	if (pthread_create(&srv->acceptor, NULL, acceptor_main, srv))
		return -errno;
	srv->have_acceptor = true;
	return 0;
}
