/*-------------------------------------------------------------------------
 * delivery.c
 *		The relay's delivery state machine, per endpoint.
 *
 * Progress is a cursor over the gap-free message log (see gapless.c):
 * every message with id <= cursor is delivered, dead, parked in
 * outbox._deliveries, or does not match the endpoint's topics; done_ahead
 * lists the ids beyond the cursor already delivered.  A successful delivery
 * therefore writes nothing per message: the cursor and done_ahead are saved
 * in one short transaction per loop, after the 2xx (at-least-once: a crash
 * repeats at most the requests in flight).
 *
 * In memory, each endpoint keeps a queue, in id order, of the messages it
 * fetched and has not finished.  A message is sent when
 *   - it is due (retries wait out their backoff, and any Retry-After),
 *   - on an ordered endpoint, no earlier unfinished message has its key
 *     (so a batch never carries two messages of one key),
 *   - the endpoint is not paused, its circuit is not open (half-open: one
 *     probe), it has fewer than max_in_flight requests out, and its token
 *     bucket (rate_limit_per_sec) has a token per message.
 * A retryable failure (transport error, timeout, 408, 429, 5xx, 3xx) parks
 * the message in outbox._deliveries with the next attempt after a full-
 * jitter backoff, min(backoff_max_ms, backoff_base_ms * 2^attempt) * random;
 * other 4xx, an address outbox.blocked_networks refuses, and the last
 * attempt, dead-letter it; 410 also pauses the endpoint.  Messages queued behind a parked key are parked as well, so the
 * cursor never waits for a retry.
 *
 * Circuit breaker: after BREAKER_THRESHOLD consecutive failed requests the
 * endpoint opens for a cool-down (1 s doubling to 60 s), then lets a single
 * probe through (half-open) and closes on its success.
 *
 * Memory is bounded whatever the payloads and batch settings (the limits
 * are named below): the queue holds ids, topics and keys; payloads and
 * headers are read only when a request is built, one message at a time.
 *
 * Nothing here holds a transaction across HTTP: delivery_fetch,
 * delivery_reload and delivery_persist each run one short transaction;
 * delivery_send runs one to read the payloads of the requests it starts,
 * committed before their I/O begins (in http_wait); delivery_complete runs
 * outside any.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "lib/ilist.h"
#include "lib/stringinfo.h"
#include "pgstat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/xid8.h"

#include "compat.h"
#include "outbox.h"
#include "options.h"

#define FETCH_BATCH			1000	/* messages read per endpoint per fetch */

/*
 * Memory bounds (README, "Memory"), whatever the payloads and the batch
 * settings.  The queue holds ids, topics and keys only: payloads and headers
 * are read when a request is built, printed straight into its body, and
 * freed once curl has its copy.
 *   WINDOW_MAX			messages per endpoint read past its cursor and not
 *						passed yet: queued ones (also limited by 2 *
 *						max_in_flight * batch_size) plus delivered ones
 *						(done_ahead, saved with the cursor).  One request that
 *						hangs holds the others back after this many.
 *   BATCH_BODY_MAX		a batch is cut before the message that would take its
 *						body past this (nginx's default limit); a message alone
 *						may take up to OUTBOX_MAX_BODY_BYTES
 *   IN_FLIGHT_BODY_MAX	request bodies out at once per endpoint: no new request
 *						starts beyond it (one always may)
 */
#define WINDOW_MAX			4096
#define BATCH_BODY_MAX		(1024 * 1024)
#define IN_FLIGHT_BODY_MAX	(8 * 1024 * 1024)
#define BREAKER_THRESHOLD	5
#define BREAKER_MAX_MS		60000
/*
 * While a running transaction holds the log back, re-read after 5 ms,
 * doubling to 100 ms: a transaction that publishes wakes us when it commits,
 * but one that holds an xid without publishing (autoanalyze, say) does not.
 */
#define HORIZON_RETRY_MIN_MS	5
#define HORIZON_RETRY_MAX_MS	100

typedef struct Pending
{
	dlist_node	node;
	WebhookMessage msg;
	int			attempts;		/* attempts made so far */
	TimestampTz due;			/* not before; 0 = now */
	bool		waiting_key;	/* parked behind an earlier message with its key */
	bool		parked;			/* has a 'retry' row in outbox._deliveries */
	bool		in_flight;
	bool		save;			/* its _deliveries row must be written */
	int			last_status;
	char	   *last_error;
} Pending;

typedef enum BreakerState
{
	BREAKER_CLOSED,
	BREAKER_OPEN,
	BREAKER_HALF_OPEN
} BreakerState;

