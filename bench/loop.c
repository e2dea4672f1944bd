/*
 * loop.c - smtpbench's per-thread session driver
 *
 * Each thread owns its sessions, counters and histograms; nothing is shared
 * with other threads while the run lasts except the stop flag (read) and
 * the live counters (written every 100 ms).  The protocol is entirely in
 * the client core (common/client.c): this file connects, keeps time, feeds
 * received bytes to the core, hands its output to the backend and counts
 * its results.  The backends (io_epoll.c, io_uring.c) only move bytes.
 *
 * Closed loop: a session starts its next message when the previous ends.
 * Open loop (--rate): messages have intended start times on a constant
 * schedule; latency is measured from the intended time (wrk2), so a server
 * stall shows up as latency instead of silently lowering the offered load.
 *
 * Every run ends.  A connection attempt that ends without a single definite
 * (2xx/4xx/5xx) message reply - connect error, 421 or garbage greeting,
 * silence, close, a missing required extension - is a failed attempt: the
 * session backs off (50 ms doubling, at most 1 s) and after --max-attempts
 * consecutive ones gives up.  main.c stops the whole run when failures go
 * on without progress for the stall deadline.  Every connect, first or
 * again, waits for a --connect-rate slot.
 *
 * Retries (--retry N, as an MTA's deferred queue; RFC 5321 4.5.4.1): a
 * message whose attempt failed transiently (client_retryable(): 4xx,
 * dropped, timeout) goes to the thread's queue (retryq.c) with a due time
 * --retry-delay ahead, at most N times; it has no outcome until an attempt
 * is final.  A session slot that is free takes a due retry before it starts
 * a new message - at the end of a message, or at the 10 ms tick when idle -
 * so no slot waits out a delay: its connection carries on with other mail,
 * and a retry may go out on any connection.  A retry is the same message:
 * same stamp sequence number, envelope and body.  --messages waits for the
 * queue to empty; --duration stops taking retries at its end, and what is
 * still queued then fails as aborted.
 *
 * TLS (tls.c) sits between the backend and the client core when the core
 * asks for it (CLIENT_ACT_TLS): received bytes go through tls_input(), the
 * core's output through tls_pump(), and the backend sends drv_out(); a
 * plaintext connection pays one pointer test for it.
 *
 * --proxy: the PROXY header (HAProxy's proxy-protocol.txt) is the first
 * thing on the wire, so it is built here, at connect, and drv_out() hands it
 * to the backend before any other output.  Not in the client core: the
 * core's output goes through TLS, and with implicit TLS the header must go
 * out in plaintext before the ClientHello (the receiver reads it before
 * TLS-on-connect, as Exim and smtpsink do).  Its octets count in sent_bytes
 * like every other octet written.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "sink/segment.h"

uint64_t bench_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void note_error(struct loop *L, unsigned cls, const char *what, const char *text)
{
	struct bench_thread *t = L->t;

	if (t->nfirst < BENCH_FIRST_ERRORS)
		snprintf(t->first_errors[t->nfirst++], sizeof(t->first_errors[0]), "%s: %s: %s",
		         client_fail_name(cls), what, text);
}

static bool stopping(const struct loop *L)
{
	return atomic_load_explicit(&L->b->stop, memory_order_relaxed) != 0;
}

/* new_work - may this thread still start new messages (now or later)? */
static bool new_work(const struct loop *L, uint64_t now)
{
	const struct bench_cfg *c = &L->b->cfg;

	if (stopping(L))
		return false;
	if (c->messages)
		return L->started < L->t->quota;
	return now < L->b->start_ns + c->duration_ns;
}

/* more_work - is anything left to send, now or later: new messages or,
 * with --messages, retries waiting (a --duration run ends at its end) */
static bool more_work(const struct loop *L, uint64_t now)
{
	if (new_work(L, now))
		return true;
	return L->rq.n && L->b->cfg.messages && !stopping(L);
}

/* connect_work - should s connect?  With --messages, each connection that
 * has not started a message yet claims one of the unstarted ones, so that
 * near the end of a run two slots never connect for the last message and
 * one of them only to say QUIT. */
static bool connect_work(struct loop *L, struct csess *s, uint64_t now)
{
	if (!L->b->cfg.messages || s->claim)
		return more_work(L, now);
	if (!stopping(L) && L->started + L->claimed < L->t->quota) {
		s->claim = 1;
		L->claimed++;
		return true;
	}
	return L->rq.n && !stopping(L);
}

static void unclaim(struct loop *L, struct csess *s)
{
	if (s->claim) {
		s->claim = 0;
		L->claimed--;
	}
}

