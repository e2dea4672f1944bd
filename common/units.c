/*
 * units.c - parse human units (see units.h)
 */
#include "sink/units.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

/* parse_decimal - digits with an optional fraction; *end after the number.
 * Integer part and fraction are kept apart so "1.5G" is exact. */
static int parse_decimal(const char *s, uint64_t *ip, uint64_t *frac, uint64_t *fscale,
                         const char **end)
{
	uint64_t v = 0, f = 0, sc = 1;
	const char *p = s;

	if (*p < '0' || *p > '9')
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (v > (UINT64_MAX - 9) / 10)
			return -EINVAL;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (*p == '.') {
		p++;
		if (*p < '0' || *p > '9')
			return -EINVAL;
		for (; *p >= '0' && *p <= '9'; p++) {
			if (sc < 1000000000000ull) { /* 12 fraction digits are plenty */
				f = f * 10 + (uint64_t)(*p - '0');
				sc *= 10;
			}
		}
	}
	*ip = v;
	*frac = f;
	*fscale = sc;
	*end = p;
	return 0;
}

/* scale - (ip + frac/fscale) * mult, rejecting overflow. */
static int scale(uint64_t ip, uint64_t frac, uint64_t fscale, uint64_t mult, uint64_t *out)
{
	if (mult && ip > UINT64_MAX / mult)
		return -EINVAL;
	uint64_t v = ip * mult;
	/* frac/fscale * mult, in a way that cannot overflow for our ranges */
	__uint128_t fr = (__uint128_t)frac * mult / fscale;
	if (fr > UINT64_MAX - v)
		return -EINVAL;
	*out = v + (uint64_t)fr;
	return 0;
}

int units_parse_size(const char *s, uint64_t *out)
{
	uint64_t ip, frac, fs, mult = 1;
	const char *p;

	if (!s || parse_decimal(s, &ip, &frac, &fs, &p))
		return -EINVAL;
	switch (*p) {
	case 'k':
	case 'K':
		mult = 1024ull;
		p++;
		break;
	case 'm':
	case 'M':
		mult = 1024ull * 1024;
		p++;
		break;
	case 'g':
	case 'G':
		mult = 1024ull * 1024 * 1024;
		p++;
		break;
	default:
		break;
	}
	if (!strcasecmp(p, "ib") && mult > 1)
		p += 2;
	else if (!strcasecmp(p, "b"))
		p++;
	if (*p)
		return -EINVAL;
	if (mult == 1 && frac)
		return -EINVAL; /* "1.5" octets means nothing */
	return scale(ip, frac, fs, mult, out);
}

int units_parse_duration_ns(const char *s, uint64_t *out)
{
	static const struct {
		const char *suffix;
		uint64_t ns;
	} tab[] = {{"ns", 1},
	           {"us", 1000},
	           {"ms", 1000000},
	           {"s", 1000000000ull},
	           {"m", 60000000000ull},
	           {"h", 3600000000000ull},
	           {"", 1000000000ull}};
	uint64_t ip, frac, fs;
	const char *p;

	if (!s || parse_decimal(s, &ip, &frac, &fs, &p))
		return -EINVAL;
	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++)
		if (!strcmp(p, tab[i].suffix))
			return scale(ip, frac, fs, tab[i].ns, out);
	return -EINVAL;
}

int units_parse_count(const char *s, uint64_t *out)
{
	uint64_t ip, frac, fs, mult = 1;
	const char *p;

	if (!s || parse_decimal(s, &ip, &frac, &fs, &p))
		return -EINVAL;
	if (*p == 'k' || *p == 'K')
		mult = 1000, p++;
	else if (*p == 'M')
		mult = 1000000, p++;
	else if (*p == 'G')
		mult = 1000000000, p++;
	if (*p || (mult == 1 && frac))
		return -EINVAL;
	return scale(ip, frac, fs, mult, out);
}