typedef struct Endpoint
{
	int			id;
	char	   *name;
	char	   *url;
	WebhookEndpoint wh;			/* signing keys and headers */
	List	   *patterns;		/* topic patterns (char *) */
	int			max_attempts;
	int			backoff_base_ms;
	int			backoff_max_ms;
	int			timeout_ms;
	int			max_in_flight;
	int			rate_limit;		/* messages per second, 0 = unlimited */
	int			batch_size;
	bool		ordered;
	bool		paused;
	bool		pause_now;		/* a 410 asks to pause it */
	bool		dropped;		/* gone from the catalog; freed when idle */
	bool		invalid;		/* its stored configuration cannot be used */

	int64		cursor;
	int64		fetched;		/* highest id read from the log */
	int64		loaded_upto;	/* highest id loaded from done_ahead or parked rows */
	int64	   *done;			/* ids > cursor already delivered, unsorted */
	int			ndone;
	int			maxdone;
	int64	   *forget;			/* ids whose _deliveries row must go */
	int			nforget;
	int			maxforget;
	List	   *dead;			/* Pending *, dead-lettered, to save */
	dlist_head	queue;
	int			queued;
	int			in_flight;
	Size		body_bytes;		/* request bodies in flight */
	bool		want_fetch;		/* the log may have messages we have not read */
	TimestampTz refetch_at;		/* the horizon held the last fetch back */
	int			refetch_ms;		/* current re-read interval while held back */
	bool		dirty;			/* may have progress to save */
	int			unsaved;		/* finished requests whose outcome is not saved yet */
	bool		done_changed;	/* done grew since the last save */

	BreakerState breaker;
	int			failures;		/* consecutive failed requests */
	int			trips;
	TimestampTz open_until;

	double		tokens;
	TimestampTz tokens_at;

	/* for outbox.stat_endpoints (delivery_report) */
	uint64		delivered;
	uint64		failed_attempts;
	uint64		dead_lettered;
	TimestampTz last_success_at;
	TimestampTz last_failure_at;
	int			last_http_status;
	char		last_error[OUTBOX_LAST_ERROR_BYTES];
	float4		latencies[STAT_LATENCIES];	/* ring of commit-to-2xx ms */
	int			nlatencies;
	int			latency_pos;

	MemoryContext cxt;
	MemoryContext config_cxt;	/* name, url, patterns, keys, headers */
} Endpoint;

/* One request in flight: the endpoint and its messages. */
typedef struct Request
{
	Endpoint   *ep;
	Size		body_len;
	int			n;
	Pending    *items[FLEXIBLE_ARRAY_MEMBER];
} Request;

static List *endpoints = NIL;	/* Endpoint * */
static Oid	extension_oid = InvalidOid;	/* of the endpoints loaded */
static MemoryContext delivery_cxt = NULL;

static OutboxPlan plan_endpoints = {
	"SELECT id, name, url, topics, secret, headers::text, paused, cursor_id, done_ahead, options"
	" FROM outbox._endpoints",
	0, {0}
};
static OutboxPlan plan_parked = {
	"SELECT d.message_id, d.attempts, d.next_attempt_at, m.topic, m.key, m.created_at"
	" FROM outbox._deliveries d JOIN outbox._messages m ON m.id = d.message_id"
	" WHERE d.endpoint_id = $1 AND d.state = 'retry' ORDER BY d.message_id",
	1, {INT4OID}
};
/* no payload, no headers: rows that match no endpoint are never detoasted */
static OutboxPlan plan_fetch = {
	"SELECT id, topic, key, created_at, xmark"
	" FROM outbox._messages WHERE id > $1 ORDER BY id LIMIT $2",
	2, {INT8OID, INT4OID}
};
/* the jsonb as stored (TOAST pointers): detoasted one message at a time */
static OutboxPlan plan_bodies = {
	"SELECT id, payload, headers FROM outbox._messages WHERE id = ANY ($1) ORDER BY id",
	1, {INT8ARRAYOID}
};
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
static OutboxPlan plan_forget_deliveries = {
	"DELETE FROM outbox._deliveries WHERE endpoint_id = $1 AND message_id = ANY ($2)",
	2, {INT4OID, INT8ARRAYOID}
};

/* ---- transactions ---- */

static OutboxSpi xact_spi;

/* Start a short transaction; delivery_end commits it and returns to the caller's context. */
static void
delivery_begin(const char *activity)
{
	relay_xact_begin(activity);
	xact_spi = (OutboxSpi) OUTBOX_SPI_INIT;
	outbox_spi_begin(&xact_spi);
}

static void
delivery_end(void)
{
	outbox_spi_end(&xact_spi);
	relay_xact_end();
}

static char *
spi_text(HeapTuple tup, int col)
{
	return SPI_getvalue(tup, SPI_tuptable->tupdesc, col);
}

static Datum
spi_datum(HeapTuple tup, int col, bool *isnull)
{
	return SPI_getbinval(tup, SPI_tuptable->tupdesc, col, isnull);
}

/* ---- topic patterns ---- */

static bool
topic_matches(List *patterns, const char *topic)
{
	ListCell   *lc;

	foreach(lc, patterns)
		if (outbox_topic_matches(lfirst(lc), topic))
			return true;
	return false;
}

/* ---- small growable arrays of ids ---- */

static ArrayType *
int64_array(int64 *ids, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		d[i] = Int64GetDatum(ids[i]);
	return construct_array(d, n, INT8OID, 8, true, TYPALIGN_DOUBLE);
}

static void
ids_add(int64 **ids, int *n, int *max, int64 id)
{
	if (*n == *max)
	{
		*max = Max(16, *max * 2);
		*ids = *ids ? repalloc(*ids, sizeof(int64) * *max) : palloc(sizeof(int64) * *max);
	}
	(*ids)[(*n)++] = id;
}

static bool
ids_contains(int64 *ids, int n, int64 id)
{
	for (int i = 0; i < n; i++)
		if (ids[i] == id)
			return true;
	return false;
}

/* ---- loading ---- */

/* Forget an endpoint; memory lives in delivery_cxt and its own context. */
static void
endpoint_free(Endpoint *ep)
{
	MemoryContextDelete(ep->cxt);
	pfree(ep);
}


/* An endpoint of the catalog (dropped ones have id -1: see delivery_reload) */
static Endpoint *
endpoint_by_id(int id)
{
	ListCell   *lc;

	foreach(lc, endpoints)
		if (((Endpoint *) lfirst(lc))->id == id)
			return lfirst(lc);
	return NULL;
}

static Pending *
pending_new(Endpoint *ep, int64 id, HeapTuple tup, int first)
{
	Pending    *p = MemoryContextAllocZero(ep->cxt, sizeof(Pending));
	MemoryContext old = MemoryContextSwitchTo(ep->cxt);
	bool		isnull;

	p->msg.id = id;
	p->msg.topic = spi_text(tup, first);
	p->msg.key = spi_text(tup, first + 1);
	p->msg.created_at = DatumGetTimestampTz(spi_datum(tup, first + 2, &isnull));
	MemoryContextSwitchTo(old);
	return p;
}

