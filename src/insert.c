/*-------------------------------------------------------------------------
 * insert.c
 *		Inserting one row into an outbox table without SPI.
 *
 * publish and append are the hot path: going through SPI costs a snapshot,
 * a plan revalidation and an executor start per row, which is what separated
 * outbox.publish from a plain INSERT in test/bench.  This is the executor
 * path logical replication's apply worker uses: constraints, unique indexes
 * (waiting on a concurrent duplicate as INSERT does) and row triggers all
 * still run.  Runs in the caller's transaction; takes RowExclusiveLock.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/xact.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "nodes/makefuncs.h"
#include "parser/parsetree.h"
#include "utils/rel.h"

#include "outbox.h"

void
outbox_insert_row(Oid relid, Datum *values, bool *nulls, int natts)
{
	Relation	rel = table_open(relid, RowExclusiveLock);
	EState	   *estate = CreateExecutorState();
	RangeTblEntry *rte = makeNode(RangeTblEntry);
	ResultRelInfo *rri = makeNode(ResultRelInfo);
	TupleTableSlot *slot;
	TupleDesc	desc = RelationGetDescr(rel);

	if (desc->natts != natts)
		elog(ERROR, "relation %s has %d columns, expected %d",
			 RelationGetRelationName(rel), desc->natts, natts);

	rte->rtekind = RTE_RELATION;
	rte->relid = relid;
	rte->relkind = rel->rd_rel->relkind;
	rte->rellockmode = RowExclusiveLock;
	ExecInitRangeTable(estate, list_make1(rte));
	InitResultRelInfo(rri, rel, 1, NULL, 0);
	estate->es_output_cid = GetCurrentCommandId(true);
	ExecOpenIndices(rri, false);
	AfterTriggerBeginQuery();

	slot = ExecInitExtraTupleSlot(estate, desc, &TTSOpsVirtual);
	ExecClearTuple(slot);
	memcpy(slot->tts_values, values, sizeof(Datum) * desc->natts);
	memcpy(slot->tts_isnull, nulls, sizeof(bool) * desc->natts);
	ExecStoreVirtualTuple(slot);
	ExecSimpleRelationInsert(rri, estate, slot);

	AfterTriggerEndQuery(estate);
	ExecCloseIndices(rri);
	ExecResetTupleTable(estate->es_tupleTable, false);
	FreeExecutorState(estate);
	table_close(rel, NoLock);
}
