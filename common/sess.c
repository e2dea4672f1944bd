/*
 * sess.c - SMTP server session core: command table, replies, transactions
 *
 * Input arrives through sess_feed() in buffers of any size; the scanner
 * (scan.c) splits it into command lines, DATA content or BDAT chunks, and
 * this file turns those into replies appended to the connection's obuf.
 * Nothing here performs I/O, allocates per message or keeps global state,
 * so the same code runs under io_uring, epoll and the transcript tests.
 *
 * Reply texts follow Postfix smtpd/smtp-sink where a choice exists, so
 * clients that already cope with Postfix see nothing new.  RFC 2034
 * enhanced codes go on every reply except the greeting and HELO/EHLO
 * success replies, and disappear with the ENHANCEDSTATUSCODES keyword when
 * that is hidden (as Postfix smtpd_discard_ehlo_keywords does).
 */
#include "sink/sess.h"

#include <stdio.h>
#include <string.h>

/* Replies: code, enhanced code (RFC 2034, NULL = none), text, and the
 * counter the reply bumps.  Every reply the session sends comes from this
 * table, so counters cannot drift from what clients were told. */
enum reply_id {
	R_OK = 0,
	R_GREETING, /* counted only: the 220 greeting is written by sess_start */
	R_HELLO,    /* counted only: the HELO/EHLO 250 */
	R_QUEUED,   /* + queue id */
	R_CHUNK_OK, /* + "<n> bytes" */
	R_VRFY,     /* + the argument */
	R_MAIL_OK,
	R_RCPT_OK,
	R_DATA_GO,
	R_BYE,
	R_HELP,
	R_NEED_HELO,
	R_NESTED_MAIL,
	R_NEED_MAIL,
	R_NEED_RCPT,
	R_DATA_AFTER_BDAT,
	R_BAD_SYNTAX,
	R_USAGE,     /* "Syntax: " + the command's usage */
	R_BAD_PARAM, /* "Unsupported option: " + the parameter */
	R_BAD_SIZE,
	R_BAD_BODY,
	R_BAD_SENDER,
	R_BAD_RCPT,
	R_SIZE_LIMIT,
	R_TOO_MANY_RCPT,
	R_TOO_MANY_RCPT_OVER, /* same reply, past the overshoot: counts as an error */
	R_UTF8,
	R_TOO_BIG,
	R_BARE_LF,
	R_BARE_CR,
	R_UNKNOWN,
	R_NOT_IMPL,
	R_TOO_LONG,
	R_BDAT_SYNTAX,
	R_BDAT_OFF,
	R_BDAT_DISCARD,
	R_BDAT_TOO_BIG,
	R_421_ERRORS,
	R_421_TIMEOUT,
	R_421_SHUTDOWN,
	R_421_MSGS,
	R_STORAGE,
	R_STARTTLS_GO,
	R_TLS_ACTIVE,
	R_NEED_TLS,
	R_NEED_AUTH,
	R_AUTH_OFF,
	R_AUTH_NEED_ENC,
	R_AUTH_TWICE,
	R_AUTH_IN_TX,
	R_AUTH_MECH,
	R_AUTH_CHALLENGE, /* + base64 prompt */
	R_AUTH_OK,
	R_AUTH_FAIL,
	R_AUTH_ABORT,
	R_AUTH_B64,
	R_COUNT,
};

/* counter index + 1 into struct sess_stats; 0 = none */
#define CTR(f) (uint8_t)(offsetof(struct sess_stats, f) / sizeof(uint64_t) + 1)

/* Reply flags. */
#define RF_HOST    0x1u /* "CODE ESC <host> text" (Postfix's 421 wording) */
#define RF_NOERROR 0x2u /* 4xx/5xx that does not count towards max_errors */

struct reply_def {
	const char *code; /* "250" */
	const char *esc;  /* "2.0.0" or NULL */
	const char *text;
	uint8_t ctr;   /* CTR(field) or 0 */
	uint8_t flags; /* RF_* */
};

static const struct reply_def reply_table[R_COUNT] = {
    [R_OK] = {"250", "2.0.0", "Ok", 0, 0},
    [R_GREETING] = {"220", NULL, "", 0, 0},
    [R_HELLO] = {"250", NULL, "", 0, 0},
    [R_QUEUED] = {"250", "2.0.0", "Ok: queued as ", 0, 0},
    [R_CHUNK_OK] = {"250", "2.0.0", "Ok: ", 0, 0},
    /* RFC 5321 3.5.3: 252 "cannot verify, but will accept" */
    [R_VRFY] = {"252", "2.0.0", "", 0, 0},
    [R_MAIL_OK] = {"250", "2.1.0", "Ok", 0, 0},
    [R_RCPT_OK] = {"250", "2.1.5", "Ok", 0, 0},
    /* 354 is an intermediate reply; Postfix sends it without a code. */
    [R_DATA_GO] = {"354", NULL, "End data with <CR><LF>.<CR><LF>", 0, 0},
    [R_BYE] = {"221", "2.0.0", "Bye", 0, 0},
    /* RFC 5321 4.1.1.8: HELP answers 211/214. */
    [R_HELP] = {"214", "2.0.0", "Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP",
                0, 0},
    [R_NEED_HELO] = {"503", "5.5.1", "Error: send HELO/EHLO first", CTR(err_sequence), 0},
    [R_NESTED_MAIL] = {"503", "5.5.1", "Error: nested MAIL command", CTR(err_sequence), 0},
    [R_NEED_MAIL] = {"503", "5.5.1", "Error: need MAIL command", CTR(err_sequence), 0},
    /* RFC 5321 3.3 allows 503 or 554 for DATA without a valid RCPT. */
    [R_NEED_RCPT] = {"503", "5.5.1", "Error: need RCPT command", CTR(err_sequence), 0},
    /* RFC 3030 2: DATA and BDAT must not be mixed in one transaction. */
    [R_DATA_AFTER_BDAT] = {"503", "5.5.1", "Error: DATA after BDAT", CTR(err_sequence), 0},
    [R_BAD_SYNTAX] = {"500", "5.5.2", "Error: bad syntax", CTR(err_syntax), 0},
    [R_USAGE] = {"501", "5.5.4", "Syntax: ", CTR(err_syntax), 0},
    /* RFC 1869 6: unknown MAIL/RCPT parameter */
    [R_BAD_PARAM] = {"555", "5.5.4", "Unsupported option: ", CTR(err_syntax), 0},
    [R_BAD_SIZE] = {"501", "5.5.4", "Bad message size syntax", CTR(err_syntax), 0},
    [R_BAD_BODY] = {"501", "5.5.4", "Bad BODY keyword syntax", CTR(err_syntax), 0},
    [R_BAD_SENDER] = {"501", "5.1.7", "Bad sender address syntax", CTR(err_syntax), 0},
    [R_BAD_RCPT] = {"501", "5.1.3", "Bad recipient address syntax", CTR(err_syntax), 0},
    /* RFC 1870 6.1: declared size over the fixed limit. */
    [R_SIZE_LIMIT] = {"552", "5.3.4", "Message size exceeds fixed limit", CTR(err_size), 0},
    /* RFC 5321 4.5.3.1.10: 452 keeps the transaction for the others; like
     * Postfix, the first rcpt_overshoot of them are not session errors. */
    [R_TOO_MANY_RCPT] = {"452", "4.5.3", "Error: too many recipients", CTR(err_rcpt_limit),
                         RF_NOERROR},
    [R_TOO_MANY_RCPT_OVER] = {"452", "4.5.3", "Error: too many recipients", CTR(err_rcpt_limit), 0},
    /* RFC 6531 3.5 */
    [R_UTF8] = {"553", "5.6.7", "Must declare SMTPUTF8 to send unicode address", CTR(err_utf8), 0},
    [R_TOO_BIG] = {"552", "5.3.4", "Error: message file too big", CTR(err_size), 0},
    /* As Postfix smtpd_forbid_bare_newline = reject (RFC 5321 2.3.8). */
    [R_BARE_LF] = {"550", "5.5.2", "Error: bare <LF> received", CTR(err_bare_lf), 0},
    [R_BARE_CR] = {"500", "5.5.2", "Error: bare <CR> or NUL in command", CTR(err_syntax), 0},
    [R_UNKNOWN] = {"500", "5.5.2", "Error: command not recognized", CTR(err_unknown), 0},
    [R_NOT_IMPL] = {"502", "5.5.1", "Error: command not implemented", CTR(err_unknown), 0},
    /* RFC 5321 4.5.3.1.4 / 4.5.3.1.9 */
    [R_TOO_LONG] = {"500", "5.5.2", "Error: command too long", CTR(err_too_long), 0},
    [R_BDAT_SYNTAX] = {"501", "5.5.4", "Syntax: BDAT count [LAST]", CTR(err_syntax), 0},
    /* RFC 3030 4: BDAT without CHUNKING offered; the framing is unknowable. */
    [R_BDAT_OFF] = {"521", "5.5.1", "Error: CHUNKING not enabled", CTR(err_unknown), 0},
    [R_BDAT_TOO_BIG] = {"552", "5.3.4", "Chunk exceeds message size limit", CTR(err_size), 0},
    /* RFC 3030 2: chunks after a failed one are read and discarded; the
     * failure itself was counted with the chunk that caused it. */
    [R_BDAT_DISCARD] = {"551", "5.0.0", "Error: chunk discarded after earlier error", 0, 0},
    [R_421_ERRORS] = {"421", "4.7.0", "Error: too many errors", CTR(err_limit_close),
                      RF_HOST | RF_NOERROR},
    /* RFC 5321 4.5.3.2.7; wording as Postfix smtpd. */
    [R_421_TIMEOUT] = {"421", "4.4.2", "Error: timeout exceeded", CTR(timeouts),
                       RF_HOST | RF_NOERROR},
    [R_421_SHUTDOWN] = {"421", "4.3.2", "Service shutting down", CTR(shutdowns),
                        RF_HOST | RF_NOERROR},
    /* --max-msgs-per-session, as large providers end long sessions */
    [R_421_MSGS] = {"421", "4.7.0", "Error: too many messages in this session",
                    CTR(msgs_per_session_close), RF_HOST | RF_NOERROR},
    /* RFC 5321 4.2.3 / RFC 3463: the message could not be stored */
    [R_STORAGE] = {"452", "4.3.1", "Insufficient system storage", CTR(err_storage), RF_NOERROR},
    /* RFC 3207 4 */
    [R_STARTTLS_GO] = {"220", "2.0.0", "Ready to start TLS", CTR(starttls), 0},
    [R_TLS_ACTIVE] = {"503", "5.5.1", "Error: TLS already active", CTR(err_sequence), 0},
    [R_NEED_TLS] = {"530", "5.7.0", "Must issue a STARTTLS command first", CTR(err_tls_required),
                    0},
    /* RFC 4954 6 */
    [R_NEED_AUTH] = {"530", "5.7.0", "Authentication required", CTR(err_auth_required), 0},
    [R_AUTH_OFF] = {"503", "5.5.1", "Error: authentication not enabled", CTR(err_sequence), 0},
    [R_AUTH_NEED_ENC] = {"538", "5.7.11",
                         "Encryption required for requested authentication mechanism",
                         CTR(err_tls_required), 0},
    [R_AUTH_TWICE] = {"503", "5.5.1", "Error: already authenticated", CTR(err_sequence), 0},
    [R_AUTH_IN_TX] = {"503", "5.5.1", "Error: MAIL transaction in progress", CTR(err_sequence), 0},
    [R_AUTH_MECH] = {"504", "5.5.4", "Unrecognized authentication type", CTR(err_syntax), 0},
    /* 334 is an intermediate reply: no enhanced code (RFC 2034 3) */
    [R_AUTH_CHALLENGE] = {"334", NULL, "", 0, 0},
    [R_AUTH_OK] = {"235", "2.7.0", "Authentication successful", 0, 0},
    [R_AUTH_FAIL] = {"535", "5.7.8", "Error: authentication failed", 0, 0},
    [R_AUTH_ABORT] = {"501", "5.7.0", "Authentication aborted", CTR(auth_aborted), 0},
    [R_AUTH_B64] = {"501", "5.5.2", "Error: invalid base64 data", CTR(err_syntax), 0},
};

