/*
 * loop.c - smtpbench's per-thread event loop (epoll or io_uring)
 *
 * Each thread owns its sessions and its loop; nothing is shared with other
 * threads while the run lasts except the stop flag and the published live
 * counters.  A session: connect, 220, EHLO (learn PIPELINING/CHUNKING), then
 * messages: with pipelining MAIL + RCPT*k + DATA go out in one write (RFC
 * 2920 3.1: DATA ends the group) and the stamped, pre-stuffed body with the
 * terminator in a second; with CHUNKING, "BDAT n LAST" and the content join
 * the envelope (RFC 3030), one round trip in all.  Every reply is parsed
 * and checked against what the step requires; a message counts only on its
 * final 250.
 *
 * Closed loop: a session starts its next message when the previous ends.
 * Open loop (--rate): messages have intended start times on a constant
 * schedule; latency is measured from the intended time (wrk2), so a server
 * stall shows up as latency instead of silently lowering the offered load.
 *
 * Backends: epoll (non-blocking connect/writev/recv) or io_uring (connect,
 * sendmsg and one multishot recv per session on a provided-buffer ring, all
 * sessions' operations submitted together with each io_uring_enter).  With
 * io_uring a closed session's late completions are recognised by a
 * generation number in user_data and dropped.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "sink/pace.h"
#include "sink/uring.h"

enum { S_CONNECT, S_GREET, S_EHLO, S_IDLE, S_ENV, S_BODY, S_RSET, S_QUIT, S_WAIT_RETRY, S_DONE };

struct csess {
	int fd;
	uint8_t state;
	uint8_t pipe, chunk; /* server advertised PIPELINING / CHUNKING */
	uint8_t fail;        /* current message failed somewhere */
	uint8_t want_close;
	uint8_t connect_fails;
	uint32_t step;   /* replies received in this envelope */
	uint32_t expect; /* replies expected for what was sent */
	struct reply_parser rp;
	uint64_t t_connect, t_intended, t_start, t_rt, deadline;
	uint64_t msgs; /* messages started in this session */
	uint64_t seq;
	struct body *body;
	int target;
	char cmd[1024];
	char stamp[STAMP_LINE_LEN];
	struct iovec iov[3];
	int iovn;
	char ehlo[768];
	size_t ehlo_len;
	/* io_uring */
	uint32_t gen;        /* bumped at close: late CQEs are stale */
	uint32_t out_epoch;  /* bumped by out_set */
	uint32_t send_epoch; /* out_epoch of the in-flight sendmsg */
	uint8_t send_busy;
	struct msghdr mh;
};

struct loop {
	struct bench_thread *t;
	struct bench *b;
	int ep;
	struct csess *s;
	uint64_t seq_next;
	struct pace pace;       /* open loop: intended start times */
	uint64_t next_sched_ns; /* = pace_next(&pace), cached */
	uint64_t started;       /* messages started (messages mode) */
	uint32_t open;          /* sessions not yet S_DONE */
	uint32_t rr;
	bool uring;
	struct io_uring ring;
	struct uring_bufs bufs;
	char rbuf[65536];
};

enum { OP_CONNECT = 1, OP_SEND, OP_RECV };

static inline uint64_t ud(struct loop *L, struct csess *s, unsigned op)
{
	return (uint64_t)(s - L->s) << 32 | (uint64_t)(s->gen & 0xffffff) << 8 | op;
}

static struct io_uring_sqe *get_sqe(struct loop *L)
{
	return uring_sqe(&L->ring);
}

uint64_t bench_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void note_error(struct loop *L, struct csess *s, enum err_class e, const char *text)
{
	struct bench_thread *t = L->t;

	(void)s;
	t->st.errors[e]++;
	if (t->nfirst < 3) {
		static const char *names[] = {"connect", "4xx",      "5xx",
		                              "timeout", "protocol", "dropped"};
		snprintf(t->first_errors[t->nfirst++], sizeof(t->first_errors[0]), "%s: %s",
		         names[e], text);
	}
}

