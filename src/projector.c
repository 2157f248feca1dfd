/*-------------------------------------------------------------------------
 * projector.c
 *		Async projections, applied by the database's relay worker, and
 *		outbox.wait_for_projection, which waits for them.
 *
 * One batch is one transaction: lock the projection's row (SKIP LOCKED: an
 * admin changing it goes first), read up to batch_size events after its
 * checkpoint from the gap-free log (gapless.c), call the handler for the
 * matching ones in position order, and move the checkpoint, all in that
 * transaction.  Whenever the relay is killed, every event has been applied
 * exactly once or not at all.
 *
 * A handler error rolls the batch back.  If an event other than the first
 * failed, the events before it are applied again at once as a shorter batch;
 * the next batch then starts with the failing event.  When the first event
 * fails, the attempt is recorded (attempts, last_error, retry_at after an
 * exponential backoff, min(backoff_max_ms, backoff_base_ms * 2^attempt)),
 * and after max_attempts the projection stops there in state 'failed':
 * events are never skipped.  resume_projection tries again.
 *
 * The relay runs at most one batch per projection per turn of its loop, and
 * a batch ends early (committing what it applied) once its handlers have
 * taken BATCH_MAX_MS, so webhook delivery goes on between batches; a full
 * or shortened batch asks for another turn at once.  Commits that append events for async projections set the
 * slot's events flag (shmem.c); a read held back by a running transaction
 * is tried again shortly, as delivery does.  After each commit the new
 * checkpoint is published in shared memory and progress_cv broadcast.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/condition_variable.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/xid8.h"

#include "outbox.h"
#include "options.h"

PG_FUNCTION_INFO_V1(outbox_wait_for_projection);

#define HELD_BACK_MIN_MS	5
#define HELD_BACK_MAX_MS	100
#define WAIT_SLICE_MS		1000	/* wait_for_projection re-reads the table this often */
/* a longer timeout waits this long (100 years: forever, without overflowing a timestamp) */
#define WAIT_MAX_MS			(INT64CONST(100) * 365 * 24 * 3600 * 1000)
#define BATCH_MAX_MS		50		/* a batch ends early after this much handler time */

static OutboxPlan plan_list = {
	"SELECT id, mode = 'async' AND state IN ('running', 'rebuilding'), retry_at"
	" FROM outbox._projections ORDER BY id",
	0, {0}
};
static OutboxPlan plan_lock = {
	"SELECT " PROJECTION_COLUMNS " FROM outbox._projections"
	" WHERE id = $1 AND mode = 'async' AND state IN ('running', 'rebuilding')"
	" FOR UPDATE SKIP LOCKED",
	1, {INT4OID}
};
static OutboxPlan plan_checkpoint = {
	"UPDATE outbox._projections"
	" SET position = $2, events_applied = events_applied + $3,"
	" last_applied_at = CASE WHEN $3 > 0 THEN now() ELSE last_applied_at END,"
	" attempts = 0, retry_at = NULL, last_error = NULL,"
	" state = CASE WHEN state = 'rebuilding' AND $4 THEN 'running' ELSE state END"
	" WHERE id = $1",
	4, {INT4OID, INT8OID, INT8OID, BOOLOID}
};
static OutboxPlan plan_options = {
	"SELECT options FROM outbox._projections WHERE id = $1",
	1, {INT4OID}
};
/* $3, $4, $5: max_attempts, backoff_base_ms, backoff_max_ms (options.c) */
static OutboxPlan plan_failure = {
	"UPDATE outbox._projections"
	" SET attempts = attempts + 1, last_error = $2,"
	" retry_at = now() + least($5::float8, $4 * power(2, least(attempts, 40))) * interval '1 ms',"
	" state = CASE WHEN attempts + 1 >= $3 THEN 'failed' ELSE state END"
	" WHERE id = $1 AND mode = 'async' AND state IN ('running', 'rebuilding')"
	" RETURNING retry_at, state",
	5, {INT4OID, TEXTOID, INT4OID, INT4OID, INT4OID}
};
static OutboxPlan plan_state = {
	"SELECT mode, state, position, last_error FROM outbox._projections WHERE name = $1",
	1, {TEXTOID}
};
static OutboxPlan plan_event_position = {
	"SELECT position, xmark FROM outbox._events WHERE stream = $1 AND version = $2",
	2, {TEXTOID, INT8OID}
};