_Static_assert(R_COUNT <= SESS_REPLY_KINDS, "SESS_REPLY_KINDS too small");

const char *sess_reply_code(unsigned k)
{
	return k < R_COUNT ? reply_table[k].code : NULL;
}

const char *const sess_stage_names[SESS_NSTAGES] = {"connect", "helo", "mail", "rcpt",     "data",
                                                    "eod",     "bdat", "auth", "starttls", "other"};

const uint64_t sess_size_bounds[SESS_SIZE_BUCKETS - 1] = {
    1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864};

const char *const sess_counter_names[] = {
#define SESS_X_NAME(f, name, doc) name,
    SESS_COUNTERS(SESS_X_NAME)
#undef SESS_X_NAME
};

const char *const sess_counter_docs[] = {
#define SESS_X_DOC(f, name, doc) doc,
    SESS_COUNTERS(SESS_X_DOC)
#undef SESS_X_DOC
};

/* Command flags. */
#define CMD_LAST      0x1u /* RFC 2920 3.1: may only end a pipelined group */
#define CMD_NOARGS    0x2u /* any argument is a 501 syntax error */
#define CMD_NEED_TLS  0x4u /* 530 before TLS with require_tls */
#define CMD_NEED_AUTH 0x8u /* 530 before AUTH with require_auth */

struct cmd_ctx {
	const char *arg; /* after the verb and one space; not NUL-terminated */
	size_t arglen;
	/* filled by check, used by proceed */
	uint64_t n;
	uint8_t flag;
	uint8_t has_size; /* MAIL: SIZE= given (for fault matching) */
	uint64_t size;
};

struct cmd_def {
	char verb[5];
	uint8_t flags;
	const char *syntax; /* text after "Syntax: " for CMD_NOARGS / missing args */
	/* check - validate syntax and state; returns a reply id, or -1 when the
	 * command may proceed.  Never changes the session. */
	int (*check)(struct sess *s, struct cmd_ctx *c);
	/* proceed - perform the command and queue its reply. */
	void (*proceed)(struct sess *s, struct cmd_ctx *c);
	uint8_t stage;  /* enum sess_stage of its replies */
	uint8_t fstage; /* enum fault_stage its reply is asked at; FAULT_ST_COUNT: none */
};

static const char crlf[2] = {'\r', '\n'};

static inline int esc_on(const struct sess *s)
{
	return (s->cfg->ext & SESS_EXT_ENHANCEDSTATUSCODES) != 0;
}

/* put - append n raw bytes (obuf records overflow; sess_feed closes then). */
static inline void put(struct sess *s, const char *p, size_t n)
{
	obuf_append(s->out, p, n);
}

static inline void puts_(struct sess *s, const char *str)
{
	put(s, str, strlen(str));
}

/* reply_head - "CODE[ ESC] " or "CODE-[ESC ]" for multi-line replies. */
static void reply_head(struct sess *s, const struct reply_def *r, char sep)
{
	char h[16];
	size_t n = 0;

	memcpy(h, r->code, 3);
	h[3] = sep;
	n = 4;
	if (r->esc && esc_on(s)) {
		size_t el = strlen(r->esc);
		memcpy(h + n, r->esc, el);
		n += el;
		h[n++] = ' ';
	}
	put(s, h, n);
}

/* reply_open - code, enhanced code, [host,] text; bumps the reply's counter
 * and, for 4xx/5xx, the session's error count (Postfix hard_error_limit).
 * The caller may append more text, then calls reply_close(). */
static void reply_open(struct sess *s, enum reply_id id)
{
	const struct reply_def *r = &reply_table[id];

	reply_head(s, r, ' ');
	if (r->flags & RF_HOST) {
		puts_(s, s->cfg->hostname);
		put(s, " ", 1);
	}
	puts_(s, r->text);
	if (r->ctr)
		((uint64_t *)s->stats)[r->ctr - 1]++;
	s->stats->replies[id]++;
	if (r->code[0] == '4' || r->code[0] == '5') {
		s->stats->refused[s->stage]++;
		if (!(r->flags & RF_NOERROR))
			s->errors++;
	}
}

static inline void reply_close(struct sess *s)
{
	put(s, crlf, 2);
}

static void reply(struct sess *s, enum reply_id id)
{
	reply_open(s, id);
	reply_close(s);
}

/* reply_arg - a reply that names something the client sent (bounded so the
 * line stays inside RFC 5321 4.5.3.1.5's 512 octets). */
static void reply_arg(struct sess *s, enum reply_id id, const char *arg, size_t n)
{
	reply_open(s, id);
	put(s, arg, n > 64 ? 64 : n);
	reply_close(s);
}

/* put_hex - fixed-width upper-case hex, for queue ids. */
static void put_hex(struct sess *s, uint64_t v, int digits)
{
	static const char hex[] = "0123456789ABCDEF";
	char b[16];

	for (int i = digits - 1; i >= 0; i--) {
		b[i] = hex[v & 15];
		v >>= 4;
	}
	put(s, b, (size_t)digits);
}

