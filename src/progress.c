/*-------------------------------------------------------------------------
 * progress.c
 *		Saving the delivery core's progress: each endpoint's cursor and
 *		done_ahead (outbox._endpoints), its parked and dead deliveries
 *		(outbox._deliveries), and a pause a receiver asked for.  One short
 *		transaction for every endpoint that moved, grouped in time.
 *
 * The cursor advances to just below the first message still queued and
 * not parked; messages queued behind a parked key are parked first (next
 * attempt NULL: after their predecessor), so the cursor can pass them.  An
 * endpoint's row locked by an admin's transaction (FOR UPDATE SKIP LOCKED)
 * is saved next time, never waited for.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "delivery.h"
#include "endpoint.h"
#include "retention.h"
#include "spi.h"

/* SKIP LOCKED: an admin transaction holding the row must not stall delivery */
static OutboxPlan plan_save_cursor = {
	"UPDATE outbox._endpoints SET cursor_id = $2, done_ahead = $3,"
	" paused = paused OR $4"
	" WHERE id = (SELECT id FROM outbox._endpoints WHERE id = $1 FOR UPDATE SKIP LOCKED)",
	4, {INT4OID, INT8OID, INT8ARRAYOID, BOOLOID}
};
static OutboxPlan plan_save_deliveries = {
	"INSERT INTO outbox._deliveries AS d"
	" (endpoint_id, message_id, state, attempts, next_attempt_at, last_status, last_error, updated_at)"
	" SELECT $1, u.id, u.state, u.attempts, u.next_at, u.status, u.error, now()"
	" FROM unnest($2::int8[], $3::text[], $4::int4[], $5::timestamptz[], $6::int4[], $7::text[])"
	"   AS u(id, state, attempts, next_at, status, error)"
	" ON CONFLICT (endpoint_id, message_id) DO UPDATE SET state = excluded.state,"
	" attempts = excluded.attempts, next_attempt_at = excluded.next_attempt_at,"
	" last_status = excluded.last_status, last_error = excluded.last_error, updated_at = now()",
	7, {INT4OID, INT8ARRAYOID, TEXTARRAYOID, INT4ARRAYOID, TIMESTAMPTZARRAYOID, INT4ARRAYOID, TEXTARRAYOID}
};
/* planned at every run, like delivery.c's plan_bodies: the table may have grown since */
static OutboxPlan plan_forget_deliveries = {
	"DELETE FROM outbox._deliveries WHERE endpoint_id = $1 AND message_id = ANY ($2)",
	2, {INT4OID, INT8ARRAYOID}, .cursor_options = CURSOR_OPT_CUSTOM_PLAN
};

/*
 * Saves that only move cursors past messages of other topics are grouped:
 * at most one per PERSIST_EVERY_MS while requests are out (see
 * delivery_should_persist).
 */
#define PERSIST_EVERY_MS	20
static TimestampTz last_persist = 0;

static bool
queue_has_parked(Endpoint *ep)
{
	dlist_iter	it;

	dlist_foreach(it, &ep->queue)
		if (dlist_container(Pending, node, it.cur)->parked)
			return true;
	return false;
}

/*
 * A save that skipped an endpoint whose row another transaction holds
 * (FOR UPDATE SKIP LOCKED) is tried again later, and an idle relay wakes
 * for it: PERSIST_EVERY_MS, doubling to PERSIST_LOCKED_MAX_MS while the row
 * stays locked (an administrator's open BEGIN; pause_endpoint(...), say),
 * not a turn and a commit every 20 ms.  A change to the endpoint wakes the
 * relay at its commit anyway.
 */
#define PERSIST_LOCKED_MAX_MS	1000
static int	skipped_saves = 0;	/* saves in a row that skipped an endpoint */

/*
 * On an ordered endpoint, messages queued behind a parked message with the
 * same key are parked as well (next attempt NULL: after their predecessor),
 * so that the cursor can pass them.
 */
