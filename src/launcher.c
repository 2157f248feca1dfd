/*-------------------------------------------------------------------------
 * launcher.c
 *		The outbox launcher: one relay per database that has the extension,
 *		and the hook that keeps relays out of DROP DATABASE's way.
 *
 * The launcher is a static background worker started after recovery (so a
 * standby runs no relay and sends nothing).  It connects to no database: it
 * reads pg_database and starts a dynamic relay worker per connectable,
 * non-template database, in a slot of its own.  Only the relay can tell
 * whether its database has the extension:
 *   - none: it says so and exits; the launcher frees the slot and remembers
 *     the database (launcher-local), which gets no slot until CREATE
 *     EXTENSION asks for one (shmem.c passes the request on);
 *   - there: it counts against outbox.max_databases.  If max_databases other
 *     relays already found theirs, it says "no slot" and exits; the launcher
 *     frees the slot and lists the database as waiting (shared memory, shown
 *     by outbox.stat_workers as "no_slot", logged once), until a place frees.
 * There is one slot more than max_databases, so a database can be looked at
 * while max_databases relays run.  A relay that exits with an error is
 * restarted with exponential backoff (1 s .. 60 s), keeping its place.  The
 * launcher alone decides restarts; relays are BGW_NEVER_RESTART.  A slot
 * whose relay is registered but not attached yet is not reassigned, and a
 * relay attaches only to a slot that still names its database (the slot
 * could change hands after a launcher restart).
 *
 *   slot state:  (free) --start--> STARTING --extension, room--> RUNNING
 *                STARTING --no extension--> NO_EXTENSION --> (free)
 *                STARTING --no room--> NO_SLOT --> (free, waiting)
 *                RUNNING --DROP EXTENSION--> NO_EXTENSION --> (free)
 *                RUNNING --error exit--> BACKOFF --> start
 *                any --DROP DATABASE (hold)--> stopped until the hold ends
 *
 * The launcher sleeps on its latch: woken by relays exiting (bgw_notify_pid),
 * by commits that need a relay, and otherwise every 60 s to notice new
 * databases.  Its scan of pg_database may wait for a lock and so consume
 * the latch: before sleeping it looks at the truth again (launcher_pending:
 * the launcher_wanted flag, and whether a relay it started has exited).
 * Each relay starts and restarts its database's projector (projector.c).
 *
 * The utility hook also sees ALTER EXTENSION outbox UPDATE: at its commit,
 * the database's relay (waiting while the extension is at another version
 * than the library, relay.c) rechecks, and every session forgets what
 * catalog.c cached about the old version.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "commands/extension.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "backoff.h"
#include "outbox.h"
#include "launcher.h"
#include "shmem.h"

/* the postmaster restarts a launcher that exited with an error after this */
#define LAUNCHER_RESTART_S	5
/*
 * Stopping a database's workers (DROP DATABASE and friends) waits this long
 * for them to exit, looking every STOP_POLL_MS; past it, the command goes on
 * (and fails if they still hold the database).
 */
#define STOP_WAIT_MS		10000
#define STOP_POLL_MS		10

PGDLLEXPORT void outbox_launcher_main(Datum arg);

#define LAUNCHER_RESCAN_MS		60000
#define DROP_HOLD_MS			30000

/* launcher-local: the handle of each slot's relay */
static BackgroundWorkerHandle **handles;

/* launcher-local: databases whose relay found no extension (they get no slot) */
static List *no_extension = NIL;

static ProcessUtility_hook_type prev_ProcessUtility = NULL;

/* Register the launcher; called from _PG_init when preloaded. */
void
launcher_register(void)
{
	BackgroundWorker bgw = {0};

	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = LAUNCHER_RESTART_S;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "outbox");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "outbox_launcher_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "outbox launcher");
	snprintf(bgw.bgw_type, BGW_MAXLEN, "outbox launcher");
	RegisterBackgroundWorker(&bgw);
}

/*
 * Connectable, non-template databases, from pg_database.  Runs a
 * transaction; the list is built in the caller's memory context, which
 * outlives it (a list made inside the transaction was freed by its commit).
 */