/* Free a message that is out of the queue. */
static void
pending_release(Pending *p)
{
	pfree(p->msg.topic);
	if (p->msg.key)
		pfree(p->msg.key);
	if (p->last_error)
		pfree(p->last_error);
	pfree(p);
}

/* Insert p into ep's queue, keeping id order (parked ones come first, in order). */
static void
queue_insert(Endpoint *ep, Pending *p)
{
	dlist_iter	it;

	ep->queued++;
	dlist_reverse_foreach(it, &ep->queue)
	{
		Pending    *q = dlist_container(Pending, node, it.cur);

		if (q->msg.id < p->msg.id)
		{
			dlist_insert_after(it.cur, &p->node);
			return;
		}
	}
	dlist_push_head(&ep->queue, &p->node);
}

static bool
queue_contains(Endpoint *ep, int64 id)
{
	dlist_iter	it;

	dlist_foreach(it, &ep->queue)
		if (dlist_container(Pending, node, it.cur)->msg.id == id)
			return true;
	return false;
}

static bool
pending_in(List *list, int64 id)
{
	ListCell   *lc;

	foreach(lc, list)
		if (((Pending *) lfirst(lc))->msg.id == id)
			return true;
	return false;
}

/*
 * Queue the endpoint's parked deliveries that are not queued yet: all of
 * them at start, those re-queued by outbox.redeliver later.
 */
static void
endpoint_load_parked(Endpoint *ep)
{
	Datum		args[1] = {Int32GetDatum(ep->id)};
	uint64		n = outbox_spi_run(&plan_parked, args, NULL, true, 0, SPI_OK_SELECT);

	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		bool		isnull;
		int64		id = DatumGetInt64(spi_datum(tup, 1, &isnull));
		Pending    *p;
		Datum		due;
		bool		no_due;

		/*
		 * Queued already, or finished with the outcome not saved yet (a save
		 * the row lock made wait): its row is stale, sending it again would
		 * repeat it.
		 */
		if (queue_contains(ep, id) || ids_contains(ep->forget, ep->nforget, id) ||
			pending_in(ep->dead, id))
			continue;
		ep->loaded_upto = Max(ep->loaded_upto, id);
		p = pending_new(ep, id, tup, 4);
		due = spi_datum(tup, 3, &no_due);
		p->attempts = DatumGetInt32(spi_datum(tup, 2, &isnull));
		p->parked = true;
		p->waiting_key = no_due;
		p->due = no_due ? 0 : DatumGetTimestampTz(due);
		queue_insert(ep, p);
	}
}

/*
 * Set ep's configuration from its row (the current SPI result).  Raises no
 * error: a row it cannot use (changed by hand, see options.c) marks the
 * endpoint invalid, with the reason as its last_error, and the endpoint
 * sends nothing until a reload finds it fixed; it keeps its queue, its
 * previous settings for the requests in flight, and its cursor.
 */
static void
endpoint_configure(Endpoint *ep, HeapTuple tup)
{
	bool		isnull;
	Datum		d;
	ArrayType  *arr;
	Datum	   *elems;
	bool	   *nulls;
	int			nelems;
	EndpointOptions opt;
	char	   *problem;
	MemoryContext old;

	/* the configuration lives in its own context, replaced on each reload */
	if (ep->config_cxt)
		MemoryContextReset(ep->config_cxt);
	else
		ep->config_cxt = AllocSetContextCreate(ep->cxt, "outbox endpoint config",
											   ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(ep->config_cxt);
	ep->name = spi_text(tup, 2);
	ep->url = spi_text(tup, 3);
	ep->patterns = NIL;
	problem = NULL;
	arr = DatumGetArrayTypeP(spi_datum(tup, 4, &isnull));
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &nelems);
	for (int j = 0; j < nelems; j++)
	{
		if (nulls[j])
			problem = "a topic pattern is null";
		else
			ep->patterns = lappend(ep->patterns, TextDatumGetCString(elems[j]));
	}
	ep->wh.keys = NIL;
	d = spi_datum(tup, 5, &isnull);
	if (!isnull)
	{
		char	   *secrets = TextDatumGetCString(d);
		char	   *tok;
		char	   *save;

		for (tok = strtok_r(secrets, " \t\n", &save); tok; tok = strtok_r(NULL, " \t\n", &save))
		{
			WebhookKey *key = webhook_key(tok);

			if (key == NULL)
				problem = "a secret is not valid base64";
			else
				ep->wh.keys = lappend(ep->wh.keys, key);
		}
	}
	ep->wh.header_lines = webhook_json_headers(NIL, spi_text(tup, 6), false);
	/* a 410 not saved yet (its row was locked) still pauses it */
	ep->paused = DatumGetBool(spi_datum(tup, 7, &isnull)) || ep->pause_now;
	if (problem == NULL)
		problem = options_read(OPTIONS_ENDPOINT, DatumGetJsonbP(spi_datum(tup, 10, &isnull)), &opt);
	MemoryContextSwitchTo(old);

	if (ep->invalid && problem == NULL)
		ep->last_error[0] = '\0';	/* fixed */
	else if (!ep->invalid && problem != NULL)
	{
		snprintf(ep->last_error, sizeof(ep->last_error), "invalid configuration: %s", problem);
		ereport(LOG,
				(errmsg("outbox: endpoint \"%s\" has an invalid configuration and is not delivered to", ep->name),
				 errdetail("%s", ep->last_error),
				 errhint("Correct it with outbox.alter_endpoint().")));
	}
	ep->invalid = (problem != NULL);
	if (ep->invalid)
	{
		if (ep->max_in_flight == 0)
			options_read(OPTIONS_ENDPOINT, NULL, &opt);	/* never loaded: defaults */
		else
			return;				/* in flight: keep the settings they went with */
	}
	ep->max_attempts = opt.max_attempts;
	ep->backoff_base_ms = opt.backoff_base_ms;
	ep->backoff_max_ms = opt.backoff_max_ms;
	ep->timeout_ms = opt.timeout_ms;
	ep->max_in_flight = opt.max_in_flight;
	ep->rate_limit = opt.rate_limit_per_sec;
	ep->batch_size = opt.batch_size;
	ep->ordered = opt.ordered;
}

