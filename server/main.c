/*
 * main.c - smtpsink: a multi-threaded SMTP sink that accepts mail as fast as
 * the machine allows and discards it.
 *
 * Start-up: parse options, bind listeners (port 0 picks a free port and the
 * chosen address is printed), pick the I/O backend (io_uring when the probe
 * succeeds, else epoll with one line saying why), start the workers, then
 * announce readiness ("ready" on stdout and the optional --ready-file).
 * The main thread only waits for signals, prints progress and, at the end,
 * the summary and the --json report.
 *
 * Shutdown (SIGINT/SIGTERM, --exit-after): stop accepting; sessions between
 * transactions get "421 4.3.2" at once and no session starts a new one;
 * messages already inside DATA/BDAT may finish until --drain-timeout, then
 * everyone gets 421 and CONN_DRAIN_GRACE to take it.  A second signal skips
 * the wait.  The process always ends within --drain-timeout + 1 s, whatever
 * clients do.  Exit status: 0 after a clean stop or --exit-after, 1 on a
 * runtime failure, 2 on a usage error (including an unwritable --json).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <jansson.h>
#include <sys/time.h>

#include "server.h"
#include "sink/addr.h"
#include "tls.h"
#include "sink/config.h"
#include "sink/scan.h"
#include "sink/units.h"
#include "sink/uring.h"

static void addr_text(const struct sockaddr_storage *ss, char *out, size_t n)
{
	char ip[INET6_ADDRSTRLEN];

	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
		snprintf(out, n, "[%s]:%u", ip, ntohs(a->sin6_port));
	} else {
		const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
		snprintf(out, n, "%s:%u", ip, ntohs(a->sin_port));
	}
}

static void open_listeners(struct server_cfg *cfg)
{
	for (int i = 0; i < cfg->nlisten; i++) {
		struct listen_addr *l = &cfg->listen[i];
		int one = 1, fd;
		char want[64];

		addr_text(&l->ss, want, sizeof(want));
		fd = socket(l->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0)
			die("socket for %s: %s", want, strerror(errno));
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (l->ss.ss_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		if (bind(fd, (struct sockaddr *)&l->ss, l->len))
			die("cannot listen on %s: %s", want, strerror(errno));
		if (listen(fd, 4096))
			die("listen on %s: %s", want, strerror(errno));
		l->len = sizeof(l->ss);
		getsockname(fd, (struct sockaddr *)&l->ss, &l->len);
		addr_text(&l->ss, l->text, sizeof(l->text));
		l->fd = fd;
	}
}

/* raise_nofile - thousands of sockets need more than the usual 1024. */
static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static void write_ready_file(const struct server_cfg *cfg)
{
	char tmp[4096];
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s.tmp.%d", cfg->ready_file, (int)getpid());
	f = fopen(tmp, "w");
	if (!f)
		die("cannot write --ready-file %s: %s", cfg->ready_file, strerror(errno));
	for (int i = 0; i < cfg->nlisten; i++)
		fprintf(f, "%s\n", cfg->listen[i].text);
	if (fclose(f) || rename(tmp, cfg->ready_file))
		die("cannot write --ready-file %s: %s", cfg->ready_file, strerror(errno));
}

/* open_json - the report is written at exit, but a path that cannot be
 * written must fail now, before anyone is served (exit 2). */
static int open_json(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);

	if (fd < 0)
		usage_error("cannot write --json %s: %s", path, strerror(errno));
	return fd;
}

/* health_check - "smtpsink check [ADDR:PORT]": the container HEALTHCHECK.
 * Connects (to the first of SMTPSINK_LISTEN when no address is given, a
 * wildcard meaning loopback), expects 220, says EHLO, expects 250, QUITs.
 * Exit 0, or 1 with one line saying why, within 5 s. */