/* may_start - can a new message begin right now? */
static bool may_start(const struct loop *L, const struct csess *s, uint64_t now)
{
	if (!new_work(L, now))
		return false;
	/* the messages claimed by connecting slots are theirs */
	if (L->b->cfg.messages && !s->claim && L->started + L->claimed >= L->t->quota)
		return false;
	return !(L->t->rate > 0 && now < L->next_sched_ns);
}

/* retry_due - is a retry due, and may it still be sent? */
static bool retry_due(const struct loop *L, uint64_t now)
{
	const struct bench_cfg *c = &L->b->cfg;

	if (retryq_next_due(&L->rq) > now || stopping(L))
		return false;
	return c->messages || now < L->b->start_ns + c->duration_ns;
}

static const struct body *pick_body(struct loop *L)
{
	const struct bench_cfg *c = &L->b->cfg;
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

/* --- connecting ------------------------------------------------------------------ */

static void leave_connecting(struct loop *L, struct csess *s);

static void queue_connect(struct loop *L, struct csess *s)
{
	uint32_t n = L->t->nsess;

	s->st = D_WAIT;
	L->cq[(L->cq_head + L->cq_len++) % n] = (uint32_t)(s - L->s);
}

static void attempt_failed(struct loop *L, struct csess *s, unsigned cls, const char *text,
                           uint64_t now);
static void after_close(struct loop *L, struct csess *s, uint64_t now);

static void start_connect(struct loop *L, struct csess *s, uint64_t now)
{
	const struct bench_cfg *c = &L->b->cfg;
	int one = 1, ret;

	s->target = (int)(L->rr++ % (uint32_t)c->ntargets);
	s->t_connect = now;
	s->deadline = now + c->timeout_ns;
	s->progress = 0;
	s->established = 0;
	s->want_close = 0;
	s->msgs = 0;
	s->send_busy = 0;
	s->end_by_retry = 0;
	s->pre_off = s->pre_len = 0;
	s->mq_h = s->mq_n = 0;
	s->kick = 0;
	L->t->st.conn_attempts++;
	s->fd =
	    socket(c->target[s->target].ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->fd < 0) {
		attempt_failed(L, s, CLIENT_FAIL_CONNECT, strerror(errno), now);
		after_close(L, s, now);
		return;
	}
	setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (c->nbind) {
		/* spread over source addresses when one runs out of ports */
		setsockopt(s->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		if (bind(s->fd,
		         (const struct sockaddr *)&c
		             ->bind[(L->rr + (uint32_t)L->t->id) % (uint32_t)c->nbind],
		         sizeof(c->bind[0]))) {
			/* never fall back to another source address silently */
			int e = errno;
			close(s->fd);
			s->fd = -1;
			attempt_failed(L, s, CLIENT_FAIL_CONNECT, strerror(e), now);
			after_close(L, s, now);
			return;
		}
	}
	s->st = D_CONNECTING;
	L->connecting++;
	ret = L->io->connect(L, s, (const struct sockaddr *)&c->target[s->target],
	                     c->target_len[s->target]);
	if (ret) {
		leave_connecting(L, s);
		L->io->close(L, s);
		attempt_failed(L, s, CLIENT_FAIL_CONNECT, strerror(-ret), now);
		after_close(L, s, now);
	}
}

/* CONNECTING_MAX - connects in flight per thread.  A server's listen
 * backlog is finite (smtpsink's 4096, the kernel's somaxconn): 5,000 SYNs
 * at once from each thread overflowed it, and the dropped ones came back
 * only after TCP's 1 s and 3 s retransmissions, so 10,000 sessions took
 * seconds to connect. */
#define CONNECTING_MAX 256

static void leave_connecting(struct loop *L, struct csess *s)
{
	if (s->st == D_CONNECTING) {
		L->connecting--;
		s->st = D_WAIT; /* the caller sets what follows */
	}
}

/* pump_connects - start queued connects as --connect-rate allows.  A slot
 * missed while nobody waited is not saved up beyond 20 ms, so the rate is a
 * ceiling, never a burst. */
static void pump_connects(struct loop *L, uint64_t now)
{
	while (L->cq_len && L->connecting < CONNECTING_MAX) {
		struct csess *s = &L->s[L->cq[L->cq_head]];
		bool work = connect_work(L, s, now);
		if (work && L->cr_interval) {
			if (L->cr_next + 20000000ull < now)
				L->cr_next = now - 20000000ull;
			if (L->cr_next > now)
				return;
			L->cr_next += L->cr_interval;
		}
		L->cq_head = (L->cq_head + 1) % L->t->nsess;
		L->cq_len--;
		if (!work) { /* never connect only to say QUIT */
			s->st = D_DONE;
			L->open--;
			continue;
		}
		start_connect(L, s, now);
	}
}

/* --- results ---------------------------------------------------------------------- */

static void progress(struct loop *L, uint64_t now)
{
	L->last_progress = now;
	L->stall_since = 0;
}

static void stalled(struct loop *L, uint64_t now)
{
	if (!L->stall_since)
		L->stall_since = now;
}

/* requeue - the failed attempt of m will be tried again after the delay;
 * false when the queue is full. */
static bool requeue(struct loop *L, const struct bmsg *m, uint64_t now)
{
	const struct bench_cfg *c = &L->b->cfg;
	struct retry_ent e = {.due = now + c->retry_delay_ns,
	                      .seq = m->seq,
	                      .t_first = m->t_first,
	                      .body = (uint16_t)(m->body - c->bodies),
	                      .attempts = (uint16_t)(m->attempt + 1)};

	return retryq_push(&L->rq, &e);
}

static bool account_msg(struct loop *L, struct csess *s, const struct bmsg *m, uint64_t now);

/* account - an attempt of the oldest message in flight on s has its
 * result (c->res); returns true when the message was queued for another
 * attempt (it has no outcome yet), false when this is its one final
 * outcome. */
static bool account(struct loop *L, struct csess *s, uint64_t now)
{
	const struct bmsg *m = &s->m[s->mq_h];
	bool again = account_msg(L, s, m, now);

	s->mq_h = (uint8_t)((s->mq_h + 1) % L->depth);
	s->mq_n--;
	return again;
}

static bool account_msg(struct loop *L, struct csess *s, const struct bmsg *m, uint64_t now)
{
	const struct client_result *r = &s->cl.res;
	struct bench_stats *st = &L->t->st;
	struct bench *b = L->b;

	if (r->definite) {
		s->progress = 1;
		progress(L, now);
	} else {
		stalled(L, now);
	}
	if (r->outcome == CLIENT_FAILED) {
		char what[32];
		snprintf(what, sizeof(what), "message, %s", client_cmd_name(r->cmd));
		note_error(L, r->fail, what, r->text);
		st->attempt_failed_by[r->fail]++;
		if (client_retryable(r)) {
			if (!m->attempt)
				st->retry_first_failed++;
			if (m->attempt >= b->cfg.retry)
				st->retry_exhausted++; /* with --retry 0: every transient failure */
			else if (requeue(L, m, now))
				return true;
			else
				st->retry_queue_full++;
		}
		st->failed++;
		st->failed_by[r->fail]++;
		ivl_msg(&L->t->ivl, now, IVL_FAILED, 0); /* --interval-log */
		return false;
	}
	uint64_t octets = STAMP_LINE_LEN + m->body->size;
	if (r->outcome == CLIENT_DELIVERED)
		st->delivered++;
	else
		st->partial++;
	if (m->attempt)
		st->retry_recovered++;
	/* --interval-log: every final outcome, warm-up included (its
	 * intervals are marked), latency as in the message histogram */
	ivl_msg(&L->t->ivl, now, r->outcome == CLIENT_DELIVERED ? IVL_DELIVERED : IVL_PARTIAL,
	        now - m->t_intended);
	st->bytes += octets;
	/* a message belongs to the window its first attempt was meant to
	 * start in: retries neither add to nor move the measured count */
	if (m->t_first >= b->start_ns) {
		st->measured++;
		st->measured_bytes += octets;
		hist_record(&st->msg, now - m->t_intended);
		hist_record(&st->msg_raw, now - m->t_start);
		if (b->cfg.retry) /* without retries it is msg: copied at the end */
			hist_record(&st->delivery, now - m->t_first);
		hist_record(&L->t->interval, now - m->t_intended);
	}
	return false;
}

static void attempt_failed(struct loop *L, struct csess *s, unsigned cls, const char *text,
                           uint64_t now)
{
	struct bench_stats *st = &L->t->st;

	st->conn_failed++;
	st->conn_failed_by[cls]++;
	if (s->fails < UINT8_MAX)
		s->fails++;
	stalled(L, now);
	note_error(L, cls, "session", text);
}

/* after_close - s has no connection: reconnect, back off, or retire. */
static void after_close(struct loop *L, struct csess *s, uint64_t now)
{
	const struct bench_cfg *c = &L->b->cfg;

	s->fd = -1;
	s->gen++;
	unclaim(L, s); /* a failed attempt claims again when it reconnects */
	if (!more_work(L, now)) {
		s->st = D_DONE;
		L->open--;
		return;
	}
	if (s->fails >= c->max_attempts) {
		L->t->st.gave_up++;
		s->st = D_DONE;
		L->open--;
		return;
	}
	if (s->fails) {
		uint64_t d = 50000000ull << (s->fails - 1 < 5 ? s->fails - 1 : 5);
		if (d > 1000000000ull)
			d = 1000000000ull;
		if (d > c->timeout_ns)
			d = c->timeout_ns;
		s->st = D_BACKOFF;
		s->deadline = now + d;
		return;
	}
	queue_connect(L, s);
}

/* finish_close - the connection of s ends (client said CLOSE, or the
 * driver gives up on it). */
static void finish_close(struct loop *L, struct csess *s, uint64_t now)
{
	struct bench_stats *st = &L->t->st;
	const struct client *cl = &s->cl;

	s->want_close = 0;
	tls_close(L, s);
	L->io->close(L, s);
	if (cl->fail == CLIENT_FAIL_NONE) {
		st->conn_quit++;
	} else if (!s->progress) {
		attempt_failed(L, s, cl->fail, cl->text, now);
	} else {
		st->conn_closed_early++;
	}
	if (cl->fail != CLIENT_FAIL_NONE && s->end_by_retry)
		st->conn_retried++;
	s->end_by_retry = 0;
	if (s->progress)
		s->fails = 0;
	after_close(L, s, now);
}

/* settle - after handle(): close when the core said so, unless the
 * connection already ended inside (an epoll write error closes at once,
 * which the generation number tells). */
static void flush_kick(struct loop *L, struct csess *s, uint64_t now);

static void settle(struct loop *L, struct csess *s, uint32_t gen, uint64_t now)
{
	if (s->gen != gen)
		return;
	if (s->want_close)
		finish_close(L, s, now);
	else
		flush_kick(L, s, now);
}

/* --- the session's conversation ------------------------------------------------------ */

static void kick(struct loop *L, struct csess *s, uint64_t now)
{
	s->t_rt = now;
	s->deadline = now + L->b->cfg.timeout_ns;
	if (s->ssl) { /* encrypt what the core queued */
		uint32_t gen = s->gen;
		tls_pump(L, s);
		if (s->gen != gen || s->want_close)
			return;
	}
	L->io->send(L, s);
}

/* begin_attempt - send message seq on s: attempt number `attempt` (0 =
 * first), meant to start at t_intended, first meant to start at t_first. */
static unsigned begin_attempt(struct loop *L, struct csess *s, uint64_t seq,
                              const struct body *body, uint64_t t_intended, uint64_t t_first,
                              uint16_t attempt, uint64_t now)
{
	const struct bench_cfg *c = &L->b->cfg;
	struct client_msg m;
	struct bmsg *b = &s->m[(s->mq_h + s->mq_n++) % L->depth];

	s->msgs++;
	b->body = body;
	b->seq = seq;
	b->attempt = attempt;
	b->t_intended = t_intended;
	b->t_first = t_first;
	b->t_start = now;
	/* the same seq and body give the same stamp line: a retry is the same
	 * message to smtpsink --verify, a duplicate only if it arrives twice */
	stamp_format(b->stamp, c->run_id, seq, body->hash);
	m = (struct client_msg){.n = seq,
	                        .stamp = b->stamp,
	                        .stamp_len = STAMP_LINE_LEN,
	                        .raw = body->raw,
	                        .raw_len = body->size,
	                        .wire = body->wire,
	                        .wire_len = body->wire_len};
	return client_begin(&s->cl, &m);
}

static unsigned begin_message(struct loop *L, struct csess *s, uint64_t now)
{
	struct bench_thread *t = L->t;
	const struct bench_cfg *c = &L->b->cfg;
	const struct body *body = pick_body(L);
	/* thread id << 40 | its j-th number of this instance's residue mod N:
	 * never one number in two instances (segment.h) */
	uint64_t seq = segment_seq(c->seg_index, c->seg_count, (uint32_t)t->id, L->seq_next++);
	uint64_t intended = now;

	unclaim(L, s);
	L->started++;
	t->st.attempted++;
	if (t->rate > 0) {
		intended = pace_take(&L->pace);
		L->next_sched_ns = pace_next(&L->pace);
	}
	return begin_attempt(L, s, seq, body, intended, intended, 0, now);
}

/* begin_retry - the earliest due retry, on s.  Open loop: the attempt's
 * latency counts from its due time, like a schedule slot's, so a retry
 * that waits for a free session has that wait in its figures; closed
 * loop: from the MAIL write, as every message there. */
static unsigned begin_retry(struct loop *L, struct csess *s, uint64_t now)
{
	struct retry_ent e;

	retryq_pop(&L->rq, &e);
	unclaim(L, s); /* a retry is work too: the claim goes to the others */
	L->t->st.retry_sent++;
	return begin_attempt(L, s, e.seq, &L->b->cfg.bodies[e.body], L->t->rate > 0 ? e.due : now,
	                     e.t_first, e.attempts, now);
}

/* next - s is idle in a session: a due retry first (an MTA's queue runner
 * does not let deferred mail wait behind new mail), else a new message,
 * wait, or QUIT. */
static unsigned next(struct loop *L, struct csess *s, uint64_t now)
{
	const struct bench_cfg *c = &L->b->cfg;

	if (c->msgs_per_session && s->msgs >= c->msgs_per_session)
		return client_quit(&s->cl);
	if (retry_due(L, now))
		return begin_retry(L, s, now);
	if (may_start(L, s, now))
		return begin_message(L, s, now);
	if (more_work(L, now))
		return 0; /* open loop: housekeeping calls again when due */
	return client_quit(&s->cl);
}

/* handle - act on the client core's action bits. */
static void handle(struct loop *L, struct csess *s, unsigned act, uint64_t now)
{
	struct bench_stats *st = &L->t->st;

	if (act & CLIENT_ACT_REPLY) {
		if (s->t_rt) {
			hist_record(&st->cmd, now - s->t_rt);
			s->t_rt = 0;
		}
		s->deadline = now + L->b->cfg.timeout_ns;
	}
	/* a message queued again by the failure that ends this connection
	 * (421, drop, timeout) makes that end part of the retry, not a
	 * failure of its own (exit status) */
	if ((act & CLIENT_ACT_MSG) && account(L, s, now) && (act & CLIENT_ACT_CLOSE))
		s->end_by_retry = 1;
	if (act & CLIENT_ACT_CLOSE)
		while (client_lost(&s->cl)) /* --depth: the others in flight */
			if (account(L, s, now))
				s->end_by_retry = 1;
	if (act & CLIENT_ACT_TLS) /* sends the ClientHello, or fails the session */
		act |= tls_begin(L, s, now);
	if ((act & (CLIENT_ACT_READY | CLIENT_ACT_CLOSE)) == CLIENT_ACT_READY) {
		if (!s->established) {
			s->established = 1;
			st->conn_established++;
			hist_record(&st->connect, now - s->t_connect);
		}
		/* --depth: fill the pipeline while the core has room (READY
		 * means "room for one more", not always an idle session) */
		while (client_can_begin(&s->cl)) {
			unsigned a = next(L, s, now);
			act |= a;
			if ((a & (CLIENT_ACT_SEND | CLIENT_ACT_CLOSE)) != CLIENT_ACT_SEND)
				break;
		}
	}
	if (act & CLIENT_ACT_CLOSE)
		s->want_close = 1;
	else if (act & CLIENT_ACT_SEND)
		s->kick = 1; /* settle() sends: one write for every reply of a read */
}

static void flush_kick(struct loop *L, struct csess *s, uint64_t now)
{
	if (s->kick && !s->want_close) {
		s->kick = 0;
		kick(L, s, now);
	}
}

void drv_act(struct loop *L, struct csess *s, unsigned act, uint64_t now)
{
	handle(L, s, act, now);
	flush_kick(L, s, now);
}

/* port_of - the port of an AF_INET/AF_INET6 address, host order. */
static uint16_t port_of(const struct sockaddr_storage *a)
{
	if (a->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)(const void *)a)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)(const void *)a)->sin6_port);
}

