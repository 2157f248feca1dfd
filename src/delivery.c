/*-------------------------------------------------------------------------
 * delivery.c
 *		The relay's delivery state machine, per endpoint, whatever the
 *		transport: reading the log into queues, per-key order, sending,
 *		retries and backoff, the circuit breaker, the rate limit, and when
 *		the relay must wake next.  Loading endpoints is endpoint.c's job,
 *		saving progress progress.c's, publishing figures report.c's.
 *
 * Progress is a cursor over the gap-free message log (see gapless.c):
 * every message with id <= cursor is delivered, dead, parked in
 * outbox._deliveries, or does not match the endpoint's topics; done_ahead
 * lists the ids beyond the cursor already delivered.  A successful delivery
 * therefore writes nothing per message: the cursor and done_ahead are saved
 * in one short transaction per loop, after the acknowledgement (at-least-
 * once: a crash repeats at most the requests in flight and those finished
 * but not saved, max_in_flight in all).
 *
 * In memory, each endpoint keeps a queue, in id order, of the messages it
 * fetched and has not finished.  A message is sent when
 *   - it is due (retries wait out their backoff, and any Retry-After),
 *   - on an ordered endpoint, no earlier unfinished message has its key; a
 *     pipelined transport (Kafka: it keeps a key's records in order while
 *     several are in flight) only needs every earlier one to be in flight,
 *   - the endpoint is not paused, its circuit is not open (half-open: one
 *     probe), it has fewer than max_in_flight requests out or finished and
 *     unsaved, and its token bucket (rate_limit_per_sec) has a token per
 *     message.
 * A retryable failure parks the message in outbox._deliveries with the next
 * attempt after a full-jitter backoff (backoff.h), or after Retry-After if
 * that is later; a permanent one, and the last attempt, dead-letter it.
 * Messages queued behind a parked key are parked as well (progress.c), so
 * the cursor never waits for a retry.  A request the transport withdrew
 * before it left (TRANSPORT_NOT_SENT) goes back to the queue as it was.
 *
 * Circuit breaker: after BREAKER_THRESHOLD consecutive failed requests the
 * endpoint opens for a cool-down (BREAKER_BASE_MS doubling to
 * BREAKER_MAX_MS), then lets a single probe through (half-open) and closes
 * on its success.
 *
 * Memory is bounded whatever the payloads (the queue holds ids, topics and
 * keys; WINDOW_MAX in endpoint.h): payloads are read in chunks of
 * SEND_READ_MAX messages, as stored, and the transport detoasts them one at
 * a time.
 *
 * Nothing here holds a transaction across network I/O: delivery_fetch runs
 * one short transaction; delivery_send runs one to read the payloads of the
 * requests it starts, committed before their I/O begins (in the relay's
 * wait); delivery_complete runs outside any.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/xid8.h"

#include "backoff.h"
#include "delivery.h"
#include "endpoint.h"
#include "gapless.h"
#include "relay.h"
#include "shmem.h"
#include "spi.h"
#include "subscription.h"

/*
 * Messages read per endpoint per fetch: what its window has room for, at
 * least FETCH_MIN (rows of other topics only move its cursor), at most
 * FETCH_BATCH.  Reading more than fits would read the rest again next time.
 * One fetch per turn of the relay's loop: FETCH_BATCH is also the most a
 * turn can take in, so it matches the largest window (Kafka's 2,048).
 */
#define FETCH_MIN			64
#define FETCH_BATCH			2048
#define SEND_READ_MAX		1000	/* payloads read per query while sending */
#define BREAKER_THRESHOLD	5		/* consecutive failed requests that open it */
#define BREAKER_BASE_MS		1000	/* first cool-down, doubling per trip ... */
#define BREAKER_MAX_MS		60000	/* ... up to this */

/*
 * While a running transaction holds the log back, re-read after 5 ms,
 * doubling to 100 ms: a transaction that publishes wakes us when it commits,
 * but one that holds an xid without publishing (autoanalyze, say) does not.
 */
#define HORIZON_RETRY_MIN_MS	5
#define HORIZON_RETRY_MAX_MS	100

