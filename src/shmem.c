/*-------------------------------------------------------------------------
 * shmem.c
 *		outbox's shared memory: the launcher and one slot per database relay.
 *
 * Lock order: OutboxShmem->lock (LWLock tranche "outbox") protects slot
 * assignment (dboid, has_extension), the launcher's bookkeeping fields and
 * its lists of relay requests and waiting databases; take it before
 * anything else and never across I/O or a transaction.  The wake flag and
 * the config generation are atomics, touched without the lock.
 *
 * Wakeups: a commit that published a message or changed an endpoint sets
 * the database's wake flag, one that appended events for async projections
 * (or changed a projection) its events flag, and, if the flag was clear,
 * sets the latch of the process that consumes it: the relay for the wake
 * flag, the projector for the events flag (the relay when no projector
 * runs: it starts one).  If no relay runs for the database, a configuration
 * change sets the launcher's latch instead, with the database in the
 * launcher's request list if it has no slot (CREATE EXTENSION in a database
 * the launcher had found without the extension).  Rolled-back transactions
 * wake nobody.
 *
 * The flags, not the latches, are the truth.  A latch only interrupts a
 * sleep, and any wait inside a worker's loop (a lock, a handler's
 * pg_sleep, a synchronous-replication commit) may consume it.  So setting
 * the latch only when a flag goes 0 -> 1 is safe because every consumer
 * follows one protocol: ResetLatch at the top of its loop, then exchange
 * its flags to 0 and work, and just before sleeping read the flags again
 * and sleep 0 ms if one is set.  A flag set after that last read sets a
 * latch that nothing can consume before the sleep.
 *
 * The projector bumps progress_count and broadcasts progress_cv after each
 * batch it commits; outbox.wait_for_projection sleeps on it, and re-reads
 * the counter before sleeping for the same reason.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "outbox.h"
#include "shmem.h"

PG_FUNCTION_INFO_V1(outbox_notify_relay);

OutboxShmem *outbox_shmem = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* this transaction published or changed something the relay must see */
static bool wake_at_commit = false;
static bool config_changed_at_commit = false;
static bool events_at_commit = false;	/* appended events async projections wait for */

static ProjectionProgress *shmem_slot_progress(RelaySlot *slot);

static Size
shmem_slots_size(void)
{
	return MAXALIGN(add_size(offsetof(OutboxShmem, slots),
							 mul_size(sizeof(RelaySlot), OUTBOX_NSLOTS(outbox_max_databases))));
}

static Size
shmem_stats_size(void)
{
	return MAXALIGN(mul_size(sizeof(EndpointStats),
							 mul_size(OUTBOX_NSLOTS(outbox_max_databases), outbox_max_endpoints)));
}

static Size
shmem_size(void)
{
	return add_size(add_size(shmem_slots_size(), shmem_stats_size()),
					mul_size(sizeof(ProjectionProgress),
							 mul_size(OUTBOX_NSLOTS(outbox_max_databases), outbox_max_projections)));
}

static void
shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(shmem_size());
	RequestNamedLWLockTranche("outbox", 1);
}

