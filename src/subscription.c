/*-------------------------------------------------------------------------
 * subscription.c
 *		Named pull consumers: outbox.poll and outbox.ack, and the topic
 *		patterns they share with endpoints.
 *
 * A subscription is a row of outbox._subscriptions: its topic patterns and
 * acked_id, the id up to which its consumer has acknowledged the log.  poll
 * reads the matching messages after acked_id with read_messages' gap-free
 * cut (gapless.c, spi.c) and moves nothing, so the same messages come back
 * until acknowledged (at-least-once).  Retention (retention.c) keeps every
 * matching message above acked_id.
 *
 * ack(id) may move acked_id only over a prefix of the log that can no
 * longer change: there must be a visible message at or after id that the
 * gap-free reader would pass (gapless_holds_back: then no message at or
 * below id can still commit, gapless.c points 4 and 5).  Otherwise id is beyond anything poll
 * could have returned: 22023.  The subscription's row is locked first, so
 * two consumers acknowledging at once serialise, and the later one only
 * ever moves acked_id forward.
 *
 * A subscription created with a consumer role belongs to it: poll and ack
 * require that role's privileges (42501), so that no other team's reader
 * can acknowledge, and retention then delete, messages it never saw.  The
 * role is stored by name, as outbox._consumers does, so that a dump
 * restores it; once it is dropped only superusers may use the
 * subscription.  Without one, a subscription is shared by every
 * outbox_reader, like read_messages.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "funcapi.h"
#include "access/transam.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/xid8.h"

#include "outbox.h"
#include "gapless.h"
#include "spi.h"
#include "subscription.h"
#include "validate.h"

PG_FUNCTION_INFO_V1(outbox_poll);
PG_FUNCTION_INFO_V1(outbox_ack);
PG_FUNCTION_INFO_V1(outbox_topic_matches_sql);

static OutboxPlan plan_subscription = {
	"SELECT acked_id, topics, consumer FROM outbox._subscriptions WHERE name = $1",
	1, {TEXTOID}
};
static OutboxPlan plan_poll = {
	"SELECT id, topic, key, payload, headers, created_at, xmark FROM outbox._messages"
	" WHERE id > $1 AND outbox._topic_matches(topic, $2) ORDER BY id LIMIT $3",
	3, {INT8OID, TEXTARRAYOID, INT4OID}
};
static OutboxPlan plan_lock_subscription = {
	"SELECT acked_id, consumer FROM outbox._subscriptions WHERE name = $1 FOR UPDATE",
	1, {TEXTOID}
};
/*
 * A message at or after $1 that no running transaction can precede: xmark
 * at or below the horizon $2, or beyond the next xid $3 (restored from
 * another cluster, gapless.c point 5; checked again after reading it).
 */
static OutboxPlan plan_settled = {
	"SELECT xmark FROM outbox._messages WHERE id >= $1 AND (xmark <= $2 OR xmark > $3)"
	" ORDER BY id LIMIT 1",
	3, {INT8OID, XID8OID, XID8OID}
};
static OutboxPlan plan_ack = {
	"UPDATE outbox._subscriptions SET acked_id = $2, acked_at = now() WHERE name = $1",
	2, {TEXTOID, INT8OID}
};

/*
 * Does a topic match a pattern?  A pattern is an exact topic, "*", or a
 * prefix ending in "*" (outbox._check_topics validates them).  The one
 * definition, for endpoints (delivery.c) and subscriptions.
 */
bool
outbox_topic_matches(const char *pattern, const char *topic)
{
	size_t		len = strlen(pattern);

	if (len > 0 && pattern[len - 1] == '*')
		return strncmp(topic, pattern, len - 1) == 0;
	return strcmp(topic, pattern) == 0;
}

/* outbox._topic_matches(topic text, patterns text[]) returns boolean, strict */
Datum
outbox_topic_matches_sql(PG_FUNCTION_ARGS)
{
	char	   *topic = text_to_cstring(PG_GETARG_TEXT_PP(0));
	ArrayType  *patterns = PG_GETARG_ARRAYTYPE_P(1);
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	deconstruct_array(patterns, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
		if (!nulls[i] && outbox_topic_matches(TextDatumGetCString(elems[i]), topic))
			PG_RETURN_BOOL(true);
	PG_RETURN_BOOL(false);
}

static void
subscription_missing(const char *name)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("subscription \"%s\" does not exist", name)));
}

/*
 * May the caller poll and ack the subscription whose row SPI has just read
 * (its consumer in column col)?  Yes if it has no consumer role, or the
 * caller has that role's privileges; a dropped role, superusers only.  The
 * caller is taken before outbox_spi_begin, which becomes the owner.
 */
