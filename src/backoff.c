/*-------------------------------------------------------------------------
 * backoff.c
 *		Exponential backoff with and without jitter, and time until a
 *		deadline (see backoff.h).  Pure functions: no locks, no transaction.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "common/pg_prng.h"

#include "backoff.h"

/* 2^62 overflows nothing below: doubling stops long before it */
#define BACKOFF_MAX_SHIFT	40

int64
backoff_ceiling_ms(int64 base_ms, int64 cap_ms, int n)
{
	int			shift = Min(Max(n - 1, 0), BACKOFF_MAX_SHIFT);

	if (base_ms <= 0)
		return 0;
	/* base_ms << shift would overflow past cap_ms: compare before shifting */
	if (base_ms > (cap_ms >> shift))
		return cap_ms;
	return Min(cap_ms, base_ms << shift);
}

int64
backoff_jitter_ms(int64 base_ms, int64 cap_ms, int n)
{
	return (int64) (pg_prng_double(&pg_global_prng_state) *
					(double) backoff_ceiling_ms(base_ms, cap_ms, n));
}

long
ms_until(TimestampTz t, TimestampTz now)
{
	if (t == 0)
		return -1;
	if (t <= now)
		return 0;
	/* rounded up: waking before the deadline would only turn a loop again */
	return (long) Min((t - now + 999) / 1000, (int64) LONG_MAX);
}

long
sooner(long a, long b)
{
	if (a < 0)
		return b;
	if (b < 0)
		return a;
	return Min(a, b);
}
