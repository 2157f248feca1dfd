/*-------------------------------------------------------------------------
 * publish.c
 *		The transactional outbox (outbox.publish, outbox.read_messages) and
 *		the idempotent-consumer inbox (outbox.consume_once).
 *
 * A message is one row in outbox._messages, written in the caller's
 * transaction: it exists exactly when the business write beside it commits.
 * Message ids form a gap-free log read like the event log (see gapless.c).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/sequence.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/xid8.h"

#include "outbox.h"
#include "catalog.h"
#include "gapless.h"
#include "rows.h"
#include "shmem.h"
#include "spi.h"
#include "validate.h"

PG_FUNCTION_INFO_V1(outbox_publish);
PG_FUNCTION_INFO_V1(outbox_read_messages);
PG_FUNCTION_INFO_V1(outbox_consume_once);

/* columns of outbox._messages, in table order */
#define PUB_MESSAGE_COLS 7

static OutboxPlan plan_read_messages = {
	"SELECT id, topic, key, payload, headers, created_at, xmark"
	" FROM outbox._messages WHERE id > $1 ORDER BY id LIMIT $2",
	2, {INT8OID, INT4OID}
};
static OutboxPlan plan_consumer_owner = {
	"SELECT owner FROM outbox._consumers WHERE consumer = $1",
	1, {TEXTOID}
};
static OutboxPlan plan_claim_consumer = {
	"INSERT INTO outbox._consumers (consumer, owner) VALUES ($1, $2) ON CONFLICT DO NOTHING",
	2, {TEXTOID, NAMEOID}
};
static OutboxPlan plan_consume = {
	"INSERT INTO outbox._inbox (consumer, message_id, consumed_at)"
	" VALUES ($1, $2, now()) ON CONFLICT DO NOTHING",
	2, {TEXTOID, TEXTOID}
};

/*
 * outbox.publish(topic text, payload jsonb, key text, headers jsonb)
 * returns bigint
 *
 * Writes in the caller's transaction.
 */
Datum
outbox_publish(PG_FUNCTION_ARGS)
{
	char	   *topic = outbox_arg_name(fcinfo, 0, "topic");
	Jsonb	   *payload = outbox_arg_jsonb(fcinfo, 1, "payload");
	Jsonb	   *headers = outbox_arg_jsonb(fcinfo, 3, "headers");
	Datum		row[PUB_MESSAGE_COLS];
	bool		nulls[PUB_MESSAGE_COLS] = {0};
	OutboxRows	messages;
	int64		id;

	outbox_check_writable("outbox.publish()");
	outbox_check_header_value("topic", topic, strlen(topic));
	if (strchr(topic, '*') != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("topic \"%s\" must not contain \"*\"", topic),
				 errdetail("\"*\" is the wildcard of endpoint topic patterns.")));
	if (!PG_ARGISNULL(2))
	{
		text	   *key = PG_GETARG_TEXT_PP(2);

		outbox_check_name("key", VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key));
		outbox_check_header_value("key", VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key));
		row[2] = PointerGetDatum(key);
	}
	else
		nulls[2] = true;
	outbox_check_message_size(payload, headers);
	outbox_check_headers("headers", headers, true);

	/* gapless.c: the top-level xid must exist before the id is taken */
	gapless_take_xid();
	id = nextval_internal(outbox_relid("_messages_id_seq"), false);
	row[0] = Int64GetDatum(id);
	row[1] = CStringGetTextDatum(topic);
	row[3] = JsonbPGetDatum(payload);
	row[4] = JsonbPGetDatum(headers);
	row[5] = TimestampTzGetDatum(GetCurrentTimestamp());
	row[6] = FullTransactionIdGetDatum(gapless_mark());
	rows_open(&messages, outbox_relid("_messages"));
	rows_insert(&messages, row, nulls, PUB_MESSAGE_COLS);
	rows_close(&messages);
	shmem_wake_relay_at_commit();
	PG_RETURN_INT64(id);
}

/* outbox.read_messages(after_id bigint, max_count int): gap-free, see gapless.c */
Datum
outbox_read_messages(PG_FUNCTION_ARGS)
{
	Datum		args[2];

	args[0] = Int64GetDatum(outbox_arg_position(fcinfo, 0, "after_id"));
	args[1] = Int32GetDatum(outbox_arg_count(fcinfo, 1, "max_count"));
	return outbox_spi_read(fcinfo, &plan_read_messages, args, true);
}

/*
 * May the calling role record ids for this consumer?  A consumer name
 * belongs to the first role that uses it (claimed here, in the caller's
 * transaction) and is shared with the roles that have its privileges:
 * otherwise any writer could make another application skip a message by
 * marking it seen first.  A name whose role was dropped is left to
 * superusers.  Runs inside the caller's SPI section.
 */
static void
consumer_check_owner(Datum consumer, Oid caller)
{
	char	   *owner;
	Oid			owner_oid;

	/* the latest snapshot: a claim committed meanwhile counts, whatever the isolation */
	if (outbox_spi_run_latest(&plan_consumer_owner, &consumer, NULL, SPI_OK_SELECT) == 0)
	{
		NameData	me;
		Datum		args[2];

		namestrcpy(&me, GetUserNameFromId(caller, false));
		args[0] = consumer;
		args[1] = NameGetDatum(&me);
		if (outbox_spi_run(&plan_claim_consumer, args, NULL, false, 0, SPI_OK_INSERT) == 1)
			return;
		/* a concurrent claim made us wait, and committed: look again */
		if (outbox_spi_run_latest(&plan_consumer_owner, &consumer, NULL, SPI_OK_SELECT) == 0)
			elog(ERROR, "consumer claimed concurrently, but not found");
	}
	owner = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	owner_oid = get_role_oid(owner, true);
	if (OidIsValid(owner_oid) ? has_privs_of_role(caller, owner_oid) : superuser_arg(caller))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("consumer \"%s\" belongs to role \"%s\"", TextDatumGetCString(consumer), owner),
			 errdetail("A consumer name belongs to the role that first used it, and to the roles that have its privileges."),
			 errhint("Use a consumer name of your own.")));
}

/*
 * outbox.consume_once(consumer text, message_id text) returns boolean
 *
 * Records the id in the caller's transaction.  A concurrent call with the
 * same id waits for this transaction: if it commits, the other gets false.
 */
Datum
outbox_consume_once(PG_FUNCTION_ARGS)
{
	char	   *consumer = outbox_arg_name(fcinfo, 0, "consumer");
	char	   *message_id = outbox_arg_name(fcinfo, 1, "message_id");
	Datum		args[2] = {CStringGetTextDatum(consumer), CStringGetTextDatum(message_id)};
	Oid			caller = GetUserId();
	OutboxSpi	spi = OUTBOX_SPI_INIT;
	bool		first;

	outbox_check_writable("outbox.consume_once()");
	outbox_spi_begin(&spi);
	consumer_check_owner(args[0], caller);
	first = outbox_spi_run(&plan_consume, args, NULL, false, 0, SPI_OK_INSERT) == 1;
	outbox_spi_end(&spi);
	PG_RETURN_BOOL(first);
}
