/*-------------------------------------------------------------------------
 * relay.c
 *		The per-database relay worker: delivers this database's messages to
 *		its webhook endpoints.
 *
 * Lifecycle: started by the launcher for one slot; attaches to the slot,
 * connects to the database, and exits at once (state NO_EXTENSION) if the
 * extension is not installed, or later if it is dropped (DROP EXTENSION
 * wakes it through the object-access hook).  It sleeps on its latch with no
 * timeout unless work is scheduled, so an idle relay uses no CPU; commits
 * that publish or change endpoints wake it (shmem.c).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "outbox.h"

PGDLLEXPORT void outbox_relay_main(Datum arg);

static RelaySlot *my_slot = NULL;

/* before_shmem_exit: leave the slot, whatever the reason for exiting */
static void
relay_detach(int code, Datum arg)
{
	LWLockAcquire(outbox_shmem->lock, LW_EXCLUSIVE);
	my_slot->pid = 0;
	my_slot->latch = NULL;
	LWLockRelease(outbox_shmem->lock);
}

static void
relay_set_state(RelayState state)
{
	LWLockAcquire(outbox_shmem->lock, LW_EXCLUSIVE);
	my_slot->state = state;
	my_slot->last_activity_at = GetCurrentTimestamp();
	LWLockRelease(outbox_shmem->lock);
}

/* Is the extension installed in our database?  Runs a short transaction. */
static bool
relay_extension_present(void)
{
	bool		present;

	StartTransactionCommand();
	present = OidIsValid(get_extension_oid("outbox", true));
	CommitTransactionCommand();
	return present;
}

void
outbox_relay_main(Datum arg)
{
	int			index = DatumGetInt32(arg);
	Oid			dboid;

	pqsignal(SIGTERM, die);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();

	my_slot = &outbox_shmem->slots[index];
	LWLockAcquire(outbox_shmem->lock, LW_EXCLUSIVE);
	dboid = my_slot->dboid;
	my_slot->pid = MyProcPid;
	my_slot->latch = MyLatch;
	LWLockRelease(outbox_shmem->lock);
	before_shmem_exit(relay_detach, (Datum) 0);

	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	pgstat_report_appname("outbox relay");

	for (;;)
	{
		if (!relay_extension_present())
		{
			relay_set_state(RELAY_NO_EXTENSION);
			proc_exit(0);
		}
		relay_set_state(RELAY_RUNNING);
		pg_atomic_write_u32(&my_slot->wake_pending, 0);

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
