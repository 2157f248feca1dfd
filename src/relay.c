/*-------------------------------------------------------------------------
 * relay.c
 *		The per-database relay worker: delivers this database's messages to
 *		its webhook endpoints.
 *
 * Lifecycle: started by the launcher for one slot; attaches to the slot,
 * connects to the database, and exits at once (state NO_EXTENSION) if the
 * extension is not installed, or later if it is dropped (DROP EXTENSION
 * bumps the configuration generation through the object-access hook).  If
 * the extension is at another version than the library, it waits (state
 * NEEDS_UPDATE, one WARNING) until ALTER EXTENSION outbox UPDATE.
 *
 * The loop (delivery.c does the work, http.c the waiting):
 *   reset the latch, handle interrupts and SIGHUP
 *   reload endpoints if their generation changed   (short transaction)
 *   read new messages for endpoints with room      (short transaction)
 *   save progress: as soon as requests finished (their results hold the
 *     window), else when nothing is in flight or every 20 ms (short
 *     transaction)
 *   start the requests that may go                 (short transaction:
 *     payloads; their I/O starts in the wait)
 *   save again if about to sleep with progress unsaved
 *   delete expired messages and inbox rows, when due (short transaction)
 *   start or restart the database's projector if it should run (projector.c)
 *   flush table statistics left pending, when due (a second after the last
 *     transaction that had any)
 *   wait: latch, postmaster death, sockets, or the next scheduled retry,
 *     but not at all if a wake flag is set (see below)
 *   collect finished requests                      (no transaction)
 * With nothing in flight and nothing scheduled, the wait lasts until the
 * next retention pass (retention.c: once per outbox.retention at most, or a
 * minute while old messages wait for a consumer), so an idle relay uses no
 * CPU; commits that publish or change endpoints set its flag and latch
 * (shmem.c).
 *
 * Any of the short transactions may wait on the latch, and so consume a
 * wake-up: a lock wait, or a commit waiting for a synchronous standby
 * (SyncRepWaitForLSN).  The flags in the slot are the truth: the latch is
 * reset at the top of the loop, before they are read, and the wait is 0 ms
 * when one is set again by the time the relay would sleep (relay_pending).
 *
 * Async projections run in a worker of their own (projector.c), so that a
 * handler that sleeps or waits for a lock never holds delivery up.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>
#include <sys/resource.h>

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "backoff.h"
#include "delivery.h"
#include "outbox.h"
#include "catalog.h"
#include "projector.h"
#include "relay.h"
#include "retention.h"
#include "shmem.h"
#include "transport.h"

PGDLLEXPORT void outbox_relay_main(Datum arg);

static RelaySlot *my_slot = NULL;
static uint64 loaded_generation = PG_UINT64_MAX;

/* before_shmem_exit: leave the slot, whatever the reason for exiting */
static void
relay_detach(int code, Datum arg)
{
	projector_stop();			/* the projector goes with its relay */
	LWLockAcquire(outbox_shmem->lock, LW_EXCLUSIVE);
	my_slot->pid = 0;
	my_slot->latch = NULL;
	LWLockRelease(outbox_shmem->lock);
}

/*
 * The relay found the extension: it may run if fewer than max_databases
 * other relays have found theirs (the launcher also lets it look at a
 * database when they all run).  Else it leaves the slot, to the launcher's
 * list of databases waiting for one.
 */
static void
relay_claim_slot(void)
{
	int			others = 0;

	LWLockAcquire(outbox_shmem->lock, LW_EXCLUSIVE);
	if (!my_slot->has_extension)
	{
		for (int i = 0; i < outbox_shmem->nslots; i++)
			if (outbox_shmem->slots[i].has_extension)
				others++;
		if (others >= outbox_max_databases)
		{
			my_slot->state = RELAY_NO_SLOT;
			LWLockRelease(outbox_shmem->lock);
			proc_exit(0);
		}
		my_slot->has_extension = true;
	}
	LWLockRelease(outbox_shmem->lock);
}

static void
relay_set_state(RelayState state)
{
	LWLockAcquire(outbox_shmem->lock, LW_EXCLUSIVE);
	my_slot->state = state;
	my_slot->last_activity_at = GetCurrentTimestamp();
	if (state == RELAY_RUNNING)
		my_slot->failures = 0;	/* the launcher's backoff starts over */
	LWLockRelease(outbox_shmem->lock);
}

/*
 * The relay's short transactions (delivery.c, projector.c): begin one with
 * a snapshot, and end it, back in the caller's memory context.
 */
static MemoryContext xact_caller_cxt = NULL;