static void sess_close(struct loop *L, struct csess *s)
{
	if (s->fd >= 0) {
		/* io_uring: operations in flight hold the file; shutdown ends them
		 * now, and the new generation makes their CQEs stale. */
		if (L->uring)
			shutdown(s->fd, SHUT_RDWR);
		close(s->fd); /* epoll: also leaves the epoll set */
	}
	s->fd = -1;
	s->gen++;
	s->send_busy = 0;
}

/* uring_send - one sendmsg in flight per session; the rest on its CQE. */
static void uring_send(struct loop *L, struct csess *s)
{
	struct io_uring_sqe *sqe;

	if (s->send_busy || !s->iovn || s->fd < 0)
		return;
	memset(&s->mh, 0, sizeof(s->mh));
	s->mh.msg_iov = s->iov;
	s->mh.msg_iovlen = (size_t)s->iovn;
	sqe = get_sqe(L);
	io_uring_prep_sendmsg(sqe, s->fd, &s->mh, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, ud(L, s, OP_SEND));
	s->send_busy = 1;
	s->send_epoch = s->out_epoch;
}

/* iov_advance - k octets of the pending output went out. */
static void iov_advance(struct csess *s, size_t k)
{
	while (s->iovn && k >= s->iov[0].iov_len) {
		k -= s->iov[0].iov_len;
		memmove(s->iov, s->iov + 1, sizeof(s->iov[0]) * (size_t)(--s->iovn));
	}
	if (s->iovn && k) {
		s->iov[0].iov_base = (char *)s->iov[0].iov_base + k;
		s->iov[0].iov_len -= k;
	}
}

/* out_flush - write what is pending; true when everything went out. */
static bool out_flush(struct loop *L, struct csess *s)
{
	if (L->uring) {
		uring_send(L, s);
		return false;
	}
	while (s->iovn) {
		ssize_t n = writev(s->fd, s->iov, s->iovn);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return false; /* EPOLLOUT will call again */
			note_error(L, s, E_DROPPED, strerror(errno));
			s->want_close = 1;
			return false;
		}
		iov_advance(s, (size_t)n);
	}
	return true;
}

static void out_set(struct csess *s, const char *a, size_t al, const char *b, size_t bl,
                    const char *c, size_t cl)
{
	s->out_epoch++;
	s->iovn = 0;
	if (al)
		s->iov[s->iovn++] = (struct iovec){(void *)(uintptr_t)a, al};
	if (bl)
		s->iov[s->iovn++] = (struct iovec){(void *)(uintptr_t)b, bl};
	if (cl)
		s->iov[s->iovn++] = (struct iovec){(void *)(uintptr_t)c, cl};
}

/* tpl - expand {n} (message sequence) and {r} (recipient index). */
static size_t tpl(char *o, size_t cap, const char *t, uint64_t n, uint32_t r)
{
	size_t k = 0;

	for (; *t && k + 24 < cap; t++) {
		if (t[0] == '{' && (t[1] == 'n' || t[1] == 'r') && t[2] == '}') {
			k += (size_t)snprintf(o + k, cap - k, "%llu",
			                      (unsigned long long)(t[1] == 'n' ? n : r));
			t += 2;
		} else {
			o[k++] = *t;
		}
	}
	return k;
}

static struct body *pick_body(struct loop *L)
{
	struct bench_cfg *c = &L->b->cfg;
	uint32_t x;

	if (c->nbodies == 1)
		return &c->bodies[0];
	x = (uint32_t)((L->seq_next * 2654435761u) % c->weight_total);
	for (int i = 0; i < c->nbodies; i++) {
		if (x < c->bodies[i].weight)
			return &c->bodies[i];
		x -= c->bodies[i].weight;
	}
	return &c->bodies[0];
}

static void arm(struct loop *L, struct csess *s, bool out)
{
	if (L->uring)
		return;
	struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (out ? EPOLLOUT : 0u),
	                         .data.ptr = s};

	epoll_ctl(L->ep, EPOLL_CTL_MOD, s->fd, &ev);
}

