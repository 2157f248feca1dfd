/*-------------------------------------------------------------------------
 * eventstore.c
 *		Streams of immutable events: append with ETag-checked optimistic
 *		concurrency, lock_stream, readers, and the append-only guard.
 *
 * A stream's head row in outbox._streams holds its version.  An append locks
 * that row (UPDATE's semantics, see rows.c), checks the expected version,
 * and bumps it; only then are positions taken, so a failed check takes no
 * position.  The row lock serialises appends to that stream, and only that
 * stream: versions are 1, 2, 3... under any concurrency, a stream's
 * positions grow with its versions, and appends to different streams never
 * wait for each other.  Row locks live in the tuples, not in the shared lock
 * table, so one transaction may append to any number of streams (a design
 * with one heavyweight lock per stream ran out of shared memory on a bulk
 * load of 10,000 streams).
 *
 * delete_stream takes the same row lock before it deletes, so a delete and
 * an append serialise like two appends.  It keeps the head row as a
 * tombstone and moves its version one step up: appends go on above it, and
 * every ETag taken before the delete, or for the deleted (empty) state, is
 * one that no later state of the stream has (no ABA).
 *
 * Every function here runs in the caller's transaction.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"
#include "utils/xid8.h"

#include "outbox.h"
#include "catalog.h"
#include "etag.h"
#include "eventparse.h"
#include "eventstore.h"
#include "gapless.h"
#include "projection.h"
#include "rows.h"
#include "spi.h"
#include "validate.h"

PG_FUNCTION_INFO_V1(outbox_append);
PG_FUNCTION_INFO_V1(outbox_stream_etag);
PG_FUNCTION_INFO_V1(outbox_lock_stream);
PG_FUNCTION_INFO_V1(outbox_read_stream);
PG_FUNCTION_INFO_V1(outbox_read_all);
PG_FUNCTION_INFO_V1(outbox_delete_stream);
PG_FUNCTION_INFO_V1(outbox_forbid_change);

/* columns of outbox._events and outbox._streams, in table order */
#define ES_EVENT_COLS		9
#define ES_STREAM_COLS		2
#define ES_COL_HEAD_VERSION	2

typedef enum Expectation
{
	EXPECT_ANY,					/* expected_etag NULL: no check */
	EXPECT_EXISTS,				/* '*': the stream must have events */
	EXPECT_VERSION				/* an ETag: the stream must be at this version */
} Expectation;

static OutboxPlan plan_create_head = {
	"INSERT INTO outbox._streams (stream, version) VALUES ($1, 0)"
	" ON CONFLICT (stream) DO NOTHING",
	1, {TEXTOID}
};
static OutboxPlan plan_find_ids = {
	"SELECT e.stream, e.version FROM unnest($1) WITH ORDINALITY AS u(id, ord)"
	" JOIN outbox._events e ON e.event_id = u.id ORDER BY u.ord",
	1, {UUIDARRAYOID}
};
static OutboxPlan plan_read_stream = {
	"SELECT position, stream, version, type, data, metadata, event_id, created_at"
	" FROM outbox._events WHERE stream = $1 AND version > $2 ORDER BY version LIMIT $3",
	3, {TEXTOID, INT8OID, INT4OID}
};
/* also projection.c's: the columns of outbox.events, then xmark */
OutboxPlan	outbox_plan_read_all = {
	"SELECT position, stream, version, type, data, metadata, event_id, created_at, xmark"
	" FROM outbox._events WHERE position > $1 ORDER BY position LIMIT $2",
	2, {INT8OID, INT4OID}
};
static OutboxPlan plan_delete_events = {
	"DELETE FROM outbox._events WHERE stream = $1",
	1, {TEXTOID}
};
/* a head this delete_stream created, or one lock_stream left at 0: no trace of the name */
static OutboxPlan plan_drop_empty_head = {
	"DELETE FROM outbox._streams WHERE stream = $1 AND version = 0",
	1, {TEXTOID}
};
static OutboxPlan plan_has_version = {
	"SELECT FROM outbox._events WHERE stream = $1 AND version = $2",
	2, {TEXTOID, INT8OID}
};
static OutboxPlan plan_audit_delete = {
	"INSERT INTO outbox.stream_deletions"
	" (stream_sha256, events_deleted, deleted_by, deleted_at, reason)"
	" VALUES (encode(sha256(convert_to($1, 'UTF8')), 'hex'), $2, $3, now(), $4)",
	4, {TEXTOID, INT8OID, NAMEOID, TEXTOID}
};

