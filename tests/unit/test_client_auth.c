/* test_client_auth.c - client session core: base64, {s} templates, AUTH
 * mechanism scanning, STARTTLS/TLS states, credentials never in texts */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "sink/client.h"

static const char stamp[] = "X-Stamp: 1\r\n";
static const char raw[] = "b\r\n";
static const char wire[] = "b\r\n.\r\n";

struct t {
	struct client_cfg cfg;
	struct client_stats st;
	struct client c;
	char *cmd;
	char out[1 << 14];
	size_t olen;
};

static void setup_t(struct t *t, uint8_t tls, const char *user, const char *pass, uint8_t mech)
{
	memset(t, 0, sizeof(*t));
	t->cfg = (struct client_cfg){.ehlo = "c.test",
	                             .pipelining = -1,
	                             .rcpts = 1,
	                             .from_tpl = "a@b",
	                             .to_tpl = "c@d",
	                             .tls = tls,
	                             .auth_user = user,
	                             .auth_pass = pass,
	                             .auth_mech = mech};
	size_t cap = client_cmd_cap(&t->cfg);
	t->cmd = malloc(cap);
	client_init(&t->c, &t->cfg, &t->st, t->cmd, cap);
}

/* drain - take all queued output as written */
static void drain(struct t *t)
{
	int n;
	const struct iovec *iov = client_out(&t->c, &n);
	size_t total = 0;

	for (int i = 0; i < n; i++) {
		cr_assert(t->olen + iov[i].iov_len < sizeof(t->out));
		memcpy(t->out + t->olen, iov[i].iov_base, iov[i].iov_len);
		t->olen += iov[i].iov_len;
		total += iov[i].iov_len;
	}
	client_wrote(&t->c, total);
	t->out[t->olen] = 0;
}

static unsigned feed(struct t *t, const char *s)
{
	size_t n = strlen(s), off = 0;
	unsigned all = 0;

	while (off < n) {
		unsigned act;
		off += client_feed(&t->c, s + off, n - off, &act);
		all |= act;
		drain(t);
	}
	return all;
}

static const char *b64(const char *s, size_t n)
{
	static char out[256];

	out[client_b64(s, n, out)] = 0;
	return out;
}

Test(client_auth, base64_rfc4648_vectors)
{
	/* RFC 4648 10 */
	cr_assert_str_eq(b64("", 0), "");
	cr_assert_str_eq(b64("f", 1), "Zg==");
	cr_assert_str_eq(b64("fo", 2), "Zm8=");
	cr_assert_str_eq(b64("foo", 3), "Zm9v");
	cr_assert_str_eq(b64("foob", 4), "Zm9vYg==");
	cr_assert_str_eq(b64("fooba", 5), "Zm9vYmE=");
	cr_assert_str_eq(b64("foobar", 6), "Zm9vYmFy");
	/* RFC 4616 4's example message "\0tim\0tanstaaftanstaaf" */
	cr_assert_str_eq(b64("\0tim\0tanstaaftanstaaf", 21), "AHRpbQB0YW5zdGFhZnRhbnN0YWFm");
	/* every octet value, including the high ones, through the 62/63 digits */
	cr_assert_str_eq(b64("\xff\xfe\xfd\xfb\xef\xbe", 6), "//79++++");
	cr_assert_str_eq(b64("\x00\x10\x83", 3), "ABCD");
}

Test(client_auth, base64_length_for_every_size)
{
	char in[64], out[128];

	for (size_t n = 0; n < sizeof(in); n++) {
		memset(in, 'x', n);
		size_t k = client_b64(in, n, out);
		cr_assert_eq(k, 4 * ((n + 2) / 3), "n=%zu", n);
		for (size_t i = 0; i < k; i++)
			cr_assert(out[i] != 0);
	}
}

