/* test_stamp.c - integrity stamp: any segmentation verifies, any change does not */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "sink/stamp.h"

static uint64_t s = 0x1234567887654321ull;
static uint64_t rnd(void)
{
	s ^= s << 13;
	s ^= s >> 7;
	s ^= s << 17;
	return s;
}

/* make - stamp line + body; returns length */
static size_t make(char *buf, const char *body, size_t blen, uint64_t run, uint64_t seq)
{
	struct stamp_hash h;

	stamp_hash_init(&h);
	stamp_hash_feed(&h, body, blen);
	stamp_format(buf, run, seq, stamp_hash_final(&h));
	memcpy(buf + STAMP_LINE_LEN, body, blen);
	return STAMP_LINE_LEN + blen;
}

static enum stamp_result verify(const char *m, size_t n, uint64_t *run, uint64_t *seq)
{
	struct stamp_verifier v;
	size_t off = 0;

	stamp_verify_begin(&v);
	while (off < n) {
		size_t k = 1 + rnd() % 97;
		if (k > n - off)
			k = n - off;
		stamp_verify_feed(&v, m + off, k);
		off += k;
	}
	return stamp_verify_end(&v, run, seq);
}

Test(stamp, roundtrip_any_split_and_single_byte_corruption)
{
	char body[3000], msg[3200];

	for (int round = 0; round < 300; round++) {
		size_t blen = rnd() % sizeof(body);
		uint64_t run = rnd(), seq = rnd() % 1000000, r2, s2;
		for (size_t i = 0; i < blen; i++)
			body[i] = (char)(rnd() & 0xff);
		size_t n = make(msg, body, blen, run, seq);
		cr_assert_eq(verify(msg, n, &r2, &s2), STAMP_OK);
		cr_assert_eq(r2, run);
		cr_assert_eq(s2, seq);
		/* flip one octet anywhere (stamp line or body) */
		size_t at = rnd() % n;
		char keep = msg[at];
		msg[at] ^= (char)(1 + rnd() % 255);
		cr_assert_neq(verify(msg, n, &r2, &s2), STAMP_OK, "flip at %zu accepted", at);
		msg[at] = keep;
		/* lose the last octet */
		if (n > STAMP_LINE_LEN)
			cr_assert_eq(verify(msg, n - 1, &r2, &s2), STAMP_CORRUPT);
	}
}

Test(stamp, unstamped_mail_is_none)
{
	uint64_t r, q;
	const char *m = "Subject: hello\r\n\r\nno stamp here\r\n";

	cr_assert_eq(verify(m, strlen(m), &r, &q), STAMP_NONE);
	cr_assert_eq(verify("X-Sm", 4, &r, &q), STAMP_NONE);
}
