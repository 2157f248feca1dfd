/*-------------------------------------------------------------------------
 * eventstore.c
 *		Streams of immutable events: append with ETag-checked optimistic
 *		concurrency, lock_stream, readers, and the append-only guard.
 *
 * A stream's head row in outbox._streams holds its version.  An append
 * checks the expected version and bumps it in one conditional UPDATE, which
 * also takes the row lock that serialises appends to that stream (and only
 * that stream).  Only then are positions taken, so a failed check leaves no
 * hole.  Versions are therefore 1, 2, 3... per stream under any concurrency,
 * and a stream's positions grow with its versions.
 *
 * Every function here runs its statements in the caller's transaction.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"
#include "utils/xid8.h"

#include "outbox.h"

PG_FUNCTION_INFO_V1(outbox_append);
PG_FUNCTION_INFO_V1(outbox_stream_etag);
PG_FUNCTION_INFO_V1(outbox_lock_stream);
PG_FUNCTION_INFO_V1(outbox_read_stream);
PG_FUNCTION_INFO_V1(outbox_read_all);
PG_FUNCTION_INFO_V1(outbox_delete_stream);
PG_FUNCTION_INFO_V1(outbox_forbid_change);

typedef struct EventInput
{
	char	   *type;
	Jsonb	   *data;
	Jsonb	   *metadata;
	pg_uuid_t  *id;				/* NULL when the caller gave none */
} EventInput;

typedef enum Expectation
{
	EXPECT_ANY,					/* expected_etag NULL: no check */
	EXPECT_EXISTS,				/* '*': the stream must have events */
	EXPECT_VERSION				/* an ETag: the stream must be at this version */
} Expectation;

static OutboxPlan plan_create_head = {
	"INSERT INTO outbox._streams (stream, version) VALUES ($1, $2)"
	" ON CONFLICT (stream) DO NOTHING RETURNING version",
	2, {TEXTOID, INT8OID}
};
static OutboxPlan plan_lock_head = {
	"INSERT INTO outbox._streams AS s (stream, version) VALUES ($1, 0)"
	" ON CONFLICT (stream) DO UPDATE SET version = s.version RETURNING version",
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
static OutboxPlan plan_read_all = {
	"SELECT position, stream, version, type, data, metadata, event_id, created_at, xmark"
	" FROM outbox._events WHERE position > $1 ORDER BY position LIMIT $2",
	2, {INT8OID, INT4OID}
};
static OutboxPlan plan_delete_events = {
	"DELETE FROM outbox._events WHERE stream = $1",
	1, {TEXTOID}
};
static OutboxPlan plan_delete_head = {
	"DELETE FROM outbox._streams WHERE stream = $1",
	1, {TEXTOID}
};
static OutboxPlan plan_audit_delete = {
	"INSERT INTO outbox.stream_deletions"
	" (stream_sha256, events_deleted, deleted_by, deleted_at, reason)"
	" VALUES (encode(sha256(convert_to($1, 'UTF8')), 'hex'), $2, $3, now(), $4)",
	4, {TEXTOID, INT8OID, NAMEOID, TEXTOID}
};

/* columns of outbox._events, in table order */
#define ES_EVENT_COLS 9

/* true only while outbox.delete_stream deletes: the guard lets it through */
static bool es_deleting = false;

/* ---- parsing the events argument ---- */

static void
es_error_context(void *arg)
{
	int		   *index = (int *) arg;

	if (*index > 0)
		errcontext("in event %d of the append", *index);
}

static void
es_bad_event(const char *msg)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("%s", msg),
			 errhint("Each event is an object {\"type\": text, \"data\": any JSON, \"metadata\": object, \"id\": uuid}; only \"type\" is required.")));
}

