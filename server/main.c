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

#include "server.h"
#include "sink/addr.h"
#include "tls.h"
#include "sink/config.h"
#include "sink/scan.h"
#include "sink/units.h"
#include "sink/uring.h"

static const char *prog = "smtpsink";

__attribute__((format(printf, 1, 2), noreturn)) static void usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '%s --help'.\n", prog);
	exit(2);
}

__attribute__((format(printf, 1, 2), noreturn)) static void die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static void usage(void)
{
	printf("Usage: %s [OPTION]...\n"
	       "SMTP sink: accepts mail over SMTP as fast as possible and discards it.\n"
	       "\n"
	       "  -l, --listen ADDR:PORT   listen here (repeatable; IPv4, [IPv6]; port 0 = any\n"
	       "                           free port, printed at start) [127.0.0.1:2525]\n"
	       "  -t, --threads N          worker threads [online CPUs]\n"
	       "      --io auto|uring|epoll  I/O backend; auto falls back to epoll when\n"
	       "                           io_uring is blocked [auto]\n"
	       "  -H, --hostname NAME      name in the greeting and replies [smtpsink.localhost]\n"
	       "  -s, --max-size SIZE      message size limit, e.g. 10M; 0 = none [10M]\n"
	       "  -r, --max-rcpt N         recipients per message; more get 452 [1000]\n"
	       "      --rcpt-overshoot N   452s per message that do not count as errors\n"
	       "                           (Postfix smtpd_recipient_overshoot_limit) [1000]\n"
	       "  -c, --max-conns N        concurrent connections; more get 421 4.7.0 [0 = none]\n"
	       "      --max-errors N       errors before 421 and disconnect [20]\n"
	       "      --line-max N         command line limit in octets incl. CRLF [2048]\n"
	       "  -T, --idle-timeout DUR   idle session timeout, e.g. 300s, 5m [300s]\n"
	       "      --drain-timeout DUR  on shutdown, time for messages in progress [5s]\n"
	       "      --bare-lf normalize|note|reject   bare LF handling (as Postfix\n"
	       "                           smtpd_forbid_bare_newline) [normalize]\n"
	       "      --strict             501 for syntax RFC 5321 forbids but Postfix takes:\n"
	       "                           MAIL/RCPT paths without <> and a space after\n"
	       "                           FROM:/TO: (otherwise accepted and counted in\n"
	       "                           lenient_syntax)\n"
	       "      --listen-tls ADDR:PORT  implicit TLS (RFC 8314, port 465 style); repeatable\n"
	       "      --tls-cert FILE, --tls-key FILE   PEM certificate (chain) and key;\n"
	       "                           STARTTLS (RFC 3207) is offered once TLS is set up\n"
	       "      --tls-self-signed    make an ECDSA P-256 certificate for --hostname,\n"
	       "                           localhost, 127.0.0.1 and ::1 at start\n"
	       "      --tls-cert-out FILE  write the certificate in use (to trust it)\n"
	       "      --tls-min 1.2|1.3    lowest TLS version [1.2]\n"
	       "      --require-tls        530 to MAIL/RCPT/DATA/BDAT/AUTH before STARTTLS\n"
	       "      --auth any|FILE      offer AUTH PLAIN LOGIN (RFC 4954) over TLS: any\n"
	       "                           credentials, or user:password lines in FILE\n"
	       "      --auth-insecure      offer AUTH without TLS too\n"
	       "      --require-auth       530 to MAIL before AUTH\n"
	       "      --hide EXT[,EXT]     do not advertise: PIPELINING SIZE 8BITMIME\n"
	       "                           ENHANCEDSTATUSCODES SMTPUTF8 CHUNKING\n"
	       "  -i, --stats-interval DUR print a progress line this often [off]\n"
	       "  -j, --json FILE          write the final summary with every counter as JSON\n"
	       "  -n, --exit-after N       exit 0 after N messages were accepted\n"
	       "      --ready-file FILE    write the listening addresses here once ready\n"
	       "      --verify             check smtpbench integrity stamps: ok, corrupt,\n"
	       "                           duplicate and unstamped counts in the summary\n"
	       "      --recv-buffers N     io_uring receive buffers per worker [512]\n"
	       "      --recv-buffer-size SIZE  size of each [16k]\n"
	       "  -q, --quiet              no summary on exit (progress still if asked)\n"
	       "  -V, --version            print the version and exit\n"
	       "  -h, --help               this help\n"
	       "\n"
	       "Sizes take k/M/G suffixes (powers of 1024); durations ms/s/m/h.\n"
	       "Readiness: once listening, '%s: listening on ADDR' lines and 'ready' are printed\n"
	       "on stdout.\n",
	       prog, prog);
}

