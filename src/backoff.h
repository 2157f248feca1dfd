/*-------------------------------------------------------------------------
 * backoff.h
 *		Delays, said once: the exponential backoff every retry in outbox
 *		uses (deliveries, projections, restarts, the breaker), and the
 *		milliseconds left until a deadline (backoff.c).
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_BACKOFF_H
#define OUTBOX_BACKOFF_H

#include "postgres.h"

#include "utils/timestamp.h"

/*
 * A worker that exited with an error (a relay, a projector) is started
 * again after RESTART_BACKOFF_BASE_MS, doubling per failure in a row up to
 * RESTART_BACKOFF_MAX_MS.
 */
#define RESTART_BACKOFF_BASE_MS		1000
#define RESTART_BACKOFF_MAX_MS		60000

/*
 * The ceiling of attempt n's delay (n >= 1): min(cap_ms, base_ms * 2^(n-1)).
 * Restarts and the circuit breaker wait exactly this long.
 */
extern int64 backoff_ceiling_ms(int64 base_ms, int64 cap_ms, int n);

/*
 * Full jitter: a random delay in [0, backoff_ceiling_ms], so that retries
 * of many messages or projections that failed together spread out.
 */
extern int64 backoff_jitter_ms(int64 base_ms, int64 cap_ms, int n);

/* ms from now until t, rounded up, 0 if t has passed; -1 if t is 0 (none). */
extern long ms_until(TimestampTz t, TimestampTz now);

/* the earlier of two timeouts in ms, where -1 means none */
extern long sooner(long a, long b);

#endif							/* OUTBOX_BACKOFF_H */