/* no payload, no headers: rows that match no endpoint are never detoasted */
static OutboxPlan plan_fetch = {
	"SELECT id, topic, key, created_at, xmark"
	" FROM outbox._messages WHERE id > $1 ORDER BY id LIMIT $2",
	2, {INT8OID, INT4OID}
};

/*
 * the jsonb as stored (TOAST pointers): the transport detoasts one at a time.
 * Planned at every run (spi.c): a generic plan kept from when the log was
 * small scanned all of it for every chunk once it was large (2,600 msg/s).
 */
static OutboxPlan plan_bodies = {
	"SELECT id, payload, headers FROM outbox._messages WHERE id = ANY ($1) ORDER BY id",
	1, {INT8ARRAYOID}, .cursor_options = CURSOR_OPT_CUSTOM_PLAN
};

/*
 * The same for ids that are (nearly) consecutive, the usual case: one
 * descent of the index and a walk in order, rather than one descent per id
 * (a third of the relay's time at 100,000 msg/s); rows between them that
 * are not wanted are skipped, at most as many as are wanted (BODIES_RANGE).
 * The ORDER BY and LIMIT keep the generic plan an index range scan.
 */
static OutboxPlan plan_bodies_range = {
	"SELECT id, payload, headers FROM outbox._messages WHERE id >= $1 AND id <= $2"
	" ORDER BY id LIMIT $3",
	3, {INT8OID, INT8OID, INT8OID}
};
#define BODIES_RANGE		2	/* rows read per message wanted, at most */

/* One request in flight: the endpoint and its messages (the transport's owner). */
typedef struct Request
{
	Endpoint   *ep;
	int			n;
	Pending    *items[FLEXIBLE_ARRAY_MEMBER];
} Request;

/* ---- transactions ---- */

static OutboxSpi xact_spi;

/* Start a short transaction; delivery_end commits it and returns to the caller's context. */
void
delivery_begin(const char *activity)
{
	relay_xact_begin(activity);
	xact_spi = (OutboxSpi) OUTBOX_SPI_INIT;
	outbox_spi_begin(&xact_spi);
}

void
delivery_end(void)
{
	outbox_spi_end(&xact_spi);
	relay_xact_end();
}

/* ---- small growable arrays of ids ---- */

ArrayType *
ids_array(const int64 *ids, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		d[i] = Int64GetDatum(ids[i]);
	return construct_array(d, n, INT8OID, 8, true, TYPALIGN_DOUBLE);
}

void
ids_add(int64 **ids, int *n, int *max, int64 id)
{
	if (*n == *max)
	{
		*max = Max(16, *max * 2);
		*ids = *ids ? repalloc(*ids, sizeof(int64) * *max) : palloc(sizeof(int64) * *max);
	}
	(*ids)[(*n)++] = id;
}

bool
ids_contains(const int64 *ids, int n, int64 id)
{
	for (int i = 0; i < n; i++)
		if (ids[i] == id)
			return true;
	return false;
}

/* ---- sets of keys (a pass over a queue: thousands of messages, as many keys) ---- */

void
keyset_init(KeySet *s, int expected)
{
	int			size = 16;

	while (size < 2 * expected)
		size *= 2;
	s->mask = size - 1;
	s->keys = palloc0(sizeof(char *) * size);
}

/* Add key (which must outlive the set); false if it was there already. */
bool
keyset_add(KeySet *s, const char *key)
{
	uint32		i = hash_bytes((const unsigned char *) key, strlen(key)) & s->mask;

	for (; s->keys[i] != NULL; i = (i + 1) & s->mask)
		if (strcmp(s->keys[i], key) == 0)
			return false;
	s->keys[i] = key;
	return true;
}

bool
keyset_contains(const KeySet *s, const char *key)
{
	uint32		i = hash_bytes((const unsigned char *) key, strlen(key)) & s->mask;

	for (; s->keys[i] != NULL; i = (i + 1) & s->mask)
		if (strcmp(s->keys[i], key) == 0)
			return true;
	return false;
}

void
keyset_free(KeySet *s)
{
	pfree(s->keys);
}