static int health_check(const char *arg)
{
	char addr[300], buf[4096], err[128];
	const char *env = getenv("SMTPSINK_LISTEN");
	struct sockaddr_storage ss;
	socklen_t len;
	struct timeval tv = {.tv_sec = 5};
	size_t k = 0;
	int fd;

	snprintf(addr, sizeof(addr), "%s", arg ? arg : env ? env : "127.0.0.1:2525");
	addr[strcspn(addr, ",")] = 0;
	if (!strncmp(addr, "0.0.0.0:", 8) || addr[0] == ':')
		snprintf(buf, sizeof(buf), "127.0.0.1:%s", strrchr(addr, ':') + 1),
		    strcpy(addr, buf);
	else if (!strncmp(addr, "[::]:", 5))
		snprintf(buf, sizeof(buf), "[::1]:%s", addr + 5), strcpy(addr, buf);
	if (addr_parse(addr, 0, &ss, &len, err, sizeof(err))) {
		fprintf(stderr, "%s check: invalid address '%s': %s\n", prog, addr, err);
		return 1;
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (fd < 0 || connect(fd, (struct sockaddr *)&ss, len)) {
		fprintf(stderr, "%s check: cannot connect to %s: %s\n", prog, addr,
		        strerror(errno));
		return 1;
	}
	/* read_reply - one complete (possibly multi-line) reply into buf */
	for (int step = 0; step < 3; step++) {
		static const char *const send_[] = {NULL, "EHLO healthcheck\r\n", "QUIT\r\n"};
		static const char *const want[] = {"220", "250", "221"};
		if (send_[step] && send(fd, send_[step], strlen(send_[step]), MSG_NOSIGNAL) < 0)
			break;
		k = 0;
		for (;;) {
			ssize_t n = recv(fd, buf + k, sizeof(buf) - 1 - k, 0);
			if (n <= 0) {
				fprintf(stderr, "%s check: %s: %s\n", prog, addr,
				        n == 0 ? "connection closed" : strerror(errno));
				close(fd);
				return 1;
			}
			k += (size_t)n;
			buf[k] = 0;
			char *last = k >= 2 && buf[k - 1] == '\n' ? buf + k - 2 : NULL;
			while (last && last > buf && last[-1] != '\n')
				last--;
			if (last && strlen(last) >= 4 && last[3] == ' ')
				break;
			if (k >= sizeof(buf) - 1)
				break;
		}
		if (strncmp(buf, want[step], 3)) {
			buf[strcspn(buf, "\r\n")] = 0;
			fprintf(stderr, "%s check: %s answered '%s'\n", prog, addr, buf);
			close(fd);
			return 1;
		}
	}
	close(fd);
	return 0;
}

static bool all_joined(struct server *srv, bool *joined)
{
	bool all = true;

	for (int i = 0; i < srv->nworkers; i++) {
		if (!joined[i] && pthread_tryjoin_np(srv->workers[i].thread, NULL) == 0)
			joined[i] = true;
		all = all && joined[i];
	}
	return all;
}

int main(int argc, char **argv)
{
	static struct server srv;
	struct server_cfg *cfg = &srv.cfg;
	struct server_stats tot;
	const struct backend_ops *ops;
	sigset_t set;
	char why[160];
	int ret, json_fd = -1;

	if (argc >= 2 && !strcmp(argv[1], "check"))
		return health_check(argc > 2 ? argv[2] : NULL);
	cfg_parse(cfg, argc, argv);
	if (cfg->json_path)
		json_fd = open_json(cfg->json_path);
	stats_expect(&srv, NULL); /* every --expect names a counter, or exit 2 */
	raise_nofile();
	signal(SIGPIPE, SIG_IGN);
	/* Block the stop signals everywhere; main collects them synchronously. */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	/* Pick the scanner once, before any thread exists. */
	scan_set_impl(SCAN_IMPL_AUTO);

	{
		char err[700];
		if (faults_setup(&srv, err, sizeof(err)))
			usage_error("%s", err);
	}
	if (cfg->sess.starttls) {
		struct tls_opts to = {.cert_file = cfg->tls_cert,
		                      .key_file = cfg->tls_key,
		                      .self_signed = cfg->tls_self_signed,
		                      .cert_out = cfg->tls_cert_out,
		                      .hostname = cfg->hostname,
		                      .min_version = cfg->tls_min ? cfg->tls_min : 12};
		char err[400];
		if (tls_setup(&to, err, sizeof(err)))
			usage_error("TLS: %s", err);
	}
	open_listeners(cfg);

	srv.backend = cfg->io == IO_EPOLL ? IO_EPOLL : IO_URING;
	if (cfg->io != IO_EPOLL) {
		ret = uring_probe(why, sizeof(why));
		if (ret && cfg->io == IO_URING)
			die("--io uring: %s", why);
		if (ret) {
			fprintf(stderr, "%s: %s; using epoll\n", prog, why);
			srv.backend = IO_EPOLL;
		}
	}
	ops = srv.backend == IO_URING ? &uring_ops : &epoll_ops;
	srv.nworkers = cfg->threads;
	srv.workers = calloc((size_t)srv.nworkers, sizeof(*srv.workers));
	if (!srv.workers)
		die("out of memory");
	for (int i = 0; i < srv.nworkers; i++)
		worker_init(&srv.workers[i], &srv, i, ops);
	if (cfg->capture_dir) {
		char err[3400];
		signal(SIGXFSZ, SIG_IGN); /* a file-size limit is a write error, not death */
		if (capture_setup(&srv, err, sizeof(err)))
			usage_error("%s", err);
		cfg->sess.keep_helo = true; /* for the index */
		srv.need_peer = true;
	}
	if (cfg->nproxy_from)
		srv.need_peer = true; /* is this connection from a balancer? */
	srv.start_ns = now_ns();
	srv.start_unix = (double)time(NULL);
	pthread_mutex_init(&srv.base_lock, NULL);
	ret = srv.backend == IO_URING ? uring_start(&srv) : epoll_start(&srv);
	if (ret)
		die("cannot start %s workers: %s", ops->name, strerror(-ret));

	if (!cfg->quiet)
		fprintf(stderr, "%s %s: %s backend, %d workers, hostname %s\n", prog, SINK_VERSION,
		        ops->name, srv.nworkers, cfg->hostname);
	for (int i = 0; i < cfg->nlisten; i++)
		printf("%s: listening on %s%s\n", prog, cfg->listen[i].text,
		       cfg->listen[i].tls ? " (TLS)" : "");
	if (cfg->http.len) {
		char err[200];
		if (http_start(&srv, err, sizeof(err)))
			die("%s", err);
		printf("%s: http on %s\n", prog, cfg->http.text);
	}
	if (cfg->ready_file)
		write_ready_file(cfg);
	printf("%s: ready\n", prog);
	fflush(stdout);

	uint64_t last_msgs = 0, last_bytes = 0, last_ns = srv.start_ns;
	uint64_t next_stats = cfg->stats_interval_ns ? srv.start_ns + cfg->stats_interval_ns : 0;
	bool joined[1024] = {false}, announced = false;
	int signals = 0;

	for (;;) {
		struct timespec ts = {.tv_sec = 0, .tv_nsec = 20 * 1000 * 1000};
		int sig = sigtimedwait(&set, NULL, &ts);
		uint64_t now = now_ns();

		if (sig == SIGHUP) {
			/* reload --fault rules and --fault-file without dropping anyone */
			char err[700];
			if (faults_reload(&srv, err, sizeof(err)))
				fprintf(stderr, "%s: SIGHUP: faults not reloaded: %s\n", prog, err);
			else if (!cfg->quiet)
				fprintf(stderr, "%s: SIGHUP: faults reloaded\n", prog);
		} else if (sig > 0) {
			signals++;
			server_stop(&srv, signals == 1 ? 1 : 2, strsignal(sig));
		}
		int phase = atomic_load_explicit(&srv.stop_phase, memory_order_acquire);
		if (phase >= 1 && !announced) {
			announced = true;
			if (!cfg->quiet)
				fprintf(stderr, "%s: %s, stopping (signal again to force)\n", prog,
				        atomic_load(&srv.stop_reason)
				            ? atomic_load(&srv.stop_reason)
				            : "stop");
		}
		if (phase == 0 && cfg->max_runtime_ns && now >= srv.start_ns + cfg->max_runtime_ns)
			server_stop(&srv, 1, "--max-runtime reached");
		if (next_stats && now >= next_stats) {
			stats_progress(&srv, now, &last_msgs, &last_bytes, &last_ns);
			next_stats = now + cfg->stats_interval_ns;
		}
		if (phase >= 1 && all_joined(&srv, joined))
			break;
		if (phase >= 1) {
			/* Backstop: whatever clients do, the process ends within
			 * --drain-timeout + 1 s.  Workers normally finish by the drain
			 * deadline + CONN_DRAIN_GRACE; phase 3 makes them drop the
			 * rest, and a worker that still hangs is a bug we do not let
			 * hang the caller. */
			uint64_t dl = atomic_load(&srv.drain_deadline_ns);
			if (phase < 3 && now >= dl + 800ull * 1000 * 1000)
				server_stop(&srv, 3, "drain deadline");
			if (now >= dl + 1500ull * 1000 * 1000) {
				fprintf(stderr, "%s: a worker did not stop; exiting\n", prog);
				_exit(1);
			}
		}
	}
	if (srv.have_acceptor)
		pthread_join(srv.acceptor, NULL);
	capture_stop(&srv); /* what the workers queued is written first */
	http_stop();
	for (int i = 0; i < cfg->nlisten; i++)
		if (cfg->listen[i].fd >= 0)
			close(cfg->listen[i].fd);

	double secs = (double)(now_ns() - srv.start_ns) / 1e9;
	stats_current(&srv, &tot, false);
	if (cfg->verify)
		tot.verify.duplicate += verify_merge(&srv.workers[0].vw, srv.nworkers,
		                                     sizeof(srv.workers[0]), &srv.verify_run);
	if (!cfg->quiet)
		stats_summary(&srv, &tot, secs);
	json_t *report = stats_report(&srv, &tot, secs);
	if (json_fd >= 0 && (stats_write(report, json_fd) || close(json_fd)))
		die("cannot write --json %s: %s", cfg->json_path, strerror(errno));
	int failed = stats_expect(&srv, report);
	json_decref(report);
	for (int i = 0; i < srv.nworkers; i++) {
		verify_worker_free(&srv.workers[i].vw);
		worker_fini(&srv.workers[i]);
	}
	free(srv.workers);
	tls_teardown();
	faults_teardown(&srv);
	for (size_t i = 0; i < cfg->nusers; i++)
		free(cfg->users[i].name);
	free(cfg->users);
	if (failed) {
		fprintf(stderr, "%s: %d of %d expectations failed\n", prog, failed, cfg->nexpects);
		return 3;
	}
	return 0;
}