static void
es_parse_event(JsonbContainer *obj, EventInput *ev)
{
	JsonbIterator *it = JsonbIteratorInit(obj);
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *key = NULL;

	memset(ev, 0, sizeof(*ev));
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
		{
			key = pnstrdup(v.val.string.val, v.val.string.len);
			continue;
		}
		if (tok != WJB_VALUE)
			continue;
		if (strcmp(key, "type") == 0)
		{
			if (v.type != jbvString || v.val.string.len == 0)
				es_bad_event("event \"type\" must be a non-empty string");
			outbox_check_name("event type", v.val.string.val, v.val.string.len);
			ev->type = pnstrdup(v.val.string.val, v.val.string.len);
		}
		else if (strcmp(key, "data") == 0)
		{
			ev->data = JsonbValueToJsonb(&v);
			outbox_check_payload_size("event data", ev->data);
		}
		else if (strcmp(key, "metadata") == 0)
		{
			if (v.type != jbvBinary || !JsonContainerIsObject(v.val.binary.data))
				es_bad_event("event \"metadata\" must be a JSON object");
			ev->metadata = JsonbValueToJsonb(&v);
			outbox_check_payload_size("event metadata", ev->metadata);
		}
		else if (strcmp(key, "id") == 0)
		{
			if (v.type != jbvString)
				es_bad_event("event \"id\" must be a UUID string");
			ev->id = DatumGetUUIDP(DirectFunctionCall1(uuid_in,
													   CStringGetDatum(pnstrdup(v.val.string.val, v.val.string.len))));
		}
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown event key \"%s\"", key),
					 errhint("Each event is an object {\"type\": text, \"data\": any JSON, \"metadata\": object, \"id\": uuid}; only \"type\" is required.")));
	}
	if (ev->type == NULL)
		es_bad_event("event has no \"type\"");
	if (ev->data == NULL)
		ev->data = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("null")));
	if (ev->metadata == NULL)
		ev->metadata = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
}

/*
 * Validate the whole events argument before anything is written: one object
 * or a non-empty array of objects.  Returns the number of events.
 */
static int
es_parse_events(Jsonb *events, EventInput **out, bool *all_have_ids)
{
	ErrorContextCallback errcb;
	int			index = 0;
	int			n;
	EventInput *evs;

	errcb.callback = es_error_context;
	errcb.arg = &index;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	if (JB_ROOT_IS_SCALAR(events) ||
		(JB_ROOT_IS_ARRAY(events) && JB_ROOT_COUNT(events) == 0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("events must be a JSON object or a non-empty array of objects")));

	n = JB_ROOT_IS_OBJECT(events) ? 1 : JB_ROOT_COUNT(events);
	if (n > OUTBOX_MAX_EVENTS_PER_APPEND)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("too many events in one append"),
				 errdetail("There are %d; the limit is %d.", n, OUTBOX_MAX_EVENTS_PER_APPEND),
				 errhint("Split the events over several appends in one transaction.")));

	evs = palloc(sizeof(EventInput) * n);
	*all_have_ids = true;
	for (index = 1; index <= n; index++)
	{
		JsonbContainer *obj = &events->root;

		if (JB_ROOT_IS_ARRAY(events))
		{
			JsonbValue *elem = getIthJsonbValueFromContainer(&events->root, index - 1);

			if (elem->type != jbvBinary || !JsonContainerIsObject(elem->val.binary.data))
				es_bad_event("each event must be a JSON object");
			obj = elem->val.binary.data;
		}
		es_parse_event(obj, &evs[index - 1]);
		*all_have_ids &= evs[index - 1].id != NULL;
	}

	error_context_stack = errcb.previous;
	*out = evs;
	return n;
}

/* A version-4 UUID for an event the caller gave no id. */
static pg_uuid_t *
es_random_uuid(void)
{
	pg_uuid_t  *id = palloc(sizeof(pg_uuid_t));

	if (!pg_strong_random(id->data, UUID_LEN))
		elog(ERROR, "could not generate a random event id");
	id->data[6] = (id->data[6] & 0x0f) | 0x40;	/* version 4 */
	id->data[8] = (id->data[8] & 0x3f) | 0x80;	/* RFC 4122 variant */
	return id;
}

/* ---- the stream head ---- */

/*
 * Version of a stream's head as seen by snap: 0 when it has no events.  A
 * direct probe of the primary key: stream_etag is on every optimistic
 * append's path, and SPI would cost it a whole executor start.
 */
static int64
es_head_version(const char *stream, Snapshot snap)
{
	Relation	rel = table_open(outbox_relid("_streams"), AccessShareLock);
	TupleTableSlot *slot = table_slot_create(rel, NULL);
	int64		version = 0;

	if (rows_fetch_by_key(rel, outbox_relid("_streams_pkey"), CStringGetTextDatum(stream),
						  F_TEXTEQ, snap, slot))
	{
		bool		isnull;

		version = DatumGetInt64(slot_getattr(slot, 2, &isnull));
	}
	ExecDropSingleTupleTableSlot(slot);
	table_close(rel, NoLock);
	return version;
}

/*
 * Check the expectation and reserve n versions, locking the stream head row
 * until the transaction ends (UPDATE's semantics, see rows.c).  Returns the
 * new head version, or -1 when the expectation does not hold; *current is
 * the version found.
 */