static uint64_t opt_count(const char *name, const char *v, uint64_t max)
{
	uint64_t n;

	if (units_parse_count(v, &n) || n > max)
		usage_error("invalid %s '%s'", name, v);
	return n;
}

static uint64_t opt_size(const char *name, const char *v)
{
	uint64_t n;

	if (units_parse_size(v, &n))
		usage_error("invalid %s '%s' (e.g. 512, 64k, 10M)", name, v);
	return n;
}

static uint64_t opt_duration(const char *name, const char *v)
{
	uint64_t n;

	if (units_parse_duration_ns(v, &n))
		usage_error("invalid %s '%s' (e.g. 500ms, 30s, 5m)", name, v);
	return n;
}

/* parse_listen - "HOST:PORT", "[V6]:PORT" or ":PORT" (wildcard). */
static void parse_listen(struct server_cfg *cfg, const char *arg, bool tls)
{
	struct listen_addr *l;
	char err[128];

	if (cfg->nlisten == SINK_MAX_LISTEN)
		usage_error("too many --listen addresses (max %d)", SINK_MAX_LISTEN);
	l = &cfg->listen[cfg->nlisten];
	if (addr_parse(arg, 1, &l->ss, &l->len, err, sizeof(err)))
		usage_error("invalid %s '%s': %s", tls ? "--listen-tls" : "--listen", arg, err);
	l->fd = -1;
	l->tls = tls;
	cfg->nlisten++;
}

/* load_users - --auth FILE: "user:password" per line, '#' comments.  Only
 * a SHA-256 of each password is kept in memory. */
static void load_users(struct server_cfg *cfg, const char *path)
{
	FILE *f = fopen(path, "r");
	char line[1024];
	int no = 0;

	if (!f)
		usage_error("cannot read --auth %s: %s", path, strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		size_t n = strcspn(line, "\r\n");
		char *colon;
		no++;
		line[n] = 0;
		if (!n || line[0] == '#')
			continue;
		colon = strchr(line, ':');
		if (!colon || colon == line)
			usage_error("--auth %s line %d: expected user:password", path, no);
		struct auth_user *u = realloc(cfg->users, (cfg->nusers + 1) * sizeof(*u));
		if (!u)
			die("out of memory");
		cfg->users = u;
		u += cfg->nusers++;
		u->len = (size_t)(colon - line);
		u->name = strndup(line, u->len);
		SHA256((const unsigned char *)colon + 1, strlen(colon + 1), u->pass_sha256);
		OPENSSL_cleanse(line, sizeof(line));
	}
	fclose(f);
	if (!cfg->nusers)
		usage_error("--auth %s has no user:password line", path);
}

static void parse_hide(struct server_cfg *cfg, const char *arg)
{
	char buf[256], *save = NULL;

	if (strlen(arg) >= sizeof(buf))
		usage_error("invalid --hide '%s'", arg);
	strcpy(buf, arg);
	for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		uint32_t bit = sess_ext_by_name(t);
		if (!bit)
			usage_error("unknown extension '%s' in --hide", t);
		cfg->sess.ext &= ~bit;
	}
}

