/*-------------------------------------------------------------------------
 * retention.c
 *		Deleting consumed messages after outbox.retention, and inbox rows
 *		after outbox.inbox_retention, in the relay.
 *
 * A message older than outbox.retention goes once nothing still needs it:
 *   - every endpoint's cursor has passed it (a paused endpoint's cursor
 *     stays where it is, so its messages stay too);
 *   - no endpoint has a retry or a dead letter for it in outbox._deliveries;
 *   - no subscription whose topics match it has an acked_id below its id.
 * outbox.read_messages is a cursor the database does not know about: it is
 * not protected.
 *
 * Passes run on timers in the relay's loop, one per table (one short
 * transaction each, never across HTTP), so they run in a database without
 * endpoints too, and no wake-up can be lost: after each pass the table's
 * next is planned for when its oldest message (or inbox row) becomes old
 * enough; if the oldest is old enough already but something still needs
 * it, RECHECK later (whoever holds it - an ack, a dead letter's redelivery,
 * a paused endpoint - does not tell the relay); if the table is empty, one
 * retention period from now, since nothing published later can expire
 * sooner.  Saving endpoint
 * progress brings the next pass forward (retention_soon) only while old
 * enough rows wait for a consumer: until the oldest row is old enough, a
 * pass could delete nothing, yet it would walk the whole log to learn
 * that (2.7 % of the relay's time delivering 200,000 msg/s).  An idle relay
 * thus wakes at most once per retention period, or per RECHECK while old
 * messages wait for a consumer.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "backoff.h"
#include "outbox.h"
#include "catalog.h"
#include "relay.h"
#include "retention.h"
#include "spi.h"

/* Messages older than $1 seconds that nothing needs any more (see above). */
static OutboxPlan plan_expire = {
	"DELETE FROM outbox._messages WHERE id IN ("
	"  SELECT m.id FROM outbox._messages m"
	"   WHERE m.id <= coalesce((SELECT min(cursor_id) FROM outbox._endpoints), m.id)"
	"     AND m.created_at < now() - make_interval(secs => $1)"
	"     AND NOT EXISTS (SELECT FROM outbox._deliveries d WHERE d.message_id = m.id)"
	"     AND NOT EXISTS (SELECT FROM outbox._subscriptions s"
	"                      WHERE s.acked_id < m.id AND outbox._topic_matches(m.topic, s.topics))"
	"   ORDER BY m.id LIMIT $2)",
	2, {FLOAT8OID, INT4OID}
};
static OutboxPlan plan_expire_inbox = {
	"DELETE FROM outbox._inbox WHERE ctid = ANY (ARRAY("
	"  SELECT ctid FROM outbox._inbox"
	"   WHERE consumed_at < now() - make_interval(secs => $1) LIMIT $2))",
	2, {FLOAT8OID, INT4OID}
};
/* the oldest message (created_at follows ids closely) and inbox row */
static OutboxPlan plan_oldest = {
	"SELECT (SELECT created_at FROM outbox._messages ORDER BY id LIMIT 1),"
	" (SELECT min(consumed_at) FROM outbox._inbox)",
	0, {0}
};

/*
 * Retention deletes in small batches with short pauses between them: each
 * pass runs in the relay's own loop, so a long one would hold deliveries
 * up (10,000-row passes put 240 ms into the p99 latency).  1,000 rows every
 * 10 ms still deletes about 100,000 messages a second.
 */
#define EXPIRE_BATCH		1000
#define EXPIRE_PAUSE_MS		10
#define EXPIRE_AFTER_WORK_MS 5000
/* Old messages still needed: look again after the retention period, within these bounds. */
#define RECHECK_MIN_MS		1000
#define RECHECK_MAX_MS		60000
/*
 * A pass that is not a full batch yet takes this long has walked rows it
 * could not delete (messages a lagging subscription or endpoint still
 * needs: 200,000 take about 200 ms).  Such passes back off, 2 s doubling to
 * COSTLY_MAX_MS, whatever else wakes retention, so a backlog costs the
 * relay's loop at most one walk every 10 s.
 */
#define EXPIRE_SLOW_MS		20
#define COSTLY_MAX_MS		10000

/*
 * Each table has its own timer: a short outbox.inbox_retention must not
 * make the messages' pass (a walk of the log) as frequent.  0: at once (the
 * relay just started, or the settings changed).
 */
static TimestampTz messages_at = 0;
static TimestampTz inbox_at = 0;
static bool messages_held = false;	/* the last pass found old enough messages still needed */

static int	costly_passes = 0;	/* slow passes in a row */
static TimestampTz backoff_until = 0;	/* after one: no pass before */

/*
 * Progress was saved: cursors moved, so messages that are old enough but
 * were still needed may be free now.  (Until the oldest message is old
 * enough, a pass could delete nothing.)
 */
