/* test_units.c - human units parsing (units.c) */
#include <criterion/criterion.h>

#include "sink/units.h"

Test(units, sizes)
{
	static const struct {
		const char *s;
		uint64_t v;
	} ok[] = {{"0", 0},           {"512", 512},           {"64k", 65536},
	          {"64K", 65536},     {"10M", 10485760},      {"1G", 1073741824},
	          {"1.5k", 1536},     {"2MiB", 2097152},      {"100b", 100},
	          {"16383G", 16383ull << 30}};
	static const char *bad[] = {"", "k", "-1", "1.5", "12Q", "1kk", "1 k", "1.k",
	                            "99999999999999999999", "17179869184G", NULL};
	uint64_t v;

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		cr_assert_eq(units_parse_size(ok[i].s, &v), 0, "%s", ok[i].s);
		cr_assert_eq(v, ok[i].v, "%s -> %llu", ok[i].s, (unsigned long long)v);
	}
	for (size_t i = 0; bad[i]; i++) {
		v = 42;
		cr_assert_neq(units_parse_size(bad[i], &v), 0, "'%s' accepted", bad[i]);
		cr_assert_eq(v, 42, "out touched on error");
	}
}

Test(units, durations)
{
	static const struct {
		const char *s;
		uint64_t ns;
	} ok[] = {{"30", 30000000000ull}, {"30s", 30000000000ull}, {"500ms", 500000000ull},
	          {"1.5s", 1500000000ull}, {"2m", 120000000000ull}, {"1h", 3600000000000ull},
	          {"250us", 250000ull},     {"7ns", 7},              {"0", 0}};
	static const char *bad[] = {"", "s", "soon", "5 s", "5sec", "-1s", "1.s", NULL};
	uint64_t v;

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		cr_assert_eq(units_parse_duration_ns(ok[i].s, &v), 0, "%s", ok[i].s);
		cr_assert_eq(v, ok[i].ns, "%s", ok[i].s);
	}
	for (size_t i = 0; bad[i]; i++)
		cr_assert_neq(units_parse_duration_ns(bad[i], &v), 0, "'%s' accepted", bad[i]);
}

Test(units, counts)
{
	uint64_t v;

	cr_assert_eq(units_parse_count("1000", &v), 0);
	cr_assert_eq(v, 1000);
	cr_assert_eq(units_parse_count("10k", &v), 0);
	cr_assert_eq(v, 10000);
	cr_assert_eq(units_parse_count("2.5M", &v), 0);
	cr_assert_eq(v, 2500000);
	cr_assert_neq(units_parse_count("1.5", &v), 0);
	cr_assert_neq(units_parse_count("x", &v), 0);
	cr_assert_neq(units_parse_count("18446744073709551616", &v), 0);
}
