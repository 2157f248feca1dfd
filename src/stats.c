/*-------------------------------------------------------------------------
 * stats.c
 *		The statistics behind outbox.stat_endpoints, outbox.stat_workers and
 *		outbox.metrics(): set-returning functions over shared memory, like
 *		PostgreSQL's own pg_stat_* views.
 *
 * The relay publishes its per-endpoint figures once per turn of its loop
 * (delivery_report); these functions copy them under the shared lock.
 * Without shared_preload_libraries they return no rows.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/backend_status.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "outbox.h"
#include "gapless.h"
#include "redact.h"
#include "shmem.h"

/* columns of outbox._stat_endpoints() and outbox._stat_workers() */
#define STAT_ENDPOINT_COLUMNS	15
#define STAT_WORKER_COLUMNS		11

PG_FUNCTION_INFO_V1(outbox_stat_endpoints);
PG_FUNCTION_INFO_V1(outbox_stat_workers);

static Datum
stats_time(TimestampTz t, bool *isnull)
{
	*isnull = (t == 0);
	return TimestampTzGetDatum(t);
}

static int
stats_cmp_float(const void *a, const void *b)
{
	float4		x = *(const float4 *) a;
	float4		y = *(const float4 *) b;

	return (x > y) - (x < y);
}

/* the q-quantile of the recent latencies, or NULL */
static Datum
stats_quantile(float4 *sorted, int n, double q, bool *isnull)
{
	*isnull = (n == 0);
	if (n == 0)
		return (Datum) 0;
	return Float8GetDatum(sorted[Min(n - 1, (int) (q * n))]);
}

/*
 * outbox._stat_endpoints(): the relay's figures for each endpoint of this
 * database.
 */
