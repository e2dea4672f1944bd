/*
 * sess.h - SMTP server session core (pure: no I/O, no threads, no liburing)
 *
 * sess_feed() consumes received bytes, drives the scanner, runs commands and
 * appends replies to the connection's output buffer; it returns actions for
 * the I/O layer.  The I/O layer calls sess_feed() for every received buffer
 * and sends the output once input is exhausted (RFC 2920 3.2), so a
 * pipelined group costs one send, never one send per reply.
 *
 * Commands are table driven: each row has a check step (syntax and state,
 * emits the error reply) and a proceed step (the effect), as OpenSMTPD's
 * commands[] and Postfix smtp-sink's command_table.  Replies carry RFC 2034
 * enhanced status codes except the greeting and the HELO/EHLO success replies.
 *
 * Implements RFC 5321 (4.1.1 commands, 4.1.4 order, 4.3.2 reply codes,
 * 4.5.2 transparency, 4.5.3.1 limits), RFC 2920 PIPELINING, RFC 1870 SIZE,
 * RFC 6152 8BITMIME, RFC 6531 SMTPUTF8, RFC 3030 CHUNKING, RFC 2034.
 */
#ifndef SINK_SESS_H
#define SINK_SESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sink/fault.h"
#include "sink/obuf.h"
#include "sink/scan.h"

/* EHLO keywords; each can be hidden (like smtp-sink's -P -E -8 ... switches). */
enum {
	SESS_EXT_PIPELINING = 1u << 0,
	SESS_EXT_SIZE = 1u << 1,
	SESS_EXT_8BITMIME = 1u << 2,
	SESS_EXT_ENHANCEDSTATUSCODES = 1u << 3,
	SESS_EXT_SMTPUTF8 = 1u << 4,
	SESS_EXT_CHUNKING = 1u << 5,
	SESS_EXT_ALL = (1u << 6) - 1,
};

/* Bare LF handling, as Postfix smtpd_forbid_bare_newline. */
enum sess_bare_lf {
	SESS_BARE_LF_NORMALIZE = 0, /* accept as line end, count */
	SESS_BARE_LF_NOTE,          /* accept, count, and tag the reply */
	SESS_BARE_LF_REJECT,        /* 550 5.5.2 (after the terminator in DATA) */
};

struct sess_cfg {
	const char *hostname; /* for 220/250/421 */
	uint64_t max_size;    /* SIZE limit in octets; 0 = unlimited */
	uint32_t max_rcpt;    /* recipients per transaction (RFC 5321 4.5.3.1.8) */
	/* 452s past max_rcpt that do not count towards max_errors, as Postfix
	 * smtpd_recipient_overshoot_limit (default 1000). */
	uint32_t rcpt_overshoot;
	uint32_t line_max;   /* command line limit incl. CRLF (default 2048) */
	uint32_t max_errors; /* errors before 421 + close (Postfix hard_error_limit) */
	uint32_t ext;        /* SESS_EXT_* advertised */
	enum sess_bare_lf bare_lf;
	/* strict: 501 for RFC 5321 syntax a tolerant server lets through (see
	 * lenient_syntax in sess.c); otherwise it is accepted and counted. */
	bool strict;
	bool starttls;      /* offer STARTTLS (RFC 3207): a certificate is set */
	bool auth;          /* offer AUTH PLAIN LOGIN (RFC 4954) */
	bool auth_insecure; /* ... also before TLS (otherwise only over TLS) */
	bool require_tls;   /* 530 5.7.0 for MAIL/RCPT/DATA/BDAT/AUTH before TLS */
	bool require_auth;  /* 530 5.7.0 for MAIL until authenticated */
	/* faults: the host may answer "what now?" (policy_ops->fault) before
	 * replies; the session then keeps the HELO name and MAIL FROM it needs
	 * for matching */
	bool faults;
	bool keep_helo;                /* keep the HELO name (for capture's index) */
	uint32_t max_msgs_per_session; /* 421 after that many messages; 0 = none */
};

void sess_cfg_defaults(struct sess_cfg *cfg);

/* sess_ext_by_name - SESS_EXT_* bit of an EHLO keyword (case-insensitive),
 * 0 when unknown; for --hide style options. */
uint32_t sess_ext_by_name(const char *name);
/* sess_bare_lf_by_name - "normalize" | "note" | "reject"; -1 when unknown. */
int sess_bare_lf_by_name(const char *name);

/* Counters, added up per worker (no locks: a worker owns its sessions).
 * One list drives the struct, the summary and the JSON report (and later
 * Prometheus): X(field, "json name", "what it counts"). */