static List *
launcher_databases(void)
{
	MemoryContext caller = CurrentMemoryContext;
	List	   *dbs = NIL;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;

	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		if (db->datallowconn && !db->datistemplate && db->datconnlimit != DATCONNLIMIT_INVALID_DB)
		{
			MemoryContext old = MemoryContextSwitchTo(caller);

			dbs = lappend_oid(dbs, db->oid);
			MemoryContextSwitchTo(old);
		}
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	MemoryContextSwitchTo(caller);
	return dbs;
}

/* A relay failed (or could not start): try again later, 1 s doubling to a minute. */
static void
launcher_back_off(RelaySlot *slot, TimestampTz now)
{
	slot->failures++;
	slot->next_start_at = TimestampTzPlusMilliseconds(now,
		backoff_ceiling_ms(RESTART_BACKOFF_BASE_MS, RESTART_BACKOFF_MAX_MS, slot->failures));
	slot->state = RELAY_BACKOFF;
}

static bool
launcher_start_relay(RelaySlot *slot, int index)
{
	BackgroundWorker bgw = {0};

	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	bgw.bgw_notify_pid = MyProcPid;
	bgw.bgw_main_arg = Int32GetDatum(index);
	/* the relay attaches only if the slot still belongs to this database */
	memcpy(bgw.bgw_extra, &slot->dboid, sizeof(Oid));
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "outbox");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "outbox_relay_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "outbox relay for database %u", slot->dboid);
	snprintf(bgw.bgw_type, BGW_MAXLEN, "outbox relay");

	if (!RegisterDynamicBackgroundWorker(&bgw, &handles[index]))
	{
		/* once, then retried with the restart backoff (state backoff in stat_workers) */
		if (slot->failures == 0)
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("outbox: no background worker slot for the relay of database %u", slot->dboid),
					 errhint("Raise max_worker_processes.")));
		launcher_back_off(slot, GetCurrentTimestamp());
		return false;
	}
	slot->state = RELAY_STARTING;
	slot->started_at = GetCurrentTimestamp();
	return true;
}

/* ---- databases without a slot (shared, for stat_workers) ---- */

static bool
launcher_is_waiting(Oid dboid)
{
	for (int i = 0; i < outbox_shmem->nwaiting; i++)
		if (outbox_shmem->waiting[i] == dboid)
			return true;
	return false;
}

/* A relay found the extension but no room: list the database, log it once. */
static void
launcher_add_waiting(Oid dboid)
{
	if (launcher_is_waiting(dboid))
		return;
	ereport(LOG,
			(errmsg("outbox: more databases with the extension than outbox.max_databases (%d); database %u has no relay",
					outbox_max_databases, dboid),
			 errhint("outbox.stat_workers lists it as \"no_slot\". Raise outbox.max_databases (needs a restart).")));
	if (outbox_shmem->nwaiting < OUTBOX_MAX_WAITING)
		outbox_shmem->waiting[outbox_shmem->nwaiting++] = dboid;
}

/* Drop dboid from the waiting list, or (dboid invalid) those not in dbs. */
static void
launcher_drop_waiting(Oid dboid, List *dbs)
{
	int			n = 0;

	for (int i = 0; i < outbox_shmem->nwaiting; i++)
	{
		Oid			w = outbox_shmem->waiting[i];

		if (OidIsValid(dboid) ? w != dboid : list_member_oid(dbs, w))
			outbox_shmem->waiting[n++] = w;
	}
	outbox_shmem->nwaiting = n;
}

/*
 * CREATE EXTENSION (or an endpoint change) in databases that have no slot:
 * look at them again.  Caller holds the lock exclusively.
 */
static void
launcher_take_requests(void)
{
	if (outbox_shmem->nrequests < 0)
	{
		list_free(no_extension);
		no_extension = NIL;
	}
	for (int i = 0; i < outbox_shmem->nrequests; i++)
		no_extension = list_delete_oid(no_extension, outbox_shmem->requests[i]);
	outbox_shmem->nrequests = 0;
}