/*
 * Load the endpoint configuration; called when its generation changed.
 * Runs one transaction.  Endpoints keep their queues, their in-flight
 * requests and their unsaved results across a reload, whatever changed
 * (a reload must never repeat a delivery); new ones start from their saved
 * cursor and parked rows.
 */
void
delivery_reload(void)
{
	uint64		n;
	ListCell   *lc;
	List	   *reloaded;

	if (delivery_cxt == NULL)
		delivery_cxt = AllocSetContextCreate(TopMemoryContext, "outbox delivery",
											 ALLOCSET_DEFAULT_SIZES);
	/*
	 * Save first: parked rows are reloaded below, and a retry that just
	 * finished must not come back from its stale 'retry' row.
	 */
	delivery_persist();
	delivery_begin("outbox: loading endpoints");
	foreach(lc, endpoints)
		((Endpoint *) lfirst(lc))->dropped = true;
	/* the extension was dropped and created again: nothing carries over */
	if (extension_oid != get_extension_oid("outbox", false))
	{
		foreach(lc, endpoints)
			((Endpoint *) lfirst(lc))->id = -1;
		extension_oid = get_extension_oid("outbox", false);
	}

	n = outbox_spi_run(&plan_endpoints, NULL, NULL, true, 0, SPI_OK_SELECT);
	reloaded = NIL;
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		bool		isnull;
		int			id = DatumGetInt32(spi_datum(tup, 1, &isnull));
		Endpoint   *ep = endpoint_by_id(id);
		bool		fresh = (ep == NULL);
		MemoryContext old = CurrentMemoryContext;

		if (fresh)
		{
			ep = MemoryContextAllocZero(delivery_cxt, sizeof(Endpoint));
			ep->id = id;
			ep->cxt = AllocSetContextCreate(delivery_cxt, "outbox endpoint", ALLOCSET_DEFAULT_SIZES);
			dlist_init(&ep->queue);
			ep->want_fetch = true;
			ep->tokens_at = GetCurrentTimestamp();
			MemoryContextSwitchTo(delivery_cxt);
			endpoints = lappend(endpoints, ep);
			MemoryContextSwitchTo(old);
		}
		ep->dropped = false;
		endpoint_configure(ep, tup);
		if (fresh)
		{
			ArrayType  *arr = DatumGetArrayTypeP(spi_datum(tup, 9, &isnull));
			Datum	   *elems;
			int			nelems;

			MemoryContextSwitchTo(ep->cxt);
			ep->cursor = ep->fetched = DatumGetInt64(spi_datum(tup, 8, &isnull));
			deconstruct_array(arr, INT8OID, 8, true, TYPALIGN_DOUBLE, &elems, NULL, &nelems);
			for (int j = 0; j < nelems; j++)
			{
				int64		id = DatumGetInt64(elems[j]);

				ids_add(&ep->done, &ep->ndone, &ep->maxdone, id);
				ep->loaded_upto = Max(ep->loaded_upto, id);
			}
		}
		MemoryContextSwitchTo(old);
		reloaded = lappend(reloaded, ep);
	}
	foreach(lc, reloaded)
		endpoint_load_parked(lfirst(lc));
	delivery_end();

	/*
	 * Endpoints that left the catalog go once their requests are back; until
	 * then no later reload takes them for a catalog row.
	 */
	foreach(lc, endpoints)
	{
		Endpoint   *ep = lfirst(lc);

		if (!ep->dropped)
			continue;
		ep->id = -1;
		if (ep->in_flight == 0)
		{
			endpoint_free(ep);
			/* the list is freed when its last cell goes: keep the result */
			endpoints = foreach_delete_current(endpoints, lc);
		}
	}
}

/* ---- reading the log ---- */

/* May the endpoint queue one more message?  (Memory bounds: see the top.) */
static bool
endpoint_has_room(Endpoint *ep)
{
	return ep->queued < Min(2 * ep->max_in_flight * ep->batch_size, WINDOW_MAX) &&
		ep->queued + ep->ndone < WINDOW_MAX;
}

/*
 * Read the next messages of the log for every endpoint that has room, in one
 * transaction.  Gap-free: stops at the first message a running transaction
 * could still precede (gapless.c), and tries again shortly.
 */
