/* test_pace.c - open-loop schedule: exact, drift-free, unmoved by stalls */
#include <criterion/criterion.h>
#include <math.h>

#include "sink/pace.h"

Test(pace, no_drift_over_a_long_run)
{
	static const double rates[] = {3, 7, 1000, 333333, 12345.678};

	for (size_t i = 0; i < sizeof(rates) / sizeof(rates[0]); i++) {
		struct pace p;
		uint64_t prev = 0;
		pace_init(&p, 1000, rates[i]);
		for (uint64_t k = 0; k < 1000000; k++) {
			uint64_t t = pace_take(&p);
			cr_assert_geq(t, prev, "schedule went backwards");
			prev = t;
		}
		/* one million slots later we are where k / rate says, to 1 ns */
		double want = 1000 + 1e6 * 1e9 / rates[i];
		cr_assert_leq(fabs((double)pace_next(&p) - want), 1.0, "rate %g drifted", rates[i]);
	}
}

Test(pace, stall_does_not_move_intended_times)
{
	/* A consumer that can start one message per 1 ms, except for a 100 ms
	 * stall, against a 2000/s schedule: intended times stay on the grid and
	 * the latency measured from them grows during the stall (a closed loop
	 * would have recorded 1 ms for every message). */
	struct pace p;
	uint64_t now = 0, worst = 0;

	pace_init(&p, 0, 2000);
	for (int i = 0; i < 400; i++) {
		uint64_t due = pace_next(&p);
		if (now < due)
			now = due;
		uint64_t intended = pace_take(&p);
		cr_assert_eq(intended, (uint64_t)i * 500000ull);
		uint64_t done = now + 1000000ull + (i == 50 ? 100000000ull : 0);
		if (done - intended > worst)
			worst = done - intended;
		now = done;
	}
	cr_assert_geq(worst, 100000000ull, "the stall must show in the latency");
}

Test(pace, per_thread_shares_add_up)
{
	/* --rate R over T threads: each thread R/T; together R per second */
	struct pace t[3];
	uint64_t n = 0;

	for (int i = 0; i < 3; i++)
		pace_init(&t[i], 0, 900.0 / 3);
	for (int i = 0; i < 3; i++)
		while (pace_next(&t[i]) < 1000000000ull) {
			pace_take(&t[i]);
			n++;
		}
	cr_assert_eq(n, 900);
}
