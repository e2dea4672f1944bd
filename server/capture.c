/*
 * capture.c - smtpsink --capture DIR: accepted messages stored byte-exact
 * (after dot-unstuffing, BDAT chunks joined) in a Maildir, with one JSON
 * line per message in DIR/index.jsonl.
 *
 * Workers never touch the disk.  Each worker has a single-producer ring of
 * records (begin / content / end or commit / abort) that one writer thread
 * drains: it writes DIR/tmp/NAME, renames it into DIR/new/ (Maildir's
 * atomic delivery) and appends the index line.  A worker that finds its
 * ring full gives up capturing that message (capture_dropped); the writer
 * does the same on a write error (ENOSPC, EFBIG, EDQUOT).  By default the
 * message is accepted all the same.  With --capture-strict the session asks
 * before its 250 (content_ops->commit): the worker sends a commit record
 * and suspends the session until the writer answers through a second ring,
 * and a message that could not be stored gets 452 4.3.1 instead - nothing
 * is acknowledged and lost.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "server.h"

#define RING_SIZE  (8u << 20) /* per worker; a power of two */
#define RESERVE    256        /* room always kept for an abort record */
#define DONE_SIZE  4096       /* verdicts in flight per worker */
#define DATA_CHUNK 65536
/* envelope octets kept per message for the index (1000 RCPTs of 60
 * octets); with a HELO and the facts a record stays under DATA_CHUNK */
#define CAPTURE_ENV_MAX 61440

enum { REC_BEGIN = 1, REC_DATA, REC_END, REC_COMMIT, REC_ABORT };

struct rec {
	uint32_t type, len; /* len: payload octets after the header */
	uint64_t id;
};

struct done {
	uint64_t id;
	int32_t ok;
};

struct cap_ring {
	char *buf;
	_Atomic uint64_t head; /* produced octets (worker) */
	_Atomic uint64_t tail; /* consumed octets (writer) */
	struct done done[DONE_SIZE];
	_Atomic uint64_t done_head, done_tail; /* writer -> worker */
	uint64_t seq;
	uint64_t *pend; /* aborts that found the ring full, oldest first */
	size_t npend, cappend;
};

/* The writer's state for one message. */
struct wmsg {
	uint64_t id;
	int fd;
	bool failed;
	uint64_t size;
	char name[160];
	struct wmsg *next;
};

static struct {
	struct server *srv;
	char dir[3072];
	int kick; /* eventfd: a ring went from empty to not empty */
	pthread_t thread;
	_Atomic int stop;
	struct wmsg *tab[4096];
	FILE *index;
	int newdir; /* DIR/new, fsync'd after each rename under --capture-strict */
	char host[64];
	_Atomic uint64_t seen, bytes; /* for --capture-sample / -first / -max-bytes */
} cap;

/* --- the rings ------------------------------------------------------------ */

static size_t ring_free(const struct cap_ring *r)
{
	return RING_SIZE - (size_t)(atomic_load_explicit(&r->head, memory_order_relaxed) -
	                            atomic_load_explicit(&r->tail, memory_order_acquire));
}

static void ring_copy_in(struct cap_ring *r, uint64_t at, const void *p, size_t n)
{
	size_t off = (size_t)(at & (RING_SIZE - 1)),
	       first = RING_SIZE - off < n ? RING_SIZE - off : n;

	if (!n)
		return; /* begin/abort records carry no payload (p may be NULL) */
	memcpy(r->buf + off, p, first);
	memcpy(r->buf, (const char *)p + first, n - first);
}

static void ring_copy_out(const struct cap_ring *r, uint64_t at, void *p, size_t n)
{
	size_t off = (size_t)(at & (RING_SIZE - 1)),
	       first = RING_SIZE - off < n ? RING_SIZE - off : n;

	memcpy(p, r->buf + off, first);
	memcpy((char *)p + first, r->buf, n - first);
}

/* pushv - one record whose payload is the parts p[0..np-1]; false when the
 * ring has no room (reserve kept for aborts unless this is one). */
