/*
 * segment.c - splitting one smtpbench run across instances; --start-at
 * (see segment.h)
 */
#include "sink/segment.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>

/* 9999-12-31T23:59:59Z: the last second RFC 3339's four-digit year reaches */
#define LAST_SECOND 253402300799ull

static bool dig(char c)
{
	return c >= '0' && c <= '9';
}

/* digits - exactly n digits at *p into *v; advances *p. */
static bool digits(const char **p, int n, unsigned *v)
{
	unsigned x = 0;

	for (int i = 0; i < n; i++) {
		if (!dig((*p)[i]))
			return false;
		x = x * 10 + (unsigned)((*p)[i] - '0');
	}
	*p += n;
	*v = x;
	return true;
}

/* number - 1..10 digits, no sign, no leading zero (a plain "0" is not a
 * valid I or N either). */
static bool number(const char **p, uint32_t max, uint32_t *v)
{
	uint64_t x = 0;
	const char *q = *p;

	if (!dig(*q) || *q == '0')
		return false;
	for (; dig(*q); q++) {
		x = x * 10 + (uint64_t)(*q - '0');
		if (x > max)
			return false;
	}
	*p = q;
	*v = (uint32_t)x;
	return true;
}

int segment_parse(const char *s, uint32_t *index, uint32_t *count)
{
	uint32_t i, n;

	if (!s || !number(&s, SEGMENT_MAX, &i) || *s++ != '/' || !number(&s, SEGMENT_MAX, &n) ||
	    *s || i > n)
		return -EINVAL;
	*index = i;
	*count = n;
	return 0;
}

/* splitmix64's finaliser: every input bit reaches every output bit */
static uint64_t mix(uint64_t x)
{
	x += 0x9E3779B97F4A7C15ull;
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
	x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
	return x ^ (x >> 31);
}

uint64_t segment_run_id(uint64_t start_ns, uint32_t count)
{
	uint64_t id = mix(mix(start_ns) ^ ((uint64_t)count << 32 | 0x5e6du));

	return id ? id : 1;
}

/* days_from_civil - days since 1970-01-01 of a proleptic Gregorian date
 * (H. Hinnant's algorithm; no time zone, no libc). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned mp = m > 2 ? m - 3 : m + 9;
	unsigned doy = (153 * mp + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

	return era * 146097 + (int64_t)doe - 719468;
}

static unsigned mdays(unsigned y, unsigned m)
{
	static const unsigned char dm[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

	return dm[m - 1] + (m == 2 && leap);
}

/* fraction - "." 1*DIGIT at *p (optional): nanoseconds, digits past the
 * ninth ignored (truncated).  false on a "." without digits. */
static bool fraction(const char **p, uint64_t *ns)
{
	const char *q = *p;
	uint64_t f = 0, sc = 1000000000ull;

	*ns = 0;
	if (*q != '.')
		return true;
	q++;
	if (!dig(*q))
		return false;
	for (; dig(*q); q++)
		if (sc > 1) {
			sc /= 10;
			f += (uint64_t)(*q - '0') * sc;
		}
	*p = q;
	*ns = f;
	return true;
}

/* rfc3339 - RFC 3339 5.6 date-time. */
static int rfc3339(const char *p, uint64_t *out)
{
	unsigned y, mo, d, h, mi, s, oh = 0, om = 0;
	int sign = 0;
	uint64_t frac;

	if (!digits(&p, 4, &y) || *p++ != '-' || !digits(&p, 2, &mo) || *p++ != '-' ||
	    !digits(&p, 2, &d))
		return -EINVAL;
	if (*p != 'T' && *p != 't' && *p != ' ')
		return -EINVAL;
	p++;
	if (!digits(&p, 2, &h) || *p++ != ':' || !digits(&p, 2, &mi) || *p++ != ':' ||
	    !digits(&p, 2, &s) || !fraction(&p, &frac))
		return -EINVAL;
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		sign = *p++ == '+' ? 1 : -1;
		if (!digits(&p, 2, &oh) || *p++ != ':' || !digits(&p, 2, &om))
			return -EINVAL;
	} else {
		return -EINVAL; /* RFC 3339 4.3: the offset is not optional */
	}
	if (*p)
		return -EINVAL;
	/* 5.6 and 5.7: second 60 only for a leap second (taken as the next
	 * second, as Unix time does); no hour 24 */
	if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > mdays(y, mo) || h > 23 || mi > 59 ||
	    s > 60 || oh > 23 || om > 59)
		return -EINVAL;
	int64_t t = days_from_civil(y, mo, d) * 86400 + (int64_t)(h * 3600 + mi * 60 + s);
	/* local = UTC + offset */
	t -= sign * (int64_t)(oh * 3600 + om * 60);
	if (t < 0 || (uint64_t)t > LAST_SECOND)
		return -EINVAL;
	*out = (uint64_t)t * 1000000000ull + frac;
	return 0;
}

/* unix_seconds - 1*DIGIT ["." 1*DIGIT], no sign, no exponent. */
static int unix_seconds(const char *p, uint64_t *out)
{
	uint64_t v = 0, frac;

	if (!dig(*p))
		return -EINVAL;
	for (; dig(*p); p++) {
		v = v * 10 + (uint64_t)(*p - '0');
		if (v > LAST_SECOND)
			return -EINVAL;
	}
	if (!fraction(&p, &frac) || *p)
		return -EINVAL;
	*out = v * 1000000000ull + frac;
	return 0;
}

int segment_parse_time(const char *s, uint64_t *ns)
{
	uint64_t v;
	int ret;

	if (!s)
		return -EINVAL;
	/* a date starts with four digits and a '-': "2026-"; Unix seconds
	 * never hold a '-' */
	if (dig(s[0]) && dig(s[1]) && dig(s[2]) && dig(s[3]) && s[4] == '-')
		ret = rfc3339(s, &v);
	else
		ret = unix_seconds(s, &v);
	if (ret)
		return ret;
	*ns = v;
	return 0;
}