static TimestampTz next_due = 0;	/* a retry or a held-back read is due; 0: none */
static bool more = false;		/* a batch was full: go on at once */
static bool held_back = false;	/* the last reads were held back */
static int	held_back_ms = 0;

typedef struct BatchResult
{
	int			failed_index;	/* the handler failed on this event; -1: no */
	bool		failed;
} BatchResult;

static void
due_at(TimestampTz when)
{
	if (next_due == 0 || when < next_due)
		next_due = when;
}

/*
 * The async projections to run now; schedules the others' retries, and
 * gives back the shared progress entries of projections that are gone.
 */
static List *
projector_due(TimestampTz now)
{
	OutboxSpi	spi = OUTBOX_SPI_INIT;
	MemoryContext cxt = CurrentMemoryContext;
	List	   *due = NIL;
	int		   *ids;
	uint64		n;

	relay_xact_begin("outbox: listing projections");
	outbox_spi_begin(&spi);
	n = outbox_spi_run(&plan_list, NULL, NULL, true, 0, SPI_OK_SELECT);
	ids = MemoryContextAlloc(cxt, sizeof(int) * Max(n, 1));
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		bool		isnull;
		int			id = DatumGetInt32(SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull));
		bool		active = DatumGetBool(SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull));
		Datum		retry = SPI_getbinval(tup, SPI_tuptable->tupdesc, 3, &isnull);

		ids[i] = id;
		if (!active)
			continue;
		if (isnull || DatumGetTimestampTz(retry) <= now)
		{
			MemoryContext old = MemoryContextSwitchTo(cxt);

			due = lappend_int(due, id);
			MemoryContextSwitchTo(old);
		}
		else
			due_at(DatumGetTimestampTz(retry));
	}
	outbox_spi_end(&spi);
	relay_xact_end();
	shmem_keep_projections(MyDatabaseId, ids, (int) n);
	return due;
}

/*
 * The handler errored: unless only the events before the failing one are
 * to be applied again, record a failed attempt (see the top).
 */
static void
projector_failed(int id, const char *name, int64 position, const char *message)
{
	OutboxSpi	spi = OUTBOX_SPI_INIT;
	Datum		args[5];
	char	   *error;
	ProjectionOptions opt;

	if (name == NULL)
		name = psprintf("%d", id);
	error = position > 0
		? psprintf("event at position " INT64_FORMAT ": %s", position, message)
		: pstrdup(message);
	ereport(LOG,
			(errmsg("outbox: projection \"%s\" failed: %s", name, error)));
	args[0] = Int32GetDatum(id);
	args[1] = CStringGetTextDatum(error);
	relay_xact_begin("outbox: recording a projection failure");
	outbox_spi_begin(&spi);
	options_read(OPTIONS_PROJECTION, NULL, &opt);
	if (outbox_spi_run(&plan_options, args, NULL, false, 0, SPI_OK_SELECT) == 1)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		/* options it cannot use: this failure is its last */
		if (options_read(OPTIONS_PROJECTION, DatumGetJsonbP(d), &opt) != NULL)
			opt.max_attempts = 1;
	}
	args[2] = Int32GetDatum(opt.max_attempts);
	args[3] = Int32GetDatum(opt.backoff_base_ms);
	args[4] = Int32GetDatum(opt.backoff_max_ms);
	if (outbox_spi_run(&plan_failure, args, NULL, false, 0, SPI_OK_UPDATE_RETURNING) == 1)
	{
		bool		isnull;
		Datum		retry = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		char	   *state = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);

		if (strcmp(state, "failed") == 0)
			ereport(LOG,
					(errmsg("outbox: projection \"%s\" stopped after its last attempt", name),
					 errhint("Fix the handler, then call outbox.resume_projection().")));
		else if (!isnull)
			due_at(DatumGetTimestampTz(retry));
	}
	outbox_spi_end(&spi);
	relay_xact_end();
}

