/*
 * cfg.c - smtpsink's command line: options, their environment variables,
 * validation and --help.
 *
 * Every long option OPT can also come from the environment variable
 * SMTPSINK_<OPT> (upper case, '-' as '_'), as containers and CI services are
 * configured; a flag on the command line wins over its variable.  Options
 * that may be repeated take a comma-separated list in their variable
 * (SMTPSINK_LISTEN=127.0.0.1:2525,[::1]:2525), --fault one rule per line.
 * Boolean options are on for 1/true/yes/on.  A bad value is a usage error
 * (exit 2) naming the variable.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "server.h"
#include "sink/addr.h"
#include "sink/config.h"
#include "sink/units.h"

const char *prog = "smtpsink";

void usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '%s --help'.\n", prog);
	exit(2);
}

void die(const char *fmt, ...)
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
	printf(
	    "Usage: %s [OPTION]...\n"
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
	    "  -n, --exit-after N       stop after N messages were accepted\n"
	    "      --max-runtime DUR    stop after this long\n"
	    "      --fault RULE         inject a fault (repeatable; docs/faults.md), e.g.\n"
	    "                           \"rcpt to=*@bounce.test reply='550 5.1.1 No such user'\"\n"
	    "                           STAGE {client=CIDR helo= from= to=GLOB size>N}\n"
	    "                           {reply='CODE TEXT' drop reset delay=DUR stall\n"
	    "                           throttle=BYTES/s} {prob=P every=N first=N after=N\n"
	    "                           window=DUR-DUR limit=N}\n"
	    "      --fault-file FILE    rules, one per line, # comments; reloaded on SIGHUP\n"
	    "      --seed N             for prob= (same seed, same faults) [0]\n"
	    "      --address-faults     addresses choose faults: reply-550-5.1.1@x,\n"
	    "                           delay-3s@x, drop@x, reset@x, stall@x\n"
	    "      --greylist DUR       451 4.7.1 to the first try of a (client, sender,\n"
	    "                           recipient) triplet until DUR has passed\n"
	    "      --greylist-expiry DUR, --greylist-max N   [24h, 100000]\n"
	    "      --rate-limit N/DUR[,per=client|sender|all]  451 4.7.1 to a MAIL over\n"
	    "                           the rate (token bucket of N) [per=client]\n"
	    "      --rate-limit-reply 'CODE TEXT'  instead of the 451\n"
	    "      --max-msgs-per-session N  421 4.7.0 after N messages in a session\n"
	    "      --max-conns-per-ip N 421 4.7.0 to more connections from one address\n"
	    "      --proxy-protocol CIDR[,CIDR]  connections from these sources must begin\n"
	    "                           with a PROXY header (v1 or v2, as HAProxy's\n"
	    "                           send-proxy[-v2]); its client address is the one\n"
	    "                           faults, limits and capture see (repeatable)\n"
	    "      --proxy-timeout DUR  time for that header to arrive [5s]\n"
	    "      --capture DIR        store accepted messages byte-exact in the Maildir DIR\n"
	    "                           (tmp/ -> new/) with DIR/index.jsonl, by a writer\n"
	    "                           thread (workers never wait for the disk)\n"
	    "      --capture-sample 1/N, --capture-first N, --capture-max-bytes SIZE\n"
	    "                           store only every N-th, the first N, up to SIZE\n"
	    "      --capture-strict     250 only once the message is fsync'd; 452 4.3.1\n"
	    "                           when it could not be stored (default: 250\n"
	    "                           anyway, counted as capture_dropped)\n"
	    "      --http ADDR:PORT     admin HTTP: /metrics (Prometheus), /livez, /readyz,\n"
	    "                           /api/v1/stats, POST /api/v1/reset, and with\n"
	    "                           --capture /api/v1/messages[/NAME] [off]\n"
	    "      --expect EXPR        when the sink stops, check a counter of the report:\n"
	    "                           NAME=N, NAME!=N, NAME>=N, NAME<=N, NAME>N, NAME<N\n"
	    "                           (e.g. messages=10, rejected_messages=0,\n"
	    "                           verify.corrupt=0); repeatable; exit 3 if any fails\n"
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
	    "Every option can also be set as SMTPSINK_<OPTION> in the environment\n"
	    "(SMTPSINK_MAX_SIZE=10M, SMTPSINK_LISTEN=ADDR,ADDR); flags win.\n"
	    "Exit status: 0 stopped cleanly, 1 runtime failure, 2 usage error,\n"
	    "3 an --expect failed.\n"
	    "\n"
	    "  %s check [ADDR:PORT]   health check: connect, expect 220, EHLO, QUIT;\n"
	    "                           exit 0, or 1 saying why [SMTPSINK_LISTEN, else\n"
	    "                           127.0.0.1:2525]\n"
	    "\n"
	    "Readiness: once listening, '%s: listening on ADDR' lines and 'ready' are printed\n"
	    "on stdout.\n",
	    prog, prog, prog);
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

/* Options that may be given more than once: their variable holds a list. */
static bool repeatable(const char *name)
{
	static const char *const r[] = {"listen", "listen-tls", "expect",
	                                "fault",  "fault-file", NULL};

	for (int i = 0; r[i]; i++)
		if (!strcmp(r[i], name))
			return true;
	return false;
}