#define SESS_COUNTERS(X)                                                                           \
	X(sessions, "sessions", "sessions started (greeting sent)")                                \
	X(msgs, "messages", "messages accepted with 250 at end of DATA / BDAT LAST")               \
	X(msg_bytes, "message_bytes", "RFC 1870 size of accepted messages")                        \
	X(rcpts, "recipients", "RCPTs accepted")                                                   \
	X(cmds, "commands", "command lines processed")                                             \
	X(rejected_msgs, "rejected_messages",                                                      \
	  "messages refused at their end (size, bare LF, BDAT)")                                   \
	X(err_unknown, "err_unknown", "500 command not recognized, 502 not implemented")           \
	X(err_syntax, "err_syntax", "501/555, 500 bad syntax, bare CR or NUL in a command")        \
	X(err_sequence, "err_sequence", "503 bad sequence of commands")                            \
	X(err_size, "err_size", "552 message or chunk too big")                                    \
	X(err_rcpt_limit, "err_rcpt_limit", "452 too many recipients")                             \
	X(err_too_long, "err_too_long", "500 command line too long")                               \
	X(err_bare_lf, "err_bare_lf", "550 5.5.2 bare LF rejections")                              \
	X(err_utf8, "err_utf8", "553 5.6.7 non-ASCII address without SMTPUTF8")                    \
	X(err_limit_close, "err_limit_close", "421 after too many errors")                         \
	X(bare_lf_lines, "bare_lf_lines", "bare LF line endings seen (commands and content)")      \
	X(bare_cr, "bare_cr", "bare CR octets seen")                                               \
	X(long_body_lines, "long_body_lines", "content lines over 1000 octets (kept)")             \
	X(pipelining_violations, "pipelining_violations",                                          \
	  "commands queued behind a last-in-group command (RFC 2920 3.1)")                         \
	X(lenient_syntax, "lenient_syntax", "MAIL/RCPT accepted only because --strict is off")     \
	X(timeouts, "timeouts", "421 4.4.2 idle timeout")                                          \
	X(shutdowns, "shutdown_421", "421 4.3.2 service shutting down")                            \
	X(starttls, "starttls", "STARTTLS answered 220 (RFC 3207)")                                \
	X(tls_injected, "tls_injected",                                                            \
	  "plaintext pipelined after STARTTLS, discarded unread (CVE-2011-0411)")                  \
	X(err_tls_required, "err_tls_required", "530 5.7.0 Must issue a STARTTLS command first")   \
	X(err_auth_required, "err_auth_required", "530 5.7.0 Authentication required")             \
	X(auth_plain_ok, "auth_plain_ok", "AUTH PLAIN answered 235")                               \
	X(auth_plain_failed, "auth_plain_failed", "AUTH PLAIN answered 535")                       \
	X(auth_login_ok, "auth_login_ok", "AUTH LOGIN answered 235")                               \
	X(auth_login_failed, "auth_login_failed", "AUTH LOGIN answered 535")                       \
	X(auth_aborted, "auth_aborted", "AUTH cancelled by the client with * (501)")               \
	X(faults_replied, "faults_replied", "replies replaced by a fault (rule or policy)")        \
	X(faults_closed, "faults_closed", "connections dropped or reset by a fault")               \
	X(faults_delayed, "faults_delayed", "replies delayed or stalled by a fault")               \
	X(err_storage, "err_storage",                                                              \
	  "452 4.3.1 a message could not be stored (--capture-strict)")                            \
	X(msgs_per_session_close, "msgs_per_session_close",                                        \
	  "421 after --max-msgs-per-session messages")

/* Message sizes for a histogram (Prometheus smtpsink_message_size_bytes):
 * upper bounds in octets; the last bucket is +Inf. */
#define SESS_SIZE_BUCKETS 10
extern const uint64_t sess_size_bounds[SESS_SIZE_BUCKETS - 1];
/* Replies by the session's reply table row (see sess_reply_code). */
#define SESS_REPLY_KINDS 64

/* What a reply answers: the stage of the session. */
enum sess_stage {
	SESS_STAGE_CONNECT = 0, /* the greeting */
	SESS_STAGE_HELO,        /* HELO/EHLO */
	SESS_STAGE_MAIL,
	SESS_STAGE_RCPT,
	SESS_STAGE_DATA, /* the reply to DATA itself (354 or an error) */
	SESS_STAGE_EOD,  /* the reply after the message content */
	SESS_STAGE_BDAT,
	SESS_STAGE_AUTH,
	SESS_STAGE_STARTTLS,
	SESS_STAGE_OTHER,
	SESS_NSTAGES,
};
extern const char *const sess_stage_names[SESS_NSTAGES];

struct sess_stats {
#define SESS_X_FIELD(f, name, doc) uint64_t f;
	SESS_COUNTERS(SESS_X_FIELD)
#undef SESS_X_FIELD
	uint64_t size_hist[SESS_SIZE_BUCKETS]; /* accepted messages by size */
	uint64_t replies[SESS_REPLY_KINDS];    /* replies sent, by reply table row */
	uint64_t refused[SESS_NSTAGES];        /* 4xx/5xx replies, by stage */
};

