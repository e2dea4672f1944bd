/*
 * uring.h - io_uring ring and provided-buffer setup shared by smtpsink and
 * smtpbench (liburing 2.3, Debian 12; 2.4 added io_uring_setup_buf_ring).
 *
 * Not part of the pure core: this is the only shared code that includes
 * liburing.h, built as its own library (sinkuring) so the core stays free of
 * I/O.  Everything returns 0 or -errno and never touches errno (liburing's
 * convention).
 */
#ifndef SINK_URING_H
#define SINK_URING_H

#include <liburing.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* uring_init - a ring for one thread, created in that thread.
 * Tries SINGLE_ISSUER|DEFER_TASKRUN (6.1: completions run only when we wait,
 * so one io_uring_enter per loop turn does all the work), then
 * COOP_TASKRUN|TASKRUN_FLAG (5.19), then no flags; always SUBMIT_ALL where
 * accepted and CQSIZE = cq_entries (never overflow the CQ: multishot recv on
 * thousands of sockets posts many CQEs per submission).  *deferred tells
 * whether DEFER_TASKRUN was granted; may be NULL. */
int uring_init(struct io_uring *ring, unsigned entries, unsigned cq_entries, bool *deferred);

/* uring_probe - can this process use io_uring with everything both programs
 * need (MSG_RING, ACCEPT, CONNECT, RECV, SEND, SENDMSG, ASYNC_CANCEL and
 * provided buffer rings)?  Docker's default seccomp profile and
 * kernel.io_uring_disabled make setup fail with -EPERM/-ENOSYS; old kernels
 * lack opcodes.  why gets one line for the user either way. */
int uring_probe(char *why, size_t n);

/* uring_sqe - a free SQE; never NULL (a full SQ is submitted first). */
static inline struct io_uring_sqe *uring_sqe(struct io_uring *ring)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);

	while (!sqe) {
		io_uring_submit(ring);
		sqe = io_uring_get_sqe(ring);
	}
	return sqe;
}

/* A provided-buffer ring (kernel 5.19): n buffers of size octets each, one
 * buffer group per ring.  A buffer picked by a recv is the caller's until
 * uring_buf_put(); puts become visible to the kernel at uring_bufs_commit(),
 * which a loop calls once per completion batch. */
struct uring_bufs {
	struct io_uring_buf_ring *br;
	char *mem;
	size_t br_bytes;
	uint32_t n, size;
	uint16_t bgid;
	int pending;    /* puts since the last commit */
	uint32_t avail; /* buffers the kernel may pick (after commit) */
};

int uring_bufs_init(struct io_uring *ring, struct uring_bufs *b, uint32_t n, uint32_t size,
                    uint16_t bgid);
void uring_bufs_free(struct uring_bufs *b);

static inline char *uring_buf(const struct uring_bufs *b, unsigned bid)
{
	return b->mem + (size_t)bid * b->size;
}

/* uring_buf_taken - the kernel consumed buffer bid (a recv CQE named it). */
static inline void uring_buf_taken(struct uring_bufs *b)
{
	b->avail--;
}

static inline void uring_buf_put(struct uring_bufs *b, unsigned bid)
{
	io_uring_buf_ring_add(b->br, uring_buf(b, bid), b->size, (unsigned short)bid,
	                      io_uring_buf_ring_mask(b->n), b->pending++);
}

static inline void uring_bufs_commit(struct uring_bufs *b)
{
	if (b->pending) {
		io_uring_buf_ring_advance(b->br, b->pending);
		b->avail += (uint32_t)b->pending;
		b->pending = 0;
	}
}

#endif
