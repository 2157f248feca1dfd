/*-------------------------------------------------------------------------
 * report.c
 *		Publishing the delivery core's figures of every endpoint to the
 *		relay's slot in shared memory, for outbox.stat_endpoints and
 *		outbox.metrics() (stats.c reads them).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "storage/lwlock.h"
#include "utils/timestamp.h"

#include "delivery.h"
#include "endpoint.h"
#include "shmem.h"

/*
 * Publish the figures of every endpoint to the relay's slot, for
 * outbox.stat_endpoints.  Takes the shared-memory lock briefly.
 */
void
delivery_report(RelaySlot *slot, bool horizon_blocked)
{
	EndpointStats *stats = shmem_slot_stats(slot);
	int			max = outbox_shmem->endpoints_per_slot;
	int			n = list_length(delivery_endpoints);
	int		   *in_flight = palloc0(sizeof(int) * Max(n, 1));
	TimestampTz *oldest = palloc0(sizeof(TimestampTz) * Max(n, 1));
	int			k = 0;
	int			i = 0;
	ListCell   *lc;
	TimestampTz now = GetCurrentTimestamp();

	/* walk the queues before taking the lock that every relay and reader shares */
	foreach(lc, delivery_endpoints)
	{
		Endpoint   *ep = lfirst(lc);
		dlist_iter	it;

		dlist_foreach(it, &ep->queue)
		{
			Pending    *p = dlist_container(Pending, node, it.cur);

			if (p->in_flight)
				in_flight[i]++;
			if (oldest[i] == 0 || p->created_at < oldest[i])
				oldest[i] = p->created_at;
		}
		i++;
	}

	LWLockAcquire(outbox_shmem->lock, LW_EXCLUSIVE);
	slot->last_activity_at = now;
	if (!horizon_blocked)
		slot->horizon_blocked_since = 0;
	else if (slot->horizon_blocked_since == 0)
		slot->horizon_blocked_since = now;
	i = 0;
	foreach(lc, delivery_endpoints)
	{
		Endpoint   *ep = lfirst(lc);
		EndpointStats *st;

		i++;
		if (ep->dropped || k >= max)
			continue;
		st = &stats[k++];
		st->endpoint_id = ep->id;
		strlcpy(st->state, ep->invalid ? "invalid" : ep->paused ? "paused" :
				ep->breaker == BREAKER_OPEN ? "open" :
				ep->breaker == BREAKER_HALF_OPEN ? "half_open" : "active", sizeof(st->state));
		st->queued = ep->queued;
		st->in_flight = in_flight[i - 1];
		st->oldest_pending = oldest[i - 1];
		st->fetched = ep->fetched;
		st->delivered = ep->delivered;
		st->failed_attempts = ep->failed_attempts;
		st->dead_lettered = ep->dead_lettered;
		st->last_success_at = ep->last_success_at;
		st->last_failure_at = ep->last_failure_at;
		st->last_http_status = ep->last_http_status;
		strlcpy(st->last_error, ep->last_error, sizeof(st->last_error));
		st->nlatencies = ep->nlatencies;
		memcpy(st->latencies, ep->latencies, sizeof(float4) * ep->nlatencies);
	}
	for (; k < max && stats[k].endpoint_id != 0; k++)
		stats[k].endpoint_id = 0;
	LWLockRelease(outbox_shmem->lock);
}
