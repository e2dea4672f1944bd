/*
 * http.c - smtpsink's HTTP admin endpoint (--http ADDR:PORT), with
 * libmicrohttpd in its own thread:
 *
 *   GET  /metrics          Prometheus text exposition (format 0.0.4)
 *   GET  /livez            200 while the process runs
 *   GET  /readyz           200 once listening, 503 while stopping
 *   GET  /api/v1/stats     the --json report, live
 *   POST /api/v1/reset     zero the counters (test isolation)
 *
 * A scrape never touches a worker: workers publish their counters (atomic
 * stores, worker.c) and this thread adds the snapshots up.  Reset keeps a
 * baseline that every reader subtracts (stats_current), so nothing a worker
 * owns is ever written from here.  Prometheus sees a reset as a counter
 * reset, which rate() handles.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <jansson.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "server.h"
#include "sink/proxy.h"
#include "sink/config.h"

static struct MHD_Daemon *daemon_;

/* A growing text buffer for the exposition. */
struct text {
	char *p;
	size_t len, cap;
};

__attribute__((format(printf, 2, 3))) static void tprintf(struct text *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(t->p ? t->p + t->len : NULL, t->p ? t->cap - t->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0)
			return;
		if (t->p && t->len + (size_t)n < t->cap) {
			t->len += (size_t)n;
			return;
		}
		size_t cap = t->cap ? t->cap * 2 : 16384;
		while (cap < t->len + (size_t)n + 1)
			cap *= 2;
		char *p = realloc(t->p, cap);
		if (!p)
			return;
		t->p = p;
		t->cap = cap;
	}
}

static void metric(struct text *t, const char *name, const char *type, const char *help)
{
	tprintf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void counter(struct text *t, const char *name, const char *help, uint64_t v)
{
	metric(t, name, "counter", help);
	tprintf(t, "%s %llu\n", name, (unsigned long long)v);
}

static void gauge(struct text *t, const char *name, const char *help, double v)
{
	metric(t, name, "gauge", help);
	tprintf(t, "%s %.17g\n", name, v);
}

static double process_cpu(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* proc_status_kib - a "Name:  N kB" line of /proc/self/status. */
static double proc_status_bytes(const char *key)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	size_t kl = strlen(key);
	double v = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, kl) && line[kl] == ':') {
			v = strtod(line + kl + 1, NULL) * 1024;
			break;
		}
	fclose(f);
	return v;
}

static double open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	double n = 0;

	if (!d)
		return 0;
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n - 1; /* the directory's own descriptor */
}

/* label - a Prometheus label value: backslash, double quote and line feed
 * escaped, as the text exposition format requires. */
static void label(struct text *t, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			tprintf(t, "\\%c", *s);
		else if (*s == '\n')
			tprintf(t, "\\n");
		else
			tprintf(t, "%c", *s);
	}
}

/* fault_rules - per-rule counts of the plan in force (a reload starts them
 * at 0, as the JSON "faults" list does), labelled with the canonical rule. */
static void fault_rules(struct server *srv, struct text *t)
{
	json_t *list = faults_report(srv);
	size_t i;
	json_t *r;

	if (json_array_size(list)) {
		metric(t, "smtpsink_fault_rule_injected_total", "counter",
		       "Faults injected by each --fault rule in force.");
		json_array_foreach(list, i, r)
		{
			tprintf(t, "smtpsink_fault_rule_injected_total{index=\"%zu\",rule=\"", i);
			label(t, json_string_value(json_object_get(r, "rule")));
			tprintf(t, "\"} %lld\n",
			        (long long)json_integer_value(json_object_get(r, "injected")));
		}
	}
	json_decref(list);
}

/* metrics - Prometheus names (https://prometheus.io/docs/practices/naming/):
 * smtpsink_ prefix, _total for counters, base units (bytes, seconds). */