static void send_now(struct loop *L, struct csess *s)
{
	s->t_rt = bench_now();
	if (!out_flush(L, s) && !s->want_close)
		arm(L, s, true);
}

static void start_connect(struct loop *L, struct csess *s)
{
	struct bench_cfg *c = &L->b->cfg;
	int one = 1;

	s->target = (int)(L->rr++ % (uint32_t)c->ntargets);
	s->fd =
	    socket(c->target[s->target].ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->fd < 0) {
		note_error(L, s, E_CONNECT, strerror(errno));
		s->state = S_WAIT_RETRY;
		s->deadline = bench_now() + 100000000ull;
		return;
	}
	setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (c->nbind) {
		/* spread over source addresses when one runs out of ports */
		setsockopt(s->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		bind(s->fd,
		     (struct sockaddr *)&c->bind[(L->rr + (uint32_t)L->t->id) % (uint32_t)c->nbind],
		     sizeof(c->bind[0]));
	}
	reply_init(&s->rp);
	s->msgs = 0;
	s->fail = 0;
	s->want_close = 0;
	s->iovn = 0;
	s->t_connect = bench_now();
	s->deadline = s->t_connect + c->timeout_ns;
	s->state = S_CONNECT;
	L->t->st.sessions_opened++;
	if (L->uring) {
		struct io_uring_sqe *sqe = get_sqe(L);
		io_uring_prep_connect(sqe, s->fd, (struct sockaddr *)&c->target[s->target],
		                      c->target_len[s->target]);
		io_uring_sqe_set_data64(sqe, ud(L, s, OP_CONNECT));
		return;
	}
	if (connect(s->fd, (struct sockaddr *)&c->target[s->target], c->target_len[s->target]) &&
	    errno != EINPROGRESS) {
		note_error(L, s, E_CONNECT, strerror(errno));
		close(s->fd);
		s->fd = -1;
		s->state = S_WAIT_RETRY;
		s->deadline = bench_now() + 100000000ull;
		return;
	}
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.ptr = s};
	epoll_ctl(L->ep, EPOLL_CTL_ADD, s->fd, &ev);
}

/* may_start - can this session begin another message now? */
static bool may_start(struct loop *L, uint64_t now)
{
	struct bench *b = L->b;

	if (atomic_load_explicit(&b->stop, memory_order_relaxed))
		return false;
	if (b->cfg.messages && L->started >= L->t->quota)
		return false;
	if (b->cfg.duration_ns && now >= b->t0_ns + b->cfg.warmup_ns + b->cfg.duration_ns)
		return false;
	if (L->t->rate > 0 && now < L->next_sched_ns)
		return false;
	return true;
}

static void begin_message(struct loop *L, struct csess *s, uint64_t now)
{
	struct bench_cfg *c = &L->b->cfg;
	size_t k = 0;

	L->started++;
	s->msgs++;
	s->seq = ((uint64_t)L->t->id << 40) | L->seq_next++;
	s->body = pick_body(L);
	s->fail = 0;
	s->step = 0;
	if (L->t->rate > 0) {
		s->t_intended = pace_take(&L->pace);
		L->next_sched_ns = pace_next(&L->pace);
	} else {
		s->t_intended = now;
	}
	s->t_start = now;
	s->deadline = now + c->timeout_ns;
	stamp_format(s->stamp, c->run_id, s->seq, s->body->hash);
	k += (size_t)snprintf(s->cmd + k, sizeof(s->cmd) - k, "MAIL FROM:<");
	k += tpl(s->cmd + k, sizeof(s->cmd) - k, c->from_tpl, s->seq, 0);
	k += (size_t)snprintf(s->cmd + k, sizeof(s->cmd) - k, ">\r\n");
	if (!s->pipe) {
		/* one command per round trip (RFC 5321 without RFC 2920) */
		s->expect = 1;
		out_set(s, s->cmd, k, NULL, 0, NULL, 0);
		s->state = S_ENV;
		send_now(L, s);
		return;
	}
	for (uint32_t r = 0; r < c->rcpts; r++) {
		k += (size_t)snprintf(s->cmd + k, sizeof(s->cmd) - k, "RCPT TO:<");
		k += tpl(s->cmd + k, sizeof(s->cmd) - k, c->to_tpl, s->seq, r);
		k += (size_t)snprintf(s->cmd + k, sizeof(s->cmd) - k, ">\r\n");
	}
	s->expect = c->rcpts + 2;
	if (c->bdat && s->chunk) {
		k += (size_t)snprintf(s->cmd + k, sizeof(s->cmd) - k, "BDAT %u LAST\r\n",
		                      (unsigned)(STAMP_LINE_LEN + s->body->size));
		out_set(s, s->cmd, k, s->stamp, STAMP_LINE_LEN, s->body->raw, s->body->size);
	} else {
		k += (size_t)snprintf(s->cmd + k, sizeof(s->cmd) - k, "DATA\r\n");
		out_set(s, s->cmd, k, NULL, 0, NULL, 0);
	}
	s->state = S_ENV;
	send_now(L, s);
}