/*
 * One batch of projection id, of at most limit events (0: its batch_size).
 */
static BatchResult
projector_batch(int id, int limit)
{
	MemoryContext cxt = CurrentMemoryContext;
	BatchResult result = {-1, false};
	volatile int current = -1;
	volatile int64 current_position = 0;
	char	   *volatile name = NULL;
	volatile int64 checkpoint = -1;

	relay_xact_begin("outbox: applying events to a projection");
	PG_TRY();
	{
		OutboxSpi	spi = OUTBOX_SPI_INIT;
		Datum		arg = Int32GetDatum(id);
		Projection *p = NULL;

		outbox_spi_begin(&spi);
		if (outbox_spi_run(&plan_lock, &arg, NULL, false, 0, SPI_OK_SELECT) == 1)
			p = projection_from_spi(SPI_tuptable->vals[0], cxt);
		outbox_spi_end(&spi);
		/* locked by an admin (or just paused): look again shortly, it may roll back */
		if (p == NULL)
			due_at(TimestampTzPlusMilliseconds(GetCurrentTimestamp(), HELD_BACK_MAX_MS));
		else if (p->options_problem != NULL)
		{
			name = p->name;
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid options: %s", p->options_problem)));
		}
		if (p != NULL)
		{
			ProjectionEvent *events;
			bool		held;
			int			want = limit > 0 ? limit : p->batch_size;
			int			n = projection_read(p->position, want, true, &events, &held);
			int64		applied = 0;
			TimestampTz stop_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), BATCH_MAX_MS);
			int			done = 0;
			bool		caught_up;
			int			nest;

			name = p->name;
			nest = projection_enter(p);
			for (; done < n; done++)
			{
				/* slow handlers: end the batch early, delivery goes on meanwhile */
				if (done > 0 && GetCurrentTimestamp() >= stop_at)
					break;
				if (!projection_matches(p, events[done].stream, events[done].type))
					continue;
				current = done;
				current_position = events[done].position;
				projection_call(p, events[done].row);
				current = -1;
				applied++;
			}
			projection_leave(nest);
			caught_up = n < want && !held && done == n;
			if (held && done == n)
				held_back = true;
			if (n == want || done < n)
				more = true;
			n = done;
			if (n > 0 || strcmp(p->state, "rebuilding") == 0)
			{
				Datum		args[4];

				checkpoint = n > 0 ? events[n - 1].position : p->position;
				args[0] = Int32GetDatum(id);
				args[1] = Int64GetDatum(checkpoint);
				args[2] = Int64GetDatum(applied);
				args[3] = BoolGetDatum(caught_up);
				outbox_spi_begin(&spi);
				outbox_spi_run(&plan_checkpoint, args, NULL, false, 0, SPI_OK_UPDATE);
				outbox_spi_end(&spi);
			}
		}
		relay_xact_end();
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		char	   *failed_name;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		MemoryContextSwitchTo(cxt);
		pgstat_report_activity(STATE_IDLE, NULL);
		failed_name = name ? pstrdup(name) : NULL;
		result.failed = true;
		result.failed_index = current;
		/* events before the failing one: applied again at once, by the caller */
		if (current <= 0)
			projector_failed(id, failed_name, current_position, edata->message);
		FreeErrorData(edata);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	if (checkpoint >= 0)
		shmem_projection_progressed(MyDatabaseId);
	return result;
}

/*
 * Called on every turn of the relay's loop; woken: a commit appended events
 * for async projections, or changed a projection.  Returns how long the
 * relay may sleep as far as projections go (-1: until woken, 0: not at all).
 */
