/*-------------------------------------------------------------------------
 * spi.c
 *		Running outbox's statements: cached plans, typed parameters, owner
 *		privileges, and copying result rows out of SPI.
 *
 * Roles never get write access to outbox's tables; the C functions run their
 * statements as the extension owner instead (the same device as PostgreSQL's
 * RI triggers).  While they run, the search_path is pinned to pg_catalog so
 * that a caller's search_path cannot redirect an operator in our SQL text.
 * Pinning it only while preparing is not enough: the plan cache re-analyses
 * an invalidated plan under whatever path is current at execution.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/detoast.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/tuplestore.h"
#include "utils/xid8.h"

#include "compat.h"
#include "outbox.h"
#include "catalog.h"
#include "gapless.h"
#include "spi.h"

/*
 * Connect to SPI, pin the search_path and become the extension owner; does
 * nothing if ctx is already connected, so hot paths can connect lazily.
 * Whatever happens before outbox_spi_end, (sub)transaction abort restores
 * the user, the search_path and SPI.
 */
void
outbox_spi_begin(OutboxSpi *ctx)
{
	Oid			owner = outbox_owner_oid();

	if (ctx->connected)
		return;
	ctx->connected = true;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	compat_push_catalog_search_path();
	GetUserIdAndSecContext(&ctx->saved_userid, &ctx->saved_sec_context);
	SetUserIdAndSecContext(owner,
						   ctx->saved_sec_context | SECURITY_LOCAL_USERID_CHANGE);
}

/* Undo outbox_spi_begin, if it connected. */
void
outbox_spi_end(OutboxSpi *ctx)
{
	if (!ctx->connected)
		return;
	ctx->connected = false;
	SetUserIdAndSecContext(ctx->saved_userid, ctx->saved_sec_context);
	compat_pop_search_path();
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
}

/*
 * cursor_options CURSOR_OPT_CUSTOM_PLAN plans the statement at every run,
 * for the parameters and the table as they are: for a probe of a table that
 * grows and shrinks by orders of magnitude (WHERE id = ANY ($1) on the
 * message log), where the generic plan the cache would keep, made while
 * the table was small, can be a sequential scan that then reads the whole
 * log for every chunk of ids.
 */
static SPIPlanPtr
spi_prepare(OutboxPlan *p)
{
	SPIPlanPtr	plan;

	plan = SPI_prepare_cursor(p->sql, p->nargs, p->argtypes, p->cursor_options);
	if (plan == NULL)
		elog(ERROR, "could not prepare \"%s\": %s",
			 p->sql, SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
	return plan;
}

/*
 * Execute a cached plan and check its return code; returns SPI_processed.
 */
uint64
outbox_spi_run(OutboxPlan *p, Datum *values, const char *nulls,
			   bool read_only, long count, int expected_rc)
{
	int			rc;

	if (p->plan == NULL)
		p->plan = spi_prepare(p);
	rc = SPI_execute_plan(p->plan, values, nulls, read_only, count);
	if (rc != expected_rc)
		elog(ERROR, "\"%s\" returned %s", p->sql, SPI_result_code_string(rc));
	return SPI_processed;
}

/*
 * Like outbox_spi_run, read-only, but with a snapshot taken now: sees every
 * transaction committed so far, whatever the caller's snapshot (used for
 * configuration that must be current even in a REPEATABLE READ caller).
 */
uint64
outbox_spi_run_latest(OutboxPlan *p, Datum *values, const char *nulls, int expected_rc)
{
	int			rc;

	if (p->plan == NULL)
		p->plan = spi_prepare(p);
	rc = SPI_execute_snapshot(p->plan, values, nulls, GetLatestSnapshot(), InvalidSnapshot,
							  true, false, 0);
	if (rc != expected_rc)
		elog(ERROR, "\"%s\" returned %s", p->sql, SPI_result_code_string(rc));
	return SPI_processed;
}

/* Column col (1-based) of the first result row, as int64. */
int64
outbox_spi_getint64(int col, bool *isnull)
{
	bool		null;
	Datum		d;

	Assert(SPI_processed > 0);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, col, &null);
	if (isnull)
		*isnull = null;
	return null ? 0 : DatumGetInt64(d);
}

/*
 * The body of every reader: run a read-only plan as the extension owner and
 * return its rows as the set-returning function's result (see
 * outbox_spi_emit for gapless).
 */
Datum
outbox_spi_read(FunctionCallInfo fcinfo, OutboxPlan *plan, Datum *args, bool gapless)
{
	OutboxSpi	spi = OUTBOX_SPI_INIT;

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	outbox_spi_begin(&spi);
	outbox_spi_run(plan, args, NULL, true, 0, SPI_OK_SELECT);
	outbox_spi_emit(fcinfo, gapless);
	outbox_spi_end(&spi);
	return (Datum) 0;
}

/*
 * Copy the rows of the last SPI query into the set-returning function's
 * tuplestore.  With gapless, the query's last column is the row's xmark:
 * copying stops at the first row a still-running transaction could precede
 * (see gapless.c), so the caller gets the safe prefix of the log.
 */
void
outbox_spi_emit(FunctionCallInfo fcinfo, bool gapless)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TupleDesc	spidesc = SPI_tuptable->tupdesc;
	int			natts = rsinfo->setDesc->natts;
	FullTransactionId horizon = gapless ? gapless_horizon() : InvalidFullTransactionId;
	Datum	   *values = palloc(sizeof(Datum) * spidesc->natts);
	bool	   *nulls = palloc(sizeof(bool) * spidesc->natts);
	MemoryContext row_cxt = AllocSetContextCreate(CurrentMemoryContext, "outbox row",
												  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(row_cxt);

	for (uint64 i = 0; i < SPI_processed; i++)
	{
		heap_deform_tuple(SPI_tuptable->vals[i], spidesc, values, nulls);
		if (gapless &&
			gapless_holds_back(DatumGetFullTransactionId(values[spidesc->natts - 1]), horizon))
			break;
		/* the tuplestore outlives SPI: take toasted values with us */
		for (int c = 0; c < natts; c++)
			if (!nulls[c] && TupleDescAttr(spidesc, c)->attlen == -1)
				values[c] = PointerGetDatum(pg_detoast_datum_packed((struct varlena *) DatumGetPointer(values[c])));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);

		/*
		 * The tuplestore copied the row (and spills to disk past work_mem):
		 * free the detoasted values, or max_count rows of up to 1 GB each
		 * would pile up in this backend's memory.
		 */
		MemoryContextReset(row_cxt);
	}
	MemoryContextSwitchTo(old);
	MemoryContextDelete(row_cxt);
}
