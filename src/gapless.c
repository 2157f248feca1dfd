/*-------------------------------------------------------------------------
 * gapless.c
 *		Why outbox.read_all and outbox.read_messages never skip a row.
 *
 * Positions (and message ids) come from a sequence, so a transaction that
 * took a low position may commit after one that took a higher position.  A
 * reader that returned the higher one first would move its cursor past the
 * lower one and miss it forever.  Timeouts that "skip the gap after a while"
 * lose events; we use transaction ids instead, correct by construction:
 *
 * 1. A writer has its top-level xid assigned before it takes a position.
 * 2. Right after taking its positions it reads the next xid to be assigned
 *    and stores it in each row as xmark.  Any transaction whose xid is >=
 *    xmark got that xid after our positions were taken, and therefore takes
 *    larger positions than ours.
 * 3. A reader computes its horizon: the oldest xid still running in its
 *    snapshot (snapshot xmin), or its own xid if older.  Every transaction
 *    that might still commit a row has an xid >= horizon.
 * 4. A visible row with xmark <= horizon thus has no invisible row below it
 *    now or ever.  The reader returns rows in position order and stops at the
 *    first row with xmark > horizon (but see 5): everything it returned is a
 *    prefix of the final log.
 *
 * One long transaction that holds an xid delays readers (never loses rows);
 * outbox.stat_workers will name it.
 *
 * 5. xmark is an absolute xid8, and pg_dump carries it to another cluster
 *    whose counter may be far lower: compared with that cluster's horizon,
 *    every restored row would look like a running writer's, and hide the log
 *    until the counter caught up (forever, from a production source with a
 *    non-zero epoch).  But a row this cluster wrote has an xmark no greater
 *    than its next xid, which never goes back: a row whose xmark is beyond
 *    the next xid was written elsewhere and restored, hence committed, and
 *    its position is below every position this cluster will take (pg_dump
 *    restores the sequence too).  Such rows pass (gapless_holds_back).  Once
 *    the counter catches up with them they are compared like any row: a
 *    transaction that started just before can hold them back until it ends,
 *    no longer.  pg_upgrade and a promoted standby keep the counter, so
 *    nothing changes for them.
 *
 * The projector is the exception that must not delay them: its batch holds
 * an xid while a handler runs, which may take minutes (a lock wait, a
 * sleep), and webhook delivery must go on meanwhile.  So step 3 leaves out
 * the xids that hold no log position, and stays gap-free by construction:
 *
 * 6. Once its batch has an xid, the projector publishes it in its slot
 *    (gapless_exclude_self): "this transaction holds no position".  It has
 *    taken none at that point.
 * 7. Anything that takes a position (append, publish: gapless_take_xid)
 *    first withdraws its own xid from the slot, with a full memory barrier,
 *    and only then calls nextval.  A handler that appends or publishes thus
 *    turns its batch back into an ordinary writer.  Withdrawal is one-way
 *    for the transaction; the next batch publishes its new xid.
 * 8. The reader takes its snapshot, then (after a barrier) reads the slots.
 *    Its horizon is the oldest running xid of the snapshot (xip) that it
 *    did not see published, or the snapshot's xmax if none.
 *
 * Why 8 is safe: if the reader saw xid X published, X had not withdrawn
 * when the reader looked, which was after its snapshot; X takes any
 * position only after withdrawing, so after that moment.  Positions come
 * from one sequence, so X's positions are larger than every position taken
 * before the reader's snapshot, which includes every row the reader can
 * see: X can never add a row below them.  Seeing a stale or missing entry
 * only makes the horizon older (safe, as before).  A snapshot taken during
 * recovery has no xip (a standby has no projector of its own): xmin it is.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "miscadmin.h"
#include "utils/snapmgr.h"

#include "outbox.h"
#include "gapless.h"
#include "shmem.h"

/* Widen a 32-bit xid that is not in the future into a FullTransactionId. */
static FullTransactionId
gapless_widen(TransactionId xid)
{
	FullTransactionId next = ReadNextFullTransactionId();
	uint32		epoch = EpochFromFullTransactionId(next);

	if (xid > XidFromFullTransactionId(next))
		epoch--;
	return FullTransactionIdFromEpochAndXid(epoch, xid);
}

