/*
 * stats.c - smtpsink's live progress line, final summary and JSON report
 *
 * Workers publish their counters with atomic stores (worker.c); here the
 * main thread adds them up.  The counter lists in sess.h (SESS_COUNTERS)
 * and server.h (SERVER_COUNTERS) are the only place counters are named, so
 * the summary and the JSON report always carry the same set.  Nothing in
 * this file runs on a worker's hot path.
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "server.h"
#include "sink/config.h"

static const char *const server_counter_names[] = {
#define SERVER_X_NAME(f, name, doc) name,
    SERVER_COUNTERS(SERVER_X_NAME)
#undef SERVER_X_NAME
};
#define SERVER_NCOUNTERS (sizeof(server_counter_names) / sizeof(server_counter_names[0]))

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
}

void stats_current(struct server *srv, struct server_stats *tot, bool live)
{
	uint64_t *d = (uint64_t *)tot;
	const uint64_t *b = (const uint64_t *)&srv->base;

	stats_sum(srv, tot, live);
	pthread_mutex_lock(&srv->base_lock);
	for (size_t i = 0; i < sizeof(*tot) / sizeof(uint64_t); i++)
		d[i] -= b[i];
	pthread_mutex_unlock(&srv->base_lock);
}

/* stats_reset - from now on, report counts from zero (the workers' own
 * counters are theirs alone; only the baseline moves). */
void stats_reset(struct server *srv)
{
	struct server_stats now;

	stats_sum(srv, &now, true);
	pthread_mutex_lock(&srv->base_lock);
	srv->base = now;
	srv->base_rejected = atomic_load(&srv->rejected);
	srv->base_accept_errors = atomic_load(&srv->accept_errors);
	pthread_mutex_unlock(&srv->base_lock);
	atomic_store(&srv->conns_peak, atomic_load(&srv->conns));
}

uint64_t stats_rejected(struct server *srv)
{
	pthread_mutex_lock(&srv->base_lock);
	uint64_t v = atomic_load(&srv->rejected) - srv->base_rejected;
	pthread_mutex_unlock(&srv->base_lock);
	return v;
}

uint64_t stats_accept_errors(struct server *srv)
{
	pthread_mutex_lock(&srv->base_lock);
	uint64_t v = atomic_load(&srv->accept_errors) - srv->base_accept_errors;
	pthread_mutex_unlock(&srv->base_lock);
	return v;
}

static const uint64_t *server_counters(const struct server_stats *t)
{
	return &t->conns_accepted; /* SERVER_COUNTERS fields are contiguous */
}