/* ---- the queue ---- */

Pending *
pending_new(Endpoint *ep, int64 id, const char *topic, const char *key, TimestampTz created_at)
{
	Pending    *p = MemoryContextAllocZero(ep->cxt, sizeof(Pending));

	p->id = id;
	p->topic = MemoryContextStrdup(ep->cxt, topic);
	p->key = key ? MemoryContextStrdup(ep->cxt, key) : NULL;
	p->created_at = created_at;
	return p;
}

/* Free a message that is out of the queue. */
void
pending_release(Pending *p)
{
	pfree(p->topic);
	if (p->key)
		pfree(p->key);
	if (p->last_error)
		pfree(p->last_error);
	pfree(p);
}

/* Insert p into ep's queue, keeping id order (parked ones come first, in order). */
void
queue_insert(Endpoint *ep, Pending *p)
{
	dlist_iter	it;

	ep->queued++;
	dlist_reverse_foreach(it, &ep->queue)
	{
		Pending    *q = dlist_container(Pending, node, it.cur);

		if (q->id < p->id)
		{
			dlist_insert_after(it.cur, &p->node);
			return;
		}
	}
	dlist_push_head(&ep->queue, &p->node);
}

bool
queue_contains(Endpoint *ep, int64 id)
{
	dlist_iter	it;

	dlist_foreach(it, &ep->queue)
		if (dlist_container(Pending, node, it.cur)->id == id)
			return true;
	return false;
}

/* A message is finished (delivered): out of the queue, into done_ahead. */
static void
pending_finished(Endpoint *ep, Pending *p)
{
	MemoryContext old = MemoryContextSwitchTo(ep->cxt);

	if (p->parked)
		ids_add(&ep->forget, &ep->nforget, &ep->maxforget, p->id);
	ids_add(&ep->done, &ep->ndone, &ep->maxdone, p->id);
	ep->done_changed = true;
	ep->dirty = true;
	MemoryContextSwitchTo(old);
	dlist_delete(&p->node);
	ep->queued--;
}

/*
 * Record a failed attempt's error on p (status: HTTP status or 0).
 */
static void
pending_failed(Endpoint *ep, Pending *p, int status, const char *error)
{
	p->attempts++;
	p->last_status = status;
	if (p->last_error)
		pfree(p->last_error);
	p->last_error = MemoryContextStrdup(ep->cxt, error);
	p->save = true;
}

/*
 * Dead-letter a message: out of the queue, saved by the next persist, and
 * finished like a delivery.  (Not freed: progress.c saves it.)
 */
static void
pending_dead(Endpoint *ep, Pending *p)
{
	MemoryContext old = MemoryContextSwitchTo(ep->cxt);

	ep->dead_lettered++;
	ids_add(&ep->done, &ep->ndone, &ep->maxdone, p->id);
	ep->done_changed = true;
	ep->dirty = true;
	p->save = true;
	dlist_delete(&p->node);
	ep->queued--;
	ep->dead = lappend(ep->dead, p);
	MemoryContextSwitchTo(old);
}

/* ---- reading the log ---- */

/* How many more messages may the endpoint queue?  (Memory bounds: endpoint.h.) */
static int
endpoint_room(Endpoint *ep)
{
	return Min(Min(2 * ep->max_in_flight * ep->batch_size, WINDOW_MAX) - ep->queued,
			   WINDOW_MAX - ep->queued - ep->ndone);
}

static bool
endpoint_has_room(Endpoint *ep)
{
	return endpoint_room(ep) > 0;
}

static bool
topic_matches(List *patterns, const char *topic)
{
	ListCell   *lc;

	foreach(lc, patterns)
		if (outbox_topic_matches(lfirst(lc), topic))
			return true;
	return false;
}

/*
 * Read the next messages of the log for every endpoint that has room, in one
 * transaction.  Gap-free: stops at the first message a running transaction
 * could still precede (gapless.c), and tries again shortly.  Returns true if
 * an endpoint read past a message (figures to publish before waiting).
 */