/* proxy_header - build s's PROXY header: from --proxy-source (else the
 * connection's own address) and its port (else the connection's own
 * ephemeral port, known only now), to the target; the two ends in one
 * family (proxy_same_family).  0, or -1 with a reason in why. */
static int proxy_header(struct loop *L, struct csess *s, const char **why)
{
	const struct bench_cfg *c = &L->b->cfg;
	struct sockaddr_storage me;
	socklen_t ml = sizeof(me);
	struct fault_ip src, dst;
	uint16_t sport;
	size_t n;

	if (getsockname(s->fd, (struct sockaddr *)&me, &ml)) {
		*why = "PROXY header: getsockname failed";
		return -1;
	}
	fault_ip_from_sockaddr((const struct sockaddr *)&me, &src);
	sport = port_of(&me);
	if (c->proxy_src_given)
		src = c->proxy_src;
	if (c->proxy_port_given)
		sport = c->proxy_port;
	fault_ip_from_sockaddr((const struct sockaddr *)&c->target[s->target], &dst);
	if (proxy_same_family(&src, &dst)) {
		*why = "PROXY header: the connection is neither IPv4 nor IPv6";
		return -1;
	}
	n = c->proxy == 1 ? proxy_build_v1(s->pre, sizeof(s->pre), &src, sport, &dst,
	                                   port_of(&c->target[s->target]))
	                  : proxy_build_v2(s->pre, sizeof(s->pre), &src, sport, &dst,
	                                   port_of(&c->target[s->target]));
	if (!n) {
		*why = "PROXY header: cannot be built";
		return -1;
	}
	s->pre_off = 0;
	s->pre_len = (uint8_t)n;
	return 0;
}

