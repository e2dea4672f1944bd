/*
 * client.h - SMTP client session core (pure: no I/O, no clock, no allocation)
 *
 * The mirror of sess.h for the load generator: client_feed() consumes the
 * server's bytes in buffers of any size, split at any offset, and returns
 * actions for the driver (send the queued commands, a message ended, the
 * session is idle, close).  The driver moves bytes and keeps time; every
 * protocol decision is made here, so both I/O backends behave identically
 * and the whole client can be tested on byte arrays (tests/client_transcripts)
 * and fuzzed (tests/fuzz/fuzz_client.c).
 *
 * One session: 220 greeting, EHLO (HELO when asked, or when the server does
 * not know EHLO, RFC 5321 3.2), then transactions: MAIL, RCPT x k, DATA and
 * the stamped, pre-stuffed content, or BDAT n LAST with the raw content (RFC
 * 3030).  With PIPELINING (RFC 2920) the envelope goes out as one group with
 * DATA/BDAT last; without it one command per round trip.  RSET after a
 * failed transaction, QUIT at the end.
 *
 * Outcomes: every message ends with exactly one result - delivered (every
 * RCPT accepted), partial (some RCPTs refused, the content was accepted for
 * the others) or failed, with one class: the reply that decided it (4xx,
 * 5xx), or timeout, dropped connection, protocol violation, aborted run.  A
 * 421 reply (RFC 5321 3.8) ends the session: the current message fails
 * once and no new one is started on that connection.
 *
 * Output: commands are built into one caller-owned buffer sized at start by
 * client_cmd_cap() (no allocation per message) and queued as iovecs together
 * with the shared read-only bodies; new output is appended behind unsent
 * output, never written over it.  The driver writes client_out(), reports
 * what went out with client_wrote().
 *
 * TLS and AUTH are states of the same machine.  STARTTLS (RFC 3207): after
 * the EHLO reply offers it, STARTTLS is sent alone (nothing is pipelined
 * behind it), and its 220 returns CLIENT_ACT_TLS: the driver runs the TLS
 * handshake and reports it with client_tls_up() or client_tls_failed().
 * Then everything learnt from the server is forgotten and EHLO is sent
 * again (RFC 3207 4.2).  Implicit TLS (RFC 8314 3.3) asks for the handshake
 * at client_start(), before the greeting.  The core never sees ciphertext:
 * the driver's TLS layer hands it plaintext both ways.  AUTH (RFC 4954):
 * PLAIN with an initial response (RFC 4616) or LOGIN through two 334
 * challenges, after the last EHLO and before the first MAIL.  Credentials
 * are templates ({s} = session number); they go to the wire base64-encoded
 * and are never copied into reply texts, results or counters.
 *
 * Retries: whether a failed message may be tried again is decided here too
 * (client_retryable(), from the result alone); the driver keeps the failed
 * messages in its queue and hands the same client_msg to client_begin()
 * again later, on this connection or another.  Nothing in the session
 * itself changes for a retry: a new attempt is a new transaction.
 *
 * The PROXY header of smtpbench --proxy is not a state of this machine: it
 * precedes TLS-on-connect, while everything the core writes goes through
 * the TLS layer, so the driver writes it ahead of the core's output
 * (bench/loop.c); the core starts at the greeting as always.
 */
#ifndef SINK_CLIENT_H
#define SINK_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "sink/reply.h"

/* EHLO keywords the client understands (RFC 5321 2.4: case-insensitive,
 * whole keyword). */
enum {
	CLIENT_EXT_PIPELINING = 1u << 0,          /* RFC 2920 */
	CLIENT_EXT_CHUNKING = 1u << 1,            /* RFC 3030 */
	CLIENT_EXT_SIZE = 1u << 2,                /* RFC 1870 */
	CLIENT_EXT_8BITMIME = 1u << 3,            /* RFC 6152 */
	CLIENT_EXT_SMTPUTF8 = 1u << 4,            /* RFC 6531 */
	CLIENT_EXT_ENHANCEDSTATUSCODES = 1u << 5, /* RFC 2034 */
	CLIENT_EXT_STARTTLS = 1u << 6,            /* RFC 3207 */
	CLIENT_EXT_AUTH = 1u << 7,                /* RFC 4954 */
};