void
delivery_fetch(bool woken)
{
	ListCell   *lc;
	TimestampTz now = GetCurrentTimestamp();
	bool		began = false;

	foreach(lc, endpoints)
	{
		Endpoint   *ep = lfirst(lc);
		Datum		args[2];
		FullTransactionId horizon;
		uint64		n;
		uint64		i;
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

		args[0] = Int64GetDatum(ep->fetched);
		args[1] = Int32GetDatum(FETCH_BATCH);
		horizon = gapless_horizon();
		n = outbox_spi_run(&plan_fetch, args, NULL, true, 0, SPI_OK_SELECT);
		ep->refetch_at = 0;
		for (i = 0; i < n; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			bool		isnull;
			int64		id = DatumGetInt64(spi_datum(tup, 1, &isnull));
			bool		wanted;

			if (gapless_holds_back(DatumGetFullTransactionId(spi_datum(tup, 5, &isnull)), horizon))
			{
				ep->refetch_ms = ep->refetch_ms == 0 ? HORIZON_RETRY_MIN_MS
					: Min(ep->refetch_ms * 2, HORIZON_RETRY_MAX_MS);
				ep->refetch_at = TimestampTzPlusMilliseconds(now, ep->refetch_ms);
				break;
			}
			/*
			 * Only ids up to what was loaded at start (done_ahead, parked rows)
			 * can be delivered or queued already; later ones are new.
			 */
			wanted = topic_matches(ep->patterns, spi_text(tup, 2)) &&
				!(id <= ep->loaded_upto &&
				  (ids_contains(ep->done, ep->ndone, id) || queue_contains(ep, id)));
			/* the window is full: read on from this message later */
			if (wanted && !endpoint_has_room(ep))
			{
				full = true;
				break;
			}
			if (wanted)
				queue_insert(ep, pending_new(ep, id, tup, 2));
			ep->fetched = id;
		}
		ep->want_fetch = full || (n == FETCH_BATCH && i == n);
		if (ep->refetch_at == 0)
			ep->refetch_ms = 0;
		ep->dirty = true;		/* the cursor may pass non-matching messages */
	}
	if (began)
		delivery_end();
}

/* ---- sending ---- */

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

/* Is key held by an earlier unfinished message (other than those in batch)? */
static bool
key_blocked(List *held_keys, const char *key)
{
	ListCell   *lc;

	foreach(lc, held_keys)
		if (strcmp(lfirst(lc), key) == 0)
			return true;
	return false;
}

static Request *delivery_submit(Request *req);

/*
 * May ep start another request?  Requests finished but not yet saved would
 * be repeated after a crash, like those in flight: together they stay within
 * the limit.  And the bodies in flight stay within IN_FLIGHT_BODY_MAX.
 */
static bool
endpoint_can_start(Endpoint *ep, int limit)
{
	return ep->in_flight + ep->unsaved < limit &&
		(ep->in_flight == 0 || ep->body_bytes < IN_FLIGHT_BODY_MAX);
}

static Request *
request_new(Endpoint *ep)
{
	Request    *req = MemoryContextAlloc(delivery_cxt, offsetof(Request, items) + sizeof(Pending *) * ep->batch_size);

	req->ep = ep;
	req->n = 0;
	req->body_len = 0;
	return req;
}

/* Give back the messages of a request that will not go now. */
static void
request_release(Request *req)
{
	for (int i = 0; i < req->n; i++)
		req->items[i]->in_flight = false;
	if (req->ep->rate_limit > 0)
		req->ep->tokens += req->n;
	pfree(req);
}

static void
endpoint_send(Endpoint *ep, TimestampTz now)
{
	dlist_iter	it;
	List	   *held = NIL;		/* keys of earlier unfinished messages */
	Request    *req = NULL;
	int			limit;

	if (ep->dropped || ep->paused || ep->invalid)
		return;
	if (ep->breaker == BREAKER_OPEN)
	{
		if (now < ep->open_until)
			return;
		ep->breaker = BREAKER_HALF_OPEN;
	}
	limit = ep->breaker == BREAKER_HALF_OPEN ? 1 : ep->max_in_flight;

	dlist_foreach(it, &ep->queue)
	{
		Pending    *p = dlist_container(Pending, node, it.cur);
		bool		blocked = ep->ordered && p->msg.key && key_blocked(held, p->msg.key);

		if (ep->ordered && p->msg.key && !blocked)
			held = lappend(held, p->msg.key);
		if (p->in_flight || blocked || (p->due != 0 && now < p->due))
			continue;
		if (req == NULL && !endpoint_can_start(ep, limit))
			break;
		if (!endpoint_take_token(ep, now))
			break;
		if (req == NULL)
			req = request_new(ep);
		p->in_flight = true;
		req->items[req->n++] = p;
		if (req->n == ep->batch_size)
		{
			/* what a cut batch left over starts the next request */
			req = delivery_submit(req);
			if (req && !endpoint_can_start(ep, limit))
			{
				request_release(req);
				req = NULL;
				break;
			}
		}
	}
	while (req)
	{
		req = delivery_submit(req);
		if (req && !endpoint_can_start(ep, limit))
		{
			request_release(req);
			req = NULL;
		}
	}
	list_free(held);
}

/* ---- building requests ---- */

static MemoryContext body_cxt = NULL;	/* one request's body; reset once curl has it */
static bool send_began = false; /* the send pass's transaction */
static List *gone = NIL;		/* Pending * out of the queue, freed after the pass */

/* A message is finished (delivered): out of the queue, into done_ahead. */
static void
pending_finished(Endpoint *ep, Pending *p)
{
	MemoryContext old = MemoryContextSwitchTo(ep->cxt);

	if (p->parked)
		ids_add(&ep->forget, &ep->nforget, &ep->maxforget, p->msg.id);
	ids_add(&ep->done, &ep->ndone, &ep->maxdone, p->msg.id);
	ep->done_changed = true;
	ep->dirty = true;
	MemoryContextSwitchTo(old);
	dlist_delete(&p->node);
	ep->queued--;
}

/*
 * Dead-letter a message: out of the queue, saved by the next persist, and
 * finished like a delivery.  (Not freed: the caller may be walking the queue.)
 */
static void
pending_dead(Endpoint *ep, Pending *p)
{
	MemoryContext old = MemoryContextSwitchTo(ep->cxt);

	ep->dead_lettered++;
	ids_add(&ep->done, &ep->ndone, &ep->maxdone, p->msg.id);
	ep->done_changed = true;
	ep->dirty = true;
	p->save = true;
	dlist_delete(&p->node);
	ep->queued--;
	ep->dead = lappend(ep->dead, p);
	MemoryContextSwitchTo(old);
}