/*
 * Table statistics (pg_stat_user_tables) are flushed at most once a second
 * at a transaction's end; what is left pending is flushed by a timer, so
 * that an idle relay's last work shows within about STATS_FLUSH_MS rather
 * than at its next transaction, maybe minutes later.
 */
#define STATS_FLUSH_MS		1000
static TimestampTz stats_flush_at = 0;	/* 0: nothing pending */

static void relay_flush_stats(bool force);

void
relay_xact_begin(const char *activity)
{
	xact_caller_cxt = CurrentMemoryContext;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

void
relay_xact_end(void)
{
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(xact_caller_cxt);
	relay_flush_stats(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* Flush table statistics (force: whatever the last flush), or plan to. */
static void
relay_flush_stats(bool force)
{
	if (pgstat_report_stat(force) == 0)
		stats_flush_at = 0;
	else if (stats_flush_at == 0)
		stats_flush_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), STATS_FLUSH_MS);
}

/* ms until pending statistics are due (flushing them if they are), or -1. */
static long
relay_stats_due(void)
{
	TimestampTz now;

	if (stats_flush_at == 0)
		return -1;
	now = GetCurrentTimestamp();
	if (now >= stats_flush_at)
	{
		stats_flush_at = 0;
		relay_flush_stats(true);
		if (stats_flush_at == 0)
			return -1;
	}
	return ms_until(stats_flush_at, now);
}

/*
 * Is there work that a wait inside this turn may have hidden from the latch?
 * Checked just before sleeping (see the top).
 */
static bool
relay_pending(void)
{
	return pg_atomic_read_u32(&my_slot->wake_pending) != 0 ||
		pg_atomic_read_u64(&my_slot->config_generation) != loaded_generation ||
		projector_needs_relay() || ConfigReloadPending || InterruptPending;
}

/*
 * The top of a worker's loop (the relay's and the projector's): free the
 * last turn's memory, reset the latch before any flag is read (shmem.c),
 * handle interrupts and SIGHUP.  Returns true if the settings were reloaded.
 */
bool
relay_turn_begin(MemoryContext loop_cxt)
{
	MemoryContextSwitchTo(loop_cxt);
	MemoryContextReset(loop_cxt);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
	if (!ConfigReloadPending)
		return false;
	ConfigReloadPending = false;
	ProcessConfigFile(PGC_SIGHUP);
	return true;
}

/*
 * The version of the extension installed in our database, or NULL if there
 * is none; with the database's name, for messages.  Runs a short
 * transaction; the strings are in the caller's memory context.
 */
static char *
relay_extension_version(char **dbname)
{
	MemoryContext cxt = CurrentMemoryContext;
	char	   *version;
	char	   *name;

	StartTransactionCommand();
	version = outbox_extension_version();
	name = get_database_name(MyDatabaseId);
	MemoryContextSwitchTo(cxt);
	version = version ? pstrdup(version) : NULL;
	*dbname = pstrdup(name ? name : "?");
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	return version;
}

/*
 * Is the extension installed in our database, at this library's version?
 * The projector runs only then (the relay waits, relay_wait_for_update).
 */
bool
relay_extension_current(void)
{
	char	   *dbname;
	char	   *version = relay_extension_version(&dbname);

	return version != NULL && strcmp(version, OUTBOX_VERSION) == 0;
}

/*
 * Open files the relay may have: the transports' sockets (curl's pool,
 * librdkafka's per broker, with a thread each) are not counted by fd.c,
 * which keeps PostgreSQL's own files within the soft limit the postmaster
 * started with.  Raise the soft limit towards the hard one for them.
 */
#define RELAY_MAX_FILES		65536

static void
relay_raise_file_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= Min(rl.rlim_max, RELAY_MAX_FILES))
		return;
	rl.rlim_cur = Min(rl.rlim_max, RELAY_MAX_FILES);
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
		elog(LOG, "outbox: could not raise the relay's open file limit: %m");
}

/*
 * The database's extension is at another version than this library (the
 * library was upgraded, ALTER EXTENSION outbox UPDATE has not run yet): the
 * SQL objects are not the ones this code reads and writes.  Say so once,
 * deliver nothing, and sleep without a timeout (no CPU) until a
 * configuration change, which ALTER EXTENSION outbox UPDATE makes at commit
 * (launcher.c); the caller then looks again.
 */