void drv_connected(struct loop *L, struct csess *s, int err)
{
	uint64_t now = bench_now();
	uint32_t gen = s->gen;
	const char *why = NULL;
	unsigned act;

	leave_connecting(L, s);
	if (!err && L->b->cfg.proxy && proxy_header(L, s, &why))
		err = -1;
	if (err) {
		L->io->close(L, s);
		attempt_failed(L, s, CLIENT_FAIL_CONNECT, why ? why : strerror(err), now);
		after_close(L, s, now);
		return;
	}
	s->st = D_LIVE;
	s->deadline = now + L->b->cfg.timeout_ns;
	if (s->pre_len) { /* the header goes first, before any reply is read */
		L->io->send(L, s);
		if (s->gen != gen)
			return;
	}
	act = client_start(&s->cl); /* implicit TLS: the handshake starts now */
	if (act) {
		handle(L, s, act, now);
		settle(L, s, gen, now);
	}
}

/* drv_feed - plaintext from the server to the client core. */
void drv_feed(struct loop *L, struct csess *s, const char *p, size_t n, uint64_t now)
{
	uint32_t gen = s->gen;
	size_t off = 0;

	while (off < n && s->gen == gen && !s->want_close) {
		unsigned act;
		off += client_feed(&s->cl, p + off, n - off, &act);
		if (act)
			handle(L, s, act, now);
	}
}