bool
delivery_fetch(bool woken)
{
	ListCell   *lc;
	TimestampTz now = GetCurrentTimestamp();
	bool		began = false;
	bool		moved = false;

	foreach(lc, delivery_endpoints)
	{
		Endpoint   *ep = lfirst(lc);
		Datum		args[2];
		FullTransactionId horizon;
		TupleDesc	desc;
		uint64		n;
		uint64		i;
		int			limit;
		bool		full = false;

		if (woken || (ep->refetch_at != 0 && now >= ep->refetch_at))
			ep->want_fetch = true;
		if (!ep->want_fetch || ep->dropped || ep->paused || ep->invalid)
			continue;
		/* a full window reads later: want_fetch remembers it, no timer needed */
		if (!endpoint_has_room(ep))
		{
			ep->refetch_at = 0;
			continue;
		}
		if (!began)
			delivery_begin("outbox: reading messages");
		began = true;

		limit = Min(FETCH_BATCH, Max(endpoint_room(ep), FETCH_MIN));
		args[0] = Int64GetDatum(ep->fetched);
		args[1] = Int32GetDatum(limit);
		horizon = gapless_horizon();
		n = outbox_spi_run(&plan_fetch, args, NULL, true, 0, SPI_OK_SELECT);
		desc = SPI_tuptable->tupdesc;
		ep->refetch_at = 0;
		for (i = 0; i < n; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			bool		isnull;
			int64		id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
			char	   *topic;
			bool		wanted;

			if (gapless_holds_back(DatumGetFullTransactionId(SPI_getbinval(tup, desc, 5, &isnull)),
								   horizon))
			{
				ep->refetch_ms = ep->refetch_ms == 0 ? HORIZON_RETRY_MIN_MS
					: Min(ep->refetch_ms * 2, HORIZON_RETRY_MAX_MS);
				ep->refetch_at = TimestampTzPlusMilliseconds(now, ep->refetch_ms);
				break;
			}
			/* (not SPI_getvalue: it looks the type's output function up per call) */
			topic = TextDatumGetCString(SPI_getbinval(tup, desc, 2, &isnull));

			/*
			 * Only ids up to what was loaded at start (done_ahead, parked rows)
			 * can be delivered or queued already; later ones are new.
			 */
			wanted = topic_matches(ep->patterns, topic) &&
				!(id <= ep->loaded_upto &&
				  (ids_contains(ep->done, ep->ndone, id) || queue_contains(ep, id)));
			/* the window is full: read on from this message later */
			if (wanted && !endpoint_has_room(ep))
			{
				full = true;
				break;
			}
			if (wanted)
			{
				Datum		key = SPI_getbinval(tup, desc, 3, &isnull);
				char	   *keystr = isnull ? NULL : TextDatumGetCString(key);
				TimestampTz created_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 4, &isnull));

				queue_insert(ep, pending_new(ep, id, topic, keystr, created_at));
				if (keystr)
					pfree(keystr);
			}
			pfree(topic);
			ep->fetched = id;
			moved = true;
		}
		ep->want_fetch = full || (n == limit && i == n);
		if (ep->refetch_at == 0)
			ep->refetch_ms = 0;
		ep->dirty = true;		/* the cursor may pass non-matching messages */
		SPI_freetuptable(SPI_tuptable);
	}
	if (began)
		delivery_end();
	return moved;
}

/* ---- sending ---- */

static bool send_began = false; /* the send pass's transaction */

static bool
endpoint_take_token(Endpoint *ep, TimestampTz now)
{
	if (ep->rate_limit == 0)
		return true;
	ep->tokens = Min((double) ep->rate_limit,
					 ep->tokens + ep->rate_limit * (double) (now - ep->tokens_at) / USECS_PER_SEC);
	ep->tokens_at = now;
	if (ep->tokens < 1.0)
		return false;
	ep->tokens -= 1.0;
	return true;
}

/* Give back a message chosen for a request that will not go now. */
static void
pending_unsend(Endpoint *ep, Pending *p)
{
	p->in_flight = false;
	if (ep->rate_limit > 0)
		ep->tokens += 1.0;
}