static void
relay_wait_for_update(const char *version, const char *dbname, uint64 generation)
{
	static bool logged = false;

	relay_set_state(RELAY_NEEDS_UPDATE);
	if (!logged)
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("outbox relay: database \"%s\" has extension outbox %s, the library is %s; nothing is delivered until ALTER EXTENSION outbox UPDATE",
						dbname, version, OUTBOX_VERSION),
				 errhint("Run ALTER EXTENSION outbox UPDATE in database \"%s\".", dbname)));
	logged = true;
	for (;;)
	{
		/* cleared before looking: a commit after the look sets the latch */
		(void) pg_atomic_exchange_u32(&my_slot->wake_pending, 0);
		if (pg_atomic_read_u64(&my_slot->config_generation) != generation)
			return;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_EXIT_ON_PM_DEATH, -1L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
	}
}

void
outbox_relay_main(Datum arg)
{
	int			index = DatumGetInt32(arg);
	Oid			dboid;
	MemoryContext loop_cxt;

	pqsignal(SIGTERM, die);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();

	memcpy(&dboid, MyBgworkerEntry->bgw_extra, sizeof(Oid));
	my_slot = &outbox_shmem->slots[index];
	LWLockAcquire(outbox_shmem->lock, LW_EXCLUSIVE);
	/*
	 * One relay per database: a live one may have outlived a launcher
	 * restart.  And the slot must still be our database's: the launcher may
	 * have given it to another since it registered us.
	 */
	if ((my_slot->pid != 0 && kill(my_slot->pid, 0) == 0) || my_slot->dboid != dboid)
	{
		LWLockRelease(outbox_shmem->lock);
		proc_exit(0);
	}
	my_slot->pid = MyProcPid;
	my_slot->latch = MyLatch;
	LWLockRelease(outbox_shmem->lock);
	before_shmem_exit(relay_detach, (Datum) 0);

	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	pgstat_report_appname("outbox relay");
	relay_raise_file_limit();
	transport_init();
	loop_cxt = AllocSetContextCreate(TopMemoryContext, "outbox relay loop", ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		uint64		generation;
		bool		woken;
		bool		moved;
		bool		sent;
		bool		finished;
		TransportResult result;
		long		timeout;

		if (relay_turn_begin(loop_cxt))
		{
			retention_changed();
			/* a Kafka producer keeps the outbox.blocked_networks it was made with */
			loaded_generation = PG_UINT64_MAX;
		}
		generation = pg_atomic_read_u64(&my_slot->config_generation);
		if (generation != loaded_generation)
		{
			char	   *dbname;
			char	   *version = relay_extension_version(&dbname);

			if (version == NULL)
			{
				relay_set_state(RELAY_NO_EXTENSION);
				proc_exit(0);
			}
			relay_claim_slot();
			if (strcmp(version, OUTBOX_VERSION) != 0)
			{
				relay_wait_for_update(version, dbname, generation);
				continue;
			}
			delivery_reload();
			loaded_generation = generation;
			relay_set_state(RELAY_RUNNING);
		}
		woken = pg_atomic_exchange_u32(&my_slot->wake_pending, 0) != 0;
		moved = delivery_fetch(woken);
		/*
		 * Saving is grouped (delivery_should_persist).  Save before sending:
		 * unsaved results count against an endpoint's window, so a full
		 * window must be saved for requests to go.  And after: a fetch that
		 * only moved the cursor is saved before sleeping.
		 */
		if (delivery_should_persist())
			delivery_persist();
		sent = delivery_send();
		if (delivery_should_persist())
			delivery_persist();

		Assert(!IsTransactionState());
		timeout = sooner(delivery_next_timeout(), retention_expire());
		timeout = sooner(timeout, projector_supervise());
		timeout = sooner(timeout, relay_stats_due());
		/* any of the above may have consumed a wake-up: the flags say */
		if (relay_pending())
			timeout = 0;
		/*
		 * The figures are published after results (before the next save,
		 * so a reader never sees progress saved but not counted), and
		 * before waiting if requests started, a breaker went half-open or
		 * the log was read (a fetch that only passes messages sends
		 * nothing): the wait may last until a request ends (a Kafka
		 * producer's only wake-up is its delivery report), or, for an idle
		 * relay, a minute.
		 */
		if (sent || moved)
			delivery_report(my_slot, delivery_horizon_blocked());
		transport_wait(timeout);
		finished = false;
		while (transport_next_result(&result))
		{
			delivery_complete(&result);
			my_slot->requests++;	/* only this process writes it */
			finished = true;
		}
		my_slot->loops++;		/* only this process writes it */
		/* a wait that ended with no result changed nothing already published */
		if (finished || !(sent || moved))
			delivery_report(my_slot, delivery_horizon_blocked());
	}
}