static void
subscription_check_consumer(const char *name, int col, Oid caller)
{
	bool		isnull;
	Datum		consumer = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, col,
										 &isnull);
	Oid			role;

	if (isnull)
		return;
	role = get_role_oid(NameStr(*DatumGetName(consumer)), true);
	if (!(OidIsValid(role) ? has_privs_of_role(caller, role) : superuser_arg(caller)))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("subscription \"%s\" belongs to role \"%s\"", name,
						NameStr(*DatumGetName(consumer))),
				 errdetail("Only roles with the privileges of a subscription's consumer role may poll and acknowledge it."),
				 errhint("Create a subscription of your own, or ask for membership in that role.")));
}

/*
 * outbox.poll(subscription text, max_count int) returns setof outbox.messages
 *
 * Read-only, in the caller's snapshot.
 */
Datum
outbox_poll(PG_FUNCTION_ARGS)
{
	char	   *name = outbox_arg_name(fcinfo, 0, "subscription");
	int32		max_count = outbox_arg_count(fcinfo, 1, "max_count");
	Oid			caller = GetUserId();
	OutboxSpi	spi = OUTBOX_SPI_INIT;
	Datum		args[3];
	bool		isnull;

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	outbox_spi_begin(&spi);
	args[0] = CStringGetTextDatum(name);
	if (outbox_spi_run(&plan_subscription, args, NULL, true, 1, SPI_OK_SELECT) == 0)
		subscription_missing(name);
	subscription_check_consumer(name, 3, caller);
	args[0] = Int64GetDatum(outbox_spi_getint64(1, NULL));
	args[1] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	args[2] = Int32GetDatum(max_count);
	outbox_spi_run(&plan_poll, args, NULL, true, 0, SPI_OK_SELECT);
	outbox_spi_emit(fcinfo, true);
	outbox_spi_end(&spi);
	return (Datum) 0;
}

/*
 * outbox.ack(subscription text, message_id bigint) returns void
 *
 * Writes in the caller's transaction; locks the subscription's row until
 * it ends.
 */
Datum
outbox_ack(PG_FUNCTION_ARGS)
{
	char	   *name = outbox_arg_name(fcinfo, 0, "subscription");
	int64		id = outbox_arg_position(fcinfo, 1, "message_id");
	Oid			caller = GetUserId();
	FullTransactionId horizon;
	OutboxSpi	spi = OUTBOX_SPI_INIT;
	Datum		args[2];

	outbox_check_writable("outbox.ack()");
	/* any snapshot's horizon stays a lower bound of the xids that may commit */
	horizon = gapless_horizon();
	outbox_spi_begin(&spi);
	args[0] = CStringGetTextDatum(name);
	/*
	 * Check before locking: a caller refused would otherwise hold the row
	 * lock until its (aborted) transaction ends, and block the consumer's
	 * acks.  Again after: the row may have been dropped and created anew.
	 */
	if (outbox_spi_run(&plan_subscription, args, NULL, false, 1, SPI_OK_SELECT) == 0)
		subscription_missing(name);
	subscription_check_consumer(name, 3, caller);
	if (outbox_spi_run(&plan_lock_subscription, args, NULL, false, 1, SPI_OK_SELECT) == 0)
		subscription_missing(name);
	subscription_check_consumer(name, 2, caller);
	if (id > outbox_spi_getint64(1, NULL))
	{
		Datum		check[3];
		bool		settled = false;
		bool		isnull;

		check[0] = Int64GetDatum(id);
		check[1] = FullTransactionIdGetDatum(horizon);
		check[2] = FullTransactionIdGetDatum(ReadNextFullTransactionId());
		if (outbox_spi_run(&plan_settled, check, NULL, false, 1, SPI_OK_SELECT) == 1)
		{
			Datum		xmark = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
											  &isnull);

			settled = !gapless_holds_back(DatumGetFullTransactionId(xmark), horizon);
		}
		if (!settled)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("message id " INT64_FORMAT " is beyond what subscription \"%s\" can have polled", id, name),
					 errdetail("Messages up to that id may still be committed, or it was never published."),
					 errhint("Acknowledge the id of the last message outbox.poll() returned.")));
		args[1] = Int64GetDatum(id);
		outbox_spi_run(&plan_ack, args, NULL, false, 0, SPI_OK_UPDATE);
	}
	/* backwards (or repeated): everything up to id is already acknowledged */
	outbox_spi_end(&spi);
	PG_RETURN_VOID();
}