/* What a reply answered, for per-reply counts and error reports. */
enum client_cmd {
	CLIENT_CMD_GREETING = 0,
	CLIENT_CMD_EHLO,
	CLIENT_CMD_HELO,
	CLIENT_CMD_STARTTLS, /* RFC 3207 */
	CLIENT_CMD_AUTH,     /* RFC 4954: every reply of the exchange, 334s included */
	CLIENT_CMD_MAIL,
	CLIENT_CMD_RCPT,
	CLIENT_CMD_DATA,
	CLIENT_CMD_BDAT,
	CLIENT_CMD_END, /* end of DATA content ("." line) */
	CLIENT_CMD_RSET,
	CLIENT_CMD_QUIT,
	CLIENT_CMD_NONE, /* unsolicited (no command outstanding) */
	CLIENT_CMD_N
};

/* Reply classes for the counts: 2xx/3xx where expected, 4xx, 5xx, other. */
enum { CLIENT_RC_OK = 0, CLIENT_RC_4XX, CLIENT_RC_5XX, CLIENT_RC_OTHER, CLIENT_RC_N };

/* Failure classes of a message or a session attempt. */
enum client_fail {
	CLIENT_FAIL_NONE = 0,
	CLIENT_FAIL_CONNECT,     /* TCP connect failed (driver) */
	CLIENT_FAIL_4XX,         /* a 4xx reply decided it (421 included) */
	CLIENT_FAIL_5XX,         /* a 5xx reply decided it */
	CLIENT_FAIL_TIMEOUT,     /* no complete reply within --timeout */
	CLIENT_FAIL_PROTOCOL,    /* malformed or unexpected reply */
	CLIENT_FAIL_DROPPED,     /* the server closed or reset the connection */
	CLIENT_FAIL_UNSUPPORTED, /* a required extension is not offered */
	CLIENT_FAIL_ABORTED,     /* the run was stopped (signal, no progress) */
	CLIENT_FAIL_TLS,         /* the TLS handshake failed (driver) or was cut off */
	CLIENT_FAIL_AUTH,        /* AUTH was refused (RFC 4954 535, 454, 5xx) */
	CLIENT_FAIL_N
};

enum client_outcome { CLIENT_DELIVERED = 0, CLIENT_PARTIAL, CLIENT_FAILED };

enum client_state {
	CLIENT_ST_IDLE = 0, /* not connected */
	CLIENT_ST_GREET,    /* waiting for 220 */
	CLIENT_ST_EHLO,     /* EHLO sent */
	CLIENT_ST_HELO,     /* HELO sent */
	CLIENT_ST_STARTTLS, /* STARTTLS sent */
	CLIENT_ST_TLS,      /* the driver runs the TLS handshake */
	CLIENT_ST_AUTH,     /* AUTH exchange in progress */
	CLIENT_ST_READY,    /* no transaction: client_begin() or client_quit() */
	CLIENT_ST_TX,       /* envelope commands outstanding */
	CLIENT_ST_END,      /* content sent, waiting for the final reply */
	CLIENT_ST_RSET,     /* RSET sent after a failed transaction */
	CLIENT_ST_QUIT,     /* QUIT sent */
	CLIENT_ST_CLOSED,   /* nothing more: the driver closes */
};