/* sess_reply_code - the code ("250") of reply kind k; NULL past the table. */
const char *sess_reply_code(unsigned k);

/* sess_counter_names / _docs - JSON names and descriptions in struct order. */
extern const char *const sess_counter_names[];
extern const char *const sess_counter_docs[];
#define SESS_X_ONE(f, name, doc) +1
enum { SESS_NCOUNTERS = 0 SESS_COUNTERS(SESS_X_ONE) };
#undef SESS_X_ONE

enum sess_state {
	SESS_ST_INIT = 0, /* need HELO/EHLO */
	SESS_ST_READY,    /* no transaction */
	SESS_ST_MAIL,     /* MAIL accepted, no RCPT yet */
	SESS_ST_RCPT,     /* at least one RCPT accepted */
	SESS_ST_DATA,     /* receiving DATA content */
	SESS_ST_BDAT,     /* receiving a BDAT chunk */
	SESS_ST_CLOSING,  /* reply queued; close after flush, ignore input */
};

/* Longest AUTH response accepted, base64 octets (RFC 4954 4: 12288 for the
 * whole line; PLAIN/LOGIN credentials need far less). */
#define SESS_AUTH_MAX 1024

/* Actions returned by sess_feed() and friends. */
#define SESS_ACT_CLOSE 0x1u /* flush the output, then close the connection */
/* SESS_ACT_STARTTLS - send the 220, then start TLS; the input after the
 * STARTTLS line was discarded (RFC 3207 4.2, CVE-2011-0411). */
#define SESS_ACT_STARTTLS 0x2u
/* A fault: close now without a reply (DROP), or with a reset (RESET); or
 * SUSPEND: stop; the host calls sess_resume() after s->suspend_ns (0:
 * never - a stall, until the client leaves or the idle timeout). */
#define SESS_ACT_DROP    0x4u
#define SESS_ACT_RESET   0x8u
#define SESS_ACT_SUSPEND 0x10u

/* Optional content observer (integrity verification, later capture).  The
 * session calls begin when content starts (354 sent / first BDAT chunk),
 * content with every unstuffed segment, and end with the verdict given to
 * the client (true = accepted with 250).  NULL ops cost nothing. */
struct sess_content_ops {
	void (*begin)(void *ctx);
	void (*content)(void *ctx, const char *p, size_t n);
	void (*end)(void *ctx, bool accepted);
	/* envelope - MAIL FROM ('M') or an accepted RCPT TO ('R'), the address
	 * without <> (capture's index); NULL: not needed. */
	void (*envelope)(void *ctx, char kind, const char *addr, size_t n);
	/* commit - may the message be accepted?  Asked before its 250: a host
	 * that stores mail answers SESS_COMMIT_WAIT until it knows (it then
	 * calls sess_resume(), and is asked again), or SESS_COMMIT_FAIL when it
	 * could not store it: the client gets 452 4.3.1 and nothing is
	 * acknowledged and lost.  NULL: always OK. */
	int (*commit)(void *ctx);
};

enum { SESS_COMMIT_OK = 0, SESS_COMMIT_WAIT = 1, SESS_COMMIT_FAIL = -1 };

/* Questions the session asks its host where a server-wide policy applies;
 * NULL ops or NULL members mean "yes".  Called with content_ctx. */
struct sess_policy_ops {
	/* may_start - may a new transaction begin (MAIL, or DATA/BDAT that would
	 * start content)?  false: the server is stopping; the session answers
	 * 421 4.3.2 and closes.  Also asked after each message ends, so a
	 * stopping server closes the session right after its reply. */
	bool (*may_start)(void *ctx);
	/* auth_check - do these credentials pass?  The octets are not
	 * NUL-terminated and are wiped after the call: never keep them.  NULL:
	 * any credentials pass. */
	bool (*auth_check)(void *ctx, const char *user, size_t ulen, const char *pass, size_t plen);
	/* fault - "what now?" before the reply at stage st (fault.h): the
	 * session fills what it knows (HELO, MAIL FROM, RCPT, size), the host
	 * the client address and the time, asks its plan and applies a
	 * throttle itself; true: *d replaces or defers the normal reply. */
	bool (*fault)(void *ctx, enum fault_stage st, struct fault_ctx *fc,
	              struct fault_decision *d);
};