/* on_cmdline - was option o given as a flag (long or short form)? */
static bool on_cmdline(const struct option *o, int argc, char **argv)
{
	size_t n = strlen(o->name);

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--"))
			break;
		if (a[0] == '-' && a[1] == '-' && !strncmp(a + 2, o->name, n) &&
		    (a[2 + n] == 0 || a[2 + n] == '='))
			return true;
		if (a[0] == '-' && a[1] != '-' && o->val < 256 && strchr(a + 1, o->val))
			return true;
	}
	return false;
}

/* env_args - the command line with SMTPSINK_* variables prepended as flags
 * (so flags, parsed after them, win), for options not given as flags. */
static char **env_argv; /* kept: options point into it */

/* parse_proxy_from - --proxy-protocol CIDR[,CIDR...]: the balancers. */
static void parse_proxy_from(struct server_cfg *cfg, const char *v)
{
	while (*v) {
		size_t n = strcspn(v, ",");
		char hint[160];

		if (cfg->nproxy_from == SINK_MAX_PROXY)
			usage_error("too many --proxy-protocol sources (max %d)", SINK_MAX_PROXY);
		if (!n ||
		    fault_cidr_parse(v, n, &cfg->proxy_from[cfg->nproxy_from], hint, sizeof(hint)))
			usage_error("invalid --proxy-protocol '%.*s'%s%s", (int)n, v,
			            n && hint[0] ? ": " : " (ADDR or ADDR/PREFIX)",
			            n && hint[0] ? hint : "");
		cfg->nproxy_from++;
		v += n;
		if (*v == ',')
			v++;
	}
}

static char **env_args(const struct option *opts, int argc, char **argv, int *out_argc)
{
	char **v = env_argv = calloc((size_t)argc + 256, sizeof(*v));
	int n = 0;

	if (!v)
		die("out of memory");
	v[n++] = argv[0];
	for (const struct option *o = opts; o->name; o++) {
		char var[80], *val, *copy, *save = NULL;
		size_t k = (size_t)snprintf(var, sizeof(var), "SMTPSINK_");

		if (!strcmp(o->name, "help") || !strcmp(o->name, "version"))
			continue;
		for (const char *p = o->name; *p && k + 1 < sizeof(var); p++)
			var[k++] = *p == '-' ? '_' : (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
		var[k] = 0;
		val = getenv(var);
		if (!val || on_cmdline(o, argc, argv))
			continue;
		if (o->has_arg == no_argument) {
			if (!strcasecmp(val, "1") || !strcasecmp(val, "true") ||
			    !strcasecmp(val, "yes") || !strcasecmp(val, "on")) {
				v[n] = malloc(strlen(o->name) + 3);
				sprintf(v[n++], "--%s", o->name);
			} else if (*val && strcasecmp(val, "0") && strcasecmp(val, "false") &&
			           strcasecmp(val, "no") && strcasecmp(val, "off")) {
				usage_error("invalid %s '%s' (1/true/yes/on or 0/false/no/off)",
				            var, val);
			}
			continue;
		}
		copy = strdup(val);
		const char *sep = !strcmp(o->name, "fault") ? "\n" : ",";
		for (char *t = repeatable(o->name) ? strtok_r(copy, sep, &save) : copy; t;
		     t = repeatable(o->name) ? strtok_r(NULL, sep, &save) : NULL) {
			if (n + 2 >= argc + 255)
				usage_error("too many values in %s", var);
			v[n] = malloc(strlen(o->name) + strlen(t) + 4);
			sprintf(v[n++], "--%s=%s", o->name, t);
		}
		free(copy);
	}
	for (int i = 1; i < argc; i++)
		v[n++] = argv[i];
	*out_argc = n;
	return v;
}

/* parse_expect - NAME OP VALUE, OP one of = == != >= <= > <; the name is
 * checked against the report's counters once the server is set up. */
static void parse_expect(struct server_cfg *cfg, const char *arg)
{
	static const char *const ops[] = {">=", "<=", "!=", "==", "=", ">", "<"};
	static const enum expect_op opv[] = {EXP_GE, EXP_LE, EXP_NE, EXP_EQ,
	                                     EXP_EQ, EXP_GT, EXP_LT};
	struct expect *e;
	size_t n = strspn(arg, "abcdefghijklmnopqrstuvwxyz0123456789_.");

	if (!n || n >= sizeof(e->name))
		usage_error("invalid --expect '%s' (e.g. messages=10, rejected_messages=0, "
		            "messages>=100)",
		            arg);
	if (cfg->nexpects == SINK_MAX_EXPECT)
		usage_error("too many --expect (max %d)", SINK_MAX_EXPECT);
	e = &cfg->expects[cfg->nexpects];
	memcpy(e->name, arg, n);
	e->name[n] = 0;
	e->text = arg;
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		size_t ol = strlen(ops[i]);
		if (!strncmp(arg + n, ops[i], ol)) {
			e->op = opv[i];
			if (units_parse_count(arg + n + ol, &e->value))
				usage_error("invalid value in --expect '%s'", arg);
			cfg->nexpects++;
			return;
		}
	}
	usage_error("invalid --expect '%s': expected NAME=N, NAME!=N, NAME>=N, NAME<=N, NAME>N "
	            "or NAME<N",
	            arg);
}