Test(client_auth, session_template)
{
	char out[32];
	size_t n;

	n = client_tpl_s("u{s}@x", 0, out, sizeof(out));
	cr_assert_eq(n, 4);
	cr_assert_eq(memcmp(out, "u0@x", 4), 0);
	n = client_tpl_s("{s}{s}", 4294967295u, out, sizeof(out));
	cr_assert_eq(n, 20);
	cr_assert_eq(memcmp(out, "42949672954294967295", 20), 0);
	/* only {s} is a placeholder here; {n} and broken ones stay literal */
	n = client_tpl_s("{n}{s{x}}", 1, out, sizeof(out));
	cr_assert_eq(n, 9);
	cr_assert_eq(memcmp(out, "{n}{s{x}}", 9), 0);
	/* too long for the room: refused, not cut */
	cr_assert_eq(client_tpl_s("abcd", 1, out, 3), (size_t)-1);
	cr_assert_eq(client_tpl_s("ab{s}", 12345, out, 6), (size_t)-1);
	cr_assert_eq(client_tpl_s("ab{s}", 1234, out, 6), 6);
	cr_assert_eq(client_tpl_s_max("ab{s}"), 12);
	cr_assert_eq(client_tpl_s_max("{s}{s}"), 20);
	cr_assert_eq(client_tpl_s_max("plain"), 5);
}

/* every split of the EHLO reply finds the same mechanisms */
static uint8_t mechs_split(const char *reply, size_t cut)
{
	struct t t;
	unsigned act;
	size_t n = strlen(reply), off = 0;

	setup_t(&t, CLIENT_TLS_NONE, NULL, NULL, 0);
	client_start(&t.c);
	feed(&t, "220 x\r\n");
	while (off < n) {
		size_t end = off < cut && cut < n ? cut : n;
		off += client_feed(&t.c, reply + off, end - off, &act);
	}
	free(t.cmd);
	return t.c.mechs;
}

Test(client_auth, ehlo_auth_mechanisms_at_every_split)
{
	static const struct {
		const char *reply;
		uint8_t mechs;
	} v[] = {
	    {"250-x\r\n250 AUTH PLAIN LOGIN\r\n", CLIENT_MECH_PLAIN | CLIENT_MECH_LOGIN},
	    {"250-x\r\n250-auth login\r\n250 SIZE 10\r\n", CLIENT_MECH_LOGIN},
	    {"250-x\r\n250-AUTH=PLAIN\r\n250 PIPELINING\r\n", CLIENT_MECH_PLAIN},
	    {"250-x\r\n250 AUTH CRAM-MD5 XOAUTH2 PLAINLOGIN LOGINX\r\n", 0},
	    {"250-x\r\n250 AUTH SCRAM-SHA-256-PLUS Plain\r\n", CLIENT_MECH_PLAIN},
	    /* only the AUTH line's parameters are mechanisms */
	    {"250-x\r\n250-XAUTH PLAIN\r\n250 SIZE LOGIN\r\n", 0},
	    /* the first line is the server's name */
	    {"250-AUTH PLAIN\r\n250 SIZE 1\r\n", 0},
	    /* a refused EHLO advertises nothing */
	    {"550-x\r\n550 AUTH PLAIN\r\n", 0},
	};
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
		for (size_t cut = 0; cut <= strlen(v[i].reply); cut++)
			cr_assert_eq(mechs_split(v[i].reply, cut), v[i].mechs, "%s cut %zu",
			             v[i].reply, cut);
}

Test(client_auth, longest_credentials_fit_the_command_buffer)
{
	char user[CLIENT_AUTH_MAX - 7 + 1], pass[CLIENT_AUTH_MAX - 7 + 1];

	/* 248 octets + {s} expanding to 10 digits: 255 */
	memset(user, 'u', sizeof(user) - 1);
	memcpy(user + sizeof(user) - 4, "{s}", 4);
	memset(pass, 'p', sizeof(pass) - 1);
	memcpy(pass + sizeof(pass) - 4, "{s}", 4);
	cr_assert_eq(client_tpl_s_max(user), CLIENT_AUTH_MAX);
	for (uint8_t mech = CLIENT_MECH_PLAIN; mech <= CLIENT_MECH_LOGIN; mech <<= 1) {
		struct t t;
		setup_t(&t, CLIENT_TLS_NONE, user, pass, mech);
		t.c.sid = 4294967295u;
		client_start(&t.c);
		feed(&t, "220 x\r\n");
		unsigned act = feed(&t, "250-x\r\n250 AUTH PLAIN LOGIN\r\n");
		cr_assert(act & CLIENT_ACT_SEND);
		if (mech == CLIENT_MECH_LOGIN) {
			feed(&t, "334 VXNlcm5hbWU6\r\n");
			feed(&t, "334 UGFzc3dvcmQ6\r\n");
		}
		cr_assert_eq(t.c.state, CLIENT_ST_AUTH);
		cr_assert_eq(t.c.fail, CLIENT_FAIL_NONE, "%s", t.c.text);
		act = feed(&t, "235 ok\r\n");
		cr_assert(act & CLIENT_ACT_READY);
		cr_assert_eq(t.st.auth_ok, 1);
		free(t.cmd);
	}
}