long
projector_run(bool woken)
{
	TimestampTz now = GetCurrentTimestamp();
	List	   *due;
	ListCell   *lc;

	if (!woken && !more && (next_due == 0 || now < next_due))
		return next_due == 0 ? -1 : Max(0, TimestampDifferenceMilliseconds(now, next_due));

	more = false;
	held_back = false;
	next_due = 0;
	due = projector_due(now);
	foreach(lc, due)
	{
		int			limit = 0;
		BatchResult r;

		/* after a failure past the first event, apply the events before it */
		do
		{
			r = projector_batch(lfirst_int(lc), limit);
			limit = r.failed_index;
		} while (r.failed && r.failed_index > 0);
		CHECK_FOR_INTERRUPTS();
	}
	if (held_back)
	{
		held_back_ms = held_back_ms == 0 ? HELD_BACK_MIN_MS : Min(held_back_ms * 2, HELD_BACK_MAX_MS);
		due_at(TimestampTzPlusMilliseconds(now, held_back_ms));
	}
	else
		held_back_ms = 0;
	if (more)
		return 0;
	return next_due == 0 ? -1 : Max(0, TimestampDifferenceMilliseconds(GetCurrentTimestamp(), next_due));
}

/* Is a running transaction holding an async projection back? */
bool
projector_held_back(void)
{
	return held_back;
}

/* ---- outbox.wait_for_projection ---- */

typedef struct WaitTarget
{
	bool		async;
	int64		position;		/* the event the caller wants applied */
} WaitTarget;

/*
 * Has the projection applied the target, as far as its committed row says?
 * A paused or failed projection that has not will not get there by itself:
 * that is a 55000 error at once, not a wait for the timeout.
 */
static bool
wait_reached_in_table(const char *name, Datum arg, WaitTarget *t)
{
	OutboxSpi	spi = OUTBOX_SPI_INIT;
	TupleDesc	desc;
	HeapTuple	row;
	bool		reached;
	bool		isnull;
	char	   *mode;
	char	   *state;
	int64		position;

	outbox_spi_begin(&spi);
	if (outbox_spi_run_latest(&plan_state, &arg, NULL, SPI_OK_SELECT) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("projection \"%s\" does not exist", name)));
	desc = SPI_tuptable->tupdesc;
	row = SPI_tuptable->vals[0];
	mode = SPI_getvalue(row, desc, 1);
	state = SPI_getvalue(row, desc, 2);
	position = DatumGetInt64(SPI_getbinval(row, desc, 3, &isnull));
	t->async = strcmp(mode, "async") == 0;
	/* a running inline projection applied every committed event at its commit */
	reached = (!t->async && strcmp(state, "running") == 0) || position >= t->position;
	if (!reached && strcmp(state, "paused") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("projection \"%s\" is paused", name),
				 errdetail("It stopped at position " INT64_FORMAT ", before the event at position " INT64_FORMAT ".",
						   position, t->position),
				 errhint("Resume it with outbox.resume_projection().")));
	if (!reached && strcmp(state, "failed") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("projection \"%s\" has failed", name),
				 errdetail("It stopped at position " INT64_FORMAT ", before the event at position " INT64_FORMAT ", after the error: %s",
						   position, t->position, SPI_getvalue(row, desc, 4) ? SPI_getvalue(row, desc, 4) : "(none)"),
				 errhint("Fix the handler, then call outbox.resume_projection().")));
	outbox_spi_end(&spi);
	return reached;
}

/*
 * A timeout interval in milliseconds, at most WAIT_MAX_MS (computed in
 * double: an interval's fields multiplied out can overflow int64).
 */
static int64
wait_timeout_ms(Interval *timeout)
{
	double		ms = timeout->time / 1000.0 +
		((double) timeout->month * DAYS_PER_MONTH + timeout->day) * SECS_PER_DAY * 1000.0;

	if (ms < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("timeout must not be negative")));
	return ms > WAIT_MAX_MS ? WAIT_MAX_MS : (int64) ms;
}

/*
 * outbox.wait_for_projection(name text, stream text, etag text,
 *							  timeout interval) returns boolean
 *
 * Read-your-writes: reads the projection's committed checkpoint with a
 * fresh snapshot, and sleeps on the slot's
 * progress_cv, which the relay broadcasts after each batch it commits, or
 * WAIT_SLICE_MS at most (an admin's changes do not broadcast).  The table,
 * not shared memory, is the truth: a rebuild moves the checkpoint back.
 */