void drv_input(struct loop *L, struct csess *s, const char *p, size_t n)
{
	uint64_t now = bench_now();
	uint32_t gen = s->gen;

	/* decided once per buffer: bytes that follow the 220 to STARTTLS in
	 * the same read are plaintext, and the client core refuses them */
	if (s->ssl)
		tls_input(L, s, p, n, now);
	else
		drv_feed(L, s, p, n, now);
	settle(L, s, gen, now);
}

void drv_eof(struct loop *L, struct csess *s, int err)
{
	uint64_t now = bench_now();
	uint32_t gen = s->gen;
	unsigned act = client_eof(&s->cl);

	if (err && s->cl.fail == CLIENT_FAIL_DROPPED)
		snprintf(s->cl.text, sizeof(s->cl.text), "%s", strerror(err));
	handle(L, s, act | CLIENT_ACT_CLOSE, now);
	settle(L, s, gen, now);
}

void drv_wrote(struct loop *L, struct csess *s, size_t n)
{
	L->t->st.sent_bytes += n;
	if (s->pre_off < s->pre_len) { /* drv_out() gave the header alone */
		s->pre_off = (uint8_t)(s->pre_off + n);
		return;
	}
	if (s->ssl) {
		uint32_t gen = s->gen;
		tls_wrote(L, s, n); /* may encrypt more, or find the session broken */
		settle(L, s, gen, bench_now());
		return;
	}
	client_wrote(&s->cl, n);
}