/*
 * May ep start another request?  Requests finished but not yet saved would
 * be repeated after a crash, like those in flight: together they stay within
 * the limit.
 */
static int
endpoint_limit(Endpoint *ep)
{
	return ep->breaker == BREAKER_HALF_OPEN ? 1 : ep->max_in_flight;
}

static bool
endpoint_can_start(Endpoint *ep)
{
	return ep->in_flight + ep->unsaved < endpoint_limit(ep);
}

/*
 * Choose the messages ep may send now, in id order, marking them in flight
 * (see the top for the rules).  Returns how many, in *out (palloc'd).
 */
static int
endpoint_choose(Endpoint *ep, TimestampTz now, Pending ***out)
{
	int			room = (endpoint_limit(ep) - ep->in_flight - ep->unsaved) * ep->batch_size;
	Pending   **chosen;
	int			n = 0;
	KeySet		held;			/* keys an unfinished earlier message holds */
	dlist_iter	it;

	room = Min(room, ep->queued);
	if (room <= 0)
		return 0;
	chosen = palloc(sizeof(Pending *) * room);
	if (ep->ordered)
		keyset_init(&held, ep->queued);
	dlist_foreach(it, &ep->queue)
	{
		Pending    *p = dlist_container(Pending, node, it.cur);
		bool		keyed = ep->ordered && p->key != NULL;

		if (!p->in_flight && n < room &&
			!(keyed && keyset_contains(&held, p->key)) &&
			(p->due == 0 || now >= p->due))
		{
			if (!endpoint_take_token(ep, now))
				break;
			p->in_flight = true;
			chosen[n++] = p;
		}

		/*
		 * Later messages of this key wait for this one: until its outcome,
		 * or, on a pipelined transport, only while it is not in flight.
		 */
		if (keyed && (!p->in_flight || !ep->transport->pipelined))
			keyset_add(&held, p->key);
		if (n == room)
			break;				/* the keys of later ones matter no more */
	}
	if (ep->ordered)
		keyset_free(&held);
	*out = chosen;
	return n;
}

/*
 * Send ps[0..n) (chosen, in id order), their payloads read in one query:
 * requests of up to batch_size messages, as the transport takes them.
 * Those left when the endpoint or its transport has no more room go back
 * to the queue.  In the send pass's transaction.  Returns false if any did
 * (then no later message may go in this pass: it could pass one of them).
 */
static bool
endpoint_send_chunk(Endpoint *ep, Pending **ps, int n)
{
	int64	   *ids = palloc(sizeof(int64) * n);
	TransportMessage *msgs = palloc(sizeof(TransportMessage) * n);
	Datum		args[1];
	SPITupleTable *rows;
	uint64		nrows;
	uint64		row = 0;
	int			m = 0;
	int			pos = 0;
	int64		span;

	if (!send_began)
		delivery_begin("outbox: reading payloads");
	send_began = true;
	span = ps[n - 1]->id - ps[0]->id + 1;
	if (span <= (int64) BODIES_RANGE * n)
	{
		Datum		range[3] = {Int64GetDatum(ps[0]->id), Int64GetDatum(ps[n - 1]->id),
		Int64GetDatum(span)};

		nrows = outbox_spi_run(&plan_bodies_range, range, NULL, true, 0, SPI_OK_SELECT);
	}
	else
	{
		for (int i = 0; i < n; i++)
			ids[i] = ps[i]->id;
		args[0] = PointerGetDatum(ids_array(ids, n));
		nrows = outbox_spi_run(&plan_bodies, args, NULL, true, 0, SPI_OK_SELECT);
	}
	rows = SPI_tuptable;

	/* pair each message with its row; one deleted by hand has nothing left to send */
	for (int i = 0; i < n; i++)
	{
		Pending    *p = ps[i];
		bool		isnull;

		while (row < nrows &&
			   DatumGetInt64(SPI_getbinval(rows->vals[row], rows->tupdesc, 1, &isnull)) < p->id)
			row++;
		if (row == nrows ||
			DatumGetInt64(SPI_getbinval(rows->vals[row], rows->tupdesc, 1, &isnull)) != p->id)
		{
			p->in_flight = false;
			pending_finished(ep, p);
			pending_release(p);
			continue;
		}
		msgs[m].id = p->id;
		msgs[m].topic = p->topic;
		msgs[m].key = p->key;
		msgs[m].created_at = p->created_at;
		msgs[m].payload = SPI_getbinval(rows->vals[row], rows->tupdesc, 2, &isnull);
		msgs[m].headers = SPI_getbinval(rows->vals[row], rows->tupdesc, 3, &isnull);
		if (isnull)
			msgs[m].headers = (Datum) 0;
		ps[m++] = p;
	}

	while (pos < m && endpoint_can_start(ep))
	{
		int			k = Min(ep->batch_size, m - pos);
		Request    *req = MemoryContextAlloc(delivery_cxt,
											 offsetof(Request, items) + sizeof(Pending *) * k);
		char	   *refusal = NULL;
		int			took;

		req->ep = ep;
		took = ep->transport->send(ep->conn, req, &msgs[pos], k, &refusal);
		Assert(took >= 0 && took <= k);
		if (took == 0)
		{
			pfree(req);
			if (refusal == NULL)
				break;			/* the transport has no room now */
			/* it can never be sent as it is */
			ps[pos]->in_flight = false;
			pending_failed(ep, ps[pos], 0, refusal);
			pending_dead(ep, ps[pos]);
			pos++;
			continue;
		}
		req->n = took;
		for (int j = 0; j < took; j++)
			req->items[j] = ps[pos + j];
		ep->in_flight++;
		pos += took;
	}
	for (int i = pos; i < m; i++)
		pending_unsend(ep, ps[i]);
	SPI_freetuptable(rows);
	pfree(ids);
	pfree(msgs);
	return pos == m;
}