Datum
outbox_stat_endpoints(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	RelaySlot  *slot;
	EndpointStats *copy;
	int			n;

	InitMaterializedSRF(fcinfo, 0);
	if (outbox_shmem == NULL)
		return (Datum) 0;

	n = outbox_shmem->endpoints_per_slot;
	copy = palloc(sizeof(EndpointStats) * n);
	LWLockAcquire(outbox_shmem->lock, LW_SHARED);
	slot = shmem_find_slot(MyDatabaseId);
	if (slot)
		memcpy(copy, shmem_slot_stats(slot), sizeof(EndpointStats) * n);
	LWLockRelease(outbox_shmem->lock);
	if (slot == NULL)
		return (Datum) 0;

	for (int i = 0; i < n; i++)
	{
		EndpointStats *s = &copy[i];
		Datum		values[STAT_ENDPOINT_COLUMNS];
		bool		nulls[STAT_ENDPOINT_COLUMNS] = {0};

		if (s->endpoint_id == 0)
			continue;
		qsort(s->latencies, s->nlatencies, sizeof(float4), stats_cmp_float);
		values[0] = Int32GetDatum(s->endpoint_id);
		values[1] = CStringGetTextDatum(s->state);
		values[2] = Int32GetDatum(s->queued);
		values[3] = Int32GetDatum(s->in_flight);
		values[4] = Int64GetDatum(s->fetched);
		values[5] = Int64GetDatum((int64) s->delivered);
		values[6] = Int64GetDatum((int64) s->failed_attempts);
		values[7] = Int64GetDatum((int64) s->dead_lettered);
		values[8] = stats_time(s->oldest_pending, &nulls[8]);
		values[9] = stats_time(s->last_success_at, &nulls[9]);
		values[10] = stats_time(s->last_failure_at, &nulls[10]);
		values[11] = Int32GetDatum(s->last_http_status);
		nulls[11] = (s->last_failure_at == 0);
		redact_error_for_caller(s->last_error);
		values[12] = CStringGetTextDatum(s->last_error);
		nulls[12] = (s->last_error[0] == '\0');
		values[13] = stats_quantile(s->latencies, s->nlatencies, 0.50, &nulls[13]);
		values[14] = stats_quantile(s->latencies, s->nlatencies, 0.99, &nulls[14]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * The backend whose transaction id is the oldest still running: it holds
 * the gap-free readers back.  Read from backend status directly, so that
 * readers without pg_read_all_stats still see who it is.
 */
static void
stats_oldest_xid_holder(int *pid, TimestampTz *since)
{
	TransactionId oldest = InvalidTransactionId;
	int			n = pgstat_fetch_stat_numbackends();

	*pid = 0;
	*since = 0;
	for (int i = 1; i <= n; i++)
	{
		LocalPgBackendStatus *b = pgstat_fetch_stat_local_beentry(i);

		/* a projector's batch holding no log position holds nobody back */
		if (b == NULL || !TransactionIdIsValid(b->backend_xid) || gapless_xid_excluded(b->backend_xid))
			continue;
		if (!TransactionIdIsValid(oldest) || TransactionIdPrecedes(b->backend_xid, oldest))
		{
			oldest = b->backend_xid;
			*pid = b->backendStatus.st_procpid;
			*since = b->backendStatus.st_xact_start_timestamp;
		}
	}
}

/*
 * One row of outbox._stat_workers: a relay, or a projector (requests < 0:
 * NULL, it sends none).
 */
static void
stats_worker_row(ReturnSetInfo *rsinfo, Oid dboid, const char *worker, pid_t pid,
				 const char *state, TimestampTz started_at, TimestampTz last_activity_at,
				 uint64 loops, int64 requests, TimestampTz blocked_since,
				 int blocker_pid, TimestampTz blocker_since)
{
	Datum		values[STAT_WORKER_COLUMNS];
	bool		nulls[STAT_WORKER_COLUMNS] = {0};
	bool		blocked = blocked_since != 0 && blocker_pid != 0;

	values[0] = ObjectIdGetDatum(dboid);
	values[1] = Int32GetDatum(pid);
	nulls[1] = (pid == 0);
	values[2] = CStringGetTextDatum(state);
	values[3] = stats_time(started_at, &nulls[3]);
	values[4] = stats_time(last_activity_at, &nulls[4]);
	values[5] = Int64GetDatum((int64) loops);
	values[6] = Int64GetDatum(requests);
	nulls[6] = (requests < 0);
	values[7] = stats_time(blocked_since, &nulls[7]);
	values[8] = Int32GetDatum(blocker_pid);
	nulls[8] = !blocked;
	values[9] = stats_time(blocker_since, &nulls[9]);
	nulls[9] = nulls[9] || !blocked;
	values[10] = CStringGetTextDatum(worker);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

/*
 * outbox._stat_workers(): every relay slot of the cluster and its projector,
 * and the databases waiting for a slot (relay state "no_slot").
 */
Datum
outbox_stat_workers(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	static const char *const states[] = {
		"none", "starting", "running", "no_extension", "backoff", "needs_update", "no_slot"
	};
	static const char *const projector_states[] = {"none", "starting", "running", "backoff"};
	RelaySlot  *copy;
	int			nslots;
	Oid			waiting[OUTBOX_MAX_WAITING];
	int			nwaiting;
	int			blocker_pid;
	TimestampTz blocker_since;

	InitMaterializedSRF(fcinfo, 0);
	if (outbox_shmem == NULL)
		return (Datum) 0;
	stats_oldest_xid_holder(&blocker_pid, &blocker_since);

	nslots = outbox_shmem->nslots;
	copy = palloc(sizeof(RelaySlot) * nslots);
	LWLockAcquire(outbox_shmem->lock, LW_SHARED);
	memcpy(copy, outbox_shmem->slots, sizeof(RelaySlot) * nslots);
	nwaiting = outbox_shmem->nwaiting;
	memcpy(waiting, outbox_shmem->waiting, sizeof(Oid) * nwaiting);
	LWLockRelease(outbox_shmem->lock);

	for (int i = 0; i < nslots; i++)
	{
		RelaySlot  *s = &copy[i];
		ProjectorInfo *p = &s->projector;

		if (!OidIsValid(s->dboid) || s->state == RELAY_NONE)
			continue;
		stats_worker_row(rsinfo, s->dboid, "relay", s->pid, states[s->state],
						 s->started_at, s->last_activity_at, s->loops, (int64) s->requests,
						 s->horizon_blocked_since, blocker_pid, blocker_since);
		if (p->state != PROJECTOR_NONE)
			stats_worker_row(rsinfo, s->dboid, "projector", p->pid, projector_states[p->state],
							 p->started_at, p->last_activity_at, p->loops, -1,
							 p->horizon_blocked_since, blocker_pid, blocker_since);
	}

	/* databases with the extension that outbox.max_databases left without a relay */
	for (int i = 0; i < nwaiting; i++)
	{
		Datum		values[STAT_WORKER_COLUMNS] = {0};
		bool		nulls[STAT_WORKER_COLUMNS];

		memset(nulls, true, sizeof(nulls));
		values[0] = ObjectIdGetDatum(waiting[i]);
		nulls[0] = false;
		values[2] = CStringGetTextDatum(states[RELAY_NO_SLOT]);
		nulls[2] = false;
		values[10] = CStringGetTextDatum("relay");
		nulls[10] = false;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