static void metrics(struct server *srv, struct text *t)
{
	struct server_stats st;
	const struct sess_stats *s = &st.sess;
	struct rlimit rl;
	uint64_t cum;

	stats_current(srv, &st, true);
	metric(t, "smtpsink_build_info", "gauge", "Version and I/O backend of this smtpsink.");
	tprintf(t, "smtpsink_build_info{version=\"%s\",git_rev=\"%s\",io_backend=\"%s\"} 1\n",
	        SINK_VERSION, SINK_GIT_REV, srv->backend == IO_URING ? "io_uring" : "epoll");
	counter(t, "smtpsink_connections_total", "Connections given a session.", st.conns_accepted);
	gauge(t, "smtpsink_connections_active", "Connections open now.",
	      (double)atomic_load_explicit(&srv->conns, memory_order_relaxed));
	counter(t, "smtpsink_connections_rejected_total",
	        "Connections refused over --max-conns (421 4.7.0).", stats_rejected(srv));
	counter(t, "smtpsink_sessions_total", "SMTP sessions started.", s->sessions);
	counter(t, "smtpsink_messages_accepted_total", "Messages accepted with 250.", s->msgs);
	metric(t, "smtpsink_messages_rejected_total", "counter",
	       "4xx/5xx replies, by the stage of the session they answered.");
	for (int i = 0; i < SESS_NSTAGES; i++)
		tprintf(t, "smtpsink_messages_rejected_total{stage=\"%s\"} %llu\n",
		        sess_stage_names[i], (unsigned long long)s->refused[i]);
	counter(t, "smtpsink_received_bytes_total", "Octets received from clients.", st.recv_bytes);
	counter(t, "smtpsink_message_bytes_total", "RFC 1870 size of accepted messages.",
	        s->msg_bytes);
	counter(t, "smtpsink_recipients_total", "RCPTs accepted.", s->rcpts);
	/* replies by code: rows of the reply table that share a code add up */
	metric(t, "smtpsink_replies_total", "counter", "Replies sent, by reply code.");
	{
		uint64_t by_code[1000] = {0};
		for (unsigned k = 0; k < SESS_REPLY_KINDS && sess_reply_code(k); k++)
			by_code[atoi(sess_reply_code(k))] += s->replies[k];
		for (int c = 200; c < 600; c++)
			if (by_code[c])
				tprintf(t, "smtpsink_replies_total{code=\"%d\"} %llu\n", c,
				        (unsigned long long)by_code[c]);
	}
	metric(t, "smtpsink_message_size_bytes", "histogram", "Size of accepted messages.");
	cum = 0;
	for (int b = 0; b < SESS_SIZE_BUCKETS; b++) {
		cum += s->size_hist[b];
		if (b < SESS_SIZE_BUCKETS - 1)
			tprintf(t, "smtpsink_message_size_bytes_bucket{le=\"%llu\"} %llu\n",
			        (unsigned long long)sess_size_bounds[b], (unsigned long long)cum);
		else
			tprintf(t, "smtpsink_message_size_bytes_bucket{le=\"+Inf\"} %llu\n",
			        (unsigned long long)cum);
	}
	tprintf(t, "smtpsink_message_size_bytes_sum %llu\nsmtpsink_message_size_bytes_count %llu\n",
	        (unsigned long long)s->msg_bytes, (unsigned long long)cum);
	metric(t, "smtpsink_session_duration_seconds", "histogram",
	       "Time from accept to close, per closed connection.");
	cum = 0;
	for (int b = 0; b < SERVER_SESSION_BUCKETS; b++) {
		cum += st.session_hist[b];
		if (b < SERVER_SESSION_BUCKETS - 1)
			tprintf(t, "smtpsink_session_duration_seconds_bucket{le=\"%g\"} %llu\n",
			        server_session_bounds[b], (unsigned long long)cum);
		else
			tprintf(t, "smtpsink_session_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
			        (unsigned long long)cum);
	}
	tprintf(t,
	        "smtpsink_session_duration_seconds_sum %.3f\n"
	        "smtpsink_session_duration_seconds_count %llu\n",
	        (double)st.session_ms / 1e3, (unsigned long long)cum);
	metric(t, "smtpsink_tls_handshakes_total", "counter", "TLS handshakes, by result.");
	tprintf(t,
	        "smtpsink_tls_handshakes_total{result=\"ok\"} %llu\n"
	        "smtpsink_tls_handshakes_total{result=\"failed\"} %llu\n"
	        "smtpsink_tls_handshakes_total{result=\"timeout\"} %llu\n",
	        (unsigned long long)st.tls_handshakes,
	        (unsigned long long)st.tls_handshake_failures,
	        (unsigned long long)st.tls_handshake_timeouts);
	metric(t, "smtpsink_faults_injected_total", "counter",
	       "Fault decisions, by source: --fault rules and address faults, --greylist, "
	       "--rate-limit, --max-conns-per-ip.");
	tprintf(t,
	        "smtpsink_faults_injected_total{source=\"rule\"} %llu\n"
	        "smtpsink_faults_injected_total{source=\"greylist\"} %llu\n"
	        "smtpsink_faults_injected_total{source=\"rate_limit\"} %llu\n"
	        "smtpsink_faults_injected_total{source=\"conn_limit\"} %llu\n",
	        (unsigned long long)st.faults_injected, (unsigned long long)st.greylisted,
	        (unsigned long long)st.rate_limited, (unsigned long long)st.conns_rejected_per_ip);
	fault_rules(srv, t);
	if (srv->cfg.nproxy_from) {
		metric(t, "smtpsink_proxy_headers_total", "counter",
		       "PROXY protocol headers (--proxy-protocol), by result.");
		tprintf(t,
		        "smtpsink_proxy_headers_total{result=\"proxied\"} %llu\n"
		        "smtpsink_proxy_headers_total{result=\"local\"} %llu\n"
		        "smtpsink_proxy_headers_total{result=\"untrusted\"} %llu\n"
		        "smtpsink_proxy_headers_total{result=\"timeout\"} %llu\n"
		        "smtpsink_proxy_headers_total{result=\"truncated\"} %llu\n",
		        (unsigned long long)st.proxy_proxied, (unsigned long long)st.proxy_local,
		        (unsigned long long)st.proxy_untrusted,
		        (unsigned long long)st.proxy_timeouts,
		        (unsigned long long)st.proxy_truncated);
		const uint64_t bad[] = {st.proxy_bad_not_proxy, st.proxy_bad_v1_too_long,
		                        st.proxy_bad_v1_syntax, st.proxy_bad_v2_version,
		                        st.proxy_bad_v2_family, st.proxy_bad_v2_length,
		                        st.proxy_bad_too_long};
		metric(t, "smtpsink_proxy_bad_headers_total", "counter",
		       "Malformed PROXY headers from --proxy-protocol sources, by reason.");
		for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
			tprintf(t, "smtpsink_proxy_bad_headers_total{reason=\"%s\"} %llu\n",
			        proxy_reason_name((enum proxy_reason)(i + 1)),
			        (unsigned long long)bad[i]);
	}
	if (srv->cfg.capture_dir) {
		metric(t, "smtpsink_capture_messages_total", "counter",
		       "Accepted messages by what --capture did with them.");
		tprintf(
		    t,
		    "smtpsink_capture_messages_total{result=\"stored\"} %llu\n"
		    "smtpsink_capture_messages_total{result=\"dropped\"} %llu\n"
		    "smtpsink_capture_messages_total{result=\"skipped\"} %llu\n",
		    (unsigned long long)atomic_load(&srv->captured),
		    (unsigned long long)(st.capture_dropped +
		                         atomic_load(&srv->capture_write_errors)),
		    (unsigned long long)(st.capture_skipped + atomic_load(&srv->capture_over_max)));
	}
	counter(t, "smtpsink_idle_timeouts_total", "Sessions ended by --idle-timeout (421 4.4.2).",
	        s->timeouts);
	counter(t, "smtpsink_io_errors_total", "Sessions ended by a reset or socket error.",
	        st.io_errors);
	counter(t, "smtpsink_read_pauses_total",
	        "Times reading stopped because a client did not read its replies.", st.read_pauses);
	gauge(t, "smtpsink_up", "1 while serving, 0 while stopping.",
	      atomic_load_explicit(&srv->stop_phase, memory_order_relaxed) ? 0 : 1);
	/* process_* as the Prometheus client libraries name them */
	metric(t, "process_cpu_seconds_total", "counter",
	       "Total user and system CPU time spent in seconds.");
	tprintf(t, "process_cpu_seconds_total %.3f\n", process_cpu());
	gauge(t, "process_resident_memory_bytes", "Resident memory size in bytes.",
	      proc_status_bytes("VmRSS"));
	gauge(t, "process_virtual_memory_bytes", "Virtual memory size in bytes.",
	      proc_status_bytes("VmSize"));
	gauge(t, "process_open_fds", "Number of open file descriptors.", open_fds());
	getrlimit(RLIMIT_NOFILE, &rl);
	gauge(t, "process_max_fds", "Maximum number of open file descriptors.",
	      (double)rl.rlim_cur);
	gauge(t, "process_start_time_seconds",
	      "Start time of the process since unix epoch in seconds.", srv->start_unix);
}