static void
jsonb_free(Jsonb *jb, Datum d)
{
	if (jb && (Pointer) jb != DatumGetPointer(d))
		pfree(jb);
}

/*
 * Build and start the HTTP request for req, in the send pass's transaction
 * (it reads the payloads; curl only queues the request: no network I/O
 * happens in it).  A batch takes its messages in order until the next one
 * would take its body past BATCH_BODY_MAX: those left come back as a new
 * Request (NULL if none).  A message too large for any body is
 * dead-lettered instead.  Each payload is detoasted, printed into the body
 * and freed in turn; the body is freed once curl has copied it.  The
 * Request itself lives in delivery_cxt until its result is back.
 */
static Request *
delivery_submit(Request *req)
{
	Endpoint   *ep = req->ep;
	bool		batched = ep->batch_size > 1;
	Request    *rest = NULL;
	Jsonb	   *single_headers = NULL;
	int64	   *ids = palloc(sizeof(int64) * req->n);
	Datum		args[1];
	SPITupleTable *rows;
	uint64		nrows;
	uint64		row = 0;
	int			sent = 0;
	int			i;
	StringInfoData body;
	MemoryContext old;

	if (!send_began)
		delivery_begin("outbox: reading payloads");
	send_began = true;
	for (i = 0; i < req->n; i++)
		ids[i] = req->items[i]->msg.id;
	args[0] = PointerGetDatum(int64_array(ids, req->n));
	nrows = outbox_spi_run(&plan_bodies, args, NULL, true, 0, SPI_OK_SELECT);
	rows = SPI_tuptable;

	old = MemoryContextSwitchTo(body_cxt);
	initStringInfo(&body);
	for (i = 0; i < req->n; i++)
	{
		Pending    *p = req->items[i];
		bool		isnull;
		Datum		pd;
		Datum		hd = (Datum) 0;
		Jsonb	   *payload;
		Jsonb	   *headers = NULL;
		Size		len;

		while (row < nrows &&
			   DatumGetInt64(SPI_getbinval(rows->vals[row], rows->tupdesc, 1, &isnull)) < p->msg.id)
			row++;
		if (row == nrows ||
			DatumGetInt64(SPI_getbinval(rows->vals[row], rows->tupdesc, 1, &isnull)) != p->msg.id)
		{
			/* deleted by hand: nothing left to send */
			MemoryContext cxt = MemoryContextSwitchTo(delivery_cxt);

			pending_finished(ep, p);
			gone = lappend(gone, p);
			MemoryContextSwitchTo(cxt);
			continue;
		}
		pd = SPI_getbinval(rows->vals[row], rows->tupdesc, 2, &isnull);
		payload = DatumGetJsonbP(pd);
		hd = SPI_getbinval(rows->vals[row], rows->tupdesc, 3, &isnull);
		if (!isnull)
			headers = DatumGetJsonbP(hd);
		len = webhook_json_length(payload, OUTBOX_MAX_MESSAGE_TEXT) +
			(headers ? webhook_json_length(headers, OUTBOX_MAX_MESSAGE_TEXT) : 0);
		if (len > OUTBOX_MAX_MESSAGE_TEXT)
		{
			/* published before outbox.publish refused such messages */
			p->attempts++;
			p->last_status = 0;
			if (p->last_error)
				pfree(p->last_error);
			p->last_error = MemoryContextStrdup(ep->cxt, psprintf("message too large to send: more than %d bytes as JSON text",
																  OUTBOX_MAX_MESSAGE_TEXT));
			pending_dead(ep, p);
		}
		else if (batched && sent > 0 &&
				 body.len + len + webhook_envelope_length(&p->msg) > BATCH_BODY_MAX)
		{
			jsonb_free(payload, pd);
			jsonb_free(headers, hd);
			break;				/* cut the batch before this message */
		}
		else
		{
			/* a message larger than a batch gets a body of its size, not twice it */
			if (sent == 0 && len >= BATCH_BODY_MAX)
				body.data = repalloc(body.data, body.maxlen = len + webhook_envelope_length(&p->msg) + 1);
			webhook_body_add(&body, batched, &p->msg, payload, headers);
			req->items[sent++] = p;
			if (!batched)
				single_headers = headers;
		}
		jsonb_free(payload, pd);
		if (headers != single_headers)
			jsonb_free(headers, hd);
	}
	if (i < req->n)
	{
		rest = request_new(ep);
		for (; i < req->n; i++)
			rest->items[rest->n++] = req->items[i];
	}
	req->n = sent;
	if (sent == 0)
		pfree(req);
	else
	{
		WebhookMessage **msgs = palloc(sizeof(WebhookMessage *) * sent);
		List	   *headers;

		for (i = 0; i < sent; i++)
			msgs[i] = &req->items[i]->msg;
		headers = webhook_build(&ep->wh, msgs, sent, batched, single_headers, &body);
		/* curl copies the body and the headers */
		http_post(req, ep->url, headers, body.data, body.len, ep->timeout_ms);
		req->body_len = body.len;
		ep->body_bytes += body.len;
		ep->in_flight++;
	}
	MemoryContextSwitchTo(old);
	MemoryContextReset(body_cxt);
	SPI_freetuptable(rows);
	pfree(ids);
	return rest;
}

/*
 * Start the requests that may go.  The payloads are read in one short
 * transaction, begun at the first request and committed before the
 * requests' I/O starts (in http_wait).
 */