/* send_cmd - one command line (verb, optional argument), then wait. */
static void send_cmd(struct loop *L, struct csess *s, const char *verb, const char *arg,
                     uint32_t expect, int state)
{
	size_t k = (size_t)snprintf(s->cmd, sizeof(s->cmd), "%s%s%s\r\n", verb, arg ? " " : "",
	                            arg ? arg : "");

	out_set(s, s->cmd, k, NULL, 0, NULL, 0);
	s->expect = expect;
	s->state = (uint8_t)state;
	send_now(L, s);
}

/* next - the session is between messages: start one, wait, or say QUIT. */
static void next(struct loop *L, struct csess *s, uint64_t now)
{
	struct bench_cfg *c = &L->b->cfg;

	if (c->msgs_per_session && s->msgs >= c->msgs_per_session) {
		send_cmd(L, s, "QUIT", NULL, 1, S_QUIT);
		return;
	}
	if (may_start(L, now)) {
		begin_message(L, s, now);
		return;
	}
	bool more = !atomic_load(&L->b->stop) &&
	            (c->messages ? L->started < L->t->quota
	                         : now < L->b->t0_ns + c->warmup_ns + c->duration_ns);
	if (more) {
		s->state = S_IDLE; /* open loop: wait for the schedule */
		return;
	}
	send_cmd(L, s, "QUIT", NULL, 1, S_QUIT);
}

static void msg_done(struct loop *L, struct csess *s, bool ok, uint64_t now)
{
	struct bench_thread *t = L->t;
	struct bench *b = L->b;

	if (ok) {
		t->st.delivered++;
		if (s->t_intended >= b->start_ns) {
			t->st.measured++;
			t->st.measured_bytes += STAMP_LINE_LEN + s->body->size;
			t->st.bytes += STAMP_LINE_LEN + s->body->size;
			hist_record(&t->st.msg, now - s->t_intended);
			hist_record(&t->st.msg_raw, now - s->t_start);
			hist_record(&t->interval, now - s->t_intended);
		}
	} else {
		t->st.failed++;
	}
}

static enum err_class classify(uint16_t code)
{
	return code >= 400 && code < 500 ? E_4XX : code >= 500 && code < 600 ? E_5XX : E_PROTOCOL;
}