/*
 * The reader's horizon: every transaction that may still commit a row has a
 * top-level xid >= the returned value.  The active snapshot is the one the
 * reading query uses (read-only SPI keeps it).
 */
FullTransactionId
gapless_horizon(void)
{
	Snapshot	snap = GetActiveSnapshot();
	FullTransactionId horizon;
	FullTransactionId own = GetTopFullTransactionIdIfAny();
	TransactionId oldest = snap->xmin;

	/* step 8: leave out the projectors' xids that hold no position */
	if (outbox_shmem != NULL && !snap->takenDuringRecovery &&
		gapless_xid_excluded(snap->xmin))
	{
		oldest = snap->xmax;
		for (uint32 i = 0; i < snap->xcnt; i++)
			if (TransactionIdPrecedes(snap->xip[i], oldest) && !gapless_xid_excluded(snap->xip[i]))
				oldest = snap->xip[i];
	}
	horizon = gapless_widen(oldest);
	/* GetSnapshotData leaves our own xid out of xmin: our rows can still roll back */
	if (FullTransactionIdIsValid(own) && FullTransactionIdPrecedes(own, horizon))
		horizon = own;
	return horizon;
}

/*
 * Is xid a projector's transaction that holds no log position (step 6)?
 * Reads the slots after a full barrier: in gapless_horizon, after the
 * snapshot was taken.  One entry per database; another database's
 * projector never writes to our log, so leaving it out is harmless.
 */
bool
gapless_xid_excluded(TransactionId xid)
{
	if (outbox_shmem == NULL || !TransactionIdIsNormal(xid))
		return false;
	pg_memory_barrier();
	for (int i = 0; i < outbox_shmem->nslots; i++)
		if (pg_atomic_read_u32(&outbox_shmem->slots[i].projector_xid) == xid)
			return true;
	return false;
}

/* this backend's published entry, while it holds no position (step 6) */
static pg_atomic_uint32 *excluded_entry = NULL;

/*
 * The projector: its batch has an xid and no position; publish the xid in
 * entry, its slot's projector_xid.
 */
void
gapless_exclude_self(pg_atomic_uint32 *entry)
{
	TransactionId xid = GetTopTransactionIdIfAny();

	if (!TransactionIdIsValid(xid))
		return;
	excluded_entry = entry;
	pg_atomic_write_u32(entry, xid);
}

/* Withdraw this backend's published xid, if any: step 7, and the batch's end. */
void
gapless_include_self(void)
{
	if (excluded_entry == NULL)
		return;
	/* a full barrier: the withdrawal is visible before any position is taken */
	(void) pg_atomic_exchange_u32(excluded_entry, 0);
	excluded_entry = NULL;
}

/*
 * Called by a writer before it takes positions (step 1, and step 7): its
 * top-level xid exists and is not published as holding no position.
 */
void
gapless_take_xid(void)
{
	(void) GetTopTransactionId();
	gapless_include_self();
}

/*
 * Must a reader with this horizon stop before a row with this xmark?  Only
 * if the row is above the horizon and was written by this cluster (point 5
 * above: next xid read now, after the row was written).
 *
 * Not on a hot standby: its next xid is only the newest one the WAL has
 * shown it, behind the primary's (a transaction that writes nothing logs
 * no xid), so a fresh row's xmark can be beyond it while an earlier
 * position is still uncommitted on the primary.  There every row above the
 * horizon waits; rows restored from a cluster ahead wait until this one's
 * counter passes them (on the primary they pass at once).
 */
bool
gapless_holds_back(FullTransactionId xmark, FullTransactionId horizon)
{
	if (!FullTransactionIdFollows(xmark, horizon))
		return false;
	if (RecoveryInProgress())
		return true;
	return !FullTransactionIdFollows(xmark, ReadNextFullTransactionId());
}

/*
 * Called by a writer after it took its positions, to get the xmark to store.
 * The caller must already have a top-level xid (step 1 above).
 */
FullTransactionId
gapless_mark(void)
{
	Assert(FullTransactionIdIsValid(GetTopFullTransactionIdIfAny()));
	return ReadNextFullTransactionId();
}