static void parse_args(struct server_cfg *cfg, int argc, char **argv)
{
	enum {
		O_IO = 256,
		O_MAXERR,
		O_LINEMAX,
		O_DRAIN,
		O_BARELF,
		O_HIDE,
		O_READY,
		O_RBUFS,
		O_RBUFSZ,
		O_VERIFY,
		O_STRICT,
		O_OVERSHOOT,
		O_LISTEN_TLS,
		O_TLS_CERT,
		O_TLS_KEY,
		O_TLS_SELF,
		O_TLS_OUT,
		O_TLS_MIN,
		O_REQ_TLS,
		O_AUTH,
		O_AUTH_INSECURE,
		O_REQ_AUTH
	};
	static const struct option opts[] = {
	    {"listen", required_argument, NULL, 'l'},
	    {"threads", required_argument, NULL, 't'},
	    {"io", required_argument, NULL, O_IO},
	    {"hostname", required_argument, NULL, 'H'},
	    {"max-size", required_argument, NULL, 's'},
	    {"max-rcpt", required_argument, NULL, 'r'},
	    {"max-conns", required_argument, NULL, 'c'},
	    {"max-errors", required_argument, NULL, O_MAXERR},
	    {"line-max", required_argument, NULL, O_LINEMAX},
	    {"idle-timeout", required_argument, NULL, 'T'},
	    {"drain-timeout", required_argument, NULL, O_DRAIN},
	    {"bare-lf", required_argument, NULL, O_BARELF},
	    {"hide", required_argument, NULL, O_HIDE},
	    {"stats-interval", required_argument, NULL, 'i'},
	    {"json", required_argument, NULL, 'j'},
	    {"exit-after", required_argument, NULL, 'n'},
	    {"ready-file", required_argument, NULL, O_READY},
	    {"recv-buffers", required_argument, NULL, O_RBUFS},
	    {"recv-buffer-size", required_argument, NULL, O_RBUFSZ},
	    {"verify", no_argument, NULL, O_VERIFY},
	    {"strict", no_argument, NULL, O_STRICT},
	    {"rcpt-overshoot", required_argument, NULL, O_OVERSHOOT},
	    {"listen-tls", required_argument, NULL, O_LISTEN_TLS},
	    {"tls-cert", required_argument, NULL, O_TLS_CERT},
	    {"tls-key", required_argument, NULL, O_TLS_KEY},
	    {"tls-self-signed", no_argument, NULL, O_TLS_SELF},
	    {"tls-cert-out", required_argument, NULL, O_TLS_OUT},
	    {"tls-min", required_argument, NULL, O_TLS_MIN},
	    {"require-tls", no_argument, NULL, O_REQ_TLS},
	    {"auth", required_argument, NULL, O_AUTH},
	    {"auth-insecure", no_argument, NULL, O_AUTH_INSECURE},
	    {"require-auth", no_argument, NULL, O_REQ_AUTH},
	    {"quiet", no_argument, NULL, 'q'},
	    {"version", no_argument, NULL, 'V'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	int o;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

	sess_cfg_defaults(&cfg->sess);
	snprintf(cfg->hostname, sizeof(cfg->hostname), "smtpsink.localhost");
	cfg->threads = ncpu > 0 ? (int)ncpu : 1;
	cfg->idle_timeout_ns = 300ull * 1000000000ull; /* RFC 5321 4.5.3.2.7: >= 5 min */
	cfg->drain_timeout_ns = 5ull * 1000000000ull;
	cfg->recv_buf_count = 512; /* 8 MiB per worker; no ENOBUFS at 1000 busy sessions */
	cfg->recv_buf_size = 16 * 1024;

	opterr = 0;
	while ((o = getopt_long(argc, argv, ":l:t:H:s:r:c:T:i:j:n:qVh", opts, NULL)) != -1) {
		switch (o) {
		case 'l':
			parse_listen(cfg, optarg, false);
			break;
		case 't':
			cfg->threads = (int)opt_count("--threads", optarg, 1024);
			if (cfg->threads < 1)
				usage_error("--threads must be at least 1");
			break;
		case O_IO:
			if (!strcmp(optarg, "auto"))
				cfg->io = IO_AUTO;
			else if (!strcmp(optarg, "uring") || !strcmp(optarg, "io_uring"))
				cfg->io = IO_URING;
			else if (!strcmp(optarg, "epoll"))
				cfg->io = IO_EPOLL;
			else
				usage_error("invalid --io '%s' (auto, uring or epoll)", optarg);
			break;
		case 'H':
			if (!*optarg || strlen(optarg) >= sizeof(cfg->hostname) ||
			    strpbrk(optarg, " \r\n\t"))
				usage_error("invalid --hostname '%s'", optarg);
			snprintf(cfg->hostname, sizeof(cfg->hostname), "%s", optarg);
			break;
		case 's':
			cfg->sess.max_size = opt_size("--max-size", optarg);
			break;
		case 'r':
			cfg->sess.max_rcpt = (uint32_t)opt_count("--max-rcpt", optarg, 1u << 30);
			if (!cfg->sess.max_rcpt)
				usage_error("--max-rcpt must be at least 1");
			break;
		case 'c':
			cfg->max_conns = (uint32_t)opt_count("--max-conns", optarg, 1u << 30);
			break;
		case O_MAXERR:
			cfg->sess.max_errors =
			    (uint32_t)opt_count("--max-errors", optarg, 1u << 30);
			break;
		case O_LINEMAX:
			cfg->sess.line_max = (uint32_t)opt_count("--line-max", optarg, 1u << 20);
			/* RFC 5321 4.5.3.1.4: at least 512 octets must be accepted */
			if (cfg->sess.line_max < 512)
				usage_error("--line-max must be at least 512 (RFC 5321 4.5.3.1.4)");
			break;
		case 'T':
			cfg->idle_timeout_ns = opt_duration("--idle-timeout", optarg);
			break;
		case O_DRAIN:
			cfg->drain_timeout_ns = opt_duration("--drain-timeout", optarg);
			break;
		case O_BARELF: {
			int pol = sess_bare_lf_by_name(optarg);
			if (pol < 0)
				usage_error("invalid --bare-lf '%s' (normalize, note or reject)",
				            optarg);
			cfg->sess.bare_lf = (enum sess_bare_lf)pol;
			break;
		}
		case O_HIDE:
			parse_hide(cfg, optarg);
			break;
		case 'i':
			cfg->stats_interval_ns = opt_duration("--stats-interval", optarg);
			break;
		case 'j':
			cfg->json_path = optarg;
			break;
		case 'n':
			cfg->exit_after = opt_count("--exit-after", optarg, UINT64_MAX);
			break;
		case O_READY:
			cfg->ready_file = optarg;
			break;
		case O_RBUFS:
			cfg->recv_buf_count = (uint32_t)opt_count("--recv-buffers", optarg, 32768);
			if (cfg->recv_buf_count < 8 ||
			    (cfg->recv_buf_count & (cfg->recv_buf_count - 1)))
				usage_error("--recv-buffers must be a power of two, 8..32768");
			break;
		case O_RBUFSZ:
			cfg->recv_buf_size = (uint32_t)opt_size("--recv-buffer-size", optarg);
			if (cfg->recv_buf_size < 512 || cfg->recv_buf_size > (1u << 20))
				usage_error("--recv-buffer-size must be 512..1M");
			break;
		case O_VERIFY:
			cfg->verify = true;
			break;
		case O_STRICT:
			cfg->sess.strict = true;
			break;
		case O_LISTEN_TLS:
			parse_listen(cfg, optarg, true);
			break;
		case O_TLS_CERT:
			cfg->tls_cert = optarg;
			break;
		case O_TLS_KEY:
			cfg->tls_key = optarg;
			break;
		case O_TLS_SELF:
			cfg->tls_self_signed = true;
			break;
		case O_TLS_OUT:
			cfg->tls_cert_out = optarg;
			break;
		case O_TLS_MIN:
			if (!strcmp(optarg, "1.2"))
				cfg->tls_min = 12;
			else if (!strcmp(optarg, "1.3"))
				cfg->tls_min = 13;
			else
				usage_error("invalid --tls-min '%s' (1.2 or 1.3)", optarg);
			break;
		case O_REQ_TLS:
			cfg->sess.require_tls = true;
			break;
		case O_AUTH:
			cfg->sess.auth = true;
			if (strcmp(optarg, "any")) {
				cfg->auth_file = optarg;
				load_users(cfg, optarg);
			}
			break;
		case O_AUTH_INSECURE:
			cfg->sess.auth_insecure = true;
			break;
		case O_REQ_AUTH:
			cfg->sess.require_auth = true;
			break;
		case O_OVERSHOOT:
			cfg->sess.rcpt_overshoot =
			    (uint32_t)opt_count("--rcpt-overshoot", optarg, 1u << 30);
			break;
		case 'q':
			cfg->quiet = true;
			break;
		case 'V':
			printf("smtpsink %s (git %s)\n", SINK_VERSION, SINK_GIT_REV);
			exit(0);
		case 'h':
			usage();
			exit(0);
		case ':':
			usage_error("option '%s' needs a value", argv[optind - 1]);
		default:
			usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		usage_error("unexpected argument '%s'", argv[optind]);
	if (cfg->nlisten == 0)
		parse_listen(cfg, "127.0.0.1:2525", false);
	bool tls = cfg->tls_self_signed || cfg->tls_cert;
	if ((cfg->tls_cert != NULL) != (cfg->tls_key != NULL))
		usage_error("--tls-cert and --tls-key go together");
	if (cfg->tls_self_signed && cfg->tls_cert)
		usage_error("--tls-self-signed or --tls-cert/--tls-key, not both");
	if (cfg->tls_cert_out && !tls)
		usage_error("--tls-cert-out needs --tls-self-signed or --tls-cert");
	for (int i = 0; i < cfg->nlisten; i++)
		if (cfg->listen[i].tls && !tls)
			usage_error("--listen-tls needs --tls-self-signed or --tls-cert/--tls-key");
	if (cfg->sess.require_tls && !tls)
		usage_error("--require-tls needs --tls-self-signed or --tls-cert/--tls-key");
	if (cfg->sess.auth && !tls && !cfg->sess.auth_insecure)
		usage_error(
		    "--auth needs TLS (--tls-self-signed or --tls-cert) or --auth-insecure: "
		    "AUTH PLAIN/LOGIN are only offered over TLS (RFC 4954 4)");
	if ((cfg->sess.require_auth || cfg->sess.auth_insecure) && !cfg->sess.auth)
		usage_error("--require-auth and --auth-insecure need --auth");
	cfg->sess.starttls = tls;
	cfg->sess.hostname = cfg->hostname;
}

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

	parse_args(cfg, argc, argv);
	if (cfg->json_path)
		json_fd = open_json(cfg->json_path);
	raise_nofile();
	signal(SIGPIPE, SIG_IGN);
	/* Block the stop signals everywhere; main collects them synchronously. */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	/* Pick the scanner once, before any thread exists. */
	scan_set_impl(SCAN_IMPL_AUTO);

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
	srv.start_ns = now_ns();
	ret = srv.backend == IO_URING ? uring_start(&srv) : epoll_start(&srv);
	if (ret)
		die("cannot start %s workers: %s", ops->name, strerror(-ret));

	if (!cfg->quiet)
		fprintf(stderr, "%s %s: %s backend, %d workers, hostname %s\n", prog, SINK_VERSION,
		        ops->name, srv.nworkers, cfg->hostname);
	for (int i = 0; i < cfg->nlisten; i++)
		printf("%s: listening on %s%s\n", prog, cfg->listen[i].text,
		       cfg->listen[i].tls ? " (TLS)" : "");
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

		if (sig > 0) {
			signals++;
			server_stop(&srv, signals == 1 ? 1 : 2, strsignal(sig));
		}
		int phase = atomic_load_explicit(&srv.stop_phase, memory_order_acquire);
		if (phase >= 1 && !announced) {
			announced = true;
			if (!cfg->quiet)
				fprintf(stderr, "%s: %s, stopping (signal again to force)\n", prog,
				        srv.stop_reason ? srv.stop_reason : "stop");
		}
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
	for (int i = 0; i < cfg->nlisten; i++)
		if (cfg->listen[i].fd >= 0)
			close(cfg->listen[i].fd);

	double secs = (double)(now_ns() - srv.start_ns) / 1e9;
	stats_sum(&srv, &tot, false);
	if (cfg->verify)
		tot.verify.duplicate += verify_merge(&srv.workers[0].vw, srv.nworkers,
		                                     sizeof(srv.workers[0]), &srv.verify_run);
	if (!cfg->quiet)
		stats_summary(&srv, &tot, secs);
	if (json_fd >= 0 && (stats_json(&srv, &tot, secs, json_fd) || close(json_fd)))
		die("cannot write --json %s: %s", cfg->json_path, strerror(errno));
	for (int i = 0; i < srv.nworkers; i++) {
		verify_worker_free(&srv.workers[i].vw);
		worker_fini(&srv.workers[i]);
	}
	free(srv.workers);
	tls_teardown();
	for (size_t i = 0; i < cfg->nusers; i++)
		free(cfg->users[i].name);
	free(cfg->users);
	return 0;
}