static enum MHD_Result respond(struct MHD_Connection *con, unsigned status, const char *type,
                               char *body, size_t len)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
	enum MHD_Result ret;

	if (!r) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", type);
	MHD_add_response_header(r, "Cache-Control", "no-store");
	ret = MHD_queue_response(con, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result respond_text(struct MHD_Connection *con, unsigned status, const char *s)
{
	return respond(con, status, "text/plain; charset=utf-8", strdup(s), strlen(s));
}

/* messages - GET /api/v1/messages (the capture index as a JSON array) and
 * /api/v1/messages/NAME (the stored message, byte-exact). */
static enum MHD_Result messages(struct MHD_Connection *con, const char *rest)
{
	const char *dir = capture_dir();
	char path[4200];
	size_t len = 0;

	if (!dir)
		return respond_text(con, MHD_HTTP_NOT_FOUND, "no --capture\n");
	if (!*rest) {
		json_t *arr = json_array();
		snprintf(path, sizeof(path), "%s/index.jsonl", dir);
		char *text = file_slurp(path, &len);
		for (size_t i = 0; text && i < len;) {
			char *nl = memchr(text + i, '\n', len - i);
			size_t n = nl ? (size_t)(nl - (text + i)) : len - i;
			json_t *o = json_loadb(text + i, n, 0, NULL);
			if (o)
				json_array_append_new(arr, o);
			i += n + 1;
		}
		free(text);
		char *body = json_dumps(arr, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		json_decref(arr);
		return respond(con, MHD_HTTP_OK, "application/json", body, body ? strlen(body) : 0);
	}
	/* a Maildir name: no path separators, nothing hidden */
	if (*rest != '/' || !rest[1] || rest[1] == '.' || strchr(rest + 1, '/'))
		return respond_text(con, MHD_HTTP_NOT_FOUND, "not found\n");
	snprintf(path, sizeof(path), "%s/new/%s", dir, rest + 1);
	char *body = file_slurp(path, &len);
	if (!body)
		return respond_text(con, MHD_HTTP_NOT_FOUND, "not found\n");
	return respond(con, MHD_HTTP_OK, "message/rfc822", body, len);
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *con, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_size, void **state)
{
	struct server *srv = cls;
	bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD");

	(void)version;
	(void)upload;
	if (!*state) {
		/* first call for this request: headers only; a body (if any)
		 * follows in later calls and is ignored */
		*state = (void *)1;
		return MHD_YES;
	}
	if (*upload_size) {
		*upload_size = 0;
		return MHD_YES;
	}
	if (!strcmp(url, "/metrics") && get) {
		struct text t = {0};
		metrics(srv, &t);
		return respond(con, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", t.p,
		               t.len);
	}
	if (!strcmp(url, "/livez") && get)
		return respond_text(con, MHD_HTTP_OK, "ok\n");
	if (!strcmp(url, "/readyz") && get) {
		if (atomic_load_explicit(&srv->stop_phase, memory_order_relaxed))
			return respond_text(con, MHD_HTTP_SERVICE_UNAVAILABLE, "stopping\n");
		return respond_text(con, MHD_HTTP_OK, "ready\n");
	}
	if (!strcmp(url, "/api/v1/stats") && get) {
		struct server_stats st;
		stats_current(srv, &st, true);
		json_t *rep = stats_report(srv, &st, (double)(now_ns() - srv->start_ns) / 1e9);
		char *body = json_dumps(rep, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		json_decref(rep);
		return respond(con, MHD_HTTP_OK, "application/json", body, body ? strlen(body) : 0);
	}
	if (!strncmp(url, "/api/v1/messages", 16) && (!url[16] || url[16] == '/') && get)
		return messages(con, url + 16);
	if (!strcmp(url, "/api/v1/reset")) {
		if (strcmp(method, "POST"))
			return respond_text(con, MHD_HTTP_METHOD_NOT_ALLOWED, "use POST\n");
		stats_reset(srv);
		return respond_text(con, MHD_HTTP_OK, "{\"reset\": true}\n");
	}
	if (!strcmp(url, "/metrics") || !strcmp(url, "/livez") || !strcmp(url, "/readyz") ||
	    !strcmp(url, "/api/v1/stats"))
		return respond_text(con, MHD_HTTP_METHOD_NOT_ALLOWED, "use GET\n");
	return respond_text(con, MHD_HTTP_NOT_FOUND, "not found\n");
}

int http_start(struct server *srv, char *err, size_t errlen)
{
	const struct listen_addr *a = &srv->cfg.http;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;

	if (a->ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	daemon_ = MHD_start_daemon(flags, 0, NULL, NULL, handler, srv, MHD_OPTION_SOCK_ADDR,
	                           (const struct sockaddr *)&a->ss, MHD_OPTION_CONNECTION_LIMIT,
	                           (unsigned)64, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
	                           MHD_OPTION_END);
	if (!daemon_) {
		snprintf(err, errlen, "cannot listen on --http %s", a->text);
		return -1;
	}
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_BIND_PORT);
	if (info && info->port) {
		/* port 0 picks one: say which (as --listen does) */
		char host[64];
		snprintf(host, sizeof(host), "%s", a->text);
		char *colon = strrchr(host, ':');
		if (colon)
			snprintf(colon, sizeof(host) - (size_t)(colon - host), ":%u", info->port);
		snprintf(srv->cfg.http.text, sizeof(srv->cfg.http.text), "%s", host);
	}
	return 0;
}

void http_stop(void)
{
	if (daemon_)
		MHD_stop_daemon(daemon_);
	daemon_ = NULL;
}
