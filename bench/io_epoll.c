/*
 * io_epoll.c - smtpbench backend: non-blocking sockets on epoll
 *
 * Moves bytes only: connect, writev the driver's queued output (the client
 * core's commands, or the TLS layer's ciphertext; EPOLLOUT when the socket
 * is full), recv into one thread buffer and hand it to the driver.  Every
 * protocol decision is in common/client.c, all of TLS in tls.c.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/uio.h>
#include <unistd.h>

#include "bench.h"

static int ep_init(struct loop *L)
{
	L->ep = epoll_create1(EPOLL_CLOEXEC);
	return L->ep < 0 ? -errno : 0;
}

static void ep_fini(struct loop *L)
{
	close(L->ep);
}

static void arm(struct loop *L, struct csess *s, bool out)
{
	struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (out ? EPOLLOUT : 0u),
	                         .data.ptr = s};

	epoll_ctl(L->ep, EPOLL_CTL_MOD, s->fd, &ev);
}

static int ep_connect(struct loop *L, struct csess *s, const struct sockaddr *a, socklen_t n)
{
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.ptr = s};

	if (connect(s->fd, a, n) && errno != EINPROGRESS)
		return -errno;
	if (epoll_ctl(L->ep, EPOLL_CTL_ADD, s->fd, &ev))
		return -errno;
	return 0;
}

/* flush - write what the core queued; the driver hears of every octet. */
static void flush(struct loop *L, struct csess *s)
{
	uint32_t gen = s->gen;

	while (drv_has_output(s)) {
		int n;
		const struct iovec *iov = drv_out(s, &n);
		ssize_t k = writev(s->fd, iov, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0 && errno == EAGAIN) {
			arm(L, s, true);
			return;
		}
		if (k < 0) {
			drv_eof(L, s, errno);
			return;
		}
		drv_wrote(L, s, (size_t)k);
		if (s->gen != gen)
			return;
	}
}

static void ep_send(struct loop *L, struct csess *s)
{
	if (s->st == D_LIVE)
		flush(L, s);
}

static void ep_close(struct loop *L, struct csess *s)
{
	(void)L;
	if (s->fd >= 0)
		close(s->fd); /* also leaves the epoll set */
	s->fd = -1;
}

static void readable(struct loop *L, struct csess *s)
{
	uint32_t gen = s->gen;

	for (;;) {
		ssize_t n = recv(s->fd, L->rbuf, sizeof(L->rbuf), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			drv_eof(L, s, n < 0 ? errno : 0);
			return;
		}
		drv_input(L, s, L->rbuf, (size_t)n);
		if (s->gen != gen)
			return;
	}
}

static void ep_poll(struct loop *L, int timeout_ms)
{
	struct epoll_event evs[512];
	int n = epoll_wait(L->ep, evs, 512, timeout_ms);

	for (int i = 0; i < n; i++) {
		struct csess *s = evs[i].data.ptr;
		uint32_t gen = s->gen, e = evs[i].events;
		if (s->fd < 0)
			continue;
		if (s->st == D_CONNECTING) {
			int err = 0;
			socklen_t el = sizeof(err);
			getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el);
			if (!err && !(e & (EPOLLOUT | EPOLLIN)))
				continue;
			drv_connected(L, s, err);
			if (s->gen != gen)
				continue;
			arm(L, s, drv_has_output(s)); /* implicit TLS: a ClientHello may wait */
		}
		if ((e & EPOLLOUT) && drv_has_output(s)) {
			flush(L, s);
			if (s->gen != gen)
				continue;
			if (!drv_has_output(s))
				arm(L, s, false);
		}
		if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
			readable(L, s);
	}
}

const struct bench_io bench_io_epoll = {
    .name = "epoll",
    .init = ep_init,
    .fini = ep_fini,
    .connect = ep_connect,
    .send = ep_send,
    .close = ep_close,
    .poll = ep_poll,
};
