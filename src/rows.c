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

#include "outbox.h"

/* Open relid for writing: an executor state with its indexes open. */
void
rows_open(OutboxRows *r, Oid relid)
{
	RangeTblEntry *rte = makeNode(RangeTblEntry);

	r->rel = table_open(relid, RowExclusiveLock);
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
	r->slot = ExecInitExtraTupleSlot(r->estate, RelationGetDescr(r->rel),
										&TTSOpsVirtual);
	AfterTriggerBeginQuery();
}

void
rows_close(OutboxRows *r)
{
	AfterTriggerEndQuery(r->estate);
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
	ExecClearTuple(r->slot);
	memcpy(r->slot->tts_values, values, sizeof(Datum) * natts);
	memcpy(r->slot->tts_isnull, nulls, sizeof(bool) * natts);
	return ExecStoreVirtualTuple(r->slot);
}

void
rows_insert(OutboxRows *r, Datum *values, bool *nulls, int natts)
{
	ExecSimpleRelationInsert(r->rri, r->estate, rows_fill(r, values, nulls, natts));
}

/*
 * The first row, in the given direction of index idxid, whose first key
 * column equals key, as snap sees it, into slot.  Returns false if none.
 */
bool
rows_fetch_by_key(Relation rel, Oid idxid, Datum key, Oid eqproc,
				  Snapshot snap, ScanDirection dir, TupleTableSlot *slot)
{
	Relation	idx = index_open(idxid, AccessShareLock);
	IndexScanDesc scan;
	ScanKeyData skey;
	bool		found;

	ScanKeyEntryInitialize(&skey, 0, 1, BTEqualStrategyNumber, InvalidOid,
						   idx->rd_indcollation[0], eqproc, key);
	scan = index_beginscan(rel, idx, snap, 1, 0);
	index_rescan(scan, &skey, 1, NULL, 0);
	found = index_getnext_slot(scan, dir, slot);
	index_endscan(scan);
	index_close(idx, NoLock);
	return found;
}