static bool pushv(struct cap_ring *r, uint32_t type, uint64_t id, const void *const *p,
                  const size_t *len, int np)
{
	size_t n = 0;
	for (int i = 0; i < np; i++)
		n += len[i];
	struct rec h = {type, (uint32_t)n, id};
	uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
	bool was_empty = head == atomic_load_explicit(&r->tail, memory_order_acquire);

	if (ring_free(r) < sizeof(h) + n + (type == REC_ABORT ? 0 : RESERVE))
		return false;
	ring_copy_in(r, head, &h, sizeof(h));
	uint64_t at = head + sizeof(h);
	for (int i = 0; i < np; i++) {
		ring_copy_in(r, at, p[i], len[i]);
		at += len[i];
	}
	atomic_store_explicit(&r->head, head + sizeof(h) + n, memory_order_release);
	if (was_empty) {
		uint64_t one = 1;
		(void)!write(cap.kick, &one, sizeof(one));
	}
	return true;
}

static bool push(struct cap_ring *r, uint32_t type, uint64_t id, const void *p, size_t n)
{
	return pushv(r, type, id, &p, &n, 1);
}

/* cap_abort - tell the writer a message will not be finished, so it closes
 * and unlinks its file.  The ring keeps RESERVE octets for aborts, but a
 * thousand connections failing at once can use that up: an abort that does
 * not fit waits in pend and capture_poll_done pushes it on a later loop
 * turn.  Losing one would leave the writer an open file until shutdown. */
static void cap_abort(struct cap_ring *r, uint64_t id)
{
	if (!r->npend && push(r, REC_ABORT, id, NULL, 0))
		return;
	if (r->npend == r->cappend) {
		size_t n = r->cappend ? r->cappend * 2 : 64;
		uint64_t *q = realloc(r->pend, n * sizeof(*q));
		if (!q)
			return; /* the file is closed at shutdown */
		r->pend = q;
		r->cappend = n;
	}
	r->pend[r->npend++] = id;
}

static void cap_abort_flush(struct cap_ring *r)
{
	size_t i = 0;

	while (i < r->npend && push(r, REC_ABORT, r->pend[i], NULL, 0))
		i++;
	memmove(r->pend, r->pend + i, (r->npend - i) * sizeof(*r->pend));
	r->npend -= i;
}

/* --- worker side: the session's content hooks ------------------------------ */

static struct cap_ring *ring_of(struct conn *c)
{
	return c->w->capring;
}

/* cap_begin - a message starts: is it one to capture? */
void capture_begin(struct conn *c)
{
	const struct server_cfg *cfg = &c->w->srv->cfg;
	struct cap_ring *r = ring_of(c);
	uint64_t n = atomic_fetch_add_explicit(&cap.seen, 1, memory_order_relaxed) + 1;

	c->cap_id = 0;
	c->cap_failed = 0;
	c->cap_size = 0;
	if ((cfg->capture_sample > 1 && n % cfg->capture_sample) ||
	    (cfg->capture_first && n > cfg->capture_first)) {
		c->w->st.capture_skipped++;
		return;
	}
	c->cap_id = ((uint64_t)c->w->id << 48) | ++r->seq;
	if (!push(r, REC_BEGIN, c->cap_id, NULL, 0)) {
		c->cap_failed = 1;
		c->w->st.capture_dropped++;
	}
}

void capture_content(struct conn *c, const char *p, size_t n)
{
	struct cap_ring *r = ring_of(c);

	if (!c->cap_id || c->cap_failed)
		return;
	c->cap_size += n;
	while (n) {
		size_t k = n > DATA_CHUNK ? DATA_CHUNK : n;
		if (!push(r, REC_DATA, c->cap_id, p, k)) {
			/* the writer is behind: this message is not stored */
			c->cap_failed = 1;
			c->w->st.capture_dropped++;
			cap_abort(r, c->cap_id);
			return;
		}
		p += k;
		n -= k;
	}
}

/* The index facts of a message, sent with its end (or commit) record; the
 * writer thread turns them into the JSON line, so a worker does no JSON and
 * no allocation per message. */
struct facts {
	int64_t sec;
	uint32_t usec;
	uint32_t env_len;
	uint64_t size;
	uint32_t rcpts_omitted;
	uint16_t helo_len;
	uint8_t family, tls, auth;
	uint8_t ip[16];
};