/* true only while outbox.delete_stream deletes: the guard lets it through */
static bool es_deleting = false;

/* ---- the stream head ---- */

/*
 * Version of a stream's head as snap sees it: 0 when it has no events.  A
 * direct probe of the primary key: stream_etag is on every optimistic
 * append's path, and SPI would cost it a whole executor start.
 */
static int64
es_head_version(const char *stream, Snapshot snap)
{
	Relation	rel = outbox_table_open(outbox_relid("_streams"), AccessShareLock);
	TupleTableSlot *slot = table_slot_create(rel, NULL);
	int64		version = 0;

	if (rows_fetch_by_key(rel, outbox_relid("_streams_pkey"), CStringGetTextDatum(stream),
						  F_TEXTEQ, snap, slot))
	{
		bool		isnull;

		version = DatumGetInt64(slot_getattr(slot, ES_COL_HEAD_VERSION, &isnull));
	}
	ExecDropSingleTupleTableSlot(slot);
	table_close(rel, NoLock);
	return version;
}

/*
 * Does the stream have events, its head being at version head?  Only a
 * deleted stream (its tombstone, see the top) has none at a version > 0.
 */
static bool
es_has_events(OutboxSpi *spi, const char *stream, int64 head)
{
	Datum		args[2] = {CStringGetTextDatum(stream), Int64GetDatum(head)};

	if (head == 0)
		return false;
	outbox_spi_begin(spi);
	return outbox_spi_run(&plan_has_version, args, NULL, false, 0, SPI_OK_SELECT) == 1;
}

/*
 * Lock the stream's head row until the transaction ends, creating it (at
 * version 0) for a new stream, and return its version.  heads stays open so
 * that the caller can update the locked row.
 */
static int64
es_lock_head(OutboxSpi *spi, OutboxRows *heads, const char *stream)
{
	Datum		key = CStringGetTextDatum(stream);
	bool		isnull;

	rows_open(heads, outbox_relid("_streams"));
	if (!rows_lock_by_key(heads, outbox_relid("_streams_pkey"), key, F_TEXTEQ))
	{
		/* a new stream; a concurrent creator makes this wait, then do nothing */
		outbox_spi_begin(spi);
		outbox_spi_run(&plan_create_head, &key, NULL, false, 0, SPI_OK_INSERT);
		if (!rows_lock_by_key(heads, outbox_relid("_streams_pkey"), key, F_TEXTEQ))
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("could not lock stream \"%s\" because of a concurrent change", stream),
					 errhint("Retry the transaction.")));
	}
	return DatumGetInt64(slot_getattr(heads->slot, ES_COL_HEAD_VERSION, &isnull));
}

/*
 * Is this append a repeat of one that already succeeded?  All events carry
 * ids; if all of them are in this stream at consecutive versions in the
 * given order (starting at base + 1 when base >= 0), returns the version of
 * the last one, else -1.  Some but not all ids present is a caller error.
 */