/* Actions (bits) returned by client_feed() and friends. */
#define CLIENT_ACT_REPLY 0x01u /* a complete reply was consumed */
#define CLIENT_ACT_SEND  0x02u /* output was queued: write client_out() */
#define CLIENT_ACT_MSG   0x04u /* a message ended: result in c->res */
#define CLIENT_ACT_READY 0x08u /* idle in a session: begin a message or quit */
#define CLIENT_ACT_CLOSE 0x10u /* close the connection (c->fail says why, if failed) */
#define CLIENT_ACT_TLS   0x20u /* start the TLS handshake now; then client_tls_up/_failed */

#define CLIENT_IOV_MAX 8 /* one message at a time; --depth: client_iov_max() */

enum client_tls { CLIENT_TLS_NONE = 0, CLIENT_TLS_STARTTLS, CLIENT_TLS_IMPLICIT };

/* AUTH mechanisms (bits; RFC 4954 keyword values, case-insensitive). */
enum { CLIENT_MECH_PLAIN = 1u << 0, CLIENT_MECH_LOGIN = 1u << 1 };

/* RFC 4616 2: a server must accept an authcid and a passwd of up to 255
 * octets; longer expanded credentials are refused at start. */
#define CLIENT_AUTH_MAX 255

struct client_cfg {
	const char *ehlo;      /* name for EHLO/HELO */
	bool helo;             /* HELO instead of EHLO */
	int pipelining;        /* -1 when advertised, 0 off, 1 always */
	bool bdat;             /* BDAT instead of DATA; CHUNKING required */
	uint32_t rcpts;        /* recipients per message, >= 1 */
	const char *from_tpl;  /* {n} = message number */
	const char *to_tpl;    /* {n} = message number, {r} = recipient index */
	uint8_t tls;           /* enum client_tls */
	uint8_t auth_mech;     /* 0: first of PLAIN, LOGIN offered; else one CLIENT_MECH_* */
	const char *auth_user; /* template, {s} = session number; NULL: no AUTH */
	const char *auth_pass; /* template, {s} = session number */
	/* --depth: transactions in flight per session (RFC 2920 3.1, RFC 3030
	 * 4); 0 or 1: one at a time.  Needs PIPELINING; see client_can_begin() */
	uint32_t depth;
};

/* Deepest pipeline a session keeps (--depth). */
#define CLIENT_DEPTH_MAX 64

/* One message to send.  The content pointers must stay valid until the
 * message's result (they are queued as iovecs, not copied). */
struct client_msg {
	uint64_t n;        /* substituted for {n} */
	const char *stamp; /* stamp line (first content line) */
	size_t stamp_len;
	const char *raw; /* content after the stamp (BDAT) */
	size_t raw_len;
	const char *wire; /* the same, dot-stuffed, ending ".\r\n" (DATA) */
	size_t wire_len;
};

struct client_result {
	uint8_t outcome;  /* enum client_outcome */
	uint8_t fail;     /* enum client_fail when failed */
	uint8_t cmd;      /* enum client_cmd of the deciding reply */
	uint8_t definite; /* decided by a 2xx/4xx/5xx reply: the server answered */
	uint16_t code;    /* deciding reply code, 0 when none */
	uint32_t rcpt_ok, rcpt_4xx, rcpt_5xx, rcpt_other;
	const char *text; /* deciding reply's first line or a description */
};

/* Reply counts by command and class; one per thread, shared by its
 * sessions (single-threaded, no atomics). */
struct client_stats {
	uint64_t replies[CLIENT_CMD_N][CLIENT_RC_N];
	/* AUTH exchanges started (by mechanism), accepted (235), refused
	 * (4xx/5xx; the rest ended otherwise: timeout, close, bad reply) */
	uint64_t auth_attempts, auth_plain, auth_login, auth_ok, auth_failed;
};