static bool push_facts(struct conn *c, uint32_t type)
{
	struct facts f = {0};
	struct timeval tv;

	gettimeofday(&tv, NULL);
	f.sec = tv.tv_sec;
	f.usec = (uint32_t)tv.tv_usec;
	f.env_len = (uint32_t)c->env_len;
	f.size = c->cap_size;
	f.rcpts_omitted = c->env_omitted;
	f.helo_len = c->sess.f_helo_len;
	f.family = c->fip.family;
	memcpy(f.ip, c->fip.b, sizeof(f.ip));
	f.tls = c->tls != NULL;
	f.auth = c->sess.authed;
	const void *parts[] = {&f, c->sess.f_helo, c->env};
	size_t lens[] = {sizeof(f), f.helo_len, f.env_len};
	return pushv(ring_of(c), type, c->cap_id, parts, lens, 3);
}

/* capture_commit - --capture-strict: before the 250.  0 OK, 1 wait (the
 * writer will answer), -1 failed. */
int capture_commit(struct conn *c)
{
	const struct server_cfg *cfg = &c->w->srv->cfg;

	if (!cfg->capture_strict || !c->cap_id)
		return SESS_COMMIT_OK;
	if (c->cap_verdict) {
		int v = c->cap_verdict;
		c->cap_verdict = 0;
		c->cap_id = 0;
		return v > 0 ? SESS_COMMIT_OK : SESS_COMMIT_FAIL;
	}
	if (c->cap_failed) {
		c->cap_id = 0;
		return SESS_COMMIT_FAIL;
	}
	if (!push_facts(c, REC_COMMIT)) {
		c->w->st.capture_dropped++;
		cap_abort(ring_of(c), c->cap_id);
		c->cap_id = 0;
		return SESS_COMMIT_FAIL;
	}
	c->cap_waiting = 1;
	c->cap_next = c->w->capwait;
	c->w->capwait = c;
	return SESS_COMMIT_WAIT;
}

/* capture_end - the message's verdict was sent. */
void capture_end(struct conn *c, bool accepted)
{
	struct cap_ring *r = ring_of(c);

	if (!c->cap_id)
		return;
	if (c->cap_failed || !accepted) {
		if (!c->cap_failed)
			cap_abort(r, c->cap_id);
		c->cap_id = 0;
		return;
	}
	if (!push_facts(c, REC_END)) {
		c->w->st.capture_dropped++;
		cap_abort(r, c->cap_id);
	}
	c->cap_id = 0;
}

/* capture_envelope - MAIL FROM and RCPT TO, kept per connection for the
 * index (one buffer per connection, reused by its messages). */
void capture_envelope(struct conn *c, char kind, const char *addr, size_t n)
{
	if (kind == 'M')
		c->env_len = c->env_omitted = 0;
	if (c->env_len + n + 2 > CAPTURE_ENV_MAX) {
		/* bounded per connection whatever --max-rcpt allows; the index
		 * says how many were left out */
		c->env_omitted++;
		return;
	}
	if (c->env_len + n + 2 > c->env_cap) {
		size_t ncap = c->env_cap ? c->env_cap * 2 : 512;
		while (ncap < c->env_len + n + 2)
			ncap *= 2;
		char *e = realloc(c->env, ncap);
		if (!e)
			return;
		c->env = e;
		c->env_cap = ncap;
	}
	c->env[c->env_len++] = kind;
	memcpy(c->env + c->env_len, addr, n);
	c->env_len += n;
	c->env[c->env_len++] = 0;
}

/* capture_release - the connection closes: a message it was sending (the
 * client hung up in DATA, a reset, a timeout) is not finished; one whose
 * commit was sent is the writer's to finish (stored, never acknowledged). */
void capture_release(struct conn *c)
{
	if (c->cap_id && !c->cap_failed && !c->cap_waiting)
		cap_abort(ring_of(c), c->cap_id);
	c->cap_id = 0;
}

/* capture_poll_done - the writer's verdicts for this worker's waiting
 * sessions (--capture-strict): wake each. */