static int64
es_claim_versions(const char *stream, int n, Expectation expect, int64 expected,
				  int64 *current)
{
	Datum		key = CStringGetTextDatum(stream);
	Datum		args[2] = {key, Int64GetDatum(n)};

	for (int attempt = 0; attempt < 3; attempt++)
	{
		OutboxRows	heads;

		rows_open(&heads, outbox_relid("_streams"));
		if (rows_lock_by_key(&heads, outbox_relid("_streams_pkey"), key, F_TEXTEQ))
		{
			bool		isnull;
			int64		version = DatumGetInt64(slot_getattr(heads.slot, 2, &isnull));
			Datum		row[2] = {key, Int64GetDatum(version + n)};
			bool		nulls[2] = {false, false};

			*current = version;
			if ((expect == EXPECT_VERSION && version != expected) ||
				(expect == EXPECT_EXISTS && version == 0))
			{
				rows_close(&heads);
				return -1;
			}
			rows_update(&heads, row, nulls, 2);
			rows_close(&heads);
			return version + n;
		}
		rows_close(&heads);

		*current = 0;
		if (expect == EXPECT_EXISTS || (expect == EXPECT_VERSION && expected != 0))
			return -1;
		/* a new stream; if a concurrent append created it first, look again */
		if (outbox_spi_run(&plan_create_head, args, NULL, false, 0, SPI_OK_INSERT_RETURNING) == 1)
			return n;
	}
	ereport(ERROR,
			(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
			 errmsg("could not append to stream \"%s\" because of concurrent appends", stream),
			 errhint("Retry the transaction.")));
	return -1;					/* keep compiler quiet */
}

/*
 * Is this append a repeat of one that already succeeded?  All events carry
 * ids; if all of them are in this stream at consecutive versions in the
 * given order (starting at base + 1 when base >= 0), returns the version of
 * the last one, else -1.  Some but not all ids present is a caller error.
 */