/*
 * A slot whose relay is not running (nor registered and about to attach):
 * free it if its database is gone, has no extension or found no room;
 * schedule a restart if its relay failed.  Caller holds the lock.
 */
static void
launcher_settle_slot(RelaySlot *slot, List *dbs, bool exited, TimestampTz now)
{
	bool		wanted = pg_atomic_exchange_u32(&slot->start_wanted, 0) == 1;

	if (!list_member_oid(dbs, slot->dboid))
		shmem_reset_slot(slot, InvalidOid);
	else if (slot->state == RELAY_NO_EXTENSION)
	{
		/* no slot for it until CREATE EXTENSION asks (unless it just did) */
		if (!wanted && !list_member_oid(no_extension, slot->dboid))
			no_extension = lappend_oid(no_extension, slot->dboid);
		shmem_reset_slot(slot, InvalidOid);
	}
	else if (slot->state == RELAY_NO_SLOT)
	{
		launcher_add_waiting(slot->dboid);
		shmem_reset_slot(slot, InvalidOid);
	}
	else if (exited && (slot->state == RELAY_RUNNING || slot->state == RELAY_STARTING))
		launcher_back_off(slot, now);
}

/*
 * One pass: notice relays that exited, give a slot to every database that
 * may have the extension (only those whose relay found it count against
 * outbox.max_databases), start the relays that should run.  Returns how
 * long to sleep, in ms.
 */
static long
launcher_step(void)
{
	List	   *dbs = launcher_databases();
	TimestampTz now = GetCurrentTimestamp();
	long		sleep_ms = LAUNCHER_RESCAN_MS;
	int			with_extension = 0;
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	ListCell   *lc;

	pg_atomic_write_u32(&outbox_shmem->launcher_wanted, 0);
	LWLockAcquire(outbox_shmem->lock, LW_EXCLUSIVE);
	launcher_take_requests();
	foreach(lc, no_extension)
		if (!list_member_oid(dbs, lfirst_oid(lc)))
			no_extension = foreach_delete_current(no_extension, lc);	/* dropped */
	launcher_drop_waiting(InvalidOid, dbs);	/* dropped databases */

	for (int i = 0; i < outbox_shmem->nslots; i++)
	{
		RelaySlot  *slot = &outbox_shmem->slots[i];
		bool		exited = false;
		pid_t		pid;

		if (!OidIsValid(slot->dboid))
			continue;
		if (handles[i] != NULL && GetBackgroundWorkerPid(handles[i], &pid) == BGWH_STOPPED)
		{
			handles[i] = NULL;
			exited = true;
		}
		/*
		 * A registered relay may still attach: its slot is not ours to
		 * change.  If its database is gone, it must not start at all.
		 */
		if (handles[i] != NULL && slot->pid == 0 && !list_member_oid(dbs, slot->dboid))
			TerminateBackgroundWorker(handles[i]);
		if (handles[i] == NULL && slot->pid == 0)
			launcher_settle_slot(slot, dbs, exited, now);
		if (slot->has_extension)
			with_extension++;
	}

	foreach(lc, dbs)
	{
		Oid			dboid = lfirst_oid(lc);
		RelaySlot  *slot = shmem_find_slot(dboid);
		int			index;

		if (slot == NULL)
		{
			if (list_member_oid(no_extension, dboid))
				continue;
			if (launcher_is_waiting(dboid))
			{
				if (with_extension >= outbox_max_databases)
					continue;	/* still no room */
				with_extension++;	/* one waiting database per place that freed */
			}
			if ((slot = shmem_find_slot(InvalidOid)) == NULL)
			{
				/* every slot busy looking at databases: a relay's exit wakes us */
				sleep_ms = Min(sleep_ms, 1000);
				continue;
			}
			shmem_reset_slot(slot, dboid);
			launcher_drop_waiting(dboid, NIL);
		}
		index = slot - outbox_shmem->slots;
		if (handles[index] != NULL || slot->pid != 0)
			continue;			/* running or about to (maybe started by an earlier launcher) */
		if (now < slot->hold_until || now < slot->next_start_at)
		{
			TimestampTz until = Max(slot->hold_until, slot->next_start_at);

			sleep_ms = Min(sleep_ms, ms_until(until, now));
			continue;
		}
		if (!launcher_start_relay(slot, index))
			sleep_ms = Min(sleep_ms, 1000);
	}
	LWLockRelease(outbox_shmem->lock);
	MemoryContextSwitchTo(old);
	list_free(dbs);
	return sleep_ms;
}

