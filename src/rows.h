/*-------------------------------------------------------------------------
 * rows.h
 *		Direct row access without SPI for the hot path (rows.c).
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_ROWS_H
#define OUTBOX_ROWS_H

#include "outbox.h"

/* rows.c: direct row access, in the caller's transaction */
typedef struct OutboxRows
{
	Relation	rel;
	EState	   *estate;
	ResultRelInfo *rri;
	TupleTableSlot *slot;		/* the row rows_lock_by_key locked */
	TupleTableSlot *newslot;
	EPQState	epq;
} OutboxRows;

extern void rows_open(OutboxRows *r, Oid relid);
extern void rows_close(OutboxRows *r);
extern void rows_insert(OutboxRows *r, Datum *values, bool *nulls, int natts);
extern void rows_update(OutboxRows *r, Datum *values, bool *nulls, int natts);
extern bool rows_fetch_by_key(Relation rel, Oid idxid, Datum key, Oid eqproc,
							  Snapshot snap, TupleTableSlot *slot);
extern bool rows_lock_by_key(OutboxRows *r, Oid idxid, Datum key, Oid eqproc);

#endif							/* OUTBOX_ROWS_H */