static int64
es_replayed_version(const char *stream, EventInput *evs, int n, int64 base)
{
	Datum	   *ids = palloc(sizeof(Datum) * n);
	Datum		args[1];
	uint64		found;
	int64		first;

	for (int i = 0; i < n; i++)
		ids[i] = UUIDPGetDatum(evs[i].id);
	args[0] = PointerGetDatum(construct_array(ids, n, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
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
 * outbox.append(stream text, events jsonb, expected_etag text) returns text
 *
 * Runs in the caller's transaction; locks the stream head row until it ends.
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
	int64		current = 0;
	OutboxSpi	spi;

	n = es_parse_events(events, &evs, &all_have_ids);
	if (expected_etag && strcmp(expected_etag, "*") == 0)
		expect = EXPECT_EXISTS;
	else if (expected_etag)
	{
		expect = EXPECT_VERSION;
		expected = etag_version(stream, expected_etag);
	}

	outbox_spi_begin(&spi);

	/* without a version to check, a repeat is recognised by its ids alone */
	if (all_have_ids && expect != EXPECT_VERSION &&
		(head = es_replayed_version(stream, evs, n, -1)) >= 0)
	{
		outbox_spi_end(&spi);
		PG_RETURN_TEXT_P(etag_make(stream, head));
	}

	if (expected < 0)
		current = es_head_version(stream, GetLatestSnapshot());
	head = expected < 0 ? -1 : es_claim_versions(stream, n, expect, expected, &current);
	if (head < 0)
	{
		int64		replayed = -1;

		if (all_have_ids && expected >= 0)
			replayed = es_replayed_version(stream, evs, n, expected);
		if (replayed < 0)
			es_conflict(stream, expect, expected_etag, current);
		outbox_spi_end(&spi);
		PG_RETURN_TEXT_P(etag_make(stream, replayed));
	}

	/* gapless.c: the top-level xid must exist before positions are taken */
	(void) GetTopTransactionId();
	{
		Oid			seq = outbox_relid("_events_position_seq");
		int64	   *positions = palloc(sizeof(int64) * n);
		bool		nulls[ES_EVENT_COLS] = {0};
		Datum		row[ES_EVENT_COLS];
		OutboxRows	events;

		for (int i = 0; i < n; i++)
			positions[i] = nextval_internal(seq, false);
		row[1] = CStringGetTextDatum(stream);
		row[7] = TimestampTzGetDatum(GetCurrentTimestamp());
		row[8] = FullTransactionIdGetDatum(gapless_mark());

		rows_open(&events, outbox_relid("_events"));
		for (int i = 0; i < n; i++)
		{
			row[0] = Int64GetDatum(positions[i]);
			row[2] = Int64GetDatum(head - n + 1 + i);
			row[3] = CStringGetTextDatum(evs[i].type);
			row[4] = JsonbPGetDatum(evs[i].data);
			row[5] = JsonbPGetDatum(evs[i].metadata);
			row[6] = UUIDPGetDatum(evs[i].id ? evs[i].id : es_random_uuid());
			rows_insert(&events, row, nulls, ES_EVENT_COLS);
		}
		rows_close(&events);
	}

	outbox_spi_end(&spi);
	PG_RETURN_TEXT_P(etag_make(stream, head));
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
 * Locks the stream head row (creating an empty head if needed) until the
 * caller's transaction ends.
 */
Datum
outbox_lock_stream(PG_FUNCTION_ARGS)
{
	char	   *stream = outbox_arg_name(fcinfo, 0, "stream");
	OutboxSpi	spi;
	Datum		args[1] = {CStringGetTextDatum(stream)};
	int64		version;

	outbox_spi_begin(&spi);
	outbox_spi_run(&plan_lock_head, args, NULL, false, 0, SPI_OK_INSERT_RETURNING);
	version = outbox_spi_getint64(1, NULL);
	outbox_spi_end(&spi);
	PG_RETURN_TEXT_P(etag_make(stream, version));
}

/* outbox.read_stream(stream text, after_version bigint, max_count int) */
Datum
outbox_read_stream(PG_FUNCTION_ARGS)
{
	char	   *stream = outbox_arg_name(fcinfo, 0, "stream");
	Datum		args[3];
	OutboxSpi	spi;

	args[0] = CStringGetTextDatum(stream);
	args[1] = Int64GetDatum(outbox_arg_position(fcinfo, 1, "after_version"));
	args[2] = Int32GetDatum(outbox_arg_count(fcinfo, 2, "max_count"));
	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);

	outbox_spi_begin(&spi);
	outbox_spi_run(&plan_read_stream, args, NULL, true, 0, SPI_OK_SELECT);
	outbox_spi_emit(fcinfo, false);
	outbox_spi_end(&spi);
	return (Datum) 0;
}

/* outbox.read_all(after_position bigint, max_count int): see gapless.c */
Datum
outbox_read_all(PG_FUNCTION_ARGS)
{
	Datum		args[2];
	OutboxSpi	spi;

	args[0] = Int64GetDatum(outbox_arg_position(fcinfo, 0, "after_position"));
	args[1] = Int32GetDatum(outbox_arg_count(fcinfo, 1, "max_count"));
	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);

	outbox_spi_begin(&spi);
	outbox_spi_run(&plan_read_all, args, NULL, true, 0, SPI_OK_SELECT);
	outbox_spi_emit(fcinfo, true);
	outbox_spi_end(&spi);
	return (Datum) 0;
}

/*
 * outbox.delete_stream(stream text, reason text) returns bigint
 *
 * The one way to remove events: a whole stream, for a data-protection
 * request, recorded in outbox.stream_deletions.  EXECUTE is granted to
 * outbox_admin only.
 */
Datum
outbox_delete_stream(PG_FUNCTION_ARGS)
{
	char	   *stream = outbox_arg_name(fcinfo, 0, "stream");
	text	   *reason;
	OutboxSpi	spi;
	Datum		args[4];
	uint64		deleted;

	if (PG_ARGISNULL(1) || VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(1)) == 0)
		ereport(ERROR,
				(errcode(PG_ARGISNULL(1) ? ERRCODE_NULL_VALUE_NOT_ALLOWED : ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a reason is required to delete a stream"),
				 errhint("Name the request, e.g. a ticket number; it is kept in outbox.stream_deletions.")));
	reason = PG_GETARG_TEXT_PP(1);

	args[0] = CStringGetTextDatum(stream);
	args[2] = CStringGetDatum(GetUserNameFromId(GetUserId(), false));
	args[3] = PointerGetDatum(reason);

	outbox_spi_begin(&spi);
	es_deleting = true;
	PG_TRY();
	{
		deleted = outbox_spi_run(&plan_delete_events, args, NULL, false, 0, SPI_OK_DELETE);
	}
	PG_FINALLY();
	{
		es_deleting = false;
	}
	PG_END_TRY();
	outbox_spi_run(&plan_delete_head, args, NULL, false, 0, SPI_OK_DELETE);
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