Datum
outbox_wait_for_projection(PG_FUNCTION_ARGS)
{
	char	   *name = outbox_arg_name(fcinfo, 0, "projection name");
	char	   *stream = outbox_arg_name(fcinfo, 1, "stream");
	Datum		name_arg = CStringGetTextDatum(name);
	char	   *etag;
	int64		timeout_ms;
	int64		version;
	TimestampTz deadline;
	WaitTarget	target = {0};
	ConditionVariable *cv;
	bool		reached;

	if (PG_ARGISNULL(2) || PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", PG_ARGISNULL(2) ? "etag" : "timeout")));
	etag = text_to_cstring(PG_GETARG_TEXT_PP(2));
	timeout_ms = wait_timeout_ms(PG_GETARG_INTERVAL_P(3));
	version = etag_version(stream, etag);
	if (version < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ETag %s is not an ETag of stream \"%s\"", etag, stream),
				 errhint("Pass the stream the ETag was returned for.")));
	if (version == 0)
		PG_RETURN_BOOL(true);	/* the empty stream: nothing to wait for */
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_STATE),
				 errmsg("wait_for_projection needs a READ COMMITTED transaction"),
				 errdetail("This transaction's snapshot would not show what the projection applied meanwhile."),
				 errhint("Wait in a READ COMMITTED transaction, then read the read model.")));

	{
		OutboxSpi	spi = OUTBOX_SPI_INIT;
		Datum		args[2] = {CStringGetTextDatum(stream), Int64GetDatum(version)};

		outbox_spi_begin(&spi);
		if (outbox_spi_run_latest(&plan_event_position, args, NULL, SPI_OK_SELECT) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("stream \"%s\" has no committed version " INT64_FORMAT, stream, version),
					 errdetail("ETag %s names a version that was never committed, or the stream was deleted.", etag)));
		target.position = outbox_spi_getint64(1, NULL);
		{
			bool		isnull;
			FullTransactionId xmark = DatumGetFullTransactionId(
				SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
			FullTransactionId own = GetTopFullTransactionIdIfAny();

			/* the relay's gap-free reading cannot pass us (its horizon is <= own) */
			if (FullTransactionIdIsValid(own) && gapless_holds_back(xmark, own))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_TRANSACTION_STATE),
						 errmsg("this transaction holds the projection back from the event it waits for"),
						 errdetail("It took its transaction id before the event was appended and is still running."),
						 errhint("Commit first, then wait.")));
		}
		outbox_spi_end(&spi);
	}

	if (wait_reached_in_table(name, name_arg, &target))
		PG_RETURN_BOOL(true);
	if (target.async && outbox_shmem == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("waiting for an async projection needs the outbox relay"),
				 errhint("Add outbox to shared_preload_libraries and restart the server.")));

	cv = NULL;
	if (outbox_shmem != NULL)
	{
		RelaySlot  *slot;

		LWLockAcquire(outbox_shmem->lock, LW_SHARED);
		slot = shmem_find_slot(MyDatabaseId);
		if (slot != NULL)
			cv = &slot->progress_cv;	/* slots never move */
		LWLockRelease(outbox_shmem->lock);
	}

	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	reached = false;
	/* prepared before each check, so no broadcast can fall in between */
	if (cv)
		ConditionVariablePrepareToSleep(cv);
	for (;;)
	{
		long		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);

		if (wait_reached_in_table(name, name_arg, &target))
		{
			reached = true;
			break;
		}
		if (left <= 0)
			break;
		if (cv)
			(void) ConditionVariableTimedSleep(cv, Min(left, WAIT_SLICE_MS), PG_WAIT_EXTENSION);
		else
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 Min(left, WAIT_SLICE_MS), PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
		CHECK_FOR_INTERRUPTS();
	}
	if (cv)
		ConditionVariableCancelSleep();
	PG_RETURN_BOOL(reached);
}
