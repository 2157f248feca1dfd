/*-------------------------------------------------------------------------
 * spi.h
 *		Cached SPI plans run as the extension owner (spi.c).
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_SPI_H
#define OUTBOX_SPI_H

#include "outbox.h"

/*
 * spi.c: every statement outbox runs goes through a plan prepared once per
 * backend, with typed parameters, run as the extension owner.
 */
typedef struct OutboxPlan
{
	const char *sql;
	int			nargs;
	Oid			argtypes[9];
	SPIPlanPtr	plan;			/* prepared on first use, kept for the backend */
	int			cursor_options; /* 0, or CURSOR_OPT_CUSTOM_PLAN: see spi.c */
} OutboxPlan;

typedef struct OutboxSpi
{
	bool		connected;
	Oid			saved_userid;
	int			saved_sec_context;
} OutboxSpi;

#define OUTBOX_SPI_INIT {false, InvalidOid, 0}

extern void outbox_spi_begin(OutboxSpi *ctx);
extern void outbox_spi_end(OutboxSpi *ctx);
extern uint64 outbox_spi_run(OutboxPlan *plan, Datum *values, const char *nulls,
							 bool read_only, long count, int expected_rc);
extern uint64 outbox_spi_run_latest(OutboxPlan *plan, Datum *values, const char *nulls,
									int expected_rc);
extern int64 outbox_spi_getint64(int col, bool *isnull);
extern void outbox_spi_emit(FunctionCallInfo fcinfo, bool gapless);
extern Datum outbox_spi_read(FunctionCallInfo fcinfo, OutboxPlan *plan, Datum *args,
							 bool gapless);

#endif							/* OUTBOX_SPI_H */