void capture_poll_done(struct worker *w)
{
	struct cap_ring *r = w->capring;
	uint64_t t = atomic_load_explicit(&r->done_tail, memory_order_relaxed);
	uint64_t h = atomic_load_explicit(&r->done_head, memory_order_acquire);

	if (r->npend)
		cap_abort_flush(r);

	for (; t != h; t++) {
		struct done d = r->done[t % DONE_SIZE];
		for (struct conn **pc = &w->capwait; *pc; pc = &(*pc)->cap_next)
			if ((*pc)->cap_id == d.id) {
				struct conn *c = *pc;
				*pc = c->cap_next;
				c->cap_waiting = 0;
				c->cap_verdict = d.ok ? 1 : -1;
				conn_resume_now(c);
				break;
			}
	}
	atomic_store_explicit(&r->done_tail, t, memory_order_release);
}

/* --- the writer ------------------------------------------------------------ */

static struct wmsg **slot(uint64_t id)
{
	struct wmsg **p = &cap.tab[(id * 0x9E3779B97F4A7C15ull) >> 52];

	while (*p && (*p)->id != id)
		p = &(*p)->next;
	return p;
}

static void wfail(struct wmsg *m)
{
	if (!m->failed) {
		m->failed = true;
		atomic_fetch_add(&cap.srv->capture_write_errors, 1);
	}
}

static void verdict(struct server *srv, uint64_t id, bool ok)
{
	struct cap_ring *r = srv->workers[id >> 48].capring;
	uint64_t h = atomic_load_explicit(&r->done_head, memory_order_relaxed);

	while (h - atomic_load_explicit(&r->done_tail, memory_order_acquire) >= DONE_SIZE)
		usleep(100); /* the worker drains these every loop turn */
	r->done[h % DONE_SIZE] = (struct done){id, ok};
	atomic_store_explicit(&r->done_head, h + 1, memory_order_release);
	worker_wake(&srv->workers[id >> 48]);
}

/* finish - rename into new/ and index the message; false on failure. */
/* index_line - the message's JSON line from the facts its worker sent:
 * file, time, client, HELO, envelope, size, TLS and AUTH. */