struct client {
	const struct client_cfg *cfg;
	struct client_stats *stats;
	struct reply_parser rp;
	uint8_t state; /* enum client_state */
	uint8_t pipe;  /* pipelining in use this session */
	uint8_t fail;  /* session failure (enum client_fail), once set */
	uint8_t fail_cmd;
	uint16_t fail_code;
	uint32_t ext;      /* CLIENT_EXT_* from the last EHLO */
	uint32_t sid;      /* session number for {s} in the AUTH templates */
	uint8_t tls_up;    /* TLS is established on this connection */
	uint8_t mechs;     /* CLIENT_MECH_* offered by the last EHLO's AUTH line */
	uint8_t mech;      /* mechanism of the AUTH in progress */
	uint8_t auth_step; /* LOGIN: 334 challenges answered */
	/* EHLO keyword scanner over the raw reply bytes */
	uint16_t el_col;
	uint16_t el_line;
	uint8_t kw_len;
	uint8_t kw_end;
	uint8_t el_auth; /* this line's keyword is AUTH: its parameters are mechanisms */
	uint8_t at_len;
	char kw[24];
	char at[8]; /* AUTH parameter being scanned (longer ones never match) */
	/* current transaction */
	struct client_msg msg;
	uint32_t await;     /* index of the next reply: 0 MAIL, 1..k RCPT, k+1 DATA/BDAT */
	uint8_t mail_ok;    /* MAIL got 2xx */
	uint8_t decided;    /* failure already decided (res.fail/cmd/code set) */
	uint8_t inflight;   /* transactions begun without a result (the first is the head) */
	uint8_t res_old;    /* res is the last result: cleared at the head's first reply */
	uint8_t rset_next;  /* --depth: the next group starts with RSET */
	uint64_t rset_mask; /* --depth: bit i - in-flight transaction i began with RSET */
	struct client_msg msg_next; /* --depth with DATA: the one behind the head */
	size_t env_max;             /* octets of command text one group needs at most */
	struct client_result res;
	char text[REPLY_TEXT_MAX];     /* text of a session failure */
	char res_text[REPLY_TEXT_MAX]; /* text of a message failure */
	/* output */
	char *cmd;
	size_t cmd_cap, cmd_len;
	struct iovec *out; /* client_iov_max() entries, carved from the command buffer */
	int nout, out_max;
};

/* client_cmd_cap - command buffer size this configuration needs: the
 * output iovecs (client_iov_max()), then the longest envelope (every
 * template expansion at its longest) plus room for RSET/QUIT queued behind
 * it - with --depth, room for as many groups as may wait unsent (at least
 * two, at most 32 KiB).  A multiple of 16: buffers may sit back to back. */
size_t client_cmd_cap(const struct client_cfg *cfg);

/* client_iov_max - iovecs of queued output: a group takes 3 (commands,
 * stamp, body), --depth N keeps N groups. */
int client_iov_max(const struct client_cfg *cfg);

/* client_init - bind a session to its configuration, counters and command
 * buffer (cap >= client_cmd_cap(cfg)).  Idle until client_start(). */
void client_init(struct client *c, const struct client_cfg *cfg, struct client_stats *stats,
                 char *cmd, size_t cap);

/* client_start - a new connection is up: wait for the greeting.  With
 * implicit TLS returns CLIENT_ACT_TLS (the handshake comes first), else 0. */
unsigned client_start(struct client *c);

/* client_tls_up - the handshake asked for by CLIENT_ACT_TLS succeeded: wait
 * for the greeting (implicit TLS) or send EHLO again (STARTTLS).
 * client_tls_failed - it failed (why: one line, e.g. OpenSSL's reason):
 * the session ends with class tls.  Both only in state CLIENT_ST_TLS. */
unsigned client_tls_up(struct client *c);
unsigned client_tls_failed(struct client *c, const char *why);

/* client_feed - consume server bytes up to the end of one reply and act on
 * it.  Returns octets consumed; *act gets CLIENT_ACT_* bits (0 when the
 * input ran out mid-reply).  Input after CLOSE is consumed and ignored. */
size_t client_feed(struct client *c, const char *p, size_t n, unsigned *act);

/* client_begin - start message m (state READY).  Returns SEND. */
unsigned client_begin(struct client *c, const struct client_msg *m);