static void
shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	outbox_shmem = ShmemInitStruct("outbox", shmem_size(), &found);
	if (!found)
	{
		memset(outbox_shmem, 0, shmem_size());
		outbox_shmem->lock = &(GetNamedLWLockTranche("outbox"))->lock;
		outbox_shmem->nslots = OUTBOX_NSLOTS(outbox_max_databases);
		outbox_shmem->endpoints_per_slot = outbox_max_endpoints;
		outbox_shmem->projections_per_slot = outbox_max_projections;
		outbox_shmem->stats = (EndpointStats *) ((char *) outbox_shmem + shmem_slots_size());
		outbox_shmem->progress = (ProjectionProgress *)
			((char *) outbox_shmem + shmem_slots_size() + shmem_stats_size());
		for (int i = 0; i < outbox_shmem->nslots; i++)
		{
			pg_atomic_init_u32(&outbox_shmem->slots[i].wake_pending, 0);
			pg_atomic_init_u32(&outbox_shmem->slots[i].start_wanted, 0);
			pg_atomic_init_u64(&outbox_shmem->slots[i].config_generation, 0);
			pg_atomic_init_u32(&outbox_shmem->slots[i].events_pending, 0);
			pg_atomic_init_u32(&outbox_shmem->slots[i].projector_xid, 0);
			pg_atomic_init_u64(&outbox_shmem->slots[i].progress_count, 0);
			ConditionVariableInit(&outbox_shmem->slots[i].progress_cv);
		}
		for (int i = 0; i < outbox_shmem->nslots * outbox_shmem->projections_per_slot; i++)
		{
			pg_atomic_init_u32(&outbox_shmem->progress[i].id, 0);
			pg_atomic_init_u64(&outbox_shmem->progress[i].live_applied, 0);
		}
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Give a slot to database dboid (or free it).  Caller holds the lock exclusively. */
void
shmem_reset_slot(RelaySlot *slot, Oid dboid)
{
	slot->dboid = dboid;
	slot->pid = 0;
	slot->latch = NULL;
	slot->state = RELAY_NONE;
	slot->has_extension = false;
	slot->started_at = slot->last_activity_at = 0;
	slot->next_start_at = slot->hold_until = 0;
	slot->failures = 0;
	slot->loops = slot->requests = 0;
	slot->horizon_blocked_since = 0;
	memset(&slot->projector, 0, sizeof(ProjectorInfo));
	pg_atomic_write_u32(&slot->projector_xid, 0);
	memset(shmem_slot_stats(slot), 0, sizeof(EndpointStats) * outbox_shmem->endpoints_per_slot);
	for (int i = 0; i < outbox_shmem->projections_per_slot; i++)
		pg_atomic_write_u32(&shmem_slot_progress(slot)[i].id, 0);
	pg_atomic_write_u32(&slot->events_pending, 0);
	pg_atomic_write_u32(&slot->wake_pending, 0);
	pg_atomic_write_u32(&slot->start_wanted, 0);
}

/* The endpoint statistics of a slot: endpoints_per_slot entries. */
EndpointStats *
shmem_slot_stats(RelaySlot *slot)
{
	return outbox_shmem->stats + (slot - outbox_shmem->slots) * outbox_shmem->endpoints_per_slot;
}

static ProjectionProgress *
shmem_slot_progress(RelaySlot *slot)
{
	return outbox_shmem->progress + (slot - outbox_shmem->slots) * outbox_shmem->projections_per_slot;
}

/*
 * The progress entry of projection id in database dboid; with create, one
 * is taken if there is none (and one is free).  NULL without shared memory,
 * a slot for the database, or a free entry.  Entries of dropped projections
 * are given back by the relay (projector.c).
 */
ProjectionProgress *
shmem_projection_progress(Oid dboid, int id, bool create)
{
	RelaySlot  *slot;
	ProjectionProgress *found = NULL;

	if (outbox_shmem == NULL)
		return NULL;
	LWLockAcquire(outbox_shmem->lock, create ? LW_EXCLUSIVE : LW_SHARED);
	slot = shmem_find_slot(dboid);
	if (slot != NULL)
	{
		ProjectionProgress *entries = shmem_slot_progress(slot);
		ProjectionProgress *free_entry = NULL;

		for (int i = 0; i < outbox_shmem->projections_per_slot && found == NULL; i++)
		{
			uint32		eid = pg_atomic_read_u32(&entries[i].id);

			if (eid == (uint32) id)
				found = &entries[i];
			else if (eid == 0 && free_entry == NULL)
				free_entry = &entries[i];
		}
		if (found == NULL && create && free_entry != NULL)
		{
			found = free_entry;
			pg_atomic_write_u64(&found->live_applied, 0);
			pg_atomic_write_u32(&found->id, id);
		}
	}
	LWLockRelease(outbox_shmem->lock);
	return found;
}

/* The projector committed a projection's checkpoint: wake wait_for_projection. */
void
shmem_projection_progressed(Oid dboid)
{
	RelaySlot  *slot;

	if (outbox_shmem == NULL)
		return;
	LWLockAcquire(outbox_shmem->lock, LW_SHARED);
	slot = shmem_find_slot(dboid);
	LWLockRelease(outbox_shmem->lock);
	if (slot != NULL)
	{
		pg_atomic_fetch_add_u64(&slot->progress_count, 1);
		ConditionVariableBroadcast(&slot->progress_cv);
	}
}

/*
 * Give back the progress entries of dropped projections: ids (ascending)
 * are those that exist.  Ids above the largest are left alone: projections
 * created after the caller's snapshot.
 */
void
shmem_keep_projections(Oid dboid, const int *ids, int n)
{
	RelaySlot  *slot;

	if (outbox_shmem == NULL)
		return;
	LWLockAcquire(outbox_shmem->lock, LW_EXCLUSIVE);
	slot = shmem_find_slot(dboid);
	for (int i = 0; slot != NULL && i < outbox_shmem->projections_per_slot; i++)
	{
		ProjectionProgress *entry = &shmem_slot_progress(slot)[i];
		uint32		id = pg_atomic_read_u32(&entry->id);
		bool		keep = id == 0 || n == 0 || (int) id > ids[n - 1];

		for (int j = 0; j < n && !keep; j++)
			keep = ids[j] == (int) id;
		if (!keep)
			pg_atomic_write_u32(&entry->id, 0);
	}
	LWLockRelease(outbox_shmem->lock);
}

/* The slot of database dboid, or NULL.  Caller holds the lock (any mode). */
RelaySlot *
shmem_find_slot(Oid dboid)
{
	for (int i = 0; i < outbox_shmem->nslots; i++)
		if (outbox_shmem->slots[i].dboid == dboid)
			return &outbox_shmem->slots[i];
	return NULL;
}

/*
 * Tell the launcher that database dboid, which has no slot, wants a relay
 * (CREATE EXTENSION: the launcher no longer takes it for a database without
 * the extension).  Takes the lock exclusively, briefly.
 */
static void
shmem_request_relay(Oid dboid)
{
	OutboxShmem *s = outbox_shmem;

	LWLockAcquire(s->lock, LW_EXCLUSIVE);
	if (s->nrequests >= 0)
	{
		int			i;

		for (i = 0; i < s->nrequests && s->requests[i] != dboid; i++)
			;
		if (i == s->nrequests)
		{
			if (s->nrequests < OUTBOX_MAX_REQUESTS)
				s->requests[s->nrequests++] = dboid;
			else
				s->nrequests = -1;	/* too many: the launcher looks at every database */
		}
	}
	LWLockRelease(s->lock);
}

/*
 * At commit, wake whoever must act: the database's relay if it runs, else
 * the launcher (which starts one).
 */
static void
shmem_xact_callback(XactEvent event, void *arg)
{
	RelaySlot  *slot;
	Latch	   *latch = NULL;
	Latch	   *events_latch = NULL;

	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT &&
		event != XACT_EVENT_PARALLEL_COMMIT && event != XACT_EVENT_PARALLEL_ABORT &&
		event != XACT_EVENT_PREPARE)
		return;
	/*
	 * A prepared transaction is committed by another session, which has no
	 * flags to wake the relay with: its messages go at the relay's next wake.
	 */
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE ||
		!(wake_at_commit || config_changed_at_commit || events_at_commit) || outbox_shmem == NULL)
	{
		wake_at_commit = config_changed_at_commit = events_at_commit = false;
		return;
	}

	LWLockAcquire(outbox_shmem->lock, LW_SHARED);
	slot = shmem_find_slot(MyDatabaseId);
	if (slot && config_changed_at_commit)
	{
		pg_atomic_fetch_add_u64(&slot->config_generation, 1);
		/* also if a relay runs: it may be exiting for want of the extension */
		pg_atomic_write_u32(&slot->start_wanted, 1);
	}
	/* the projector's flag: a relay that starts, or restarts it, reads it too */
	if (slot && events_at_commit && pg_atomic_exchange_u32(&slot->events_pending, 1) == 0)
		events_latch = slot->projector.latch ? slot->projector.latch : slot->latch;
	if (slot && slot->pid != 0 && slot->latch != NULL)
	{
		if ((wake_at_commit || config_changed_at_commit) &&
			pg_atomic_exchange_u32(&slot->wake_pending, 1) == 0)
			latch = slot->latch;
	}
	else if (config_changed_at_commit)
	{
		/* no relay here (yet): ask the launcher to start one */
		pg_atomic_write_u32(&outbox_shmem->launcher_wanted, 1);
		latch = outbox_shmem->launcher_latch;
	}
	LWLockRelease(outbox_shmem->lock);
	if (slot == NULL && config_changed_at_commit)
		shmem_request_relay(MyDatabaseId);
	if (latch)
		SetLatch(latch);
	if (events_latch && events_latch != latch)
		SetLatch(events_latch);
	wake_at_commit = config_changed_at_commit = events_at_commit = false;
}