static void
endpoint_park_followers(Endpoint *ep)
{
	dlist_iter	it;
	KeySet		parked_keys;

	if (!ep->ordered)
		return;
	if (!queue_has_parked(ep))
		return;					/* the usual case: no set of the window's keys */
	keyset_init(&parked_keys, ep->queued);
	dlist_foreach(it, &ep->queue)
	{
		Pending    *p = dlist_container(Pending, node, it.cur);

		if (p->key == NULL)
			continue;
		if (p->parked)
			keyset_add(&parked_keys, p->key);
		else if (!p->in_flight && keyset_contains(&parked_keys, p->key))
		{
			p->parked = p->waiting_key = p->save = true;
			p->due = 0;
		}
	}
	keyset_free(&parked_keys);
}

/* Save the progress of every endpoint that moved, in one transaction. */
void
delivery_persist(void)
{
	ListCell   *lc;
	bool		began = false;
	List	   *skipped = NIL;	/* endpoints whose row was locked or gone */
	MemoryContext caller_cxt = CurrentMemoryContext;

	foreach(lc, delivery_endpoints)
	{
		Endpoint   *ep = lfirst(lc);
		dlist_iter	it;
		int64		cursor = ep->fetched;
		int64		saved_cursor;
		int			keep = 0;
		List	   *rows = NIL;
		Datum		args[7];

		if (ep->dropped)
		{
			ep->dirty = false;	/* nothing to save for an endpoint that is gone */
			ep->unsaved = 0;
			continue;
		}
		if (!ep->dirty)
			continue;
		endpoint_park_followers(ep);
		dlist_foreach(it, &ep->queue)
		{
			Pending    *p = dlist_container(Pending, node, it.cur);

			if (!p->parked && p->id - 1 < cursor)
				cursor = p->id - 1;
			if (p->save)
				rows = lappend(rows, p);
		}
		cursor = Max(cursor, ep->cursor);
		saved_cursor = ep->cursor;
		rows = list_concat(rows, ep->dead);
		if (cursor == ep->cursor && !ep->done_changed && rows == NIL &&
			ep->nforget == 0 && !ep->pause_now)
		{
			ep->dirty = false;	/* nothing moved */
			ep->unsaved = 0;
			continue;
		}
		for (int i = 0; i < ep->ndone; i++)
			if (ep->done[i] > cursor)
				ep->done[keep++] = ep->done[i];
		ep->ndone = keep;
		ep->cursor = cursor;

		if (!began)
			delivery_begin("outbox: saving delivery progress");
		began = true;

		args[0] = Int32GetDatum(ep->id);
		args[1] = Int64GetDatum(cursor);
		args[2] = PointerGetDatum(ids_array(ep->done, ep->ndone));
		args[3] = BoolGetDatum(ep->pause_now);
		if (outbox_spi_run(&plan_save_cursor, args, NULL, false, 0, SPI_OK_UPDATE) == 0)
		{
			/*
			 * The row is locked by a transaction that changes the endpoint,
			 * or gone: save next time (a reload will tell which).
			 */
			MemoryContext old = MemoryContextSwitchTo(caller_cxt);

			ep->cursor = saved_cursor;
			/* not in SPI's context: the list is read after the commit */
			skipped = lappend(skipped, ep);
			MemoryContextSwitchTo(old);
			continue;
		}

		if (rows != NIL)
		{
			int			n = list_length(rows);
			Datum	   *ids = palloc(sizeof(Datum) * n);
			Datum	   *states = palloc(sizeof(Datum) * n);
			Datum	   *attempts = palloc(sizeof(Datum) * n);
			Datum	   *next_at = palloc(sizeof(Datum) * n);
			bool	   *next_null = palloc(sizeof(bool) * n);
			Datum	   *status = palloc(sizeof(Datum) * n);
			Datum	   *errors = palloc(sizeof(Datum) * n);
			int			dims[1] = {n};
			int			lbs[1] = {1};
			int			i = 0;

			for (ListCell *rc = list_head(rows); rc; rc = lnext(rows, rc), i++)
			{
				Pending    *p = lfirst(rc);
				bool		dead = list_member_ptr(ep->dead, p);

				ids[i] = Int64GetDatum(p->id);
				states[i] = CStringGetTextDatum(dead ? "dead" : "retry");
				attempts[i] = Int32GetDatum(p->attempts);
				next_null[i] = dead || p->waiting_key;
				next_at[i] = TimestampTzGetDatum(p->due);
				status[i] = Int32GetDatum(p->last_status);
				errors[i] = CStringGetTextDatum(p->last_error ? p->last_error : "");
				p->save = false;
			}
			args[1] = PointerGetDatum(construct_array(ids, n, INT8OID, 8, true, TYPALIGN_DOUBLE));
			args[2] = PointerGetDatum(construct_array(states, n, TEXTOID, -1, false, TYPALIGN_INT));
			args[3] = PointerGetDatum(construct_array(attempts, n, INT4OID, 4, true, TYPALIGN_INT));
			args[4] = PointerGetDatum(construct_md_array(next_at, next_null, 1, dims, lbs,
														 TIMESTAMPTZOID, 8, true, TYPALIGN_DOUBLE));
			args[5] = PointerGetDatum(construct_array(status, n, INT4OID, 4, true, TYPALIGN_INT));
			args[6] = PointerGetDatum(construct_array(errors, n, TEXTOID, -1, false, TYPALIGN_INT));
			outbox_spi_run(&plan_save_deliveries, args, NULL, false, 0, SPI_OK_INSERT);
		}
		if (ep->nforget > 0)
		{
			args[1] = PointerGetDatum(ids_array(ep->forget, ep->nforget));
			outbox_spi_run(&plan_forget_deliveries, args, NULL, false, 0, SPI_OK_DELETE);
		}
	}
	if (!began)
		return;
	delivery_end();
	retention_soon();
	skipped_saves = skipped != NIL ? skipped_saves + 1 : 0;

	/* committed: drop what is now saved */
	foreach(lc, delivery_endpoints)
	{
		Endpoint   *ep = lfirst(lc);
		ListCell   *dc;

		if (!ep->dirty || list_member_ptr(skipped, ep))
			continue;
		foreach(dc, ep->dead)
			pending_release(lfirst(dc));
		list_free(ep->dead);
		ep->dead = NIL;
		ep->nforget = 0;
		ep->pause_now = false;
		ep->done_changed = false;
		ep->unsaved = 0;
		ep->dirty = false;
	}
	last_persist = GetCurrentTimestamp();
}

