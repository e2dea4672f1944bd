/*
 * stats.c - smtpsink's live progress line, final summary and JSON report
 *
 * Workers publish their counters with relaxed atomic stores (worker.c);
 * here the main thread adds them up.  Nothing in this file runs on a
 * worker's hot path.
 */
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "server.h"
#include "sink/config.h"

static void add_all(struct server_stats *dst, const struct server_stats *src, bool live)
{
	uint64_t *d = (uint64_t *)dst;
	const uint64_t *s = (const uint64_t *)src;

	for (size_t i = 0; i < sizeof(*dst) / sizeof(uint64_t); i++)
		d[i] += live ? __atomic_load_n(&s[i], __ATOMIC_RELAXED) : s[i];
}

/* stats_sum - add up every worker (live: their published snapshots). */
void stats_sum(struct server *srv, struct server_stats *tot, bool live)
{
	memset(tot, 0, sizeof(*tot));
	for (int i = 0; i < srv->nworkers; i++)
		add_all(tot, live ? &srv->workers[i].snap : &srv->workers[i].st, live);
	tot->conns_rejected += atomic_load(&srv->rejected);
	tot->accept_errors += atomic_load(&srv->accept_errors);
}

static uint64_t errors_total(const struct server_stats *t)
{
	const struct sess_stats *s = &t->sess;

	return s->err_unknown + s->err_syntax + s->err_sequence + s->err_size + s->err_rcpt_limit +
	       s->err_too_long + s->err_bare_lf + s->err_utf8 + t->io_errors + t->out_overflow +
	       t->conns_rejected;
}

/* stats_progress - one line: connections, msgs/s, MB/s, errors. */
void stats_progress(struct server *srv, uint64_t now, uint64_t *last_msgs, uint64_t *last_bytes,
                    uint64_t *last_ns)
{
	struct server_stats t;
	double dt = (double)(now - *last_ns) / 1e9;

	stats_sum(srv, &t, true);
	if (dt <= 0)
		return;
	fprintf(
	    stderr,
	    "[%7.1fs] conns %llu  msgs %llu  %.0f msg/s  %.2f MB/s  rejected %llu  errors %llu\n",
	    (double)(now - srv->start_ns) / 1e9, (unsigned long long)t.conns_active,
	    (unsigned long long)t.sess.msgs, (double)(t.sess.msgs - *last_msgs) / dt,
	    (double)(t.recv_bytes - *last_bytes) / dt / 1e6,
	    (unsigned long long)t.sess.rejected_msgs, (unsigned long long)errors_total(&t));
	*last_msgs = t.sess.msgs;
	*last_bytes = t.recv_bytes;
	*last_ns = now;
}