/* Did a wake-up come while launcher_step ran (see the top)? */
static bool
launcher_pending(void)
{
	pid_t		pid;

	if (pg_atomic_read_u32(&outbox_shmem->launcher_wanted) != 0 || ConfigReloadPending)
		return true;
	for (int i = 0; i < outbox_shmem->nslots; i++)
		if (handles[i] != NULL && GetBackgroundWorkerPid(handles[i], &pid) == BGWH_STOPPED)
			return true;
	return false;
}

void
outbox_launcher_main(Datum arg)
{
	pqsignal(SIGTERM, die);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	handles = MemoryContextAllocZero(TopMemoryContext,
									 sizeof(BackgroundWorkerHandle *) * outbox_shmem->nslots);
	LWLockAcquire(outbox_shmem->lock, LW_EXCLUSIVE);
	outbox_shmem->launcher_latch = MyLatch;
	LWLockRelease(outbox_shmem->lock);
	ereport(LOG, (errmsg("outbox launcher started")));

	for (;;)
	{
		long		sleep_ms;

		ResetLatch(MyLatch);
		sleep_ms = launcher_step();
		if (launcher_pending())
			sleep_ms = 0;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 sleep_ms, PG_WAIT_EXTENSION);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
	}
}

/* ---- keeping relays out of the way of DROP DATABASE and friends ---- */

/*
 * Stop the relay and the projector of a database and keep them stopped for
 * a while: DROP DATABASE, ALTER DATABASE RENAME / SET TABLESPACE and CREATE
 * DATABASE ... TEMPLATE all need the database free of other connections.
 * Waits (at most 10 s) for both to exit; no lock is held while waiting.
 */
static Oid
launcher_hold_database(const char *dbname)
{
	Oid			dboid = get_database_oid(dbname, true);
	RelaySlot  *slot;
	pid_t		pid = 0;
	pid_t		projector_pid = 0;

	if (!OidIsValid(dboid) || outbox_shmem == NULL)
		return InvalidOid;
	/* only for a command that may succeed: others must not stop the relay */
	if (!superuser() && !pg_database_ownercheck(dboid, GetUserId()))
		return InvalidOid;
	LWLockAcquire(outbox_shmem->lock, LW_EXCLUSIVE);
	if ((slot = shmem_find_slot(dboid)) != NULL)
	{
		slot->hold_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), DROP_HOLD_MS);
		pid = slot->pid;
		projector_pid = slot->projector.pid;
	}
	LWLockRelease(outbox_shmem->lock);
	if (pid == 0 && projector_pid == 0)
		return dboid;

	/* the projector may be waiting in a handler: SIGTERM ends that too */
	if (pid != 0)
		kill(pid, SIGTERM);
	if (projector_pid != 0)
		kill(projector_pid, SIGTERM);
	for (int i = 0; i < STOP_WAIT_MS / STOP_POLL_MS; i++)
	{
		bool		gone;

		LWLockAcquire(outbox_shmem->lock, LW_SHARED);
		gone = slot->dboid != dboid || (slot->pid == 0 && slot->projector.pid == 0);
		LWLockRelease(outbox_shmem->lock);
		if (gone)
			return dboid;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, STOP_POLL_MS,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	return dboid;
}

/*
 * DROP EXTENSION outbox: a projector batch waiting in a handler (for a lock,
 * in a sleep) would hold the drop up as long.  Stop the projector and keep
 * the relay from restarting it until the command ends; not waited for (the
 * drop waits for its locks like any DDL).  The relay exits by itself once
 * the drop commits.
 */