/* on_reply - one complete reply for session s. */
static void on_reply(struct loop *L, struct csess *s, const struct reply *r, uint64_t now)
{
	struct bench_cfg *c = &L->b->cfg;
	bool ok;

	L->t->st.commands++;
	if (s->t_rt) {
		hist_record(&L->t->st.cmd, now - s->t_rt);
		s->t_rt = 0;
	}
	s->deadline = now + c->timeout_ns;
	if (r->bad) {
		note_error(L, s, E_PROTOCOL, r->text);
		s->want_close = 1;
		return;
	}
	switch (s->state) {
	case S_GREET:
		if (r->code != 220) {
			note_error(L, s,
			           r->code == 421 || r->code / 100 == 5 ? classify(r->code)
			                                                : E_PROTOCOL,
			           r->text);
			s->want_close = 1;
			return;
		}
		hist_record(&L->t->st.connect, now - s->t_connect);
		s->ehlo_len = 0;
		send_cmd(L, s, c->helo ? "HELO" : "EHLO", c->ehlo, 1, S_EHLO);
		return;
	case S_EHLO:
		if (r->code != 250) {
			note_error(L, s, classify(r->code), r->text);
			s->want_close = 1;
			return;
		}
		s->ehlo[s->ehlo_len < sizeof(s->ehlo) ? s->ehlo_len : sizeof(s->ehlo) - 1] = 0;
		s->pipe =
		    c->pipelining == 1 || (c->pipelining < 0 && strstr(s->ehlo, "PIPELINING"));
		s->chunk = strstr(s->ehlo, "CHUNKING") != NULL;
		if (c->bdat && !s->chunk) {
			note_error(L, s, E_PROTOCOL, "--bdat: server does not offer CHUNKING");
			s->want_close = 1;
			return;
		}
		next(L, s, now);
		return;
	case S_ENV: {
		uint32_t j = s->step++;
		bool last_env = s->pipe ? s->step == s->expect : j == c->rcpts + 1;
		bool is_data = j == c->rcpts + 1;
		uint16_t want = is_data ? (c->bdat && s->chunk ? 250 : 354) : 250;
		ok = r->code == want || (!is_data && j > 0 && r->code == 251);
		if (!ok) {
			if (!s->fail)
				note_error(L, s, classify(r->code), r->text);
			s->fail = 1;
		}
		if (!s->pipe && !last_env) {
			/* step by step: send the next command */
			size_t k = 0;
			if (j < c->rcpts) {
				k += (size_t)snprintf(s->cmd, sizeof(s->cmd), "RCPT TO:<");
				k += tpl(s->cmd + k, sizeof(s->cmd) - k, c->to_tpl, s->seq, j);
				k += (size_t)snprintf(s->cmd + k, sizeof(s->cmd) - k, ">\r\n");
				out_set(s, s->cmd, k, NULL, 0, NULL, 0);
			} else if (c->bdat && s->chunk) {
				k = (size_t)snprintf(s->cmd, sizeof(s->cmd), "BDAT %u LAST\r\n",
				                     (unsigned)(STAMP_LINE_LEN + s->body->size));
				out_set(s, s->cmd, k, s->stamp, STAMP_LINE_LEN, s->body->raw,
				        s->body->size);
			} else {
				out_set(s, "DATA\r\n", 6, NULL, 0, NULL, 0);
			}
			send_now(L, s);
			return;
		}
		if (!last_env)
			return;
		if (c->bdat && s->chunk) {
			msg_done(L, s, !s->fail, now);
			if (s->fail)
				send_cmd(L, s, "RSET", NULL, 1, S_RSET);
			else
				next(L, s, now);
			return;
		}
		if (r->code == 354) {
			/* body even after a failed RCPT: the server is in DATA now */
			out_set(s, s->stamp, STAMP_LINE_LEN, s->body->wire, s->body->wire_len, NULL,
			        0);
			s->expect = 1;
			s->state = S_BODY;
			send_now(L, s);
			return;
		}
		msg_done(L, s, false, now);
		send_cmd(L, s, "RSET", NULL, 1, S_RSET);
		return;
	}
	case S_BODY:
		ok = r->code == 250 && !s->fail;
		if (r->code != 250)
			note_error(L, s, classify(r->code), r->text);
		msg_done(L, s, ok, now);
		next(L, s, now);
		return;
	case S_RSET:
		if (r->code != 250)
			note_error(L, s, classify(r->code), r->text);
		next(L, s, now);
		return;
	case S_QUIT:
		L->t->st.sessions_done++;
		s->want_close = 1;
		return;
	default:
		note_error(L, s, E_PROTOCOL, r->text);
		s->want_close = 1;
		return;
	}
}