void
delivery_send(void)
{
	TimestampTz now = GetCurrentTimestamp();
	ListCell   *lc;

	if (body_cxt == NULL)
	{
		body_cxt = AllocSetContextCreate(delivery_cxt, "outbox request body", ALLOCSET_DEFAULT_SIZES);
		compat_return_large_blocks();
	}
	foreach(lc, endpoints)
		endpoint_send(lfirst(lc), now);
	if (send_began)
		delivery_end();
	send_began = false;
	foreach(lc, gone)
		pending_release(lfirst(lc));
	list_free(gone);
	gone = NIL;
}

/* ---- results ---- */

static bool
status_retryable(int status)
{
	return status == 0 || status == 408 || status == 429 || status >= 500 ||
		(status >= 300 && status < 400);
}

/* full jitter: a random delay up to min(cap, base * 2^(attempt - 1)) */
static TimestampTz
backoff_until(Endpoint *ep, int attempt, long retry_after_ms, TimestampTz now)
{
	double		ceiling = Min((double) ep->backoff_max_ms,
							  ep->backoff_base_ms * pow(2.0, Min(attempt - 1, 40)));
	double		delay = pg_prng_double(&pg_global_prng_state) * ceiling;

	if (retry_after_ms >= 0)
		delay = Max(delay, (double) retry_after_ms);
	return TimestampTzPlusMilliseconds(now, (int64) delay);
}


/* A request finished: record its outcome in memory.  No transaction. */
void
delivery_complete(HttpResult *r)
{
	Request    *req = r->owner;
	Endpoint   *ep = req->ep;
	TimestampTz now = GetCurrentTimestamp();
	bool		ok = r->status >= 200 && r->status < 300;

	ep->in_flight--;
	ep->body_bytes -= req->body_len;
	ep->unsaved++;
	ep->dirty = true;
	if (ok)
		ep->last_success_at = now;
	else
	{
		ep->last_failure_at = now;
		ep->last_http_status = r->status;
		strlcpy(ep->last_error, r->error, sizeof(ep->last_error));
	}
	if (ok)
	{
		ep->failures = 0;
		ep->trips = 0;
		ep->breaker = BREAKER_CLOSED;
	}
	else if (ep->breaker == BREAKER_HALF_OPEN || ++ep->failures >= BREAKER_THRESHOLD)
	{
		ep->breaker = BREAKER_OPEN;
		ep->trips++;
		ep->open_until = TimestampTzPlusMilliseconds(now, Min(BREAKER_MAX_MS, 1000L << Min(ep->trips - 1, 6)));
	}
	if (r->status == 410)
		ep->paused = ep->pause_now = true;

	for (int i = 0; i < req->n; i++)
	{
		Pending    *p = req->items[i];

		p->in_flight = false;
		if (ok)
		{
			ep->delivered++;
			ep->latencies[ep->latency_pos] = (float4) (now - p->msg.created_at) / 1000.0;
			ep->latency_pos = (ep->latency_pos + 1) % STAT_LATENCIES;
			ep->nlatencies = Min(ep->nlatencies + 1, STAT_LATENCIES);
			pending_finished(ep, p);
			pending_release(p);
			continue;
		}
		p->attempts++;
		ep->failed_attempts++;
		p->last_status = r->status;
		if (p->last_error)
			pfree(p->last_error);
		p->last_error = MemoryContextStrdup(ep->cxt, r->error);
		p->save = true;
		if (!r->blocked && status_retryable(r->status) && p->attempts < ep->max_attempts)
		{
			p->parked = true;
			p->waiting_key = false;
			p->due = backoff_until(ep, p->attempts, r->retry_after_ms, now);
		}
		else
			pending_dead(ep, p);
	}
	pfree(req);
	/* a dropped endpoint is freed by the next reload, once idle */
}

#define PERSIST_EVERY_MS	20
static TimestampTz last_persist = 0;

/* ---- saving progress ---- */

/*
 * On an ordered endpoint, messages queued behind a parked message with the
 * same key are parked as well (next attempt NULL: after their predecessor),
 * so that the cursor can pass them.
 */
static void
endpoint_park_followers(Endpoint *ep)
{
	dlist_iter	it;
	List	   *parked_keys = NIL;

	if (!ep->ordered)
		return;
	dlist_foreach(it, &ep->queue)
	{
		Pending    *p = dlist_container(Pending, node, it.cur);

		if (p->msg.key == NULL)
			continue;
		if (p->parked)
			parked_keys = lappend(parked_keys, p->msg.key);
		else if (!p->in_flight && key_blocked(parked_keys, p->msg.key))
		{
			p->parked = p->waiting_key = p->save = true;
			p->due = 0;
		}
	}
	list_free(parked_keys);
}

/* Save the progress of every endpoint that moved, in one transaction. */
void
delivery_persist(void)
{
	ListCell   *lc;
	bool		began = false;
	List	   *skipped = NIL;	/* endpoints whose row was locked or gone */
	MemoryContext caller_cxt = CurrentMemoryContext;

	foreach(lc, endpoints)
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

			if (!p->parked && p->msg.id - 1 < cursor)
				cursor = p->msg.id - 1;
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
		args[2] = PointerGetDatum(int64_array(ep->done, ep->ndone));
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

				ids[i] = Int64GetDatum(p->msg.id);
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
			args[1] = PointerGetDatum(int64_array(ep->forget, ep->nforget));
			outbox_spi_run(&plan_forget_deliveries, args, NULL, false, 0, SPI_OK_DELETE);
		}
	}
	if (!began)
		return;
	delivery_end();
	retention_soon();

	/* committed: drop what is now saved */
	foreach(lc, endpoints)
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
 * Save progress now?  Saving is a commit (and a WAL flush): group it.  Save
 * when nothing is in flight (about to sleep), when an endpoint cannot send
 * because its finished-but-unsaved requests fill half its window, or every
 * PERSIST_EVERY_MS.
 */