static double cpu_seconds(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static long max_rss_kib(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_maxrss;
}

void stats_summary(struct server *srv, const struct server_stats *t, double secs)
{
	if (srv->cfg.verify)
		fprintf(stderr,
		        "smtpsink verify: %llu ok, %llu corrupt, %llu duplicate, %llu unstamped, "
		        "%llu from another run\n",
		        (unsigned long long)t->verify.ok, (unsigned long long)t->verify.corrupt,
		        (unsigned long long)t->verify.duplicate,
		        (unsigned long long)t->verify.unstamped,
		        (unsigned long long)t->verify.other_run);
	const struct sess_stats *s = &t->sess;
	double cpu = cpu_seconds();

	fprintf(stderr,
	        "smtpsink summary (%s, %d workers, %.1f s)\n"
	        "  connections  %llu accepted, %llu rejected (max-conns), peak %llu\n"
	        "  messages     %llu accepted (%.0f/s), %llu rejected, %llu bytes, %llu rcpts\n"
	        "  errors       unknown %llu, syntax %llu, sequence %llu, size %llu, rcpt-limit "
	        "%llu, too-long %llu, bare-lf %llu, utf8 %llu, error-limit %llu\n"
	        "  hangups      %llu idle timeouts, %llu peer closed (%llu inside DATA), %llu io "
	        "errors, %llu reply overflow\n"
	        "  input        %llu bare LF, %llu bare CR, %llu long body lines, %llu pipelining "
	        "violations\n"
	        "  cpu          %.2f s (%.2f us/msg), max RSS %ld KiB\n",
	        srv->backend == IO_URING ? "io_uring" : "epoll", srv->nworkers, secs,
	        (unsigned long long)t->conns_accepted, (unsigned long long)t->conns_rejected,
	        (unsigned long long)t->conns_peak, (unsigned long long)s->msgs,
	        secs > 0 ? (double)s->msgs / secs : 0.0, (unsigned long long)s->rejected_msgs,
	        (unsigned long long)s->msg_bytes, (unsigned long long)s->rcpts,
	        (unsigned long long)s->err_unknown, (unsigned long long)s->err_syntax,
	        (unsigned long long)s->err_sequence, (unsigned long long)s->err_size,
	        (unsigned long long)s->err_rcpt_limit, (unsigned long long)s->err_too_long,
	        (unsigned long long)s->err_bare_lf, (unsigned long long)s->err_utf8,
	        (unsigned long long)s->err_limit_close, (unsigned long long)s->timeouts,
	        (unsigned long long)t->peer_closed, (unsigned long long)t->peer_closed_in_content,
	        (unsigned long long)t->io_errors, (unsigned long long)t->out_overflow,
	        (unsigned long long)s->bare_lf_lines, (unsigned long long)s->bare_cr,
	        (unsigned long long)s->long_body_lines,
	        (unsigned long long)s->pipelining_violations, cpu,
	        s->msgs ? cpu * 1e6 / (double)s->msgs : 0.0, max_rss_kib());
}

#define J(name, val) fprintf(f, "    \"%s\": %llu,\n", name, (unsigned long long)(val))

int stats_json(struct server *srv, const struct server_stats *t, double secs, const char *path)
{
	const struct sess_stats *s = &t->sess;
	struct utsname un;
	FILE *f = fopen(path, "w");

	if (!f)
		return -1;
	uname(&un);
	fprintf(f,
	        "{\n  \"program\": \"smtpsink\",\n  \"version\": \"%s\",\n  \"git_rev\": \"%s\",\n",
	        SINK_VERSION, SINK_GIT_REV);
	fprintf(f, "  \"kernel\": \"%s %s\",\n  \"backend\": \"%s\",\n  \"workers\": %d,\n",
	        un.sysname, un.release, srv->backend == IO_URING ? "io_uring" : "epoll",
	        srv->nworkers);
	fprintf(f, "  \"seconds\": %.3f,\n  \"cpu_seconds\": %.3f,\n  \"max_rss_kib\": %ld,\n",
	        secs, cpu_seconds(), max_rss_kib());
	fprintf(f, "  \"counters\": {\n");
	J("sessions", s->sessions);
	J("messages", s->msgs);
	J("message_bytes", s->msg_bytes);
	J("recipients", s->rcpts);
	J("commands", s->cmds);
	J("rejected_messages", s->rejected_msgs);
	J("err_unknown", s->err_unknown);
	J("err_syntax", s->err_syntax);
	J("err_sequence", s->err_sequence);
	J("err_size", s->err_size);
	J("err_rcpt_limit", s->err_rcpt_limit);
	J("err_too_long", s->err_too_long);
	J("err_bare_lf", s->err_bare_lf);
	J("err_utf8", s->err_utf8);
	J("err_limit_close", s->err_limit_close);
	J("bare_lf_lines", s->bare_lf_lines);
	J("bare_cr", s->bare_cr);
	J("long_body_lines", s->long_body_lines);
	J("pipelining_violations", s->pipelining_violations);
	J("timeouts", s->timeouts);
	J("shutdown_421", s->shutdowns);
	J("conns_accepted", t->conns_accepted);
	J("conns_closed", t->conns_closed);
	J("conns_peak", t->conns_peak);
	J("conns_rejected", t->conns_rejected);
	J("accept_errors", t->accept_errors);
	J("io_errors", t->io_errors);
	J("peer_closed", t->peer_closed);
	J("peer_closed_in_content", t->peer_closed_in_content);
	J("out_overflow", t->out_overflow);
	J("read_pauses", t->read_pauses);
	J("enobufs", t->enobufs);
	J("short_sends", t->short_sends);
	J("recv_bytes", t->recv_bytes);
	J("loops", t->loops);
	fprintf(f, "    \"cqes\": %llu\n  }", (unsigned long long)t->cqes);
	if (srv->cfg.verify)
		fprintf(
		    f,
		    ",\n  \"verify\": {\"run_id\": \"%016llx\", \"ok\": %llu, \"corrupt\": %llu, "
		    "\"duplicate\": %llu, \"unstamped\": %llu, \"other_run\": %llu}",
		    (unsigned long long)srv->verify_run, (unsigned long long)t->verify.ok,
		    (unsigned long long)t->verify.corrupt, (unsigned long long)t->verify.duplicate,
		    (unsigned long long)t->verify.unstamped,
		    (unsigned long long)t->verify.other_run);
	fprintf(f, "\n}\n");
	return fclose(f);
}