/* finish_close - the session's socket is gone: reconnect or retire. */
static void finish_close(struct loop *L, struct csess *s, uint64_t now)
{
	struct bench_cfg *c = &L->b->cfg;
	bool quit = s->state == S_QUIT;

	if (s->state == S_ENV || s->state == S_BODY)
		msg_done(L, s, false, now);
	sess_close(L, s);
	bool more = !atomic_load(&L->b->stop) &&
	            (c->messages ? L->started < L->t->quota
	                         : now < L->b->t0_ns + c->warmup_ns + c->duration_ns);
	if (more && s->connect_fails < 3) {
		s->state = S_WAIT_RETRY;
		s->deadline = now + 50000000ull; /* pause after a failure */
		if (quit && !c->connect_rate)
			start_connect(L, s); /* --msgs-per-session: next session at once */
	} else {
		s->state = S_DONE;
		L->open--;
	}
}

/* on_bytes - received octets: parse replies, act on each. */
static void on_bytes(struct loop *L, struct csess *s, const char *p, size_t n)
{
	uint64_t now = bench_now();
	size_t off = 0;

	while (off < n && !s->want_close) {
		struct reply r;
		int done;
		if (s->state == S_EHLO) {
			size_t room = sizeof(s->ehlo) - 1 - s->ehlo_len;
			size_t cp = n - off < room ? n - off : room;
			memcpy(s->ehlo + s->ehlo_len, p + off, cp);
			s->ehlo_len += cp;
		}
		off += reply_feed(&s->rp, p + off, n - off, &r, &done);
		if (done)
			on_reply(L, s, &r, now);
	}
}

/* on_eof - the server closed (or reset) the connection. */
static void on_eof(struct loop *L, struct csess *s, int err)
{
	if (s->state != S_QUIT)
		note_error(L, s, E_DROPPED, err ? strerror(err) : "server closed the connection");
	else
		L->t->st.sessions_done++;
	s->want_close = 1;
}

static void on_readable(struct loop *L, struct csess *s)
{
	for (;;) {
		ssize_t n = recv(s->fd, L->rbuf, sizeof(L->rbuf), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			on_eof(L, s, n < 0 ? errno : 0);
			return;
		}
		on_bytes(L, s, L->rbuf, (size_t)n);
		if (s->want_close)
			return;
	}
}

static void check_timers(struct loop *L, uint64_t now)
{
	for (uint32_t i = 0; i < L->t->nsess; i++) {
		struct csess *s = &L->s[i];
		if (s->state == S_DONE)
			continue;
		if (s->state == S_WAIT_RETRY) {
			if (now >= s->deadline)
				start_connect(L, s);
			continue;
		}
		if (s->state == S_IDLE) {
			next(L, s, now);
			continue;
		}
		if (now >= s->deadline) {
			note_error(L, s, E_TIMEOUT, "no reply within --timeout");
			s->want_close = 1;
		}
		if (s->want_close)
			finish_close(L, s, now);
	}
}