static uint64_t errors_total(const struct server_stats *t)
{
	const struct sess_stats *s = &t->sess;

	return s->err_unknown + s->err_syntax + s->err_sequence + s->err_size + s->err_rcpt_limit +
	       s->err_too_long + s->err_bare_lf + s->err_utf8 + t->io_errors + t->out_overflow +
	       t->in_overflow + t->close_timeouts;
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
	fprintf(stderr,
	        "[%7.1fs] conns %llu  msgs %llu  %.0f msg/s  %.2f MB/s  rejected %llu  errors "
	        "%llu  faults %llu\n",
	        (double)(now - srv->start_ns) / 1e9,
	        (unsigned long long)atomic_load_explicit(&srv->conns, memory_order_relaxed),
	        (unsigned long long)t.sess.msgs, (double)(t.sess.msgs - *last_msgs) / dt,
	        (double)(t.recv_bytes - *last_bytes) / dt / 1e6,
	        (unsigned long long)t.sess.rejected_msgs, (unsigned long long)errors_total(&t),
	        (unsigned long long)(t.faults_injected + t.greylisted + t.rate_limited));
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

static const char *backend_name(const struct server *srv)
{
	return srv->backend == IO_URING ? "io_uring" : "epoll";
}

/* print_nonzero - "name value" pairs, wrapped, for one counter list. */
static int print_nonzero(const char *const *names, const uint64_t *v, size_t n, int col)
{
	for (size_t i = 0; i < n; i++) {
		char item[96];
		int len;
		if (!v[i])
			continue;
		len = snprintf(item, sizeof(item), " %s %llu", names[i], (unsigned long long)v[i]);
		if (col + len > 96) {
			fputs("\n ", stderr);
			col = 1;
		}
		fputs(item, stderr);
		col += len;
	}
	return col;
}

void stats_summary(struct server *srv, const struct server_stats *t, double secs)
{
	const struct sess_stats *s = &t->sess;
	double cpu = cpu_seconds();
	int col;

	if (srv->cfg.verify)
		fprintf(stderr,
		        "smtpsink verify: %llu ok, %llu corrupt, %llu duplicate, %llu unstamped, "
		        "%llu from another run, %llu out of range\n",
		        (unsigned long long)t->verify.ok, (unsigned long long)t->verify.corrupt,
		        (unsigned long long)t->verify.duplicate,
		        (unsigned long long)t->verify.unstamped,
		        (unsigned long long)t->verify.other_run,
		        (unsigned long long)t->verify.out_of_range);
	fprintf(stderr,
	        "smtpsink summary (%s, %d workers, %.1f s)\n"
	        "  connections  %llu accepted, %llu rejected (max-conns), peak %llu\n"
	        "  messages     %llu accepted (%.0f/s), %llu rejected, %llu bytes, %llu rcpts\n"
	        "  cpu          %.2f s (%.2f us/msg), max RSS %ld KiB\n"
	        "  counters    ",
	        backend_name(srv), srv->nworkers, secs, (unsigned long long)t->conns_accepted,
	        (unsigned long long)stats_rejected(srv),
	        (unsigned long long)atomic_load(&srv->conns_peak), (unsigned long long)s->msgs,
	        secs > 0 ? (double)s->msgs / secs : 0.0, (unsigned long long)s->rejected_msgs,
	        (unsigned long long)s->msg_bytes, (unsigned long long)s->rcpts, cpu,
	        s->msgs ? cpu * 1e6 / (double)s->msgs : 0.0, max_rss_kib());
	col = print_nonzero(sess_counter_names, (const uint64_t *)s, SESS_NCOUNTERS, 14);
	print_nonzero(server_counter_names, server_counters(t), SERVER_NCOUNTERS, col);
	fputc('\n', stderr);
}

/* stats_report - the final report (README "JSON summary"), also what
 * --expect checks, so both always agree. */
json_t *stats_report(struct server *srv, const struct server_stats *t, double secs)
{
	json_t *root = json_object(), *ctr = json_object();
	const uint64_t *sv = (const uint64_t *)&t->sess, *xv = server_counters(t);
	struct utsname un;
	char kernel[300];

	uname(&un);
	snprintf(kernel, sizeof(kernel), "%s %s", un.sysname, un.release);
	for (size_t i = 0; i < SESS_NCOUNTERS; i++)
		json_object_set_new(ctr, sess_counter_names[i], json_integer((json_int_t)sv[i]));
	for (size_t i = 0; i < SERVER_NCOUNTERS; i++)
		json_object_set_new(ctr, server_counter_names[i], json_integer((json_int_t)xv[i]));
	json_object_set_new(ctr, "conns_peak",
	                    json_integer((json_int_t)atomic_load(&srv->conns_peak)));
	json_object_set_new(ctr, "conns_rejected", json_integer((json_int_t)stats_rejected(srv)));
	json_object_set_new(ctr, "accept_errors",
	                    json_integer((json_int_t)stats_accept_errors(srv)));
	if (srv->cfg.capture_dir) {
		/* the writer thread's part of the capture counters */
		json_object_set_new(ctr, "captured",
		                    json_integer((json_int_t)atomic_load(&srv->captured)));
		json_object_set_new(
		    ctr, "capture_dropped",
		    json_integer((json_int_t)(t->capture_dropped +
		                              atomic_load(&srv->capture_write_errors))));
		json_object_set_new(
		    ctr, "capture_skipped",
		    json_integer(
		        (json_int_t)(t->capture_skipped + atomic_load(&srv->capture_over_max))));
	}
	json_object_set_new(root, "program", json_string("smtpsink"));
	json_object_set_new(root, "schema", json_integer(1));
	json_object_set_new(root, "version", json_string(SINK_VERSION));
	json_object_set_new(root, "git_rev", json_string(SINK_GIT_REV));
	json_object_set_new(root, "kernel", json_string(kernel));
	json_object_set_new(root, "backend", json_string(backend_name(srv)));
	json_object_set_new(root, "workers", json_integer(srv->nworkers));
	json_object_set_new(root, "seconds", json_real(secs));
	json_object_set_new(root, "cpu_seconds", json_real(cpu_seconds()));
	json_object_set_new(root, "max_rss_kib", json_integer(max_rss_kib()));
	const char *why = atomic_load_explicit(&srv->stop_reason, memory_order_relaxed);
	json_object_set_new(root, "stop_reason", why ? json_string(why) : json_null());
	json_object_set_new(root, "counters", ctr);
	if (srv->cfg.sess.faults)
		json_object_set_new(root, "faults", faults_report(srv));
	if (srv->cfg.verify) {
		char run[24];
		snprintf(run, sizeof(run), "%016llx", (unsigned long long)srv->verify_run);
		json_object_set_new(root, "verify",
		                    json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I}", "run_id", run,
		                              "ok", (json_int_t)t->verify.ok, "corrupt",
		                              (json_int_t)t->verify.corrupt, "duplicate",
		                              (json_int_t)t->verify.duplicate, "unstamped",
		                              (json_int_t)t->verify.unstamped, "other_run",
		                              (json_int_t)t->verify.other_run, "out_of_range",
		                              (json_int_t)t->verify.out_of_range));
	}
	return root;
}