void cfg_parse(struct server_cfg *cfg, int argc, char **argv)
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
		O_REQ_AUTH,
		O_EXPECT,
		O_MAX_RUNTIME,
		O_HTTP,
		O_FAULT,
		O_FAULT_FILE,
		O_SEED,
		O_ADDR_FAULTS,
		O_GREYLIST,
		O_GREYLIST_EXPIRY,
		O_GREYLIST_MAX,
		O_RATE_LIMIT,
		O_RATE_LIMIT_REPLY,
		O_MAX_MSGS_SESSION,
		O_MAX_CONNS_IP,
		O_CAPTURE,
		O_CAPTURE_SAMPLE,
		O_CAPTURE_FIRST,
		O_CAPTURE_MAX,
		O_CAPTURE_STRICT,
		O_PROXY,
		O_PROXY_TIMEOUT
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
	    {"expect", required_argument, NULL, O_EXPECT},
	    {"max-runtime", required_argument, NULL, O_MAX_RUNTIME},
	    {"http", required_argument, NULL, O_HTTP},
	    {"fault", required_argument, NULL, O_FAULT},
	    {"fault-file", required_argument, NULL, O_FAULT_FILE},
	    {"seed", required_argument, NULL, O_SEED},
	    {"address-faults", no_argument, NULL, O_ADDR_FAULTS},
	    {"greylist", required_argument, NULL, O_GREYLIST},
	    {"greylist-expiry", required_argument, NULL, O_GREYLIST_EXPIRY},
	    {"greylist-max", required_argument, NULL, O_GREYLIST_MAX},
	    {"rate-limit", required_argument, NULL, O_RATE_LIMIT},
	    {"rate-limit-reply", required_argument, NULL, O_RATE_LIMIT_REPLY},
	    {"max-msgs-per-session", required_argument, NULL, O_MAX_MSGS_SESSION},
	    {"max-conns-per-ip", required_argument, NULL, O_MAX_CONNS_IP},
	    {"capture", required_argument, NULL, O_CAPTURE},
	    {"capture-sample", required_argument, NULL, O_CAPTURE_SAMPLE},
	    {"capture-first", required_argument, NULL, O_CAPTURE_FIRST},
	    {"capture-max-bytes", required_argument, NULL, O_CAPTURE_MAX},
	    {"capture-strict", no_argument, NULL, O_CAPTURE_STRICT},
	    {"proxy-protocol", required_argument, NULL, O_PROXY},
	    {"proxy-timeout", required_argument, NULL, O_PROXY_TIMEOUT},
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
	cfg->proxy_timeout_ns = 5ull * 1000000000ull; /* Postfix smtpd_upstream_proxy_timeout */

	argv = env_args(opts, argc, argv, &argc);
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
		case O_EXPECT:
			parse_expect(cfg, optarg);
			break;
		case O_FAULT:
			if (cfg->nfault_rules == SINK_MAX_FAULTS)
				usage_error("too many --fault (max %d; use --fault-file)",
				            SINK_MAX_FAULTS);
			cfg->fault_rules[cfg->nfault_rules++] = optarg;
			break;
		case O_FAULT_FILE:
			if (cfg->nfault_files == SINK_MAX_FAULTS)
				usage_error("too many --fault-file (max %d)", SINK_MAX_FAULTS);
			cfg->fault_files[cfg->nfault_files++] = optarg;
			break;
		case O_SEED:
			cfg->seed = opt_count("--seed", optarg, UINT64_MAX);
			break;
		case O_ADDR_FAULTS:
			cfg->address_faults = true;
			break;
		case O_GREYLIST:
			cfg->greylist_ns = opt_duration("--greylist", optarg);
			if (!cfg->greylist_ns)
				usage_error("--greylist must be more than 0");
			break;
		case O_GREYLIST_EXPIRY:
			cfg->greylist_expiry_ns = opt_duration("--greylist-expiry", optarg);
			break;
		case O_GREYLIST_MAX:
			cfg->greylist_max = (uint32_t)opt_count("--greylist-max", optarg, 1u << 30);
			if (!cfg->greylist_max)
				usage_error("--greylist-max must be at least 1");
			break;
		case O_RATE_LIMIT:
			cfg->rate_limit = optarg;
			break;
		case O_RATE_LIMIT_REPLY:
			cfg->rate_limit_reply = optarg;
			break;
		case O_MAX_MSGS_SESSION:
			cfg->sess.max_msgs_per_session =
			    (uint32_t)opt_count("--max-msgs-per-session", optarg, 1u << 30);
			break;
		case O_MAX_CONNS_IP:
			cfg->max_conns_per_ip =
			    (uint32_t)opt_count("--max-conns-per-ip", optarg, 1u << 30);
			break;
		case O_CAPTURE:
			cfg->capture_dir = optarg;
			break;
		case O_CAPTURE_SAMPLE: {
			const char *v = optarg;
			if (!strncmp(v, "1/", 2))
				v += 2;
			cfg->capture_sample = opt_count("--capture-sample (1/N)", v, 1u << 30);
			if (!cfg->capture_sample)
				usage_error("--capture-sample must be 1/N with N >= 1");
			break;
		}
		case O_CAPTURE_FIRST:
			cfg->capture_first = opt_count("--capture-first", optarg, UINT64_MAX);
			break;
		case O_CAPTURE_MAX:
			cfg->capture_max_bytes = opt_size("--capture-max-bytes", optarg);
			break;
		case O_CAPTURE_STRICT:
			cfg->capture_strict = true;
			break;
		case O_PROXY:
			parse_proxy_from(cfg, optarg);
			break;
		case O_PROXY_TIMEOUT:
			cfg->proxy_timeout_ns = opt_duration("--proxy-timeout", optarg);
			if (!cfg->proxy_timeout_ns)
				usage_error("--proxy-timeout must be more than 0");
			break;
		case O_HTTP: {
			char err[128];
			if (addr_parse(optarg, 1, &cfg->http.ss, &cfg->http.len, err, sizeof(err)))
				usage_error("invalid --http '%s': %s", optarg, err);
			snprintf(cfg->http.text, sizeof(cfg->http.text), "%s", optarg);
			break;
		}
		case O_MAX_RUNTIME:
			cfg->max_runtime_ns = opt_duration("--max-runtime", optarg);
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
	if ((cfg->capture_sample || cfg->capture_first || cfg->capture_max_bytes ||
	     cfg->capture_strict) &&
	    !cfg->capture_dir)
		usage_error("--capture-sample/-first/-max-bytes/-strict need --capture DIR");
	if ((cfg->sess.require_auth || cfg->sess.auth_insecure) && !cfg->sess.auth)
		usage_error("--require-auth and --auth-insecure need --auth");
	cfg->sess.starttls = tls;
	cfg->sess.hostname = cfg->hostname;
}

/* file_slurp - a whole file, NUL-terminated (for --fault-file and the
 * captured messages /api/v1 serves), or NULL with errno set. */
char *file_slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *p = NULL;
	size_t cap = 0, n = 0;

	if (!f)
		return NULL;
	for (;;) {
		if (n + 4096 + 1 > cap) {
			char *q = realloc(p, cap = cap ? cap * 2 : 8192);
			if (!q) {
				free(p);
				fclose(f);
				return NULL;
			}
			p = q;
		}
		size_t k = fread(p + n, 1, cap - n - 1, f);
		n += k;
		if (k == 0)
			break;
	}
	fclose(f);
	p[n] = 0;
	*len = n;
	return p;
}