bool
delivery_should_persist(void)
{
	ListCell   *lc;
	bool		dirty = false;

	foreach(lc, endpoints)
	{
		Endpoint   *ep = lfirst(lc);

		if (!ep->dirty || ep->dropped)
			continue;
		dirty = true;
		if (ep->unsaved > 0 && ep->unsaved * 2 >= ep->max_in_flight)
			return true;
	}
	return dirty && (http_in_flight() == 0 ||
					 TimestampDifferenceExceeds(last_persist, GetCurrentTimestamp(), PERSIST_EVERY_MS));
}

/* ms until the next scheduled work (a retry, a probe, a re-read), or -1. */
long
delivery_next_timeout(void)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz next = 0;
	ListCell   *lc;

	foreach(lc, endpoints)
	{
		Endpoint   *ep = lfirst(lc);
		dlist_iter	it;

		if (ep->dropped)
			continue;
		if (ep->want_fetch && !ep->paused && !ep->invalid && endpoint_has_room(ep))
			return 0;			/* more of the log to read, and room for it */
		if (ep->dirty)
		{
			/* grouped saves still happen within PERSIST_EVERY_MS */
			TimestampTz t = TimestampTzPlusMilliseconds(last_persist, PERSIST_EVERY_MS);

			if (next == 0 || t < next)
				next = t;
		}
		if (ep->dropped || ep->paused || ep->invalid)
			continue;
		if (ep->refetch_at != 0 && (next == 0 || ep->refetch_at < next))
			next = ep->refetch_at;
		/* once the cool-down is over, wait for the probe's message to be due */
		if (ep->breaker == BREAKER_OPEN && ep->queued > 0 && ep->open_until > now)
		{
			if (next == 0 || ep->open_until < next)
				next = ep->open_until;
			continue;
		}
		if (ep->rate_limit > 0 && ep->queued > ep->in_flight && ep->tokens < 1.0)
		{
			TimestampTz t = TimestampTzPlusMilliseconds(now, 1000 / ep->rate_limit + 1);

			if (next == 0 || t < next)
				next = t;
		}
		dlist_foreach(it, &ep->queue)
		{
			Pending    *p = dlist_container(Pending, node, it.cur);

			if (!p->in_flight && p->due > now && (next == 0 || p->due < next))
				next = p->due;
		}
	}
	if (next == 0)
		return -1;
	return Max(0, TimestampDifferenceMilliseconds(now, next));
}

/* ---- statistics ---- */

/* Is any endpoint's reading held back by a running transaction? */
bool
delivery_horizon_blocked(void)
{
	ListCell   *lc;

	foreach(lc, endpoints)
		if (((Endpoint *) lfirst(lc))->refetch_at != 0)
			return true;
	return false;
}

/*
 * Publish the figures of every endpoint to the relay's slot, for
 * outbox.stat_endpoints.  Takes the shared-memory lock briefly.
 */
void
delivery_report(RelaySlot *slot, bool horizon_blocked)
{
	EndpointStats *stats = shmem_slot_stats(slot);
	int			max = outbox_shmem->endpoints_per_slot;
	int			n = list_length(endpoints);
	int		   *in_flight = palloc0(sizeof(int) * Max(n, 1));
	TimestampTz *oldest = palloc0(sizeof(TimestampTz) * Max(n, 1));
	int			k = 0;
	int			i = 0;
	ListCell   *lc;
	TimestampTz now = GetCurrentTimestamp();

	/* walk the queues before taking the lock that every relay and reader shares */
	foreach(lc, endpoints)
	{
		Endpoint   *ep = lfirst(lc);
		dlist_iter	it;

		dlist_foreach(it, &ep->queue)
		{
			Pending    *p = dlist_container(Pending, node, it.cur);

			if (p->in_flight)
				in_flight[i]++;
			if (oldest[i] == 0 || p->msg.created_at < oldest[i])
				oldest[i] = p->msg.created_at;
		}
		i++;
	}

	LWLockAcquire(outbox_shmem->lock, LW_EXCLUSIVE);
	slot->loops++;
	slot->last_activity_at = now;
	if (!horizon_blocked)
		slot->horizon_blocked_since = 0;
	else if (slot->horizon_blocked_since == 0)
		slot->horizon_blocked_since = now;
	i = 0;
	foreach(lc, endpoints)
	{
		Endpoint   *ep = lfirst(lc);
		EndpointStats *st;

		i++;
		if (ep->dropped || k >= max)
			continue;
		st = &stats[k++];
		st->endpoint_id = ep->id;
		strlcpy(st->state, ep->invalid ? "invalid" : ep->paused ? "paused" :
				ep->breaker == BREAKER_OPEN ? "open" :
				ep->breaker == BREAKER_HALF_OPEN ? "half_open" : "active", sizeof(st->state));
		st->queued = ep->queued;
		st->in_flight = in_flight[i - 1];
		st->oldest_pending = oldest[i - 1];
		st->fetched = ep->fetched;
		st->delivered = ep->delivered;
		st->failed_attempts = ep->failed_attempts;
		st->dead_lettered = ep->dead_lettered;
		st->last_success_at = ep->last_success_at;
		st->last_failure_at = ep->last_failure_at;
		st->last_http_status = ep->last_http_status;
		strlcpy(st->last_error, ep->last_error, sizeof(st->last_error));
		st->nlatencies = ep->nlatencies;
		memcpy(st->latencies, ep->latencies, sizeof(float4) * ep->nlatencies);
	}
	for (; k < max && stats[k].endpoint_id != 0; k++)
		stats[k].endpoint_id = 0;
	LWLockRelease(outbox_shmem->lock);
}