Test(client_auth, starttls_reply_injection_is_never_read)
{
	struct t t;

	setup_t(&t, CLIENT_TLS_STARTTLS, NULL, NULL, 0);
	cr_assert_eq(client_start(&t.c), 0);
	feed(&t, "220 x\r\n");
	feed(&t, "250-x\r\n250 STARTTLS\r\n");
	cr_assert_str_eq(t.out, "EHLO c.test\r\nSTARTTLS\r\n");
	/* the 220 and a forged reply in the same read (the injection attack) */
	const char *in = "220 go ahead\r\n250-x\r\n250 AUTH PLAIN\r\n";
	unsigned act;
	size_t k = client_feed(&t.c, in, strlen(in), &act);
	cr_assert_eq(k, strlen("220 go ahead\r\n"));
	cr_assert_eq(act, CLIENT_ACT_REPLY | CLIENT_ACT_TLS);
	cr_assert_not(client_has_output(&t.c)); /* nothing behind STARTTLS */
	k += client_feed(&t.c, in + k, strlen(in) - k, &act);
	cr_assert_eq(k, strlen(in));
	cr_assert_eq(act, CLIENT_ACT_CLOSE);
	cr_assert_eq(t.c.fail, CLIENT_FAIL_PROTOCOL);
	cr_assert_eq(t.c.mechs, 0);
	cr_assert_eq(client_tls_up(&t.c), 0); /* too late: the session is over */
	free(t.cmd);
}

Test(client_auth, tls_state_eof_timeout_and_misuse)
{
	struct t t;

	/* implicit TLS: the handshake comes first; a close during it is tls */
	setup_t(&t, CLIENT_TLS_IMPLICIT, NULL, NULL, 0);
	cr_assert_eq(client_start(&t.c), CLIENT_ACT_TLS);
	cr_assert(client_waiting(&t.c)); /* the deadline runs during the handshake */
	cr_assert_eq(client_eof(&t.c), CLIENT_ACT_CLOSE);
	cr_assert_eq(t.c.fail, CLIENT_FAIL_TLS);
	cr_assert_eq(t.c.fail_cmd, CLIENT_CMD_GREETING);
	/* a handshake that does not finish is a timeout */
	cr_assert_eq(client_start(&t.c), CLIENT_ACT_TLS);
	cr_assert_eq(client_timeout(&t.c), CLIENT_ACT_CLOSE);
	cr_assert_eq(t.c.fail, CLIENT_FAIL_TIMEOUT);
	cr_assert(strstr(t.c.text, "TLS handshake"));
	/* up: the greeting is read over TLS */
	cr_assert_eq(client_start(&t.c), CLIENT_ACT_TLS);
	cr_assert_eq(client_tls_up(&t.c), 0);
	cr_assert_eq(t.c.state, CLIENT_ST_GREET);
	cr_assert_eq(client_tls_up(&t.c), 0);          /* only once */
	cr_assert_eq(client_tls_failed(&t.c, "x"), 0); /* and not after */
	cr_assert_eq(t.c.fail, CLIENT_FAIL_NONE);
	cr_assert(feed(&t, "220 x\r\n") & CLIENT_ACT_SEND);
	/* over TLS already: an offered STARTTLS is not used again */
	cr_assert(feed(&t, "250-x\r\n250 STARTTLS\r\n") & CLIENT_ACT_READY);
	free(t.cmd);
}

/* credentials_absent - neither the password, nor the user name, nor their
 * base64 forms appear in any text a report could show */
static void credentials_absent(const struct t *t)
{
	static const char *const secrets[] = {"hunter2", "c2VjcmV0", "aHVudGVyMg",
	                                      "AGJvYgBodW50ZXIy", "Ym9i"};
	for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++) {
		cr_assert_null(strstr(t->c.text, secrets[i]), "%s", t->c.text);
		cr_assert_null(strstr(t->c.res_text, secrets[i]), "%s", t->c.res_text);
	}
}