/* client_can_begin - may client_begin() start a message now?  One at a
 * time: only when no transaction is open (READY).  With --depth N and
 * PIPELINING, while fewer than N are in flight and the output has room:
 * with BDAT the next MAIL/RCPT/BDAT group goes behind the ones in flight
 * (RFC 3030 4: BDAT may be pipelined); with DATA the next envelope goes
 * right behind the head's content, once that is queued (RFC 2920 3.1: the
 * content is the first "command" of a group, DATA the last), so DATA
 * keeps at most two in flight.  Each in-flight transaction ends with its
 * own result (CLIENT_ACT_MSG), in order; READY comes with each result and
 * with the 354 that queues a content, meaning "room for another". */
bool client_can_begin(const struct client *c);

/* client_lost - after the session ended (CLIENT_ACT_CLOSE) with more than
 * one transaction in flight: fail the next one (no reply ever came for
 * it), in order; false when none is left.  The result is in c->res. */
bool client_lost(struct client *c);

/* client_quit - end the session politely (state READY).  Returns SEND. */
unsigned client_quit(struct client *c);

/* client_eof - the server closed the connection (err: 0 or an errno);
 * client_timeout - no complete reply in time; client_abort - the run
 * stops.  Each fails the message in progress (MSG) and closes (CLOSE). */
unsigned client_eof(struct client *c);
unsigned client_timeout(struct client *c);
unsigned client_abort(struct client *c);

/* client_out - queued output as iovecs (valid until the next client call). */
static inline const struct iovec *client_out(const struct client *c, int *n)
{
	*n = c->nout;
	return c->out;
}

static inline bool client_has_output(const struct client *c)
{
	return c->nout > 0;
}

/* client_wrote - n octets of client_out() were written. */
void client_wrote(struct client *c, size_t n);

/* client_waiting - a reply is outstanding (the driver's deadline runs). */
static inline bool client_waiting(const struct client *c)
{
	return c->state != CLIENT_ST_IDLE && c->state != CLIENT_ST_READY &&
	       c->state != CLIENT_ST_CLOSED;
}

/* client_retryable - the failed result r is transient: a sender keeps the
 * message and tries again later (RFC 5321 4.2.5: 4yz is a transient
 * failure, "the sender SHOULD return to the beginning of the command
 * sequence"; 4.5.4.1: a sender retries, after a delay).  Transient are 4xx
 * (421 included), a connection lost mid-message (dropped) and no reply in
 * time (timeout) - the last two may come after the server took the content,
 * so a retry may deliver it twice (RFC 1047).  5xx and protocol failures
 * are permanent, aborted means the run stops, and so is any message with a
 * recipient refused permanently (or with a code that is neither): sending
 * it again would only repeat that refusal.  Delivered and partial results
 * are final (partial: an MTA would retry only the deferred recipients; this
 * client sends whole messages). */
bool client_retryable(const struct client_result *r);

/* client_ext_by_name - CLIENT_EXT_* bit of an EHLO keyword (RFC 5321 2.4:
 * case-insensitive, whole keyword), 0 when unknown. */
uint32_t client_ext_by_name(const char *kw, size_t n);

const char *client_fail_name(unsigned fail);
const char *client_cmd_name(unsigned cmd);

/* client_b64 - RFC 4648 4 base64 of n octets into out (room for
 * 4 * ((n + 2) / 3) octets, no NUL); returns the length written. */
size_t client_b64(const void *in, size_t n, char *out);

/* client_tpl_s - expand {s} (session number s) in tpl into out (cap
 * octets, no NUL); returns the length, or (size_t)-1 when it does not fit.
 * client_tpl_s_max - the longest expansion of tpl over every s. */
size_t client_tpl_s(const char *tpl, uint32_t s, char *out, size_t cap);
size_t client_tpl_s_max(const char *tpl);

#endif
