/*
 * test_conn.c - smtpsink's connection layer (server/conn.c) without a
 * backend: the test plays the backend, feeding input and reporting sends,
 * and checks states, backpressure, held input and its bound, trust,
 * closing, lingering and the stop policy.  A socketpair stands in for the
 * socket (conn.c only shuts its write side and sets options on it).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server.h"

/* The rest of the server, as far as conn.c needs it. */
static int stops;
void server_stop(struct server *srv, int phase, const char *why)
{
	(void)why;
	stops++;
	atomic_store(&srv->stop_phase, phase);
}

void server_unadmit(struct server *srv)
{
	atomic_fetch_sub(&srv->conns, 1);
}

void worker_wake(struct worker *wk)
{
	(void)wk;
}

static struct server srv;
static struct worker w;
static int peer = -1;

static void setup(void)
{
	memset(&srv, 0, sizeof(srv));
	memset(&w, 0, sizeof(w));
	sess_cfg_defaults(&srv.cfg.sess);
	srv.cfg.sess.hostname = "t.test";
	srv.cfg.sess.max_errors = 0;
	w.srv = &srv;
	w.now = 1000;
	stops = 0;
}

static void teardown(void)
{
	for (int s = 0; s < CONN_NSTATES; s++)
		for (struct conn *c = w.lists[s].head, *nx; c; c = nx) {
			nx = c->next;
			close(c->fd);
			obuf_free(&c->out);
			free(c->held);
			free(c);
		}
	for (struct conn *c = w.free_conns, *nx; c; c = nx) {
		nx = c->next;
		obuf_free(&c->out);
		free(c);
	}
	if (peer >= 0)
		close(peer);
	peer = -1;
}

TestSuite(conn, .init = setup, .fini = teardown);

static struct conn *open_conn(void)
{
	int sv[2];

	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	peer = sv[1];
	atomic_fetch_add(&srv.conns, 1);
	return conn_open(&w, sv[0], false);
}

/* take - what a client that reads everything would get now (the backend
 * sent all pending output). */
static size_t take(struct conn *c, char *out, size_t cap)
{
	size_t n = obuf_pending(&c->out);

	if (out) {
		cr_assert_lt(n, cap);
		memcpy(out, c->out.p + c->out.off, n);
		out[n] = 0;
	}
	conn_sent(c, n);
	return n;
}

static void input(struct conn *c, const char *s)
{
	conn_input(c, s, strlen(s));
}

Test(conn, greeting_and_session)
{
	struct conn *c = open_conn();
	char buf[4096];

	cr_assert_eq(c->state, CONN_SESSION);
	cr_assert(c->in_dirty);
	take(c, buf, sizeof(buf));
	cr_assert_str_eq(buf, "220 t.test ESMTP smtpsink\r\n");
	cr_assert(conn_wants_input(c));
	cr_assert_not(conn_bulk(c));
	input(c, "NOOP\r\n");
	take(c, buf, sizeof(buf));
	cr_assert_str_eq(buf, "250 2.0.0 Ok\r\n");
	cr_assert_eq(w.st.recv_bytes, 6);
}

/* pipeline - n numbered VRFYs, so order can be checked. */
static char *pipeline(int from, int n, size_t *len)
{
	char *p = malloc((size_t)n * 16 + 1);
	size_t k = 0;

	for (int i = from; i < from + n; i++)
		k += (size_t)sprintf(p + k, "VRFY %d\r\n", i);
	*len = k;
	return p;
}

Test(conn, backpressure_keeps_order_and_resumes)
{
	struct conn *c = open_conn();
	static char out[1 << 20];
	size_t len, len2, got = 0;
	char *a = pipeline(0, 2000, &len), *b = pipeline(2000, 500, &len2);

	take(c, NULL, 0);
	conn_input(c, a, len); /* ~20 KB of commands, ~30 KB of replies */
	cr_assert(c->paused, "replies over OBUF_SOFT_MAX must pause reading");
	cr_assert_not(conn_wants_input(c));
	cr_assert_eq(w.st.read_pauses, 1);
	cr_assert_gt(c->held_len - c->held_off, 0);
	/* arrived before the backend stopped receiving: kept behind */
	conn_input(c, b, len2);
	while (obuf_pending(&c->out)) {
		size_t n = obuf_pending(&c->out);
		memcpy(out + got, c->out.p + c->out.off, n);
		got += n;
		conn_sent(c, n);
	}
	out[got] = 0;
	cr_assert_not(c->paused);
	cr_assert(conn_wants_input(c));
	cr_assert_null(c->held, "held input is freed once consumed");
	/* every reply, in order */
	char *p = out;
	for (int i = 0; i < 2500; i++) {
		char want[32];
		int n = sprintf(want, "252 2.0.0 %d\r\n", i);
		cr_assert_eq(strncmp(p, want, (size_t)n), 0, "reply %d: %.20s", i, p);
		p += n;
	}
	cr_assert_eq(*p, 0);
	cr_assert_not(c->trusted, "a connection that paused is never trusted");
	free(a);
	free(b);
}