Test(client_auth, echoed_credentials_are_withheld)
{
	static const char *const replies[] = {
	    "535 5.7.8 bad: AGJvYgBodW50ZXIy hunter2\r\n",
	    "535-AGJvYgBodW50ZXIy\r\n535 hunter2\r\n",
	    "454 4.7.0 AGJvYgBodW50ZXIy\r\n",
	    "421 4.3.2 AGJvYgBodW50ZXIy\r\n",
	    "5x5 AGJvYgBodW50ZXIy\r\n",           /* malformed */
	    "235-ok\r\n250 AGJvYgBodW50ZXIy\r\n", /* code changes: malformed */
	    "334 AGJvYgBodW50ZXIy\r\n",           /* a challenge PLAIN never expects */
	    "535 5.7.8.9.1.2.3.4.5.6 hunter2\r\n",
	};
	for (size_t i = 0; i < sizeof(replies) / sizeof(replies[0]); i++) {
		struct t t;
		setup_t(&t, CLIENT_TLS_NONE, "bob", "hunter2", CLIENT_MECH_PLAIN);
		client_start(&t.c);
		feed(&t, "220 x\r\n");
		feed(&t, "250-x\r\n250 AUTH PLAIN\r\n");
		cr_assert(strstr(t.out, "AUTH PLAIN AGJvYgBodW50ZXIy\r\n"));
		unsigned act = feed(&t, replies[i]);
		cr_assert(act & (CLIENT_ACT_CLOSE | CLIENT_ACT_SEND), "%s", replies[i]);
		cr_assert_neq(t.c.fail, CLIENT_FAIL_NONE, "%s", replies[i]);
		credentials_absent(&t);
		free(t.cmd);
	}
	/* the code and enhanced code stay: they say what went wrong */
	struct t t;
	setup_t(&t, CLIENT_TLS_NONE, "bob", "hunter2", 0);
	client_start(&t.c);
	feed(&t, "220 x\r\n");
	feed(&t, "250-x\r\n250 AUTH LOGIN\r\n");
	feed(&t, "334 VXNlcm5hbWU6\r\n");
	feed(&t, "334 UGFzc3dvcmQ6\r\n");
	cr_assert(strstr(t.out, "AUTH LOGIN\r\nYm9i\r\naHVudGVyMg==\r\n"));
	feed(&t, "535 5.7.8 Authentication credentials invalid\r\n");
	cr_assert_eq(t.c.fail, CLIENT_FAIL_AUTH);
	cr_assert_str_eq(t.c.text, "535 5.7.8 (text withheld: AUTH)");
	cr_assert_eq(t.st.auth_failed, 1);
	cr_assert_eq(t.st.auth_login, 1);
	free(t.cmd);
}

Test(client_auth, auth_comes_after_starttls_and_before_mail)
{
	struct t t;

	setup_t(&t, CLIENT_TLS_STARTTLS, "u{s}", "p", 0);
	t.c.sid = 3;
	client_start(&t.c);
	feed(&t, "220 x\r\n");
	/* AUTH offered in plaintext is not used before TLS */
	feed(&t, "250-x\r\n250-AUTH PLAIN\r\n250 STARTTLS\r\n");
	cr_assert(feed(&t, "220 go\r\n") & CLIENT_ACT_TLS);
	cr_assert_str_eq(t.out, "EHLO c.test\r\nSTARTTLS\r\n");
	cr_assert_eq(client_tls_up(&t.c), CLIENT_ACT_SEND);
	drain(&t);
	feed(&t, "250-x\r\n250 AUTH PLAIN\r\n");
	cr_assert_eq(t.c.state, CLIENT_ST_AUTH);
	unsigned act = feed(&t, "235 2.7.0 ok\r\n");
	cr_assert(act & CLIENT_ACT_READY);
	struct client_msg m = {1,    stamp,           sizeof(stamp) - 1, raw, sizeof(raw) - 1,
	                       wire, sizeof(wire) - 1};
	cr_assert_eq(client_begin(&t.c, &m), CLIENT_ACT_SEND);
	drain(&t);
	cr_assert_str_eq(t.out, "EHLO c.test\r\nSTARTTLS\r\nEHLO c.test\r\nAUTH PLAIN AHUzAHA=\r\n"
	                        "MAIL FROM:<a@b>\r\n");
	free(t.cmd);
}