/* Returns true if a request started or the breaker went half-open. */
static bool
endpoint_send(Endpoint *ep, TimestampTz now)
{
	Pending   **chosen;
	int			n;
	bool		all_sent = true;
	bool		half_opened = false;
	int			in_flight = ep->in_flight;

	if (ep->dropped || ep->paused || ep->invalid)
		return false;
	if (ep->breaker == BREAKER_OPEN)
	{
		if (now < ep->open_until)
			return false;
		ep->breaker = BREAKER_HALF_OPEN;
		half_opened = true;
	}
	if (!endpoint_can_start(ep))
		return half_opened;
	n = endpoint_choose(ep, now, &chosen);
	for (int i = 0; i < n; i += SEND_READ_MAX)
	{
		int			k = Min(SEND_READ_MAX, n - i);

		if (all_sent && endpoint_can_start(ep))
			all_sent = endpoint_send_chunk(ep, chosen + i, k);
		else
			for (int j = 0; j < k; j++)
				pending_unsend(ep, chosen[i + j]);
	}
	if (n > 0)
		pfree(chosen);
	return half_opened || ep->in_flight != in_flight;
}

/*
 * Start the requests that may go.  The payloads are read in one short
 * transaction, begun at the first request and committed before the
 * requests' I/O starts (in the relay's wait).  Returns true if a request
 * started or a breaker went half-open (figures to publish before waiting).
 */
bool
delivery_send(void)
{
	TimestampTz now = GetCurrentTimestamp();
	ListCell   *lc;
	bool		changed = false;

	foreach(lc, delivery_endpoints)
		changed |= endpoint_send(lfirst(lc), now);
	if (send_began)
		delivery_end();
	send_began = false;
	return changed;
}

/* ---- results ---- */