static int64
es_replayed_version(OutboxSpi *spi, const char *stream, EventInput *evs, int n, int64 base)
{
	Datum	   *ids = palloc(sizeof(Datum) * n);
	Datum		args[1];
	uint64		found;
	int64		first;

	for (int i = 0; i < n; i++)
		ids[i] = UUIDPGetDatum(evs[i].id);
	args[0] = PointerGetDatum(construct_array(ids, n, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
	outbox_spi_begin(spi);
	found = outbox_spi_run(&plan_find_ids, args, NULL, false, 0, SPI_OK_SELECT);
	if (found == 0)
		return -1;

	first = outbox_spi_getint64(2, NULL);
	if (found == n && (base < 0 || first == base + 1))
	{
		bool		same = true;

		for (uint64 i = 0; i < found && same; i++)
		{
			bool		isnull;
			char	   *s = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
			int64		v = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull));

			same = strcmp(s, stream) == 0 && v == first + (int64) i;
		}
		if (same)
			return first + n - 1;
	}
	if (base >= 0)
		return -1;				/* a different append won the race: an ETag conflict */
	ereport(ERROR,
			(errcode(ERRCODE_UNIQUE_VIOLATION),
			 errmsg("event ids of this append were already used by a different append"),
			 errdetail("%d of the %d ids exist, not as this append's events of stream \"%s\".",
					   (int) found, n, stream),
			 errhint("Give every new event a new id; repeat an append only with all of its original ids.")));
	return -1;					/* keep compiler quiet */
}

static void
es_conflict(const char *stream, Expectation expect, const char *expected_etag,
			int64 current)
{
	if (expect == EXPECT_EXISTS)
		ereport(ERROR,
				(errcode(ERRCODE_OUTBOX_ETAG_MISMATCH),
				 errmsg("stream \"%s\" does not exist", stream),
				 errdetail("Expected ETag *, current ETag %s.", text_to_cstring(etag_make(stream, current))),
				 errhint("Append without an ETag, or with outbox.stream_etag() of the empty stream, to create it.")));
	ereport(ERROR,
			(errcode(ERRCODE_OUTBOX_ETAG_MISMATCH),
			 errmsg("ETag mismatch on stream \"%s\"", stream),
			 errdetail("Expected ETag %s, current ETag %s.",
					   expected_etag, text_to_cstring(etag_make(stream, current))),
			 errhint("Another append changed the stream: read it again, decide again, and retry with the current ETag.")));
}

/*
 * Take positions for n events and insert them as versions head+1 .. head+n.
 * Returns the positions; gives every event an id; *created_at is theirs.
 */
static int64 *
es_insert_events(const char *stream, EventInput *evs, int n, int64 head, TimestampTz *created_at)
{
	Oid			seq = outbox_relid("_events_position_seq");
	int64	   *positions = palloc(sizeof(int64) * n);
	bool		nulls[ES_EVENT_COLS] = {0};
	Datum		row[ES_EVENT_COLS];
	OutboxRows	events;

	/* gapless.c: the top-level xid must exist before positions are taken */
	gapless_take_xid();
	for (int i = 0; i < n; i++)
		positions[i] = nextval_internal(seq, false);
	*created_at = GetCurrentTimestamp();

	row[1] = CStringGetTextDatum(stream);
	row[7] = TimestampTzGetDatum(*created_at);
	row[8] = FullTransactionIdGetDatum(gapless_mark());

	rows_open(&events, outbox_relid("_events"));
	for (int i = 0; i < n; i++)
	{
		row[0] = Int64GetDatum(positions[i]);
		row[2] = Int64GetDatum(head + 1 + i);
		row[3] = CStringGetTextDatum(evs[i].type);
		row[4] = JsonbPGetDatum(evs[i].data);
		row[5] = JsonbPGetDatum(evs[i].metadata);
		if (evs[i].id == NULL)
			evs[i].id = es_random_uuid();
		row[6] = UUIDPGetDatum(evs[i].id);
		rows_insert(&events, row, nulls, ES_EVENT_COLS);
	}
	rows_close(&events);
	return positions;
}

/*
 * outbox.append(stream text, events jsonb, expected_etag text) returns text
 *
 * Locks the stream until the caller's transaction ends.
 */