static char *index_line(const struct wmsg *m, const char *p, size_t n)
{
	struct facts f;
	struct tm tm;
	char t[64], client[INET6_ADDRSTRLEN] = "";

	if (n < sizeof(f))
		return NULL;
	memcpy(&f, p, sizeof(f));
	if (sizeof(f) + f.helo_len + f.env_len != n)
		return NULL;
	const char *helo = p + sizeof(f), *env = helo + f.helo_len, *end = env + f.env_len;
	time_t sec = (time_t)f.sec;
	gmtime_r(&sec, &tm);
	strftime(t, sizeof(t), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(t + strlen(t), sizeof(t) - strlen(t), ".%06uZ", (unsigned)f.usec);
	if (f.family == 4)
		inet_ntop(AF_INET, f.ip, client, sizeof(client));
	else if (f.family == 6)
		inet_ntop(AF_INET6, f.ip, client, sizeof(client));

	json_t *o = json_object(), *rcpts = json_array();
	json_object_set_new(o, "file", json_string(m->name));
	json_object_set_new(o, "time", json_string(t));
	json_object_set_new(o, "client", *client ? json_string(client) : json_null());
	json_object_set_new(o, "helo", f.helo_len ? json_stringn(helo, f.helo_len) : json_null());
	json_object_set_new(o, "mail_from", json_null());
	/* env holds "M<from>\0R<rcpt>\0R<rcpt>\0..." */
	for (const char *q = env; q < end;) {
		const char *z = memchr(q, 0, (size_t)(end - q));
		if (!z)
			break;
		if (*q == 'M')
			json_object_set_new(o, "mail_from",
			                    json_stringn(q + 1, (size_t)(z - q - 1)));
		else
			json_array_append_new(rcpts, json_stringn(q + 1, (size_t)(z - q - 1)));
		q = z + 1;
	}
	json_object_set_new(o, "rcpt_to", rcpts);
	if (f.rcpts_omitted)
		json_object_set_new(o, "rcpt_to_omitted", json_integer(f.rcpts_omitted));
	json_object_set_new(o, "size", json_integer((json_int_t)f.size));
	json_object_set_new(o, "tls", json_boolean(f.tls));
	json_object_set_new(o, "auth", json_boolean(f.auth));
	char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(o);
	return line;
}

static bool finish(struct wmsg *m, const char *facts, size_t n)
{
	char from[4200], to[4200];
	const struct server_cfg *cfg = &cap.srv->cfg;

	snprintf(from, sizeof(from), "%s/tmp/%s", cap.dir, m->name);
	snprintf(to, sizeof(to), "%s/new/%s", cap.dir, m->name);
	/* --capture-strict acknowledges only what survives a crash: like a
	 * Maildir delivery agent, make the data durable before the rename that
	 * publishes it, and the rename durable before the 250. */
	bool durable = cfg->capture_strict;
	if (m->failed || (durable && fsync(m->fd)) || close(m->fd)) {
		if (!m->failed)
			wfail(m);
		m->fd = -1;
		unlink(from);
		return false;
	}
	m->fd = -1;
	if (cfg->capture_max_bytes &&
	    atomic_fetch_add(&cap.bytes, m->size) + m->size > cfg->capture_max_bytes) {
		atomic_fetch_sub(&cap.bytes, m->size);
		atomic_fetch_add(&cap.srv->capture_over_max, 1);
		unlink(from);
		return false;
	}
	if (rename(from, to) || (durable && fsync(cap.newdir))) {
		wfail(m);
		unlink(access(to, F_OK) ? from : to);
		return false;
	}
	char *line = index_line(m, facts, n);
	if (!line || fprintf(cap.index, "%s\n", line) < 0 || fflush(cap.index) ||
	    (durable && fdatasync(fileno(cap.index)))) {
		free(line);
		wfail(m);
		unlink(to); /* not indexed: not delivered */
		return false;
	}
	free(line);
	atomic_fetch_add(&cap.srv->captured, 1);
	return true;
}

static void handle(struct server *srv, const struct rec *h, const char *p)
{
	struct wmsg **sp = slot(h->id), *m = *sp;

	switch (h->type) {
	case REC_BEGIN: {
		struct timeval tv;
		char path[4200];
		m = calloc(1, sizeof(*m));
		if (!m)
			return;
		m->id = h->id;
		gettimeofday(&tv, NULL);
		/* Maildir: time.M<usec>P<pid>Q<id>.host - unique per delivery */
		snprintf(m->name, sizeof(m->name), "%ld.M%06ldP%dQ%llx.%s", (long)tv.tv_sec,
		         (long)tv.tv_usec, (int)getpid(), (unsigned long long)h->id, cap.host);
		snprintf(path, sizeof(path), "%s/tmp/%s", cap.dir, m->name);
		m->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (m->fd < 0)
			wfail(m);
		*sp = m;
		break;
	}
	case REC_DATA:
		if (m && !m->failed) {
			size_t off = 0;
			while (off < h->len) {
				ssize_t k = write(m->fd, p + off, h->len - off);
				if (k <= 0) {
					wfail(m);
					break;
				}
				off += (size_t)k;
			}
			m->size += h->len;
		}
		break;
	case REC_END:
	case REC_COMMIT:
	case REC_ABORT: {
		bool ok = false;
		if (m && h->type != REC_ABORT)
			ok = finish(m, p, h->len);
		if (m) {
			if (m->fd >= 0) {
				char path[4200];
				close(m->fd);
				snprintf(path, sizeof(path), "%s/tmp/%s", cap.dir, m->name);
				unlink(path);
			}
			*sp = m->next;
			free(m);
		}
		if (h->type == REC_COMMIT)
			verdict(srv, h->id, ok);
		break;
	}
	default:
		break;
	}
}

static void *writer_main(void *arg)
{
	struct server *srv = arg;
	char *scratch = malloc(DATA_CHUNK + 65536);

	for (;;) {
		bool any = false;
		for (int i = 0; i < srv->nworkers; i++) {
			struct cap_ring *r = srv->workers[i].capring;
			uint64_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
			uint64_t h = atomic_load_explicit(&r->head, memory_order_acquire);
			while (t != h) {
				struct rec rh;
				ring_copy_out(r, t, &rh, sizeof(rh));
				/* records are bounded by construction: DATA chunks by
				 * DATA_CHUNK, facts by CAPTURE_ENV_MAX + a HELO */
				if (rh.len > DATA_CHUNK + 65536)
					abort();
				ring_copy_out(r, t + sizeof(rh), scratch, rh.len);
				handle(srv, &rh, scratch);
				t += sizeof(rh) + rh.len;
				atomic_store_explicit(&r->tail, t, memory_order_release);
				any = true;
			}
		}
		if (!any) {
			if (atomic_load(&cap.stop))
				break;
			struct pollfd pfd = {.fd = cap.kick, .events = POLLIN};
			uint64_t v;
			if (poll(&pfd, 1, 50) > 0)
				(void)!read(cap.kick, &v, sizeof(v));
		}
	}
	free(scratch);
	return NULL;
}

/* --- setup ----------------------------------------------------------------- */

int capture_setup(struct server *srv, char *err, size_t errlen)
{
	const struct server_cfg *cfg = &srv->cfg;
	static const char *const sub[] = {"", "/tmp", "/new", "/cur"};
	char path[3200], ipath[3200];

	cap.srv = srv;
	snprintf(cap.dir, sizeof(cap.dir), "%s", cfg->capture_dir);
	for (size_t i = 0; i < sizeof(sub) / sizeof(sub[0]); i++) {
		snprintf(path, sizeof(path), "%s%s", cap.dir, sub[i]);
		if (mkdir(path, 0755) && errno != EEXIST) {
			snprintf(err, errlen, "--capture %s: %s", path, strerror(errno));
			return -1;
		}
	}
	snprintf(ipath, sizeof(ipath), "%s/index.jsonl", cap.dir);
	cap.index = fopen(ipath, "a");
	if (!cap.index) {
		snprintf(err, errlen, "--capture %s: %s", ipath, strerror(errno));
		return -1;
	}
	snprintf(path, sizeof(path), "%s/new", cap.dir);
	cap.newdir = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cap.newdir < 0) {
		snprintf(err, errlen, "--capture %s: %s", path, strerror(errno));
		return -1;
	}
	/* the Maildir name's host part must not hold '/' or ':' */
	snprintf(cap.host, sizeof(cap.host), "%.63s", cfg->hostname);
	for (char *q = cap.host; *q; q++)
		if (*q == '/' || *q == ':')
			*q = '_';
	cap.kick = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	for (int i = 0; i < srv->nworkers; i++) {
		struct cap_ring *r = calloc(1, sizeof(*r));
		if (!r || !(r->buf = malloc(RING_SIZE)) || cap.kick < 0) {
			snprintf(err, errlen, "--capture: out of memory");
			return -1;
		}
		srv->workers[i].capring = r;
	}
	if (pthread_create(&cap.thread, NULL, writer_main, srv)) {
		snprintf(err, errlen, "--capture: cannot start the writer thread");
		return -1;
	}
	return 0;
}

/* capture_stop - after the workers: write what they queued, then stop. */
void capture_stop(struct server *srv)
{
	if (!cap.srv)
		return;
	atomic_store(&cap.stop, 1);
	uint64_t one = 1;
	(void)!write(cap.kick, &one, sizeof(one));
	pthread_join(cap.thread, NULL);
	for (size_t i = 0; i < sizeof(cap.tab) / sizeof(cap.tab[0]); i++)
		while (cap.tab[i]) {
			struct wmsg *m = cap.tab[i];
			char path[4200];
			cap.tab[i] = m->next;
			if (m->fd >= 0)
				close(m->fd);
			snprintf(path, sizeof(path), "%s/tmp/%s", cap.dir, m->name);
			unlink(path); /* unfinished: never acknowledged */
			free(m);
		}
	fclose(cap.index);
	close(cap.newdir);
	close(cap.kick);
	for (int i = 0; i < srv->nworkers; i++) {
		if (srv->workers[i].capring) {
			free(srv->workers[i].capring->buf);
			free(srv->workers[i].capring->pend);
		}
		free(srv->workers[i].capring);
		srv->workers[i].capring = NULL;
	}
}

const char *capture_dir(void)
{
	return cap.srv ? cap.dir : NULL;
}