/* A request finished: record its outcome in memory.  No transaction. */
void
delivery_complete(const TransportResult *r)
{
	Request    *req = r->owner;
	Endpoint   *ep = req->ep;
	TimestampTz now = GetCurrentTimestamp();
	bool		ok = r->outcome == TRANSPORT_OK;

	ep->in_flight--;
	if (r->outcome == TRANSPORT_NOT_SENT)
	{
		/* withdrawn before it left: as if never chosen */
		for (int i = 0; i < req->n; i++)
			pending_unsend(ep, req->items[i]);
		pfree(req);
		if (ep->dropped)
			endpoint_gone(ep);
		return;
	}
	ep->unsaved++;
	ep->dirty = true;
	if (ok)
	{
		ep->last_success_at = now;
		ep->failures = 0;
		ep->trips = 0;
		ep->breaker = BREAKER_CLOSED;
	}
	else
	{
		ep->last_failure_at = now;
		ep->last_http_status = r->status;
		strlcpy(ep->last_error, r->error, sizeof(ep->last_error));
		/*
		 * A trip is the move to open: failures of requests that were already
		 * out when it opened (hundreds, on Kafka) must not lengthen the
		 * cool-down each.
		 */
		if (ep->breaker != BREAKER_OPEN &&
			(ep->breaker == BREAKER_HALF_OPEN || ++ep->failures >= BREAKER_THRESHOLD))
		{
			ep->breaker = BREAKER_OPEN;
			ep->trips++;
			ep->open_until = TimestampTzPlusMilliseconds(now,
														 backoff_ceiling_ms(BREAKER_BASE_MS, BREAKER_MAX_MS, ep->trips));
		}
	}
	if (r->pause)
		ep->paused = ep->pause_now = true;

	for (int i = 0; i < req->n; i++)
	{
		Pending    *p = req->items[i];

		p->in_flight = false;
		if (ok)
		{
			ep->delivered++;
			ep->latencies[ep->latency_pos] = (float4) (now - p->created_at) / 1000.0;
			ep->latency_pos = (ep->latency_pos + 1) % STAT_LATENCIES;
			ep->nlatencies = Min(ep->nlatencies + 1, STAT_LATENCIES);
			pending_finished(ep, p);
			pending_release(p);
			continue;
		}
		ep->failed_attempts++;
		pending_failed(ep, p, r->status, r->error);
		if (r->outcome == TRANSPORT_RETRY && p->attempts < ep->max_attempts)
		{
			int64		delay = backoff_jitter_ms(ep->backoff_base_ms, ep->backoff_max_ms,
												  p->attempts);

			p->parked = true;
			p->waiting_key = false;
			p->due = TimestampTzPlusMilliseconds(now, Max(delay, (int64) r->retry_after_ms));
		}
		else
			pending_dead(ep, p);
	}
	pfree(req);
	if (ep->dropped)
		endpoint_gone(ep);
}

/* ---- timers ---- */

/* ms until the next scheduled work (a retry, a probe, a re-read, a save), or -1. */
long
delivery_next_timeout(void)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz next = 0;
	ListCell   *lc;

#define NEXT(t) do { if ((t) != 0 && (next == 0 || (t) < next)) next = (t); } while (0)
	foreach(lc, delivery_endpoints)
	{
		Endpoint   *ep = lfirst(lc);
		dlist_iter	it;

		if (ep->dropped)
			continue;
		if (ep->want_fetch && !ep->paused && !ep->invalid && endpoint_has_room(ep))
			return 0;			/* more of the log to read, and room for it */
		if (ep->dirty)
			NEXT(delivery_persist_due());
		if (ep->paused || ep->invalid)
			continue;
		NEXT(ep->refetch_at);
		/* once the cool-down is over, wait for the probe's message to be due */
		if (ep->breaker == BREAKER_OPEN && ep->queued > 0 && ep->open_until > now)
		{
			NEXT(ep->open_until);
			continue;
		}
		if (ep->rate_limit > 0 && ep->queued > ep->in_flight && ep->tokens < 1.0)
			NEXT(TimestampTzPlusMilliseconds(now, 1000 / ep->rate_limit + 1));
		dlist_foreach(it, &ep->queue)
		{
			Pending    *p = dlist_container(Pending, node, it.cur);

			if (!p->in_flight && p->due > now)
				NEXT(p->due);
		}
	}
#undef NEXT
	return ms_until(next, now);
}

/* Is any endpoint's reading held back by a running transaction? */
bool
delivery_horizon_blocked(void)
{
	ListCell   *lc;

	foreach(lc, delivery_endpoints)
		if (((Endpoint *) lfirst(lc))->refetch_at != 0)
			return true;
	return false;
}