static Oid
launcher_hold_projector(Node *stmt)
{
	DropStmt   *drop = (DropStmt *) stmt;
	Oid			extoid;
	RelaySlot  *slot;
	pid_t		pid = 0;
	ListCell   *lc;

	if (!IsA(stmt, DropStmt) || drop->removeType != OBJECT_EXTENSION || outbox_shmem == NULL)
		return InvalidOid;
	foreach(lc, drop->objects)
		if (strcmp(strVal(lfirst(lc)), "outbox") == 0)
			break;
	extoid = get_extension_oid("outbox", true);
	/* only for a command that may succeed */
	if (lc == NULL || !OidIsValid(extoid) || !pg_extension_ownercheck(extoid, GetUserId()))
		return InvalidOid;
	LWLockAcquire(outbox_shmem->lock, LW_EXCLUSIVE);
	if ((slot = shmem_find_slot(MyDatabaseId)) != NULL)
	{
		slot->hold_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), DROP_HOLD_MS);
		pid = slot->projector.pid;
	}
	LWLockRelease(outbox_shmem->lock);
	if (pid != 0)
		kill(pid, SIGTERM);
	return slot ? MyDatabaseId : InvalidOid;
}

/*
 * After the command: let the launcher restart the relay, and the relay its
 * projector, if the database (and the extension) live on.
 */
static void
launcher_release_database(Oid dboid)
{
	RelaySlot  *slot;
	Latch	   *latch = NULL;
	Latch	   *relay_latch = NULL;

	if (outbox_shmem == NULL || !OidIsValid(dboid))
		return;
	LWLockAcquire(outbox_shmem->lock, LW_EXCLUSIVE);
	if ((slot = shmem_find_slot(dboid)) != NULL)
	{
		slot->hold_until = 0;
		relay_latch = slot->latch;
	}
	latch = outbox_shmem->launcher_latch;
	LWLockRelease(outbox_shmem->lock);
	if (latch)
		SetLatch(latch);
	if (relay_latch)
		SetLatch(relay_latch);
}

/* The database a utility statement needs free of connections, if any. */
static const char *
launcher_database_of(Node *stmt)
{
	ListCell   *lc;

	switch (nodeTag(stmt))
	{
		case T_DropdbStmt:
			return ((DropdbStmt *) stmt)->dbname;
		case T_RenameStmt:
			if (((RenameStmt *) stmt)->renameType == OBJECT_DATABASE)
				return ((RenameStmt *) stmt)->subname;
			return NULL;
		case T_AlterDatabaseStmt:
			foreach(lc, ((AlterDatabaseStmt *) stmt)->options)
				if (strcmp(((DefElem *) lfirst(lc))->defname, "tablespace") == 0)
					return ((AlterDatabaseStmt *) stmt)->dbname;
			return NULL;
		case T_CreatedbStmt:
			foreach(lc, ((CreatedbStmt *) stmt)->options)
				if (strcmp(((DefElem *) lfirst(lc))->defname, "template") == 0)
					return defGetString((DefElem *) lfirst(lc));
			return NULL;
		default:
			return NULL;
	}
}

/* Is this ALTER EXTENSION outbox UPDATE? */
static bool
launcher_is_outbox_update(Node *stmt)
{
	return IsA(stmt, AlterExtensionStmt) &&
		strcmp(((AlterExtensionStmt *) stmt)->extname, "outbox") == 0;
}

static void
launcher_ProcessUtility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
						ProcessUtilityContext context, ParamListInfo params,
						QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	const char *dbname = launcher_database_of(pstmt->utilityStmt);
	volatile Oid held = InvalidOid;

	if (dbname)
		held = launcher_hold_database(dbname);
	else
		held = launcher_hold_projector(pstmt->utilityStmt);
	PG_TRY();
	{
		if (prev_ProcessUtility)
			prev_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
									queryEnv, dest, qc);
		if (launcher_is_outbox_update(pstmt->utilityStmt))
		{
			/* at commit (nothing if it rolls back) */
			shmem_notify_relay_at_commit();
			CacheInvalidateRelcacheAll();
		}
	}
	PG_FINALLY();
	{
		launcher_release_database(held);
	}
	PG_END_TRY();
}

void
launcher_init_hooks(void)
{
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = launcher_ProcessUtility;
}