/* --- timers --------------------------------------------------------------------------- */

static void check_timers(struct loop *L, uint64_t now)
{
	for (uint32_t i = 0; i < L->t->nsess; i++) {
		struct csess *s = &L->s[i];
		switch (s->st) {
		case D_BACKOFF:
			if (now >= s->deadline)
				queue_connect(L, s);
			break;
		case D_CONNECTING:
			if (now >= s->deadline) {
				leave_connecting(L, s);
				L->io->close(L, s);
				attempt_failed(L, s, CLIENT_FAIL_TIMEOUT, "connect timed out", now);
				after_close(L, s, now);
			}
			break;
		case D_LIVE:
			if (client_waiting(&s->cl) || client_has_output(&s->cl) ||
			    drv_has_output(s)) {
				if (now >= s->deadline) {
					uint32_t gen = s->gen;
					handle(L, s, client_timeout(&s->cl) | CLIENT_ACT_CLOSE,
					       now);
					settle(L, s, gen, now);
				}
			} else if (s->cl.state == CLIENT_ST_READY) {
				uint32_t gen = s->gen;
				handle(L, s, CLIENT_ACT_READY, now); /* open loop, or run over */
				settle(L, s, gen, now);
			}
			break;
		default:
			break;
		}
	}
}

/* abort_all - the run stops now: every message in flight fails as aborted. */
static void abort_all(struct loop *L, uint64_t now)
{
	for (uint32_t i = 0; i < L->t->nsess; i++) {
		struct csess *s = &L->s[i];
		if (s->st == D_LIVE) {
			unsigned act = client_abort(&s->cl);
			if (act & CLIENT_ACT_MSG)
				account(L, s, now);
			while (client_lost(&s->cl))
				account(L, s, now);
			tls_close(L, s);
			L->io->close(L, s);
		} else if (s->st == D_CONNECTING) {
			L->io->close(L, s);
		}
		s->fd = -1;
		s->st = D_DONE;
	}
	L->open = 0;
}