Test(conn, held_input_is_bounded)
{
	struct conn *c = open_conn();
	size_t len;
	char *a = pipeline(0, 2000, &len);
	static char more[CONN_HELD_MAX];

	take(c, NULL, 0);
	conn_input(c, a, len);
	cr_assert(c->paused);
	memset(more, 'x', sizeof(more));
	conn_input(c, more, sizeof(more)); /* past CONN_HELD_MAX */
	cr_assert_eq(c->state, CONN_CLOSED);
	cr_assert(c->rst);
	cr_assert_eq(w.st.in_overflow, 1);
	cr_assert_null(c->held);
	free(a);
}

Test(conn, trusted_after_a_message)
{
	struct conn *c = open_conn();

	take(c, NULL, 0);
	input(c, "EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n");
	take(c, NULL, 0);
	cr_assert_not(conn_bulk(c));
	input(c, "hello\r\n.\r\n");
	take(c, NULL, 0);
	cr_assert(conn_bulk(c), "a message finished without backing up");
}

Test(conn, quit_flushes_then_shuts_write_then_closes_on_eof)
{
	struct conn *c = open_conn();
	char buf[256];

	take(c, NULL, 0);
	input(c, "QUIT\r\nNOOP\r\n");
	cr_assert_eq(c->state, CONN_CLOSING);
	cr_assert_not(c->wr_shut, "the 221 is not sent yet");
	cr_assert_not(conn_wants_input(c));
	take(c, buf, sizeof(buf));
	cr_assert_str_eq(buf, "221 2.0.0 Bye\r\n");
	cr_assert(c->wr_shut);
	cr_assert(conn_wants_input(c), "lingering: drain until the client closes");
	cr_assert_eq(read(peer, buf, sizeof(buf)), 0, "FIN after the reply");
	input(c, "late input is dropped\r\n");
	cr_assert_eq(c->state, CONN_CLOSING);
	conn_eof(c);
	cr_assert_eq(c->state, CONN_CLOSED);
	cr_assert_not(c->rst);
	cr_assert_eq(w.st.peer_closed, 0);
}

Test(conn, peer_eof_in_session)
{
	struct conn *c = open_conn();

	take(c, NULL, 0);
	input(c, "NOOP\r\n");
	conn_eof(c); /* half-closed: it may still read the reply */
	cr_assert_eq(c->state, CONN_CLOSING);
	cr_assert_eq(w.st.peer_closed, 1);
	take(c, NULL, 0);
	cr_assert_eq(c->state, CONN_CLOSED, "flushed, and the peer is gone");
}

Test(conn, eof_waits_for_held_quit)
{
	struct conn *c = open_conn();
	size_t len;
	char *a = pipeline(0, 2000, &len);

	take(c, NULL, 0);
	conn_input(c, a, len);
	input(c, "QUIT\r\n");
	cr_assert(c->paused);
	conn_eof(c);
	cr_assert_eq(c->state, CONN_SESSION, "held input is answered first");
	while (c->state == CONN_SESSION)
		take(c, NULL, 0);
	cr_assert_eq(c->state, CONN_CLOSING);
	cr_assert_eq(w.st.peer_closed, 0, "it said QUIT");
	free(a);
}

Test(conn, errors)
{
	struct conn *c = open_conn();

	conn_error(c, 104);
	cr_assert_eq(c->state, CONN_CLOSED);
	cr_assert_eq(w.st.io_errors, 1);
	c = open_conn();
	take(c, NULL, 0);
	input(c, "QUIT\r\n");
	conn_error(c, 104); /* a reset while closing is a goodbye */
	cr_assert_eq(w.st.io_errors, 1);
}

Test(conn, stopping_refuses_new_transactions)
{
	struct conn *c = open_conn();
	char buf[512];

	take(c, NULL, 0);
	input(c, "EHLO x\r\n");
	take(c, NULL, 0);
	atomic_store(&srv.stop_phase, 1);
	input(c, "MAIL FROM:<a@b>\r\n");
	take(c, buf, sizeof(buf));
	cr_assert_str_eq(buf, "421 4.3.2 t.test Service shutting down\r\n");
	cr_assert(c->state == CONN_CLOSING || c->state == CONN_CLOSED);
}

Test(conn, exit_after_stops_on_the_nth_message)
{
	struct conn *c;
	char buf[512];

	srv.cfg.exit_after = 1;
	c = open_conn();
	take(c, NULL, 0);
	input(c, "EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n");
	take(c, NULL, 0);
	input(c, "x\r\n.\r\nMAIL FROM:<a@b>\r\n");
	take(c, buf, sizeof(buf));
	cr_assert_eq(stops, 1);
	cr_assert(strstr(buf, "250 2.0.0 Ok: queued as "));
	cr_assert(strstr(buf, "\r\n421 4.3.2 t.test Service shutting down\r\n"), "%s", buf);
	cr_assert_eq(w.st.sess.msgs, 1);
}
