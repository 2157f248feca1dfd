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
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "utils/snapmgr.h"

#include "outbox.h"

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

	horizon = gapless_widen(snap->xmin);
	/* GetSnapshotData leaves our own xid out of xmin: our rows can still roll back */
	if (FullTransactionIdIsValid(own) && FullTransactionIdPrecedes(own, horizon))
		horizon = own;
	return horizon;
}

/*
 * Must a reader with this horizon stop before a row with this xmark?  Only
 * if the row is above the horizon and was written by this cluster (point 5
 * above: next xid read now, after the row was written).
 */
bool
gapless_holds_back(FullTransactionId xmark, FullTransactionId horizon)
{
	return FullTransactionIdFollows(xmark, horizon) &&
		!FullTransactionIdFollows(xmark, ReadNextFullTransactionId());
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