static void uring_arm_recv(struct loop *L, struct csess *s)
{
	struct io_uring_sqe *sqe = get_sqe(L);

	io_uring_prep_recv_multishot(sqe, s->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = 1;
	io_uring_sqe_set_data64(sqe, ud(L, s, OP_RECV));
}

/* on_connected - the TCP handshake finished (err = 0) or failed. */
static void on_connected(struct loop *L, struct csess *s, int err, uint64_t now)
{
	if (err) {
		note_error(L, s, E_CONNECT, strerror(err));
		s->connect_fails++;
		s->want_close = 1;
		return;
	}
	s->connect_fails = 0;
	s->state = S_GREET;
	s->deadline = now + L->b->cfg.timeout_ns;
	if (L->uring)
		uring_arm_recv(L, s);
	else
		arm(L, s, false);
}

/* housekeeping - open-loop slots, timers and the live counters. */
static void housekeeping(struct loop *L, uint64_t now, uint64_t *last_tick, uint64_t *last_live,
                         uint64_t *last_p99)
{
	struct bench_thread *t = L->t;

	/* open loop: hand due slots to idle sessions */
	if (t->rate > 0)
		for (uint32_t i = 0; i < t->nsess && now >= L->next_sched_ns; i++)
			if (L->s[i].state == S_IDLE)
				next(L, &L->s[i], now);
	if (now - *last_tick >= 10000000ull) {
		check_timers(L, now);
		*last_tick = now;
	}
	if (now - *last_live >= 100000000ull) {
		uint64_t errs = 0, p99;
		for (int e = 0; e < E_NCLASS; e++)
			errs += t->st.errors[e];
		if (now - *last_p99 >= 1000000000ull) {
			p99 = hist_quantile(&t->interval, 0.99);
			hist_init(&t->interval);
			*last_p99 = now;
			__atomic_store_n(&t->live.p99_ns, p99, __ATOMIC_RELAXED);
		}
		__atomic_store_n(&t->live.delivered, t->st.delivered, __ATOMIC_RELAXED);
		__atomic_store_n(&t->live.bytes, t->st.bytes, __ATOMIC_RELAXED);
		__atomic_store_n(&t->live.errors, errs, __ATOMIC_RELAXED);
		__atomic_store_n(&t->live.sessions, (uint64_t)L->open, __ATOMIC_RELAXED);
		*last_live = now;
	}
}

static int wait_ms(struct loop *L, uint64_t now)
{
	int timeout = 10;

	if (L->t->rate > 0 && L->next_sched_ns > now && (L->next_sched_ns - now) / 1000000 < 10)
		timeout = (int)((L->next_sched_ns - now) / 1000000);
	return timeout;
}

static void loop_epoll(struct loop *L)
{
	struct epoll_event evs[512];
	uint64_t last_tick = 0, last_live = 0, last_p99 = 0;

	while (L->open > 0 && atomic_load(&L->b->stop) < 2) {
		int n = epoll_wait(L->ep, evs, 512, wait_ms(L, bench_now()));
		uint64_t now = bench_now();
		for (int i = 0; i < n; i++) {
			struct csess *s = evs[i].data.ptr;
			if (s->fd < 0)
				continue;
			if (s->state == S_CONNECT) {
				int err = 0;
				socklen_t el = sizeof(err);
				getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el);
				on_connected(L, s, err, now);
			}
			if (!s->want_close && (evs[i].events & EPOLLOUT) && s->iovn) {
				if (out_flush(L, s))
					arm(L, s, false);
			}
			if (!s->want_close &&
			    (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
				on_readable(L, s);
			if (s->want_close)
				finish_close(L, s, now);
		}
		housekeeping(L, now, &last_tick, &last_live, &last_p99);
	}
}

static void uring_cqe(struct loop *L, struct io_uring_cqe *cqe, uint64_t now)
{
	uint64_t d = io_uring_cqe_get_data64(cqe);
	struct csess *s = &L->s[d >> 32];
	unsigned op = (unsigned)(d & 0xff);
	bool stale = ((d >> 8) & 0xffffff) != (s->gen & 0xffffff) || s->fd < 0;
	int res = cqe->res;

	if (op == OP_RECV && res > 0) {
		unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
		uring_buf_taken(&L->bufs);
		if (!stale && !s->want_close)
			on_bytes(L, s, uring_buf(&L->bufs, bid), (size_t)res);
		uring_buf_put(&L->bufs, bid);
	}
	if (stale)
		return; /* a completion of a session that has since been closed */
	switch (op) {
	case OP_CONNECT:
		on_connected(L, s, res < 0 ? -res : 0, now);
		break;
	case OP_SEND:
		s->send_busy = 0;
		if (res < 0) {
			note_error(L, s, E_DROPPED, strerror(-res));
			s->want_close = 1;
			break;
		}
		/* a completion for output replaced meanwhile was complete */
		if (s->send_epoch == s->out_epoch)
			iov_advance(s, (size_t)res);
		uring_send(L, s);
		break;
	case OP_RECV:
		if (cqe->flags & IORING_CQE_F_MORE)
			break;
		if (res == -ENOBUFS || res > 0) {
			/* the ring ran dry (buffers return at the end of this batch)
			 * or the multishot ended on its own: re-arm */
			if (!s->want_close)
				uring_arm_recv(L, s);
		} else {
			on_eof(L, s, res < 0 ? -res : 0);
		}
		break;
	}
	if (s->want_close)
		finish_close(L, s, now);
}

static void loop_uring(struct loop *L)
{
	uint64_t last_tick = 0, last_live = 0, last_p99 = 0;

	while (L->open > 0 && atomic_load(&L->b->stop) < 2) {
		struct io_uring_cqe *cqe;
		struct __kernel_timespec ts = {0, (long long)wait_ms(L, bench_now()) * 1000000};
		unsigned head, n = 0;

		io_uring_submit_and_wait_timeout(&L->ring, &cqe, 1, &ts, NULL);
		uint64_t now = bench_now();
		io_uring_for_each_cqe(&L->ring, head, cqe)
		{
			uring_cqe(L, cqe, now);
			n++;
		}
		io_uring_cq_advance(&L->ring, n);
		uring_bufs_commit(&L->bufs);
		housekeeping(L, now, &last_tick, &last_live, &last_p99);
	}
}

/* uring_setup - ring and provided buffers (common/uring/uring.c). */
static int uring_setup(struct loop *L)
{
	int ret = uring_init(&L->ring, 4096, 16384, NULL);

	if (ret)
		return ret;
	return uring_bufs_init(&L->ring, &L->bufs, 1024, 8192, 1);
}

/* bench_probe_uring - can this process use io_uring (seccomp, sysctl)? */
int bench_probe_uring(char *why, size_t n)
{
	return uring_probe(why, n);
}

int bench_run(struct bench_thread *t, bool uring)
{
	struct loop *L = calloc(1, sizeof(*L));

	if (!L)
		return -1;
	L->t = t;
	L->b = t->b;
	L->uring = uring;
	if (uring) {
		int ret = uring_setup(L);
		if (ret) {
			fprintf(stderr, "smtpbench: thread %d: io_uring setup: %s\n", t->id,
			        strerror(-ret));
			atomic_store(&L->b->stop, 2);
			free(L);
			return -1;
		}
	} else {
		L->ep = epoll_create1(EPOLL_CLOEXEC);
	}
	L->s = calloc(t->nsess, sizeof(*L->s));
	L->open = t->nsess;
	L->rr = (uint32_t)t->id;
	if (t->rate > 0)
		pace_init(&L->pace, L->b->t0_ns, t->rate);
	L->next_sched_ns = L->b->t0_ns;
	for (uint32_t i = 0; i < t->nsess; i++) {
		L->s[i].fd = -1;
		L->s[i].state = S_WAIT_RETRY;
		/* --connect-rate spreads the initial connects too */
		L->s[i].deadline = L->b->cfg.connect_rate
		                       ? L->b->t0_ns + (uint64_t)(1e9 * i * L->b->cfg.threads /
		                                                  L->b->cfg.connect_rate)
		                       : 0;
	}
	if (uring)
		loop_uring(L);
	else
		loop_epoll(L);
	for (uint32_t i = 0; i < t->nsess; i++)
		sess_close(L, &L->s[i]);
	/* messages this thread was meant to send but never started */
	if (L->b->cfg.messages && L->started < t->quota)
		t->st.failed += t->quota - L->started;
	if (uring) {
		io_uring_queue_exit(&L->ring);
		uring_bufs_free(&L->bufs);
	} else {
		close(L->ep);
	}
	free(L->s);
	free(L);
	return 0;
}