Datum
outbox_append(PG_FUNCTION_ARGS)
{
	char	   *stream = outbox_arg_name(fcinfo, 0, "stream");
	Jsonb	   *events = outbox_arg_jsonb(fcinfo, 1, "events");
	char	   *expected_etag = PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2));
	Expectation expect = EXPECT_ANY;
	int64		expected = 0;
	EventInput *evs;
	bool		all_have_ids;
	int			n;
	int64		head;
	OutboxSpi	spi = OUTBOX_SPI_INIT;
	OutboxRows	heads;
	int64	   *positions;
	TimestampTz created_at;

	outbox_check_writable("outbox.append()");
	n = es_parse_events(events, &evs, &all_have_ids);
	if (expected_etag && strcmp(expected_etag, "*") == 0)
		expect = EXPECT_EXISTS;
	else if (expected_etag)
	{
		expect = EXPECT_VERSION;
		expected = etag_version(stream, expected_etag);
	}

	head = es_lock_head(&spi, &heads, stream);

	/* without a version to check, a repeat is recognised by its ids alone */
	if (all_have_ids && expect != EXPECT_VERSION)
	{
		int64		replayed = es_replayed_version(&spi, stream, evs, n, -1);

		if (replayed >= 0)
		{
			rows_close(&heads);
			outbox_spi_end(&spi);
			PG_RETURN_TEXT_P(etag_make(stream, replayed));
		}
	}

	if ((expect == EXPECT_VERSION && head != expected) ||
		(expect == EXPECT_EXISTS && !es_has_events(&spi, stream, head)))
	{
		int64		replayed = -1;

		if (all_have_ids && expected >= 0)
			replayed = es_replayed_version(&spi, stream, evs, n, expected);
		if (replayed < 0)
			es_conflict(stream, expect, expected_etag, head);
		rows_close(&heads);
		outbox_spi_end(&spi);
		PG_RETURN_TEXT_P(etag_make(stream, replayed));
	}

	{
		Datum		row[ES_STREAM_COLS] = {CStringGetTextDatum(stream), Int64GetDatum(head + n)};
		bool		nulls[ES_STREAM_COLS] = {false, false};

		rows_update(&heads, row, nulls, ES_STREAM_COLS);
		rows_close(&heads);
	}
	positions = es_insert_events(stream, evs, n, head, &created_at);
	outbox_spi_end(&spi);
	/* user code: outside our SPI section, still holding the lock on outbox._events */
	projection_apply_inline(stream, evs, n, positions, head + 1, created_at);
	PG_RETURN_TEXT_P(etag_make(stream, head + n));
}

/* outbox.stream_etag(stream text) returns text, as of the query's snapshot */
Datum
outbox_stream_etag(PG_FUNCTION_ARGS)
{
	char	   *stream = outbox_arg_name(fcinfo, 0, "stream");

	PG_RETURN_TEXT_P(etag_make(stream, es_head_version(stream, GetActiveSnapshot())));
}

/*
 * outbox.lock_stream(stream text) returns text
 *
 * Locks the stream until the caller's transaction ends and returns its
 * current ETag, which an append in the same transaction cannot conflict with.
 */
Datum
outbox_lock_stream(PG_FUNCTION_ARGS)
{
	char	   *stream = outbox_arg_name(fcinfo, 0, "stream");
	OutboxSpi	spi = OUTBOX_SPI_INIT;
	OutboxRows	heads;
	int64		version;

	outbox_check_writable("outbox.lock_stream()");
	version = es_lock_head(&spi, &heads, stream);
	rows_close(&heads);
	outbox_spi_end(&spi);
	PG_RETURN_TEXT_P(etag_make(stream, version));
}

/* outbox.read_stream(stream text, after_version bigint, max_count int) */
Datum
outbox_read_stream(PG_FUNCTION_ARGS)
{
	Datum		args[3];

	args[0] = CStringGetTextDatum(outbox_arg_name(fcinfo, 0, "stream"));
	args[1] = Int64GetDatum(outbox_arg_position(fcinfo, 1, "after_version"));
	args[2] = Int32GetDatum(outbox_arg_count(fcinfo, 2, "max_count"));
	return outbox_spi_read(fcinfo, &plan_read_stream, args, false);
}