struct sess {
	const struct sess_cfg *cfg;
	const struct sess_content_ops *content_ops;
	const struct sess_policy_ops *policy_ops;
	void *content_ctx;        /* for content_ops and policy_ops */
	struct sess_stats *stats; /* shared by the worker's sessions */
	struct obuf *out;
	uint64_t *id_seq;   /* worker's queue-id counter */
	uint32_t id_prefix; /* worker number, makes ids unique per process */
	struct scan_state scan;
	uint8_t state;           /* enum sess_state */
	uint8_t esmtp;           /* greeted with EHLO */
	uint8_t tx_smtputf8;     /* MAIL ... SMTPUTF8 */
	uint8_t tx_failed;       /* DATA/BDAT content to be rejected at its end */
	uint8_t tx_bdat;         /* a BDAT chunk was received in this transaction */
	uint8_t bdat_last;       /* current chunk carries LAST */
	uint8_t bdat_prev_state; /* state to return to after the chunk */
	uint16_t tx_fail_reason; /* which reply to give at end of content */
	uint32_t nrcpt;
	uint32_t nrcpt_refused;        /* 452s for too many recipients in this transaction */
	uint32_t msgs;                 /* messages accepted in this session */
	uint8_t stage;                 /* enum sess_stage of the command being answered */
	uint8_t defer;                 /* a deferred reply: what sess_resume() does */
	uint8_t suspended;             /* SESS_ACT_SUSPEND returned, sess_resume() not yet */
	uint8_t fault_close;           /* SESS_ACT_DROP / SESS_ACT_RESET: a fault closes */
	uint64_t suspend_ns;           /* with SESS_ACT_SUSPEND: how long; 0 = a stall */
	struct fault_decision pending; /* the decision a deferred reply acts on */
	/* the deferred command (its line copied into the scanner's carry) */
	const void *defer_cmd;
	const char *defer_arg;
	uint32_t defer_arglen;
	uint64_t defer_n, defer_size;
	uint8_t defer_flag, defer_has_size;
	/* for fault matching (cfg->faults): HELO name and MAIL FROM */
	uint16_t f_helo_len, f_from_len;
	uint8_t f_has_from;
	char f_helo[256], f_from[256];
	uint8_t tls;            /* TLS is active (implicit, or after STARTTLS) */
	uint8_t tls_pending;    /* STARTTLS answered: input is dropped until TLS */
	uint8_t authed;         /* AUTH succeeded (RFC 4954 4: once per session) */
	uint8_t auth_step;      /* AUTH exchange: which 334 response comes next */
	uint16_t auth_user_len; /* AUTH LOGIN: user name between its two steps */
	char auth_user[256];
	uint32_t errors;
	uint64_t tx_size;  /* octets received in this transaction */
	uint64_t bdat_len; /* size of the current chunk */
};

/* sess_start - set up a session and queue the 220 greeting. carry must hold
 * cfg->line_max octets (the scanner's straddling-line buffer). */
void sess_start(struct sess *s, const struct sess_cfg *cfg, struct sess_stats *stats,
                struct obuf *out, char *carry, uint64_t *id_seq, uint32_t id_prefix);

/* sess_feed - consume input until it is exhausted, the session closes, or
 * more than OBUF_SOFT_MAX octets of replies wait to be sent.  The last case
 * is backpressure for clients that pipeline without reading: the caller
 * keeps the unconsumed rest and feeds it again once replies have drained
 * (RFC 2920 3.2: the server must never lose buffered input).  Input after a
 * close action is consumed and discarded.  Returns octets consumed; *act
 * receives SESS_ACT_* bits. */
size_t sess_feed(struct sess *s, const char *buf, size_t len, unsigned *act);

/* sess_timeout - idle timeout: 421 4.4.2 and close (RFC 5321 4.5.3.2.7). */
unsigned sess_timeout(struct sess *s);

/* sess_shutdown - server going down: 421 4.3.2 and close, unless the session
 * is inside DATA/BDAT and !force (then returns 0: the message may finish and
 * the session closes right after its reply, see may_start). */
unsigned sess_shutdown(struct sess *s, bool force);

/* sess_greet - the 220 greeting (or what a connect-stage fault says
 * instead); call once after sess_start() and setting the ops.  Returns
 * SESS_ACT_* bits as sess_feed() does. */
unsigned sess_greet(struct sess *s);

/* sess_resume - a suspended session's time has come: send the deferred
 * reply (acting on the fault decision that deferred it), then input may be
 * fed again.  Returns SESS_ACT_* bits. */
unsigned sess_resume(struct sess *s);

/* sess_tls_started - TLS is up.  After STARTTLS the session returns to the
 * state right after the greeting and forgets what the client said before
 * (RFC 3207 4.2: EHLO, AUTH); for implicit TLS (RFC 8314) nothing was said. */
void sess_tls_started(struct sess *s);

/* sess_in_content - true while receiving DATA or BDAT content. */
static inline bool sess_in_content(const struct sess *s)
{
	return s->state == SESS_ST_DATA || s->state == SESS_ST_BDAT;
}

/* sess_stats_add - dst += src, field by field. */
void sess_stats_add(struct sess_stats *dst, const struct sess_stats *src);

#endif