/*
 * Save progress now?  Saving is a commit (and a WAL flush).  Save as soon as
 * any request has finished: finished requests hold their endpoint's window
 * until saved, and one save takes every result of a turn, so saves group
 * themselves under load (one per turn, thousands of results on Kafka).
 * Saving when half a window was unsaved, or every PERSIST_EVERY_MS, held a
 * Kafka endpoint's window for 10-20 ms per round trip: 107,000 against
 * 136,000 msg/s.  Otherwise (cursors moved past other topics' messages),
 * save when nothing is in flight (about to sleep), or every
 * PERSIST_EVERY_MS.
 */
bool
delivery_should_persist(void)
{
	ListCell   *lc;
	bool		dirty = false;

	foreach(lc, delivery_endpoints)
	{
		Endpoint   *ep = lfirst(lc);

		if (!ep->dirty || ep->dropped)
			continue;
		dirty = true;
		if (ep->unsaved > 0)
			return true;
	}
	return dirty && (transport_in_flight() == 0 ||
					 TimestampDifferenceExceeds(last_persist, GetCurrentTimestamp(), PERSIST_EVERY_MS));
}

/* When the next grouped save is due. */
TimestampTz
delivery_persist_due(void)
{
	return TimestampTzPlusMilliseconds(last_persist,
									   Min((int64) PERSIST_EVERY_MS << Min(skipped_saves, 6),
										   PERSIST_LOCKED_MAX_MS));
}