/* outbox.read_all(after_position bigint, max_count int): see gapless.c */
Datum
outbox_read_all(PG_FUNCTION_ARGS)
{
	Datum		args[2];

	args[0] = Int64GetDatum(outbox_arg_position(fcinfo, 0, "after_position"));
	args[1] = Int32GetDatum(outbox_arg_count(fcinfo, 1, "max_count"));
	return outbox_spi_read(fcinfo, &outbox_plan_read_all, args, true);
}

/*
 * outbox.delete_stream(stream text, reason text) returns bigint
 *
 * The one way to remove events: a whole stream, for a data-protection
 * request, recorded in outbox.stream_deletions.  EXECUTE is granted to
 * outbox_admin only.  Locks the stream's head first, as an append does (see
 * the top): an append in flight is waited for and its events deleted too;
 * an append that comes later waits for this transaction and continues above
 * the tombstone.
 */
Datum
outbox_delete_stream(PG_FUNCTION_ARGS)
{
	char	   *stream = outbox_arg_name(fcinfo, 0, "stream");
	OutboxSpi	spi = OUTBOX_SPI_INIT;
	OutboxRows	heads;
	Datum		args[4];
	uint64		deleted;
	int64		head;

	outbox_check_writable("outbox.delete_stream()");
	if (PG_ARGISNULL(1) || VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(1)) == 0)
		ereport(ERROR,
				(errcode(PG_ARGISNULL(1) ? ERRCODE_NULL_VALUE_NOT_ALLOWED : ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a reason is required to delete a stream"),
				 errhint("Name the request, e.g. a ticket number; it is kept in outbox.stream_deletions.")));

	args[0] = CStringGetTextDatum(stream);
	args[2] = CStringGetDatum(GetUserNameFromId(GetUserId(), false));
	args[3] = PointerGetDatum(PG_GETARG_TEXT_PP(1));

	/*
	 * Lock the head as an append does, creating it if missing: an append
	 * creating the stream right now is waited for, and its events are
	 * deleted too (REPEATABLE READ: 40001 if it committed after our
	 * snapshot).  So a delete and an append serialise like two appends.
	 */
	head = es_lock_head(&spi, &heads, stream);

	outbox_spi_begin(&spi);
	es_deleting = true;
	PG_TRY();
	{
		/* a new snapshot: in READ COMMITTED it sees what the head's last locker wrote */
		deleted = outbox_spi_run(&plan_delete_events, args, NULL, false, 0, SPI_OK_DELETE);
	}
	PG_FINALLY();
	{
		es_deleting = false;
	}
	PG_END_TRY();
	if (deleted > 0)
	{
		/* a tombstone one version above: ETags taken before the delete never match again */
		Datum		row[ES_STREAM_COLS] = {args[0], Int64GetDatum(head + 1)};
		bool		nulls[ES_STREAM_COLS] = {false, false};

		rows_update(&heads, row, nulls, ES_STREAM_COLS);
	}
	else if (head == 0)
		outbox_spi_run(&plan_drop_empty_head, args, NULL, false, 0, SPI_OK_DELETE);
	rows_close(&heads);
	args[1] = Int64GetDatum(deleted);
	outbox_spi_run(&plan_audit_delete, args, NULL, false, 0, SPI_OK_INSERT);
	outbox_spi_end(&spi);
	PG_RETURN_INT64(deleted);
}

/* Trigger keeping outbox._events append-only, for every role. */
Datum
outbox_forbid_change(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "outbox_forbid_change: not called as a trigger");
	if (es_deleting && TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
		return PointerGetDatum(trigdata->tg_trigtuple);
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("outbox.events is append-only"),
			 errdetail("Events cannot be updated, deleted or truncated, by any role."),
			 errhint("To remove a stream for a data-protection request, an outbox_admin calls outbox.delete_stream().")));
	return (Datum) 0;			/* keep compiler quiet */
}