/*
 * The object-access hook: DROP EXTENSION outbox wakes the relay at commit,
 * so that it notices and exits.
 */
static object_access_hook_type prev_object_access_hook = NULL;

static void
shmem_object_access(ObjectAccessType access, Oid classId, Oid objectId, int subId, void *arg)
{
	if (prev_object_access_hook)
		prev_object_access_hook(access, classId, objectId, subId, arg);
	if (access == OAT_DROP && classId == ExtensionRelationId &&
		objectId == get_extension_oid("outbox", true))
		config_changed_at_commit = true;
}

/* Called by publish: wake the relay when this transaction commits. */
void
shmem_wake_relay_at_commit(void)
{
	wake_at_commit = true;
}

/* Called by append when async projections exist: wake the projector at commit. */
void
shmem_wake_projector_at_commit(void)
{
	events_at_commit = true;
}

/*
 * The endpoint configuration (or the extension itself: CREATE, ALTER ...
 * UPDATE) changed; the relay reloads it, or the launcher starts a relay,
 * when the transaction commits.
 */
void
shmem_notify_relay_at_commit(void)
{
	config_changed_at_commit = true;
	wake_at_commit = true;
}

/* outbox._notify_relay(): shmem_notify_relay_at_commit from SQL */
Datum
outbox_notify_relay(PG_FUNCTION_ARGS)
{
	shmem_notify_relay_at_commit();
	PG_RETURN_VOID();
}

/*
 * Register the hooks; called from _PG_init.  The commit callback is cheap
 * and harmless without shared memory; the rest needs preloading.
 */
void
shmem_init(void)
{
	RegisterXactCallback(shmem_xact_callback, NULL);
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_object_access_hook = object_access_hook;
	object_access_hook = shmem_object_access;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = shmem_startup;
}
