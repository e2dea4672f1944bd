/*
 * io_uring.c - smtpbench backend: io_uring (liburing 2.3)
 *
 * connect, one sendmsg in flight per session and one multishot recv per
 * session on a provided-buffer ring (common/uring), all sessions'
 * operations submitted together with each io_uring_enter.  A closed
 * session's late completions are recognised by a generation number in
 * user_data and dropped.  The output being sent is a snapshot of the
 * driver's queue (the client core's commands or the TLS layer's
 * ciphertext): both only ever append while a send is in flight, so the n
 * octets a completion reports are always the first n of the queue.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench.h"

enum { OP_CONNECT = 1, OP_SEND, OP_RECV };

static inline uint64_t ud(struct loop *L, struct csess *s, unsigned op)
{
	return (uint64_t)(s - L->s) << 32 | (uint64_t)(s->gen & 0xffffff) << 8 | op;
}

static int ur_init(struct loop *L)
{
	int ret = uring_init(&L->ring, 4096, 16384, NULL);

	if (ret)
		return ret;
	ret = uring_bufs_init(&L->ring, &L->bufs, 1024, 8192, 1);
	if (ret)
		io_uring_queue_exit(&L->ring);
	return ret;
}

static void ur_fini(struct loop *L)
{
	io_uring_queue_exit(&L->ring);
	uring_bufs_free(&L->bufs);
}

static int ur_connect(struct loop *L, struct csess *s, const struct sockaddr *a, socklen_t n)
{
	struct io_uring_sqe *sqe = uring_sqe(&L->ring);

	io_uring_prep_connect(sqe, s->fd, a, n);
	io_uring_sqe_set_data64(sqe, ud(L, s, OP_CONNECT));
	return 0;
}

static void ur_send(struct loop *L, struct csess *s)
{
	struct io_uring_sqe *sqe;
	int n;
	const struct iovec *iov;

	if (s->send_busy || s->st != D_LIVE || !drv_has_output(s))
		return;
	iov = drv_out(s, &n);
	memcpy(s->iov, iov, sizeof(*iov) * (size_t)n);
	memset(&s->mh, 0, sizeof(s->mh));
	s->mh.msg_iov = s->iov;
	s->mh.msg_iovlen = (size_t)n;
	sqe = uring_sqe(&L->ring);
	io_uring_prep_sendmsg(sqe, s->fd, &s->mh, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, ud(L, s, OP_SEND));
	s->send_busy = 1;
}

static void ur_close(struct loop *L, struct csess *s)
{
	(void)L;
	if (s->fd >= 0) {
		/* operations in flight hold the file; shutdown ends them now and
		 * the driver's new generation makes their completions stale */
		shutdown(s->fd, SHUT_RDWR);
		close(s->fd);
	}
	s->fd = -1;
	s->send_busy = 0;
}

static void arm_recv(struct loop *L, struct csess *s)
{
	struct io_uring_sqe *sqe = uring_sqe(&L->ring);

	io_uring_prep_recv_multishot(sqe, s->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = 1;
	io_uring_sqe_set_data64(sqe, ud(L, s, OP_RECV));
}

static void cqe_one(struct loop *L, struct io_uring_cqe *cqe)
{
	uint64_t d = io_uring_cqe_get_data64(cqe);
	struct csess *s = &L->s[d >> 32];
	unsigned op = (unsigned)(d & 0xff);
	uint32_t gen = s->gen;
	bool stale = ((d >> 8) & 0xffffff) != (gen & 0xffffff) || s->fd < 0;
	int res = cqe->res;

	if (op == OP_RECV && res > 0) {
		unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
		uring_buf_taken(&L->bufs);
		if (!stale)
			drv_input(L, s, uring_buf(&L->bufs, bid), (size_t)res);
		uring_buf_put(&L->bufs, bid);
		if (s->gen != gen)
			return;
	}
	if (stale)
		return; /* a completion of a connection that has since been closed */
	switch (op) {
	case OP_CONNECT:
		drv_connected(L, s, res < 0 ? -res : 0);
		if (s->gen == gen)
			arm_recv(L, s);
		break;
	case OP_SEND:
		s->send_busy = 0;
		if (res < 0) {
			drv_eof(L, s, -res);
			break;
		}
		drv_wrote(L, s, (size_t)res);
		if (s->gen == gen)
			ur_send(L, s);
		break;
	case OP_RECV:
		if (cqe->flags & IORING_CQE_F_MORE)
			break;
		if (res == -ENOBUFS || res > 0)
			/* the ring ran dry (buffers return at the end of this batch)
			 * or the multishot ended on its own: re-arm */
			arm_recv(L, s);
		else
			drv_eof(L, s, res < 0 ? -res : 0);
		break;
	}
}

static void ur_poll(struct loop *L, int timeout_ms)
{
	struct io_uring_cqe *cqe;
	struct __kernel_timespec ts = {timeout_ms / 1000, (long long)(timeout_ms % 1000) * 1000000};
	unsigned head, n = 0;

	io_uring_submit_and_wait_timeout(&L->ring, &cqe, 1, &ts, NULL);
	io_uring_for_each_cqe(&L->ring, head, cqe)
	{
		cqe_one(L, cqe);
		n++;
	}
	io_uring_cq_advance(&L->ring, n);
	uring_bufs_commit(&L->bufs);
}

const struct bench_io bench_io_uring = {
    .name = "io_uring",
    .init = ur_init,
    .fini = ur_fini,
    .connect = ur_connect,
    .send = ur_send,
    .close = ur_close,
    .poll = ur_poll,
};