void
retention_soon(void)
{
	if (!messages_held)
		return;
	messages_at = Min(messages_at,
					  Max(backoff_until,
						  TimestampTzPlusMilliseconds(GetCurrentTimestamp(), EXPIRE_AFTER_WORK_MS)));
}

/* outbox.retention may have changed: plan the next pass from scratch. */
void
retention_changed(void)
{
	messages_at = 0;
	inbox_at = 0;
	costly_passes = 0;
	backoff_until = 0;
	messages_held = false;
}

/*
 * When the oldest row with a created_at (or consumed_at) of oldest, kept
 * for keep_s seconds, calls for the next pass of its table; oldest_null: no
 * such row.  *held: that row is old enough already, yet still needed.
 */
static TimestampTz
retention_due(Datum oldest, bool oldest_null, int keep_s, TimestampTz now, bool *held)
{
	int64		keep_ms = (int64) keep_s * 1000;
	TimestampTz due = TimestampTzPlusMilliseconds(now, keep_ms);

	*held = false;
	if (!oldest_null)
		due = TimestampTzPlusMilliseconds(DatumGetTimestampTz(oldest), keep_ms);
	if (due <= now)
	{
		*held = true;
		due = TimestampTzPlusMilliseconds(now, Min(Max(keep_ms, RECHECK_MIN_MS), RECHECK_MAX_MS));
	}
	return Max(due, TimestampTzPlusMilliseconds(now, RECHECK_MIN_MS));
}

/* The next pass, of either table. */
static TimestampTz
retention_next(void)
{
	return outbox_inbox_retention_s > 0 ? Min(messages_at, inbox_at) : messages_at;
}

/*
 * When due, delete a batch of expired messages and one of expired inbox
 * rows, then plan the next pass (see the header).  Returns ms until the
 * next pass.  One short transaction when due.
 */
long
retention_expire(void)
{
	TimestampTz now = GetCurrentTimestamp();
	OutboxSpi	spi = OUTBOX_SPI_INIT;
	Datum		args[2];
	bool		messages_due = now >= messages_at;
	bool		inbox_due = outbox_inbox_retention_s > 0 && now >= inbox_at;

	if (!messages_due && !inbox_due)
		return ms_until(retention_next(), now);

	relay_xact_begin("outbox: deleting expired messages");
	if (!OidIsValid(get_relname_relid("_subscriptions", outbox_schema_oid())))
	{
		/* a database still at 0.1.0 has no subscriptions to honour: wait for its update */
		messages_at = inbox_at = TimestampTzPlusMilliseconds(now, RECHECK_MAX_MS);
	}
	else
	{
		bool		message_full = false;
		bool		inbox_full = false;
		bool		null1,
					null2,
					inbox_held;
		Datum		oldest_message,
					oldest_inbox;

		outbox_spi_begin(&spi);
		args[1] = Int32GetDatum(EXPIRE_BATCH);
		if (messages_due)
		{
			args[0] = Float8GetDatum((double) outbox_retention_s);
			message_full = outbox_spi_run(&plan_expire, args, NULL, false, 0,
										  SPI_OK_DELETE) == EXPIRE_BATCH;
			if (!message_full && TimestampDifferenceExceeds(now, GetCurrentTimestamp(), EXPIRE_SLOW_MS))
				costly_passes++;
			else
				costly_passes = 0;
		}
		if (inbox_due)
		{
			args[0] = Float8GetDatum((double) outbox_inbox_retention_s);
			inbox_full = outbox_spi_run(&plan_expire_inbox, args, NULL, false, 0,
										SPI_OK_DELETE) == EXPIRE_BATCH;
		}
		/* not read-only: a new snapshot, which sees this pass's deletions */
		outbox_spi_run(&plan_oldest, NULL, NULL, false, 1, SPI_OK_SELECT);
		oldest_message = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &null1);
		oldest_inbox = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &null2);
		if (messages_due)
		{
			messages_at = retention_due(oldest_message, null1, outbox_retention_s, now,
										&messages_held);
			if (message_full)
				messages_at = TimestampTzPlusMilliseconds(now, EXPIRE_PAUSE_MS);
			backoff_until = 0;
			if (costly_passes > 0)
			{
				backoff_until = TimestampTzPlusMilliseconds(now, Min((int64) RECHECK_MIN_MS << Min(costly_passes, 8),
																	 COSTLY_MAX_MS));
				messages_at = Max(messages_at, backoff_until);
			}
		}
		if (inbox_due)
		{
			inbox_at = retention_due(oldest_inbox, null2, outbox_inbox_retention_s, now,
									 &inbox_held);
			if (inbox_full)
				inbox_at = TimestampTzPlusMilliseconds(now, EXPIRE_PAUSE_MS);
		}
		outbox_spi_end(&spi);
	}
	relay_xact_end();
	return Max(0, ms_until(retention_next(), now));
}
