/*
 * uring.c - io_uring ring and provided-buffer setup shared by smtpsink and
 * smtpbench (see sink/uring.h).  Follows liburing's examples/proxy.c
 * init_ring() for the flags and the liburing 2.3 examples/io_uring-udp.c
 * recipe for provided buffer rings.
 */
#include "sink/uring.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

int uring_init(struct io_uring *ring, unsigned entries, unsigned cq_entries, bool *deferred)
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
		p.cq_entries = cq_entries;
		ret = io_uring_queue_init_params(entries, ring, &p);
		if (ret == 0) {
			if (deferred)
				*deferred = i == 0;
			return 0;
		}
		/* -EINVAL: this kernel lacks a flag; anything else is final. */
		if (ret != -EINVAL)
			break;
	}
	return ret;
}

int uring_probe(char *why, size_t n)
{
	static const struct {
		int op;
		const char *name;
	} need[] = {
	    {IORING_OP_MSG_RING, "MSG_RING"}, {IORING_OP_ACCEPT, "ACCEPT"},
	    {IORING_OP_CONNECT, "CONNECT"},   {IORING_OP_RECV, "RECV"},
	    {IORING_OP_SEND, "SEND"},         {IORING_OP_SENDMSG, "SENDMSG"},
	    {IORING_OP_ASYNC_CANCEL, "ASYNC_CANCEL"},
	};
	struct io_uring ring;
	struct io_uring_probe *p;
	struct uring_bufs b;
	int ret = uring_init(&ring, 8, 16, NULL);

	if (ret) {
		snprintf(why, n, "io_uring setup failed: %s%s", strerror(-ret),
		         (ret == -EPERM || ret == -ENOSYS)
		             ? " (seccomp profile or kernel.io_uring_disabled?)"
		             : "");
		return ret;
	}
	p = io_uring_get_probe_ring(&ring);
	for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++) {
		if (!p || !io_uring_opcode_supported(p, need[i].op)) {
			snprintf(why, n, "io_uring lacks %s", need[i].name);
			if (p)
				io_uring_free_probe(p);
			io_uring_queue_exit(&ring);
			return -ENOTSUP;
		}
	}
	io_uring_free_probe(p);
	/* Multishot recv needs provided buffer rings (5.19). */
	ret = uring_bufs_init(&ring, &b, 8, 64, 7);
	if (ret) {
		snprintf(why, n, "io_uring provided buffer rings unavailable: %s", strerror(-ret));
		uring_bufs_free(&b);
		io_uring_queue_exit(&ring);
		return ret;
	}
	uring_bufs_free(&b);
	io_uring_queue_exit(&ring);
	snprintf(why, n, "io_uring available");
	return 0;
}

int uring_bufs_init(struct io_uring *ring, struct uring_bufs *b, uint32_t n, uint32_t size,
                    uint16_t bgid)
{
	struct io_uring_buf_reg reg;
	int ret;

	memset(b, 0, sizeof(*b));
	if (n == 0 || n > 32768 || (n & (n - 1)))
		return -EINVAL; /* the kernel wants a power of two */
	b->n = n;
	b->size = size;
	b->bgid = bgid;
	b->br_bytes = (size_t)n * sizeof(struct io_uring_buf);
	b->br = mmap(NULL, b->br_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (b->br == MAP_FAILED) {
		b->br = NULL;
		return -ENOMEM;
	}
	b->mem = malloc((size_t)n * size);
	if (!b->mem)
		return -ENOMEM;
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (uint64_t)(uintptr_t)b->br;
	reg.ring_entries = n;
	reg.bgid = bgid;
	ret = io_uring_register_buf_ring(ring, &reg, 0);
	if (ret)
		return ret;
	io_uring_buf_ring_init(b->br);
	for (uint32_t i = 0; i < n; i++)
		uring_buf_put(b, i);
	uring_bufs_commit(b);
	return 0;
}

/* uring_bufs_free - after io_uring_queue_exit (which unregisters). */
void uring_bufs_free(struct uring_bufs *b)
{
	if (b->br)
		munmap(b->br, b->br_bytes);
	free(b->mem);
	memset(b, 0, sizeof(*b));
}
