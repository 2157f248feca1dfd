/*-------------------------------------------------------------------------
 * rows.c
 *		Direct row access to outbox's tables, without SPI.
 *
 * publish and append are the hot path.  Through SPI each statement costs a
 * snapshot, a plan revalidation and an executor start, which is what kept
 * outbox.append and outbox.publish behind a plain INSERT in test/bench.
 * These are the executor entry points logical replication's apply worker
 * uses: constraints, unique indexes (waiting on a concurrent duplicate as
 * INSERT does) and row triggers all still run.
 *
 * Everything here runs in the caller's transaction; writing takes
 * RowExclusiveLock on the table, probing AccessShareLock on the index.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "nodes/makefuncs.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "outbox.h"
#include "catalog.h"
#include "rows.h"

/* Open relid for writing: an executor state with its indexes open. */
void
rows_open(OutboxRows *r, Oid relid)
{
	RangeTblEntry *rte = makeNode(RangeTblEntry);

	r->rel = outbox_table_open(relid, RowExclusiveLock);
	r->estate = CreateExecutorState();
	rte->rtekind = RTE_RELATION;
	rte->relid = relid;
	rte->relkind = r->rel->rd_rel->relkind;
	rte->rellockmode = RowExclusiveLock;
	ExecInitRangeTable(r->estate, list_make1(rte));
	r->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(r->rri, r->rel, 1, NULL, 0);
	r->estate->es_output_cid = GetCurrentCommandId(true);
	ExecOpenIndices(r->rri, false);
	EvalPlanQualInit(&r->epq, r->estate, NULL, NIL, -1);
	r->slot = ExecInitExtraTupleSlot(r->estate, RelationGetDescr(r->rel),
									 &TTSOpsBufferHeapTuple);
	r->newslot = ExecInitExtraTupleSlot(r->estate, RelationGetDescr(r->rel),
										&TTSOpsVirtual);
	AfterTriggerBeginQuery();
}

void
rows_close(OutboxRows *r)
{
	AfterTriggerEndQuery(r->estate);
	EvalPlanQualEnd(&r->epq);
	ExecCloseIndices(r->rri);
	ExecResetTupleTable(r->estate->es_tupleTable, false);
	FreeExecutorState(r->estate);
	table_close(r->rel, NoLock);
}

static TupleTableSlot *
rows_fill(OutboxRows *r, Datum *values, bool *nulls, int natts)
{
	TupleDesc	desc = RelationGetDescr(r->rel);

	if (desc->natts != natts)
		elog(ERROR, "relation %s has %d columns, expected %d",
			 RelationGetRelationName(r->rel), desc->natts, natts);
	ExecClearTuple(r->newslot);
	memcpy(r->newslot->tts_values, values, sizeof(Datum) * natts);
	memcpy(r->newslot->tts_isnull, nulls, sizeof(bool) * natts);
	return ExecStoreVirtualTuple(r->newslot);
}

void
rows_insert(OutboxRows *r, Datum *values, bool *nulls, int natts)
{
	ExecSimpleRelationInsert(r->rri, r->estate, rows_fill(r, values, nulls, natts));
}

/* Replace the row rows_lock_by_key locked (in r->slot) with new values. */
void
rows_update(OutboxRows *r, Datum *values, bool *nulls, int natts)
{
	ExecSimpleRelationUpdate(r->rri, r->estate, &r->epq, r->slot,
							 rows_fill(r, values, nulls, natts));
}

/*
 * The row whose single-column key index idxid holds key, as snap sees it,
 * into slot.  Returns false when there is none.
 */
bool
rows_fetch_by_key(Relation rel, Oid idxid, Datum key, Oid eqproc,
				  Snapshot snap, TupleTableSlot *slot)
{
	Relation	idx = index_open(idxid, AccessShareLock);
	IndexScanDesc scan;
	ScanKeyData skey;
	bool		found;

	ScanKeyEntryInitialize(&skey, 0, 1, BTEqualStrategyNumber, InvalidOid,
						   idx->rd_indcollation[0], eqproc, key);
	scan = index_beginscan(rel, idx, snap, 1, 0);
	index_rescan(scan, &skey, 1, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, slot);
	index_endscan(scan);
	index_close(idx, NoLock);
	return found;
}

/*
 * Lock the row with this key for update, as UPDATE would: in READ COMMITTED
 * wait for a concurrent writer and lock the newest version; in REPEATABLE
 * READ or SERIALIZABLE fail with 40001 if it changed since the snapshot.
 * The locked version is left in r->slot.  Returns false when there is no row.
 */
bool
rows_lock_by_key(OutboxRows *r, Oid idxid, Datum key, Oid eqproc)
{
	bool		xact_snapshot = IsolationUsesXactSnapshot();

	/* see the caller's earlier writes in this statement */
	CommandCounterIncrement();
	r->estate->es_output_cid = GetCurrentCommandId(true);

	for (;;)
	{
		Snapshot	snap = xact_snapshot ? GetTransactionSnapshot() : GetLatestSnapshot();
		TM_FailureData tmfd;
		TM_Result	res;

		if (!rows_fetch_by_key(r->rel, idxid, key, eqproc, snap, r->slot))
			return false;
		res = table_tuple_lock(r->rel, &r->slot->tts_tid, snap, r->slot,
							   GetCurrentCommandId(false), LockTupleNoKeyExclusive,
							   LockWaitBlock,
							   xact_snapshot ? 0 : TUPLE_LOCK_FLAG_FIND_LAST_VERSION,
							   &tmfd);
		switch (res)
		{
			case TM_Ok:
				return true;
			case TM_Updated:
			case TM_Deleted:
				if (xact_snapshot)
					ereport(ERROR,
							(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
							 errmsg("could not serialize access due to concurrent update")));
				/* deleted meanwhile (or moved): look again */
				continue;
			case TM_SelfModified:
			default:
				elog(ERROR, "unexpected result %d locking a row of %s",
					 (int) res, RelationGetRelationName(r->rel));
		}
	}
}