/* housekeeping - open-loop slots, connects, timers and the live counters. */
static void housekeeping(struct loop *L, uint64_t now, uint64_t *last_tick, uint64_t *last_live,
                         uint64_t *last_p99)
{
	struct bench_thread *t = L->t;

	/* open loop: hand due slots to idle sessions */
	if (t->rate > 0)
		for (uint32_t i = 0; i < t->nsess && now >= L->next_sched_ns; i++) {
			struct csess *s = &L->s[i];
			if (s->st == D_LIVE && client_can_begin(&s->cl)) {
				uint32_t gen = s->gen;
				handle(L, s, CLIENT_ACT_READY, now);
				settle(L, s, gen, now);
			}
		}
	pump_connects(L, now);
	ivl_tick(&t->ivl, now); /* --interval-log: close an idle thread's interval */
	if (now - *last_tick >= 10000000ull) {
		check_timers(L, now);
		*last_tick = now;
	}
	if (now - *last_live >= 100000000ull) {
		struct bench_stats *st = &t->st;
		uint64_t errs = st->failed + st->conn_failed, p99;
		if (now - *last_p99 >= 1000000000ull) {
			p99 = hist_quantile(&t->interval, 0.99);
			hist_init(&t->interval);
			*last_p99 = now;
			__atomic_store_n(&t->live.p99_ns, p99, __ATOMIC_RELAXED);
		}
		__atomic_store_n(&t->live.delivered, st->delivered + st->partial, __ATOMIC_RELAXED);
		__atomic_store_n(&t->live.bytes, st->bytes, __ATOMIC_RELAXED);
		__atomic_store_n(&t->live.errors, errs, __ATOMIC_RELAXED);
		__atomic_store_n(&t->live.sessions, (uint64_t)L->open, __ATOMIC_RELAXED);
		__atomic_store_n(&t->live.retries, st->retry_sent, __ATOMIC_RELAXED);
		__atomic_store_n(&t->live.retry_waiting, (uint64_t)L->rq.n, __ATOMIC_RELAXED);
		__atomic_store_n(&t->live.last_progress_ns, L->last_progress, __ATOMIC_RELAXED);
		__atomic_store_n(&t->live.stall_since_ns, L->stall_since, __ATOMIC_RELAXED);
		*last_live = now;
	}
}

/* wait_ms - how long the backend may sleep: until the next open-loop slot
 * or connect slot, at most 10 ms (the timer tick). */
static int wait_ms(const struct loop *L, uint64_t now)
{
	uint64_t until = now + 10000000ull;

	if (L->t->rate > 0 && L->next_sched_ns < until)
		until = L->next_sched_ns;
	if (L->cq_len && L->cr_interval && L->cr_next < until)
		until = L->cr_next;
	return until > now ? (int)((until - now + 999999) / 1000000) : 0;
}