static void put_u64(struct sess *s, uint64_t v)
{
	char b[24];
	int i = 24;

	do {
		b[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	put(s, b + i, (size_t)(24 - i));
}

/* reply_queued - "250 2.0.0 Ok: queued as <id>"; ids are unique per process
 * (worker number in the top 16 bits, the worker's counter below). */
static void reply_queued(struct sess *s, bool noted)
{
	uint64_t id = ((uint64_t)s->id_prefix << 48) | (++*s->id_seq & 0xffffffffffffULL);

	reply_open(s, R_QUEUED);
	put_hex(s, id, 16);
	if (noted)
		puts_(s, " (bare <LF> received)");
	reply_close(s);
}

/* --- small parsing helpers ------------------------------------------- */

static inline char lower(char c)
{
	return (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
}

/* ieq_prefix - case-insensitive: does p[0..n) start with the lower-case lit? */
static bool ieq_prefix(const char *p, size_t n, const char *lit)
{
	size_t l = strlen(lit);

	if (n < l)
		return false;
	for (size_t i = 0; i < l; i++)
		if (lower(p[i]) != lit[i])
			return false;
	return true;
}

static bool ieq(const char *p, size_t n, const char *lit)
{
	return n == strlen(lit) && ieq_prefix(p, n, lit);
}

/* parse_u64 - all-digit decimal, 1..20 digits, no overflow. */
static bool parse_u64(const char *p, size_t n, uint64_t *out)
{
	uint64_t v = 0;

	if (n == 0 || n > 20)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned d = (unsigned char)p[i] - '0';
		if (d > 9)
			return false;
		if (v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*out = v;
	return true;
}

enum path_res { PATH_OK, PATH_SYNTAX, PATH_UTF8 };

/* What RFC 5321 4.1.2 does not allow but Postfix (strict_rfc821_envelopes
 * = no) and this sink accept unless --strict: */
#define PATH_LENIENT_NOBRACKETS 0x1u /* "MAIL FROM:a@b" without <> */
#define PATH_LENIENT_SPACE      0x2u /* "MAIL FROM: <a@b>", space before the path */

/* path_special - octets parse_path() must look at: controls, DEL, 8-bit
 * (SMTPUTF8), quote, backslash, space, angle brackets. */
static const uint8_t path_special[256] = {
    [0x00 ... 0x1f] = 1, ['"'] = 1, ['\\'] = 1, [' '] = 1, ['<'] = 1, ['>'] = 1,
    [0x7f ... 0xff] = 1,
};

/* parse_path - RFC 5321 4.1.2 Reverse-path / Forward-path, leniently: "<...>"
 * (source routes and quoted local parts allowed) or a bare address up to the
 * first space.  No controls, no unquoted spaces.  Sets *end past the path,
 * *empty for "<>", *utf8 when octets >= 0x80 appear (RFC 6531 needs SMTPUTF8
 * for those) and *lenient to PATH_LENIENT_* bits. */
static enum path_res parse_path(const char *p, size_t n, size_t *end, bool *empty, bool *utf8,
                                unsigned *lenient)
{
	size_t i = 0;
	bool quoted = false, bracket;

	*utf8 = false;
	*lenient = 0;
	while (i < n && p[i] == ' ')
		i++;
	if (i)
		*lenient |= PATH_LENIENT_SPACE;
	if (i == n)
		return PATH_SYNTAX;
	bracket = p[i] == '<';
	if (bracket)
		i++;
	else
		*lenient |= PATH_LENIENT_NOBRACKETS;
	size_t start = i;
	for (; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		/* most octets of an address are none of the ones below: one
		 * table lookup each instead of eight tests (a profile of
		 * smtpbench --depth 16 had this loop above the scanner) */
		if (!path_special[c])
			continue;
		if (c < 0x20 || c == 0x7f)
			return PATH_SYNTAX;
		if (c >= 0x80)
			*utf8 = true;
		if (quoted) {
			if (c == '\\' && i + 1 < n)
				i++;
			else if (c == '"')
				quoted = false;
			continue;
		}
		if (c == '"') {
			quoted = true;
			continue;
		}
		if (bracket && c == '>')
			break;
		if (c == ' ' || (c == '<'))
			break;
		if (!bracket && c == '>')
			return PATH_SYNTAX;
	}
	if (quoted)
		return PATH_SYNTAX;
	if (bracket) {
		if (i == n || p[i] != '>')
			return PATH_SYNTAX;
		*empty = (i == start);
		i++;
	} else {
		if (i == start)
			return PATH_SYNTAX;
		*empty = false;
	}
	if (i < n && p[i] != ' ')
		return PATH_SYNTAX;
	*end = i;
	return *utf8 ? PATH_UTF8 : PATH_OK;
}

/* next_param - split the next space-separated "KEY[=VALUE]" token. */
static bool next_param(const char **p, const char *e, const char **k, size_t *kl, const char **v,
                       size_t *vl)
{
	const char *q = *p;

	while (q < e && *q == ' ')
		q++;
	if (q == e)
		return false;
	*k = q;
	while (q < e && *q != ' ' && *q != '=')
		q++;
	*kl = (size_t)(q - *k);
	*v = NULL;
	*vl = 0;
	if (q < e && *q == '=') {
		*v = ++q;
		while (q < e && *q != ' ')
			q++;
		*vl = (size_t)(q - *v);
	}
	*p = q;
	return true;
}

/* --- transactions ---------------------------------------------------- */

static void tx_reset(struct sess *s)
{
	if (s->state != SESS_ST_INIT && s->state != SESS_ST_CLOSING)
		s->state = SESS_ST_READY;
	s->nrcpt = 0;
	s->nrcpt_refused = 0;
	s->tx_smtputf8 = 0;
	s->tx_failed = 0;
	s->tx_bdat = 0;
	s->bdat_last = 0;
	s->tx_fail_reason = 0;
	s->tx_size = 0;
	s->f_has_from = 0;
}

static void content_begin(struct sess *s)
{
	if (s->content_ops && s->content_ops->begin)
		s->content_ops->begin(s->content_ctx);
}

static void content_end(struct sess *s, bool accepted)
{
	if (s->content_ops && s->content_ops->end)
		s->content_ops->end(s->content_ctx, accepted);
}

/* may_start - the host's word on starting a transaction (server stopping). */
static bool may_start(struct sess *s)
{
	return !s->policy_ops || !s->policy_ops->may_start ||
	       s->policy_ops->may_start(s->content_ctx);
}

/* stop_session - 421 4.3.2 and close: the server is going down. */
static void stop_session(struct sess *s)
{
	reply(s, R_421_SHUTDOWN);
	s->state = SESS_ST_CLOSING;
}

/* message_done - after the reply to a message's end: a stopping server
 * lets the message finish, then ends the session at once instead of
 * accepting the next pipelined transaction. */
static void message_done(struct sess *s)
{
	tx_reset(s);
	if (!may_start(s)) {
		stop_session(s);
	} else if (s->cfg->max_msgs_per_session && s->msgs >= s->cfg->max_msgs_per_session &&
	           s->state != SESS_ST_CLOSING) {
		reply(s, R_421_MSGS);
		s->state = SESS_ST_CLOSING;
	}
}

static void accept_message(struct sess *s, uint64_t size, bool noted)
{
	unsigned b = 0;

	while (b < SESS_SIZE_BUCKETS - 1 && size > sess_size_bounds[b])
		b++;
	s->stats->size_hist[b]++;
	s->stats->msgs++;
	s->msgs++;
	s->stats->msg_bytes += size;
	content_end(s, true);
	reply_queued(s, noted);
}

static void reject_message(struct sess *s, enum reply_id why)
{
	s->stats->rejected_msgs++;
	content_end(s, false);
	reply(s, why);
}

/* --- faults (fault.h): "what now?" before a reply ----------------------- */

enum { DEFER_NONE = 0, DEFER_GREETING, DEFER_CMD, DEFER_EOD, DEFER_BDAT, DEFER_STARTTLS };
enum fault_res { F_NORMAL, F_DONE, F_DEFER };

/* path_of - the address in "FROM:<a@b> SIZE=1" / "TO: a@b" after skip
 * octets: without the angle brackets and parameters. */
static void path_of(const char *arg, size_t n, size_t skip, const char **p, size_t *len)
{
	size_t i = skip < n ? skip : n, start;

	while (i < n && arg[i] == ' ')
		i++;
	if (i < n && arg[i] == '<') {
		start = ++i;
		while (i < n && arg[i] != '>')
			i++;
	} else {
		start = i;
		while (i < n && arg[i] != ' ')
			i++;
	}
	*p = arg + start;
	*len = i - start;
}

static void keep(char *dst, uint16_t *dlen, const char *src, size_t n, size_t cap)
{
	if (n > cap)
		n = cap;
	memcpy(dst, src, n);
	*dlen = (uint16_t)n;
}

/* fault_ask - the host's "what now?" at stage st; helo: this command's
 * argument at helo/ehlo (else the one kept), to: the RCPT being answered. */
static bool fault_ask(struct sess *s, enum fault_stage st, const char *helo, size_t helo_len,
                      const char *to, size_t to_len, bool has_size, uint64_t size,
                      struct fault_decision *d)
{
	struct fault_ctx fc;

	if (!s->cfg->faults || !s->policy_ops || !s->policy_ops->fault)
		return false;
	memset(&fc, 0, sizeof(fc));
	fc.helo = helo ? helo : s->f_helo_len ? s->f_helo : NULL;
	fc.helo_len = helo ? helo_len : s->f_helo_len;
	fc.from = s->f_has_from ? s->f_from : NULL;
	fc.from_len = s->f_from_len;
	fc.to = to;
	fc.to_len = to_len;
	fc.has_size = has_size;
	fc.size = size;
	return s->policy_ops->fault(s->content_ctx, st, &fc, d);
}

/* fault_apply - act on d in place of the normal reply.  F_DEFER: delay=
 * first: the session suspends and sess_resume() acts on the saved
 * decision; F_DONE: the fault answered (or closes, or stalls); F_NORMAL:
 * the normal reply follows.  Injected replies do not count towards
 * --max-errors: a test that asks for 451s gets 451s, not a 421. */
static enum fault_res fault_apply(struct sess *s, const struct fault_decision *d, bool resumed)
{
	if (d->delay_ns && !resumed) {
		s->pending = *d;
		if (d->reply >= d->buf && d->reply < d->buf + sizeof(d->buf))
			s->pending.reply = s->pending.buf + (d->reply - d->buf);
		s->suspend_ns = d->delay_ns;
		s->suspended = 1;
		s->stats->faults_delayed++;
		return F_DEFER;
	}
	switch (d->act) {
	case FAULT_ACT_REPLY:
		put(s, d->reply, d->reply_len);
		s->stats->faults_replied++;
		if (d->code >= 400)
			s->stats->refused[s->stage]++;
		if (d->close) /* 421: RFC 5321 4.2.2, the server closes */
			s->state = SESS_ST_CLOSING;
		return F_DONE;
	case FAULT_ACT_DROP:
	case FAULT_ACT_RESET:
		s->stats->faults_closed++;
		s->fault_close = d->act == FAULT_ACT_DROP ? SESS_ACT_DROP : SESS_ACT_RESET;
		s->state = SESS_ST_CLOSING;
		return F_DONE;
	case FAULT_ACT_STALL:
		s->stats->faults_delayed++;
		s->suspend_ns = 0; /* never resumed: held until the client leaves or idles out */
		s->suspended = 1;
		return F_DONE;
	default:
		return F_NORMAL;
	}
}

/* acts - the SESS_ACT_* bits for the host, in order of precedence. */
static unsigned acts(const struct sess *s)
{
	if (s->fault_close)
		return s->fault_close;
	if (s->suspended)
		return SESS_ACT_SUSPEND;
	if (s->tls_pending)
		return SESS_ACT_STARTTLS;
	if (s->state == SESS_ST_CLOSING)
		return SESS_ACT_CLOSE;
	return 0;
}

/* message_faulted - a fault answered the end of a message (eod, BDAT
 * LAST): a 2xx accepts it (with the fault's text), anything else does not
 * (RFC 5321 4.2.5: only a 2xx takes responsibility). */
static void message_faulted(struct sess *s, const struct fault_decision *d, uint64_t size)
{
	if (d->act == FAULT_ACT_REPLY && d->code < 300) {
		unsigned b = 0;
		while (b < SESS_SIZE_BUCKETS - 1 && size > sess_size_bounds[b])
			b++;
		s->stats->size_hist[b]++;
		s->stats->msgs++;
		s->msgs++;
		s->stats->msg_bytes += size;
		content_end(s, true);
	} else {
		s->stats->rejected_msgs++;
		content_end(s, false);
	}
	if (!s->suspended && !s->fault_close && s->state != SESS_ST_CLOSING)
		message_done(s);
	else
		tx_reset(s);
}

/* --- commands ---------------------------------------------------------- */

static void envelope(struct sess *s, char kind, const char *arg, size_t n, size_t skip);
static int commit_message(struct sess *s);

/* auth_offered - RFC 4954 4: AUTH only over TLS unless told otherwise
 * (PLAIN and LOGIN send the password in the clear). */
static bool auth_offered(const struct sess *s)
{
	return s->cfg->auth && !s->authed && (s->tls || s->cfg->auth_insecure);
}

static int check_helo(struct sess *s, struct cmd_ctx *c)
{
	(void)s;
	return c->arglen ? -1 : R_BAD_SYNTAX; /* reply replaced by usage below */
}

/* HELO/EHLO abort a transaction in progress (RFC 5321 4.1.4). */
static void proceed_helo(struct sess *s, struct cmd_ctx *c)
{
	if (s->cfg->faults || s->cfg->keep_helo)
		keep(s->f_helo, &s->f_helo_len, c->arg, c->arglen, sizeof(s->f_helo));
	s->state = SESS_ST_READY;
	tx_reset(s);
	s->esmtp = 0;
	s->stats->replies[R_HELLO]++;
	put(s, "250 ", 4);
	puts_(s, s->cfg->hostname);
	put(s, crlf, 2);
}

static void proceed_ehlo(struct sess *s, struct cmd_ctx *c)
{
	uint32_t ext = s->cfg->ext;
	const char *kw[10];
	char size[32];
	int n = 0;

	if (s->cfg->faults || s->cfg->keep_helo)
		keep(s->f_helo, &s->f_helo_len, c->arg, c->arglen, sizeof(s->f_helo));
	s->state = SESS_ST_READY;
	tx_reset(s);
	s->esmtp = 1;
	if (ext & SESS_EXT_PIPELINING)
		kw[n++] = "PIPELINING";
	if (ext & SESS_EXT_SIZE) {
		/* RFC 1870 4: "SIZE" alone means no fixed limit. */
		if (s->cfg->max_size)
			snprintf(size, sizeof(size), "SIZE %llu",
			         (unsigned long long)s->cfg->max_size);
		else
			snprintf(size, sizeof(size), "SIZE");
		kw[n++] = size;
	}
	if (ext & SESS_EXT_8BITMIME)
		kw[n++] = "8BITMIME";
	if (ext & SESS_EXT_ENHANCEDSTATUSCODES)
		kw[n++] = "ENHANCEDSTATUSCODES";
	if (ext & SESS_EXT_SMTPUTF8)
		kw[n++] = "SMTPUTF8";
	if (ext & SESS_EXT_CHUNKING)
		kw[n++] = "CHUNKING";
	/* RFC 3207 4.2: not offered again once TLS is up */
	if (s->cfg->starttls && !s->tls)
		kw[n++] = "STARTTLS";
	if (auth_offered(s))
		kw[n++] = "AUTH PLAIN LOGIN";
	s->stats->replies[R_HELLO]++;
	/* RFC 5321 4.2.1: "250-" on every line but the last, which is "250 ". */
	put(s, n ? "250-" : "250 ", 4);
	puts_(s, s->cfg->hostname);
	put(s, crlf, 2);
	for (int i = 0; i < n; i++) {
		put(s, i == n - 1 ? "250 " : "250-", 4);
		puts_(s, kw[i]);
		put(s, crlf, 2);
	}
}

/* lenient - RFC 5321 syntax only a tolerant server takes: refused with
 * --strict, else accepted and counted. */
static bool lenient(struct sess *s, unsigned bits)
{
	if (!bits)
		return true;
	if (s->cfg->strict)
		return false;
	s->stats->lenient_syntax++;
	return true;
}

static int check_mail(struct sess *s, struct cmd_ctx *c)
{
	const char *p = c->arg, *e = c->arg + c->arglen, *k, *v;
	size_t end, kl, vl;
	bool empty, utf8, want_utf8 = false;
	unsigned len_bits;
	enum path_res pr;

	if (s->state == SESS_ST_INIT)
		return R_NEED_HELO;
	if (s->state != SESS_ST_READY)
		return R_NESTED_MAIL;
	if (!ieq_prefix(p, c->arglen, "from:"))
		return R_USAGE;
	p += 5;
	pr = parse_path(p, (size_t)(e - p), &end, &empty, &utf8, &len_bits);
	if (pr == PATH_SYNTAX || (len_bits && s->cfg->strict))
		return R_BAD_SENDER;
	p += end;
	c->n = 0;
	while (next_param(&p, e, &k, &kl, &v, &vl)) {
		uint32_t ext = s->cfg->ext;
		if ((ext & SESS_EXT_SIZE) && ieq(k, kl, "size")) {
			uint64_t n;
			if (!v || !parse_u64(v, vl, &n))
				return R_BAD_SIZE;
			if (s->cfg->max_size && n > s->cfg->max_size)
				return R_SIZE_LIMIT;
			c->size = n;
			c->has_size = 1;
		} else if ((ext & SESS_EXT_8BITMIME) && ieq(k, kl, "body")) {
			/* RFC 6152 2; BINARYMIME (RFC 3030) is not offered. */
			if (!v || !(ieq(v, vl, "7bit") || ieq(v, vl, "8bitmime")))
				return R_BAD_BODY;
		} else if ((ext & SESS_EXT_SMTPUTF8) && ieq(k, kl, "smtputf8") && !v) {
			want_utf8 = true;
		} else if (s->cfg->auth && ieq(k, kl, "auth") && v) {
			/* RFC 4954 5: AUTH=<mailbox> or <>; a sink has no use for it */
		} else {
			c->arg = k; /* name the offending option in the reply */
			c->arglen = kl;
			return R_BAD_PARAM;
		}
	}
	if (utf8 && !want_utf8)
		return R_UTF8;
	c->flag = want_utf8;
	c->n = len_bits;
	return -1;
}

static void proceed_mail(struct sess *s, struct cmd_ctx *c)
{
	if (!may_start(s)) {
		stop_session(s); /* no new transaction once the server is stopping */
		return;
	}
	envelope(s, 'M', c->arg, c->arglen, 5);
	lenient(s, (unsigned)c->n);
	s->state = SESS_ST_MAIL;
	s->tx_smtputf8 = c->flag;
	s->nrcpt = 0;
	s->nrcpt_refused = 0;
	s->tx_size = 0;
	reply(s, R_MAIL_OK);
}

static int check_rcpt(struct sess *s, struct cmd_ctx *c)
{
	const char *p = c->arg, *e = c->arg + c->arglen, *k, *v;
	size_t end, kl, vl;
	bool empty, utf8;
	unsigned len_bits;

	if (s->state != SESS_ST_MAIL && s->state != SESS_ST_RCPT)
		return R_NEED_MAIL;
	if (!ieq_prefix(p, c->arglen, "to:"))
		return R_USAGE;
	p += 3;
	if (parse_path(p, (size_t)(e - p), &end, &empty, &utf8, &len_bits) == PATH_SYNTAX ||
	    empty || (len_bits && s->cfg->strict))
		return R_BAD_RCPT;
	p += end;
	if (next_param(&p, e, &k, &kl, &v, &vl)) {
		c->arg = k; /* no DSN (RFC 3461) parameters are offered */
		c->arglen = kl;
		return R_BAD_PARAM;
	}
	if (utf8 && !s->tx_smtputf8)
		return R_UTF8;
	if (s->nrcpt >= s->cfg->max_rcpt) {
		/* Postfix smtpd_recipient_overshoot_limit: a client that sends a
		 * few too many is told 452 per extra recipient (RFC 5321
		 * 4.5.3.1.10) and keeps its session; only far past the limit do
		 * the extras count as errors. */
		return s->nrcpt_refused < s->cfg->rcpt_overshoot ? R_TOO_MANY_RCPT
		                                                 : R_TOO_MANY_RCPT_OVER;
	}
	c->n = len_bits;
	return -1;
}

static void envelope(struct sess *s, char kind, const char *arg, size_t n, size_t skip)
{
	if (s->content_ops && s->content_ops->envelope) {
		const char *p;
		size_t len;
		path_of(arg, n, skip, &p, &len);
		s->content_ops->envelope(s->content_ctx, kind, p, len);
	}
}

static void proceed_rcpt(struct sess *s, struct cmd_ctx *c)
{
	envelope(s, 'R', c->arg, c->arglen, 3);
	lenient(s, (unsigned)c->n);
	s->state = SESS_ST_RCPT;
	s->nrcpt++;
	s->stats->rcpts++;
	reply(s, R_RCPT_OK);
}

static int check_data(struct sess *s, struct cmd_ctx *c)
{
	(void)c;
	if (s->tx_bdat)
		return R_DATA_AFTER_BDAT;
	if (s->state != SESS_ST_RCPT)
		return R_NEED_RCPT;
	return -1;
}

static void proceed_data(struct sess *s, struct cmd_ctx *c)
{
	(void)c;
	if (!may_start(s)) {
		stop_session(s);
		return;
	}
	s->state = SESS_ST_DATA;
	reply(s, R_DATA_GO);
	/* The DATA line's own CRLF counts: content starts at line start, so a
	 * client may end an empty message with ".\r\n" at once. */
	scan_begin_data(&s->scan);
	content_begin(s);
}

/* BDAT n [LAST] (RFC 3030 2).  The count is parsed here because without it
 * the framing is unknowable: a bad count costs the connection. */
static int check_bdat(struct sess *s, struct cmd_ctx *c)
{
	const char *p = c->arg, *e = c->arg + c->arglen;
	const char *q = p;

	if (!(s->cfg->ext & SESS_EXT_CHUNKING))
		return R_BDAT_OFF;
	while (q < e && *q != ' ')
		q++;
	if (!parse_u64(p, (size_t)(q - p), &c->n))
		return R_BDAT_SYNTAX;
	while (q < e && *q == ' ')
		q++;
	c->flag = 0;
	if (q < e) {
		const char *w = q;
		while (q < e && *q != ' ')
			q++;
		if (!ieq(w, (size_t)(q - w), "last"))
			return R_BDAT_SYNTAX;
		while (q < e && *q == ' ')
			q++;
		if (q != e)
			return R_BDAT_SYNTAX;
		c->flag = 1;
	}
	return -1;
}

/* bdat_verdict - which reply the chunk gets once its octets are in. */
static enum reply_id bdat_verdict(struct sess *s, uint64_t n)
{
	if (s->state != SESS_ST_RCPT)
		return R_NEED_RCPT;
	if (s->tx_failed)
		return R_BDAT_DISCARD;
	/* The sum is checked for wrapping even without a limit: the client
	 * chooses n (up to 20 digits). */
	if (s->tx_size + n < n || (s->cfg->max_size && s->tx_size + n > s->cfg->max_size))
		return R_BDAT_TOO_BIG;
	return R_OK;
}

static void bdat_finish(struct sess *s, bool resumed);

static void proceed_bdat(struct sess *s, struct cmd_ctx *c)
{
	enum reply_id v = bdat_verdict(s, c->n);

	if (!s->tx_bdat && !may_start(s)) {
		/* Closing anyway, so the chunk's framing no longer matters. */
		stop_session(s);
		return;
	}

	if (s->state == SESS_ST_RCPT && !s->tx_bdat) {
		s->tx_bdat = 1; /* from here on DATA is refused (RFC 3030 2) */
		content_begin(s);
	}
	if (v == R_BDAT_TOO_BIG)
		s->tx_failed = 1;
	s->tx_fail_reason = (uint16_t)v;
	s->bdat_last = c->flag;
	s->bdat_len = c->n;
	if (v == R_OK)
		s->tx_size += c->n;
	s->bdat_prev_state = s->state;
	s->state = SESS_ST_BDAT;
	scan_begin_bdat(&s->scan, c->n);
	if (c->n == 0)
		bdat_finish(s, false);
}

/* bdat_finish - the chunk's octets are consumed: reply (RFC 3030 2). */
static void bdat_finish(struct sess *s, bool resumed)
{
	enum reply_id v = (enum reply_id)s->tx_fail_reason;

	if (!resumed) {
		s->scan.mode = SCAN_MODE_CMD;
		s->state = s->bdat_prev_state;
		s->stage = SESS_STAGE_BDAT;
	}
	if (v == R_OK && s->cfg->faults) {
		struct fault_decision fd;
		enum fault_res r = F_NORMAL;
		if (resumed) {
			fd = s->pending;
			r = fault_apply(s, &fd, true);
		} else if (fault_ask(s, s->bdat_last ? FAULT_ST_BDAT_LAST : FAULT_ST_BDAT, NULL, 0,
		                     NULL, 0, true, s->tx_size, &fd)) {
			r = fault_apply(s, &fd, false);
			if (r == F_DEFER) {
				s->defer = DEFER_BDAT;
				return;
			}
		}
		if (r == F_DONE) {
			if (s->bdat_last) {
				message_faulted(s, &fd, s->tx_size);
			} else if (fd.act != FAULT_ACT_REPLY || fd.code >= 400) {
				/* RFC 3030 2: what follows a failed chunk is discarded */
				s->tx_failed = 1;
				s->tx_fail_reason = R_BDAT_DISCARD;
			}
			return;
		}
	}
	if (v == R_OK) {
		if (s->bdat_last) {
			int commit = commit_message(s);
			if (commit == SESS_COMMIT_WAIT) {
				s->defer = DEFER_BDAT;
				return;
			}
			if (commit == SESS_COMMIT_FAIL)
				reject_message(s, R_STORAGE);
			else
				accept_message(s, s->tx_size, false);
			message_done(s);
		} else {
			reply_open(s, R_CHUNK_OK);
			put_u64(s, s->bdat_len);
			puts_(s, " bytes");
			reply_close(s);
		}
		return;
	}
	if (v == R_NEED_RCPT) {
		reply(s, v);
		return;
	}
	if (s->bdat_last) {
		reject_message(s, v);
		message_done(s);
	} else {
		reply(s, v);
	}
}

static int check_none(struct sess *s, struct cmd_ctx *c)
{
	(void)s;
	(void)c;
	return -1;
}

static void proceed_rset(struct sess *s, struct cmd_ctx *c)
{
	(void)c;
	tx_reset(s);
	reply(s, R_OK);
}

static void proceed_noop(struct sess *s, struct cmd_ctx *c)
{
	(void)c;
	reply(s, R_OK);
}

static void proceed_quit(struct sess *s, struct cmd_ctx *c)
{
	(void)c;
	reply(s, R_BYE);
	s->state = SESS_ST_CLOSING;
}

/* VRFY: RFC 5321 3.5.3 - 252 "cannot verify, but will accept". */
static void proceed_vrfy(struct sess *s, struct cmd_ctx *c)
{
	/* Keep the echo well inside the 512-octet reply line (4.5.3.1.5). */
	size_t n = c->arglen > 256 ? 256 : c->arglen;

	reply_open(s, R_VRFY);
	put(s, c->arg, n);
	reply_close(s);
}

static void proceed_help(struct sess *s, struct cmd_ctx *c)
{
	(void)c;
	reply(s, R_HELP);
}

static void proceed_not_impl(struct sess *s, struct cmd_ctx *c)
{
	(void)c;
	reply(s, R_NOT_IMPL);
}

/* --- AUTH (RFC 4954) ---------------------------------------------------- */

enum { AUTH_NONE = 0, AUTH_PLAIN_RESP, AUTH_LOGIN_USER, AUTH_LOGIN_PASS };

/* b64_decode - RFC 4648 base64, padded; returns the decoded length or -1.
 * out must hold n / 4 * 3 octets. */
static long b64_decode(const char *in, size_t n, char *out)
{
	static const signed char val[256] = {
	    ['A'] = 1,  ['B'] = 2,  ['C'] = 3,  ['D'] = 4,  ['E'] = 5,  ['F'] = 6,  ['G'] = 7,
	    ['H'] = 8,  ['I'] = 9,  ['J'] = 10, ['K'] = 11, ['L'] = 12, ['M'] = 13, ['N'] = 14,
	    ['O'] = 15, ['P'] = 16, ['Q'] = 17, ['R'] = 18, ['S'] = 19, ['T'] = 20, ['U'] = 21,
	    ['V'] = 22, ['W'] = 23, ['X'] = 24, ['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28,
	    ['c'] = 29, ['d'] = 30, ['e'] = 31, ['f'] = 32, ['g'] = 33, ['h'] = 34, ['i'] = 35,
	    ['j'] = 36, ['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40, ['o'] = 41, ['p'] = 42,
	    ['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48, ['w'] = 49,
	    ['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54, ['2'] = 55, ['3'] = 56,
	    ['4'] = 57, ['5'] = 58, ['6'] = 59, ['7'] = 60, ['8'] = 61, ['9'] = 62, ['+'] = 63,
	    ['/'] = 64}; /* value + 1; 0 = not base64 */
	size_t k = 0;

	if (n % 4)
		return -1;
	for (size_t i = 0; i < n; i += 4) {
		unsigned v[4], pad = 0;
		for (int j = 0; j < 4; j++) {
			unsigned char ch = (unsigned char)in[i + (size_t)j];
			if (ch == '=' && i + 4 == n && j >= 2) {
				pad++;
				v[j] = 0;
				continue;
			}
			if (pad || !val[ch])
				return -1;
			v[j] = (unsigned)val[ch] - 1;
		}
		unsigned w = v[0] << 18 | v[1] << 12 | v[2] << 6 | v[3];
		out[k++] = (char)(w >> 16);
		if (pad < 2)
			out[k++] = (char)(w >> 8);
		if (pad < 1)
			out[k++] = (char)w;
	}
	return (long)k;
}

static void wipe(void *p, size_t n)
{
	volatile char *v = p;

	while (n--)
		*v++ = 0;
}

/* auth_finish - check the credentials and answer 235 or 535. */
static void auth_finish(struct sess *s, bool plain, const char *user, size_t ulen, const char *pass,
                        size_t plen)
{
	bool ok = !s->policy_ops || !s->policy_ops->auth_check ||
	          s->policy_ops->auth_check(s->content_ctx, user, ulen, pass, plen);

	s->auth_step = AUTH_NONE;
	if (ok) {
		s->authed = 1;
		reply(s, R_AUTH_OK);
	} else {
		reply(s, R_AUTH_FAIL);
	}
	if (plain)
		ok ? s->stats->auth_plain_ok++ : s->stats->auth_plain_failed++;
	else
		ok ? s->stats->auth_login_ok++ : s->stats->auth_login_failed++;
}

/* auth_plain - RFC 4616: [authzid] NUL authcid NUL passwd, base64. */
static void auth_plain(struct sess *s, const char *b64, size_t n)
{
	char buf[SESS_AUTH_MAX / 4 * 3 + 3];
	long len;

	if (n > SESS_AUTH_MAX || (len = b64_decode(b64, n, buf)) < 0) {
		s->auth_step = AUTH_NONE;
		reply(s, R_AUTH_B64);
		return;
	}
	char *u = memchr(buf, 0, (size_t)len),
	     *p = u ? memchr(u + 1, 0, (size_t)(buf + len - u - 1)) : NULL;
	if (!u || !p) {
		s->auth_step = AUTH_NONE;
		s->stats->auth_plain_failed++;
		reply(s, R_AUTH_FAIL);
	} else {
		auth_finish(s, true, u + 1, (size_t)(p - u - 1), p + 1,
		            (size_t)(buf + len - p - 1));
	}
	wipe(buf, sizeof(buf));
}

static void auth_challenge(struct sess *s, const char *prompt)
{
	reply_open(s, R_AUTH_CHALLENGE);
	puts_(s, prompt);
	reply_close(s);
}

/* auth_response - a line answering our 334 (RFC 4954 4): "*" cancels. */
static void auth_response(struct sess *s, const char *p, size_t n)
{
	char buf[SESS_AUTH_MAX / 4 * 3 + 3];
	long len;

	if (n == 1 && p[0] == '*') {
		s->auth_step = AUTH_NONE;
		reply(s, R_AUTH_ABORT);
		return;
	}
	switch (s->auth_step) {
	case AUTH_PLAIN_RESP:
		auth_plain(s, p, n);
		return;
	case AUTH_LOGIN_USER:
		if (n > SESS_AUTH_MAX || (len = b64_decode(p, n, buf)) < 0 ||
		    (size_t)len > sizeof(s->auth_user)) {
			s->auth_step = AUTH_NONE;
			reply(s, R_AUTH_B64);
			return;
		}
		memcpy(s->auth_user, buf, (size_t)len);
		s->auth_user_len = (uint16_t)len;
		s->auth_step = AUTH_LOGIN_PASS;
		auth_challenge(s, "UGFzc3dvcmQ6"); /* "Password:" */
		return;
	default:
		if (n > SESS_AUTH_MAX || (len = b64_decode(p, n, buf)) < 0) {
			s->auth_step = AUTH_NONE;
			reply(s, R_AUTH_B64);
		} else {
			auth_finish(s, false, s->auth_user, s->auth_user_len, buf, (size_t)len);
		}
		wipe(buf, sizeof(buf));
		wipe(s->auth_user, sizeof(s->auth_user));
		s->auth_user_len = 0;
		return;
	}
}

static int check_auth(struct sess *s, struct cmd_ctx *c)
{
	if (!s->cfg->auth)
		return R_NOT_IMPL;
	if (s->state == SESS_ST_INIT)
		return R_NEED_HELO;
	if (s->authed)
		return R_AUTH_TWICE; /* RFC 4954 4: once per session */
	if (s->state != SESS_ST_READY)
		return R_AUTH_IN_TX;
	if (!s->tls && !s->cfg->auth_insecure)
		return R_AUTH_NEED_ENC;
	if (!c->arglen)
		return R_USAGE;
	return -1;
}

static void proceed_auth(struct sess *s, struct cmd_ctx *c)
{
	const char *p = c->arg, *e = c->arg + c->arglen, *mech = p, *ir;
	size_t ml;

	while (p < e && *p != ' ')
		p++;
	ml = (size_t)(p - mech);
	while (p < e && *p == ' ')
		p++;
	ir = p;
	if (ieq(mech, ml, "plain")) {
		if (ir == e) {
			s->auth_step = AUTH_PLAIN_RESP;
			auth_challenge(s, "");
		} else if (e - ir == 1 && *ir == '=') {
			auth_plain(s, ir, 0); /* "=": an empty initial response */
		} else {
			auth_plain(s, ir, (size_t)(e - ir));
		}
	} else if (ieq(mech, ml, "login")) {
		s->auth_step = AUTH_LOGIN_USER;
		if (ir == e)
			auth_challenge(s, "VXNlcm5hbWU6"); /* "Username:" */
		else
			auth_response(s, ir, (size_t)(e - ir)); /* user as initial response */
	} else {
		reply(s, R_AUTH_MECH);
	}
}

/* --- STARTTLS (RFC 3207) ----------------------------------------------- */

static void starttls(struct sess *s, const struct scan_line *l)
{
	if (!s->cfg->starttls) {
		reply(s, R_NOT_IMPL);
	} else if (s->tls) {
		reply(s, R_TLS_ACTIVE);
	} else if (l->len > 8) {
		reply_open(s, R_USAGE);
		puts_(s, "STARTTLS");
		reply_close(s);
	} else {
		struct fault_decision fd;
		if (fault_ask(s, FAULT_ST_STARTTLS, NULL, 0, NULL, 0, false, 0, &fd)) {
			enum fault_res r = fault_apply(s, &fd, false);
			if (r == F_DEFER)
				s->defer = DEFER_STARTTLS;
			if (r != F_NORMAL)
				return;
		}
		reply(s, R_STARTTLS_GO);
		s->tls_pending = 1; /* sess_feed drops what follows */
	}
}

void sess_tls_started(struct sess *s)
{
	bool reset = s->tls_pending;

	s->tls = 1;
	s->tls_pending = 0;
	if (reset) {
		/* RFC 3207 4.2: discard knowledge from the client (EHLO, AUTH) */
		tx_reset(s);
		s->state = SESS_ST_INIT;
		s->esmtp = 0;
		s->authed = 0;
		s->auth_step = AUTH_NONE;
	}
}

/* Verbs are 4 letters; the table is searched by a case-folded 32-bit key. */
static const struct cmd_def cmd_table[] = {
    {"mail", CMD_NEED_TLS | CMD_NEED_AUTH, "MAIL FROM:<address>", check_mail, proceed_mail,
     SESS_STAGE_MAIL, FAULT_ST_MAIL},
    {"rcpt", CMD_NEED_TLS, "RCPT TO:<address>", check_rcpt, proceed_rcpt, SESS_STAGE_RCPT,
     FAULT_ST_RCPT},
    {"data", CMD_LAST | CMD_NOARGS | CMD_NEED_TLS, "DATA", check_data, proceed_data,
     SESS_STAGE_DATA, FAULT_ST_DATA},
    {"bdat", CMD_NEED_TLS, "BDAT count [LAST]", check_bdat, proceed_bdat, SESS_STAGE_BDAT,
     FAULT_ST_COUNT},
    {"rset", CMD_NOARGS, "RSET", check_none, proceed_rset, SESS_STAGE_OTHER, FAULT_ST_RSET},
    {"noop", CMD_LAST, NULL, check_none, proceed_noop, SESS_STAGE_OTHER,
     FAULT_ST_NOOP}, /* 4.1.1.9: arg allowed */
    {"ehlo", CMD_LAST, "EHLO hostname", check_helo, proceed_ehlo, SESS_STAGE_HELO, FAULT_ST_EHLO},
    {"helo", CMD_LAST, "HELO hostname", check_helo, proceed_helo, SESS_STAGE_HELO, FAULT_ST_HELO},
    {"quit", CMD_LAST | CMD_NOARGS, "QUIT", check_none, proceed_quit, SESS_STAGE_OTHER,
     FAULT_ST_QUIT},
    {"vrfy", CMD_LAST, "VRFY address", check_helo, proceed_vrfy, SESS_STAGE_OTHER, FAULT_ST_COUNT},
    {"expn", CMD_LAST, NULL, check_none, proceed_not_impl, SESS_STAGE_OTHER, FAULT_ST_COUNT},
    {"help", 0, NULL, check_none, proceed_help, SESS_STAGE_OTHER, FAULT_ST_COUNT},
    /* Obsolete (RFC 5321 F.1-F.6) or not offered: 502. */
    {"turn", CMD_LAST, NULL, check_none, proceed_not_impl, SESS_STAGE_OTHER, FAULT_ST_COUNT},
    {"send", 0, NULL, check_none, proceed_not_impl, SESS_STAGE_OTHER, FAULT_ST_COUNT},
    {"soml", 0, NULL, check_none, proceed_not_impl, SESS_STAGE_OTHER, FAULT_ST_COUNT},
    {"saml", 0, NULL, check_none, proceed_not_impl, SESS_STAGE_OTHER, FAULT_ST_COUNT},
    {"etrn", 0, NULL, check_none, proceed_not_impl, SESS_STAGE_OTHER, FAULT_ST_COUNT},
    /* RFC 4954 4: AUTH ends a pipelined group (the server must answer it
     * before the client can know what follows) */
    {"auth", CMD_LAST | CMD_NEED_TLS, "AUTH mechanism [initial-response]", check_auth, proceed_auth,
     SESS_STAGE_AUTH, FAULT_ST_AUTH},
};

static inline uint32_t verb_key(const char *p)
{
	return (uint32_t)(unsigned char)lower(p[0]) | (uint32_t)(unsigned char)lower(p[1]) << 8 |
	       (uint32_t)(unsigned char)lower(p[2]) << 16 |
	       (uint32_t)(unsigned char)lower(p[3]) << 24;
}

static const struct cmd_def *cmd_lookup(const char *p, size_t n)
{
	uint32_t k;

	if (n < 4 || (n > 4 && p[4] != ' '))
		return NULL;
	k = verb_key(p);
	for (size_t i = 0; i < sizeof(cmd_table) / sizeof(cmd_table[0]); i++)
		if (verb_key(cmd_table[i].verb) == k)
			return &cmd_table[i];
	/* STARTTLS is the one common 8-letter verb; answer it like AUTH. */
	return NULL;
}

/* run_faulted - ask about an accepted command's reply; true when a fault
 * answered it, closes, stalls, or deferred it (its line is copied into the
 * scanner's carry, free until the session resumes, for sess_resume()). */
static bool run_faulted(struct sess *s, const struct cmd_def *d, struct cmd_ctx *c,
                        const struct scan_line *l)
{
	struct fault_decision fd;
	const char *to = NULL, *helo = NULL;
	size_t to_len = 0, helo_len = 0;
	enum fault_res r;

	if (d->fstage == FAULT_ST_RCPT)
		path_of(c->arg, c->arglen, 3, &to, &to_len);
	if (d->fstage == FAULT_ST_HELO || d->fstage == FAULT_ST_EHLO) {
		helo = c->arg;
		helo_len = c->arglen;
	}
	if (d->fstage == FAULT_ST_MAIL) {
		/* the sender this MAIL names; kept if the MAIL goes through */
		const char *f;
		size_t fl;
		path_of(c->arg, c->arglen, 5, &f, &fl);
		keep(s->f_from, &s->f_from_len, f, fl, sizeof(s->f_from));
		s->f_has_from = 1;
	}
	if (!fault_ask(s, (enum fault_stage)d->fstage, helo, helo_len, to, to_len, c->has_size,
	               c->size, &fd)) {
		return false;
	}
	r = fault_apply(s, &fd, false);
	if (r == F_DEFER) {
		if (s->scan.carry && l->p != s->scan.carry)
			memmove(s->scan.carry, l->p, l->len);
		s->defer = DEFER_CMD;
		s->defer_cmd = d;
		s->defer_arg = (s->scan.carry ? s->scan.carry : l->p) + (c->arg - l->p);
		s->defer_arglen = (uint32_t)c->arglen;
		s->defer_n = c->n;
		s->defer_flag = c->flag;
		s->defer_size = c->size;
		s->defer_has_size = c->has_size;
		return true;
	}
	if (r == F_DONE && d->fstage == FAULT_ST_MAIL)
		s->f_has_from = 0; /* the MAIL did not happen */
	return r == F_DONE;
}

/* on_line - one complete command line. more = input follows in this read. */
static void on_line(struct sess *s, const struct scan_line *l, bool more)
{
	const struct cmd_def *d;
	struct cmd_ctx c;
	int rc;

	s->stats->cmds++;
	s->stage = SESS_STAGE_OTHER;
	if (s->auth_step) {
		s->stage = SESS_STAGE_AUTH;
		auth_response(s, l->p, l->len);
		return;
	}
	if (l->flags & SCAN_LINE_BARE_LF) {
		s->stats->bare_lf_lines++;
		if (s->cfg->bare_lf == SESS_BARE_LF_REJECT) {
			reply(s, R_BARE_LF);
			return;
		}
	}
	if (l->flags & (SCAN_LINE_BARE_CR | SCAN_LINE_NUL)) {
		s->stats->bare_cr += !!(l->flags & SCAN_LINE_BARE_CR);
		reply(s, R_BARE_CR);
		return;
	}
	if (l->len == 0) {
		reply(s, R_BAD_SYNTAX);
		return;
	}
	d = cmd_lookup(l->p, l->len);
	if (d)
		s->stage = d->stage;
	if (!d) {
		/* STARTTLS is the one common 8-letter verb. */
		if (l->len >= 8 && ieq_prefix(l->p, l->len, "starttls") &&
		    (l->len == 8 || l->p[8] == ' ')) {
			if (more)
				s->stats->pipelining_violations++; /* RFC 3207 4 */
			s->stage = SESS_STAGE_STARTTLS;
			starttls(s, l);
		} else {
			reply(s, R_UNKNOWN);
		}
		return;
	}
	c.arg = l->len > 5 ? l->p + 5 : l->p + l->len;
	c.arglen = l->len > 5 ? l->len - 5 : 0;
	c.n = 0;
	c.flag = 0;
	if ((d->flags & CMD_LAST) && more)
		s->stats->pipelining_violations++; /* RFC 2920 3.1; counted, tolerated */
	if ((d->flags & CMD_NEED_TLS) && s->cfg->require_tls && !s->tls)
		rc = R_NEED_TLS;
	else if ((d->flags & CMD_NEED_AUTH) && s->cfg->require_auth && !s->authed)
		rc = R_NEED_AUTH;
	else
		rc = (d->flags & CMD_NOARGS) && c.arglen ? R_USAGE : d->check(s, &c);
	if (rc < 0) {
		if (d->fstage != FAULT_ST_COUNT && s->cfg->faults && run_faulted(s, d, &c, l))
			return;
		d->proceed(s, &c);
		return;
	}
	if (rc == R_TOO_MANY_RCPT || rc == R_TOO_MANY_RCPT_OVER)
		s->nrcpt_refused++;
	if (rc == R_USAGE || (rc == R_BAD_SYNTAX && d->syntax)) {
		reply_open(s, R_USAGE);
		puts_(s, d->syntax);
		reply_close(s);
	} else if (rc == R_BAD_PARAM) {
		reply_arg(s, R_BAD_PARAM, c.arg, c.arglen);
	} else {
		reply(s, (enum reply_id)rc);
		if (rc == R_BDAT_SYNTAX || rc == R_BDAT_OFF ||
		    (rc == R_NEED_TLS && d->proceed == proceed_bdat))
			s->state = SESS_ST_CLOSING; /* framing lost (chunk not read) */
	}
}

/* commit_message - the host's word before a 250 (see content_ops->commit);
 * WAIT suspends the session without a timer: the host resumes it. */
static int commit_message(struct sess *s)
{
	int r;

	if (!s->content_ops || !s->content_ops->commit)
		return SESS_COMMIT_OK;
	r = s->content_ops->commit(s->content_ctx);
	if (r == SESS_COMMIT_WAIT) {
		memset(&s->pending, 0, sizeof(s->pending)); /* no fault left to apply */
		s->suspend_ns = 0;
		s->suspended = 1;
	}
	return r;
}

/* end_data - <CRLF>.<CRLF> consumed: account and answer (RFC 5321 4.1.1.4).
 * resumed: a fault deferred this reply and its time has come. */
static void end_data(struct sess *s, bool resumed)
{
	const struct scan_data_stats *ds = &s->scan.ds;
	bool bare = ds->bare_lf != 0;
	struct fault_decision fd;
	enum fault_res r = F_NORMAL;

	if (!resumed) {
		s->stage = SESS_STAGE_EOD;
		s->stats->bare_lf_lines += ds->bare_lf;
		s->stats->bare_cr += ds->bare_cr;
		s->stats->long_body_lines += ds->long_lines;
		s->state = SESS_ST_READY;
		if (fault_ask(s, FAULT_ST_EOD, NULL, 0, NULL, 0, true, ds->octets, &fd)) {
			r = fault_apply(s, &fd, false);
			if (r == F_DEFER) {
				s->defer = DEFER_EOD;
				return;
			}
		}
	} else {
		r = fault_apply(s, &s->pending, true);
		fd = s->pending;
	}
	if (r == F_DONE) {
		message_faulted(s, &fd, ds->octets);
		return;
	}
	if (s->cfg->max_size && ds->octets > s->cfg->max_size) {
		/* RFC 1870 6.2: too much data, session stays in sync. */
		reject_message(s, R_TOO_BIG);
	} else if (bare && s->cfg->bare_lf == SESS_BARE_LF_REJECT) {
		/* Postfix's delayed reject: read to the real end, then 550. */
		reject_message(s, R_BARE_LF);
	} else {
		int commit = commit_message(s);
		if (commit == SESS_COMMIT_WAIT) {
			s->defer = DEFER_EOD;
			return;
		}
		if (commit == SESS_COMMIT_FAIL)
			reject_message(s, R_STORAGE);
		else
			accept_message(s, ds->octets, bare && s->cfg->bare_lf == SESS_BARE_LF_NOTE);
	}
	message_done(s);
}

static void check_error_limit(struct sess *s)
{
	if (s->cfg->max_errors && s->errors >= s->cfg->max_errors && s->state != SESS_ST_CLOSING) {
		reply(s, R_421_ERRORS);
		s->state = SESS_ST_CLOSING;
	}
}

uint32_t sess_ext_by_name(const char *name)
{
	static const struct {
		const char *name;
		uint32_t bit;
	} ext[] = {{"pipelining", SESS_EXT_PIPELINING},
	           {"size", SESS_EXT_SIZE},
	           {"8bitmime", SESS_EXT_8BITMIME},
	           {"enhancedstatuscodes", SESS_EXT_ENHANCEDSTATUSCODES},
	           {"smtputf8", SESS_EXT_SMTPUTF8},
	           {"chunking", SESS_EXT_CHUNKING}};

	for (size_t i = 0; i < sizeof(ext) / sizeof(ext[0]); i++)
		if (ieq(name, strlen(name), ext[i].name))
			return ext[i].bit;
	return 0;
}

int sess_bare_lf_by_name(const char *name)
{
	if (!strcmp(name, "normalize"))
		return SESS_BARE_LF_NORMALIZE;
	if (!strcmp(name, "note"))
		return SESS_BARE_LF_NOTE;
	if (!strcmp(name, "reject"))
		return SESS_BARE_LF_REJECT;
	return -1;
}

void sess_cfg_defaults(struct sess_cfg *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->hostname = "smtpsink.localhost";
	cfg->max_size = 10u * 1024 * 1024; /* like Postfix message_size_limit (~10 MB) */
	cfg->max_rcpt = 1000;
	cfg->rcpt_overshoot = 1000; /* Postfix smtpd_recipient_overshoot_limit */
	cfg->line_max = 2048;
	cfg->max_errors = 20;
	cfg->ext = SESS_EXT_ALL;
	cfg->bare_lf = SESS_BARE_LF_NORMALIZE;
}

void sess_start(struct sess *s, const struct sess_cfg *cfg, struct sess_stats *stats,
                struct obuf *out, char *carry, uint64_t *id_seq, uint32_t id_prefix)
{
	memset(s, 0, sizeof(*s));
	s->cfg = cfg;
	s->stats = stats;
	s->out = out;
	s->id_seq = id_seq;
	s->id_prefix = id_prefix;
	s->state = SESS_ST_INIT;
	scan_init(&s->scan, carry, cfg->line_max);
	stats->sessions++;
}

/* greet - the 220 (RFC 5321 4.2: no enhanced code, RFC 2034 3), unless a
 * connect-stage fault says otherwise. */
static void greet(struct sess *s, bool resumed)
{
	struct fault_decision fd;
	enum fault_res r = F_NORMAL;

	s->stage = SESS_STAGE_CONNECT;
	if (resumed) {
		r = fault_apply(s, &s->pending, true);
	} else if (fault_ask(s, FAULT_ST_CONNECT, NULL, 0, NULL, 0, false, 0, &fd)) {
		r = fault_apply(s, &fd, false);
		if (r == F_DEFER)
			s->defer = DEFER_GREETING;
	}
	if (r != F_NORMAL)
		return;
	s->stats->replies[R_GREETING]++;
	put(s, "220 ", 4);
	puts_(s, s->cfg->hostname);
	puts_(s, " ESMTP smtpsink\r\n");
}

unsigned sess_greet(struct sess *s)
{
	greet(s, false);
	return acts(s);
}

unsigned sess_resume(struct sess *s)
{
	uint8_t defer = s->defer;

	if (!s->suspended)
		return acts(s);
	s->suspended = 0;
	s->defer = DEFER_NONE;
	switch (defer) {
	case DEFER_GREETING:
		greet(s, true);
		break;
	case DEFER_CMD: {
		const struct cmd_def *d = s->defer_cmd;
		struct cmd_ctx c = {.arg = s->defer_arg,
		                    .arglen = s->defer_arglen,
		                    .n = s->defer_n,
		                    .flag = s->defer_flag,
		                    .has_size = s->defer_has_size,
		                    .size = s->defer_size};
		s->stage = d->stage;
		enum fault_res r = fault_apply(s, &s->pending, true);
		if (r == F_NORMAL)
			d->proceed(s, &c);
		else if (d->fstage == FAULT_ST_MAIL)
			s->f_has_from = 0;
		check_error_limit(s);
		break;
	}
	case DEFER_EOD:
		end_data(s, true);
		break;
	case DEFER_BDAT:
		bdat_finish(s, true);
		break;
	case DEFER_STARTTLS:
		s->stage = SESS_STAGE_STARTTLS;
		if (fault_apply(s, &s->pending, true) == F_NORMAL) {
			reply(s, R_STARTTLS_GO);
			s->tls_pending = 1;
		}
		break;
	default:
		break;
	}
	return acts(s);
}

size_t sess_feed(struct sess *s, const char *buf, size_t len, unsigned *act)
{
	size_t off = 0;

	if (s->tls_pending) {
		/* between our 220 and the TLS handshake nothing is read; counted
		 * once per STARTTLS (tls_pending 2: counted) */
		if (len && s->tls_pending == 1) {
			s->stats->tls_injected++;
			s->tls_pending = 2;
		}
		*act = SESS_ACT_STARTTLS;
		return len;
	}

	while (off < len && s->state != SESS_ST_CLOSING) {
		if (s->suspended || s->fault_close) {
			/* a fault deferred a reply (or closes): the caller keeps the
			 * rest until sess_resume() */
			*act = acts(s);
			return off;
		}
		if (obuf_pending(s->out) > OBUF_SOFT_MAX) {
			*act = 0;
			return off; /* backpressure: the caller keeps the rest */
		}
		enum scan_ev ev = SCAN_EV_NONE;
		size_t n;

		switch (s->scan.mode) {
		case SCAN_MODE_CMD: {
			struct scan_line l;
			n = scan_line(&s->scan, buf + off, len - off, &l, &ev);
			off += n;
			if (ev == SCAN_EV_LINE) {
				on_line(s, &l, off < len);
				check_error_limit(s);
				if (s->tls_pending) {
					/* RFC 3207 4.2 / CVE-2011-0411: whatever the client
					 * pipelined after STARTTLS is discarded unread. */
					if (off < len) {
						s->stats->tls_injected++;
						s->tls_pending = 2;
					}
					*act = SESS_ACT_STARTTLS;
					return len;
				}
			} else if (ev == SCAN_EV_TOO_LONG) {
				s->stats->cmds++;
				reply(s, R_TOO_LONG);
				check_error_limit(s);
			}
			break;
		}
		case SCAN_MODE_DATA: {
			struct scan_seg seg;
			n = scan_data(&s->scan, buf + off, len - off, &seg, &ev);
			off += n;
			if (seg.len && s->content_ops && s->content_ops->content)
				s->content_ops->content(s->content_ctx, seg.p, seg.len);
			if (ev == SCAN_EV_EOD)
				end_data(s, false);
			break;
		}
		default: {
			struct scan_seg seg;
			n = scan_bdat(&s->scan, buf + off, len - off, &seg, &ev);
			off += n;
			if (seg.len && s->content_ops && s->content_ops->content &&
			    s->tx_fail_reason == R_OK)
				s->content_ops->content(s->content_ctx, seg.p, seg.len);
			if (ev == SCAN_EV_BDAT_DONE)
				bdat_finish(s, false);
			break;
		}
		}
		if (s->out->overflow)
			s->state = SESS_ST_CLOSING;
	}
	if (s->state == SESS_ST_CLOSING) {
		*act = acts(s); /* CLOSE, or a fault's DROP / RESET */
		return len;     /* nothing after QUIT/421 is read */
	}
	*act = acts(s);
	return off;
}

unsigned sess_timeout(struct sess *s)
{
	if (s->state == SESS_ST_CLOSING)
		return SESS_ACT_CLOSE;
	s->stage = SESS_STAGE_OTHER;
	reply(s, R_421_TIMEOUT);
	s->state = SESS_ST_CLOSING;
	return SESS_ACT_CLOSE;
}

unsigned sess_shutdown(struct sess *s, bool force)
{
	if (s->state == SESS_ST_CLOSING)
		return SESS_ACT_CLOSE;
	if (sess_in_content(s) && !force)
		return 0;
	s->stage = SESS_STAGE_OTHER;
	stop_session(s);
	return SESS_ACT_CLOSE;
}

void sess_stats_add(struct sess_stats *dst, const struct sess_stats *src)
{
	uint64_t *d = (uint64_t *)dst;
	const uint64_t *p = (const uint64_t *)src;

	for (size_t i = 0; i < sizeof(*dst) / sizeof(uint64_t); i++)
		d[i] += p[i];
}