/* stats_write - the report to the descriptor opened at start-up, so an
 * unwritable path fails before the server serves anyone. */
int stats_write(json_t *root, int fd)
{
	int ret;

	if (ftruncate(fd, 0) || lseek(fd, 0, SEEK_SET) < 0)
		return -1;
	ret = json_dumpfd(root, fd, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	if (ret == 0 && write(fd, "\n", 1) != 1)
		ret = -1;
	return ret;
}

/* expect_lookup - "name" in counters, or "section.name" (verify.ok). */
static json_t *expect_lookup(json_t *root, const char *name)
{
	const char *dot = strchr(name, '.');
	char sect[64];

	if (!dot)
		return json_object_get(json_object_get(root, "counters"), name);
	snprintf(sect, sizeof(sect), "%.*s", (int)(dot - name), name);
	return json_object_get(json_object_get(root, sect), dot + 1);
}

int stats_expect(struct server *srv, json_t *report)
{
	static const char *const opname[] = {"=", "!=", ">=", "<=", ">", "<"};
	int failed = 0;
	json_t *root = report;

	if (!root) {
		struct server_stats zero;
		memset(&zero, 0, sizeof(zero));
		root = stats_report(srv, &zero, 0);
	}
	for (int i = 0; i < srv->cfg.nexpects; i++) {
		const struct expect *e = &srv->cfg.expects[i];
		json_t *v = expect_lookup(root, e->name);
		uint64_t x;
		bool ok;

		if (!json_is_integer(v)) {
			if (!report)
				usage_error("--expect '%s': no counter '%s' in the report%s",
				            e->text, e->name,
				            strchr(e->name, '.')
				                ? ""
				                : " (see the README's counter table)");
			continue;
		}
		if (!report)
			continue;
		x = (uint64_t)json_integer_value(v);
		switch (e->op) {
		case EXP_EQ:
			ok = x == e->value;
			break;
		case EXP_NE:
			ok = x != e->value;
			break;
		case EXP_GE:
			ok = x >= e->value;
			break;
		case EXP_LE:
			ok = x <= e->value;
			break;
		case EXP_GT:
			ok = x > e->value;
			break;
		default:
			ok = x < e->value;
			break;
		}
		if (!ok) {
			failed++;
			fprintf(stderr, "%s: expectation failed: %s%s%llu, but %s is %llu\n", prog,
			        e->name, opname[e->op], (unsigned long long)e->value, e->name,
			        (unsigned long long)x);
		}
	}
	if (!report)
		json_decref(root);
	return failed;
}