int bench_run(struct bench_thread *t)
{
	struct bench *b = t->b;
	const struct bench_cfg *c = &b->cfg;
	struct loop *L = calloc(1, sizeof(*L));
	size_t cap = client_cmd_cap(&c->client);
	uint64_t last_tick = 0, last_live = 0, last_p99 = 0;
	int ret = -ENOMEM;

	if (L) {
		L->t = t;
		L->b = b;
		L->io = c->use_uring ? &bench_io_uring : &bench_io_epoll;
		L->s = calloc(t->nsess, sizeof(*L->s));
		L->cq = calloc(t->nsess, sizeof(*L->cq));
		/* every session's command buffer, sized once from the configuration */
		L->cmdbufs = malloc(cap * t->nsess);
		L->depth = c->client.depth > 1 ? c->client.depth : 1;
		L->msgs = calloc((size_t)t->nsess * L->depth, sizeof(*L->msgs));
		L->iovs =
		    calloc((size_t)t->nsess * (size_t)client_iov_max(&c->client), sizeof(*L->iovs));
		ret = L->s && L->cq && L->cmdbufs && L->msgs && L->iovs ? 0 : -ENOMEM;
		/* --retry: the queue is allocated once, here, never grown */
		if (!ret && c->retry)
			ret = retryq_init(&L->rq, t->retry_cap);
		if (!ret)
			ret = L->io->init(L);
	}
	/* No thread starts before every backend is set up: the threads start
	 * together, and a quick thread cannot unmap its ring before a slow one
	 * maps its own - liburing maps rings with raw syscalls, so a ring at a
	 * reused address looked to ThreadSanitizer like one shared ring. */
	pthread_barrier_wait(&b->ready);
	pthread_barrier_wait(&b->go); /* t0_ns is set: the run starts for all */
	if (ret) {
		fprintf(stderr, "smtpbench: thread %d: %s setup: %s\n", t->id,
		        L ? L->io->name : "loop", strerror(-ret));
		t->failed_setup = true;
		atomic_store(&b->stop, 1);
		if (!L)
			return ret;
		free(L->s);
		free(L->cq);
		free(L->cmdbufs);
		free(L->msgs);
		free(L->iovs);
		retryq_free(&L->rq);
		free(L);
		return ret;
	}
	ivl_thread_start(&t->ivl, bench_now()); /* --interval-log */
	L->open = t->nsess;
	L->rr = (uint32_t)t->id;
	L->last_progress = b->t0_ns;
	/* open loop: this thread's slots of the whole run's one schedule at the
	 * total rate, interleaved with the other threads' and instances'
	 * (segment.h), so their starts are spread over the grid, not bunched */
	if (t->rate > 0)
		pace_init_share(&L->pace, b->t0_ns, c->rate_total,
		                segment_slot(c->seg_index, c->seg_count, (uint32_t)t->id,
		                             (uint32_t)c->threads, 0),
		                (uint64_t)c->seg_count * (uint64_t)c->threads);
	L->next_sched_ns = t->rate > 0 ? pace_next(&L->pace) : b->t0_ns;
	if (c->connect_rate > 0) {
		L->cr_interval = (uint64_t)(1e9 * c->threads / c->connect_rate);
		L->cr_next = b->t0_ns + L->cr_interval * (uint64_t)t->id / (uint64_t)c->threads;
	}
	for (uint32_t i = 0; i < t->nsess; i++) {
		struct csess *s = &L->s[i];
		s->fd = -1;
		client_init(&s->cl, &c->client, &t->st.replies, L->cmdbufs + cap * i, cap);
		s->m = L->msgs + (size_t)i * L->depth;
		s->iov = L->iovs + (size_t)i * (size_t)client_iov_max(&c->client);
		s->cl.sid = t->first_sid + i;
		queue_connect(L, s);
	}
	while (L->open > 0 && !stopping(L)) {
		uint64_t now = bench_now();
		housekeeping(L, now, &last_tick, &last_live, &last_p99);
		if (L->open == 0)
			break;
		L->io->poll(L, wait_ms(L, bench_now()));
	}
	uint64_t now = bench_now();
	if (L->open)
		abort_all(L, now);
	t->end_ns = now;
	if (c->messages && L->started < t->quota)
		t->st.unsent = t->quota - L->started;
	/* --retry 0: every delivery took one attempt, so the delivery
	 * histogram is the message histogram; one copy here saves a second
	 * histogram update (and its cache lines) per message */
	if (!c->retry)
		hist_merge(&t->st.delivery, &t->st.msg);
	/* messages still waiting for a retry have their outcome now: the run
	 * is over (--duration, or stopped) */
	for (struct retry_ent e; retryq_pop(&L->rq, &e);) {
		t->st.failed++;
		t->st.failed_by[CLIENT_FAIL_ABORTED]++;
		t->st.retry_aborted++;
		ivl_msg(&t->ivl, now, IVL_FAILED, 0); /* --interval-log */
	}
	if (t->st.retry_aborted) {
		char text[80];
		snprintf(text, sizeof(text), "%llu messages still waiting for a retry",
		         (unsigned long long)t->st.retry_aborted);
		note_error(L, CLIENT_FAIL_ABORTED, "retry queue", text);
	}
	ivl_thread_end(&t->ivl); /* --interval-log: the last interval, partial */
	__atomic_store_n(&t->live.sessions, 0, __ATOMIC_RELAXED);
	L->io->fini(L); /* no send can still read an obuf after this */
	for (uint32_t i = 0; i < t->nsess; i++)
		tls_slot_free(&L->s[i]);
	free(L->s);
	free(L->cq);
	free(L->cmdbufs);
	free(L->msgs);
	free(L->iovs);
	retryq_free(&L->rq);
	free(L);
	return 0;
}
