/*-------------------------------------------------------------------------
 * endpoint.c
 *		Loading the relay's endpoints from outbox._endpoints: one typed row
 *		decoder (columns by name, never by number), the configuration each
 *		endpoint takes from its row, its transport's state (transport.h),
 *		and its parked deliveries.
 *
 * Endpoints keep their queues, their in-flight requests and their unsaved
 * results across a reload, whatever changed: a reload must never repeat a
 * delivery.  New ones start from their saved cursor, done_ahead and parked
 * rows.  A row the relay cannot use (changed by hand, see options.c) marks
 * its endpoint invalid, with the reason as its last_error: it sends nothing
 * until a reload finds it fixed, and keeps its queue and cursor.
 *
 * delivery_reload runs one short transaction.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "delivery.h"
#include "endpoint.h"
#include "options.h"
#include "spi.h"

List	   *delivery_endpoints = NIL;
MemoryContext delivery_cxt = NULL;
static Oid	extension_oid = InvalidOid; /* of the endpoints loaded */

static OutboxPlan plan_endpoints = {
	"SELECT id, name, url, topics, secret, headers::text AS headers, paused, cursor_id,"
	" done_ahead, options, kafka_secrets AS secret_options"
	" FROM outbox._endpoints",
	0, {0}
};
static OutboxPlan plan_parked = {
	"SELECT d.message_id, d.attempts, d.next_attempt_at, m.topic, m.key, m.created_at"
	" FROM outbox._deliveries d JOIN outbox._messages m ON m.id = d.message_id"
	" WHERE d.endpoint_id = $1 AND d.state = 'retry' ORDER BY d.message_id",
	1, {INT4OID}
};

/* A row of outbox._endpoints, decoded (strings in the current context). */
typedef struct EndpointRow
{
	int			id;
	char	   *name;
	char	   *url;
	List	   *topics;			/* char * */
	bool		null_topic;		/* a topic pattern is null */
	char	   *secret;			/* NULL: none */
	char	   *headers;		/* JSON object text */
	bool		paused;
	int64		cursor_id;
	int64	   *done_ahead;
	int			ndone_ahead;
	Jsonb	   *options;
	Jsonb	   *secret_options; /* NULL: none */
} EndpointRow;

/* column numbers of plan_endpoints' result, by name, found once */
typedef struct EndpointColumns
{
	int			id,
				name,
				url,
				topics,
				secret,
				headers,
				paused,
				cursor_id,
				done_ahead,
				options,
				secret_options;
} EndpointColumns;

static int
column(TupleDesc desc, const char *name)
{
	int			n = SPI_fnumber(desc, name);

	if (n <= 0)
		elog(ERROR, "outbox: column \"%s\" missing from the endpoints query", name);
	return n;
}

static void
columns_find(TupleDesc desc, EndpointColumns *c)
{
	c->id = column(desc, "id");
	c->name = column(desc, "name");
	c->url = column(desc, "url");
	c->topics = column(desc, "topics");
	c->secret = column(desc, "secret");
	c->headers = column(desc, "headers");
	c->paused = column(desc, "paused");
	c->cursor_id = column(desc, "cursor_id");
	c->done_ahead = column(desc, "done_ahead");
	c->options = column(desc, "options");
	c->secret_options = column(desc, "secret_options");
}

static Datum
row_datum(HeapTuple tup, TupleDesc desc, int col, bool *isnull)
{
	return SPI_getbinval(tup, desc, col, isnull);
}

/* Decode one row (every NOT NULL column of the table is read as such). */
static void
endpoint_row_decode(HeapTuple tup, TupleDesc desc, const EndpointColumns *c, EndpointRow *row)
{
	bool		isnull;
	Datum		d;
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	row->id = DatumGetInt32(row_datum(tup, desc, c->id, &isnull));
	row->name = SPI_getvalue(tup, desc, c->name);
	row->url = SPI_getvalue(tup, desc, c->url);
	row->topics = NIL;
	row->null_topic = false;
	deconstruct_array(DatumGetArrayTypeP(row_datum(tup, desc, c->topics, &isnull)),
					  TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
	{
		if (nulls[i])
			row->null_topic = true;
		else
			row->topics = lappend(row->topics, TextDatumGetCString(elems[i]));
	}
	row->secret = SPI_getvalue(tup, desc, c->secret);
	row->headers = SPI_getvalue(tup, desc, c->headers);
	row->paused = DatumGetBool(row_datum(tup, desc, c->paused, &isnull));
	row->cursor_id = DatumGetInt64(row_datum(tup, desc, c->cursor_id, &isnull));
	deconstruct_array(DatumGetArrayTypeP(row_datum(tup, desc, c->done_ahead, &isnull)),
					  INT8OID, 8, true, TYPALIGN_DOUBLE, &elems, NULL, &n);
	row->done_ahead = palloc(sizeof(int64) * Max(n, 1));
	for (int i = 0; i < n; i++)
		row->done_ahead[i] = DatumGetInt64(elems[i]);
	row->ndone_ahead = n;
	row->options = DatumGetJsonbP(row_datum(tup, desc, c->options, &isnull));
	d = row_datum(tup, desc, c->secret_options, &isnull);
	row->secret_options = isnull ? NULL : DatumGetJsonbP(d);
}

/*
 * An endpoint that left the catalog: nothing more goes out (its transport
 * withdraws what has not left yet), and it goes once its requests are back
 * (delivery_complete calls this again).
 */
void
endpoint_gone(Endpoint *ep)
{
	Assert(ep->dropped);
	if (ep->conn != NULL)
	{
		ep->transport->close(ep->conn);
		ep->conn = NULL;
	}
	if (ep->in_flight == 0)
	{
		/* its memory: in delivery_cxt and its own context */
		delivery_endpoints = list_delete_ptr(delivery_endpoints, ep);
		MemoryContextDelete(ep->cxt);
		pfree(ep);
	}
}

/* An endpoint of the catalog (dropped ones have id -1: see delivery_reload) */
static Endpoint *
endpoint_by_id(int id)
{
	ListCell   *lc;

	foreach(lc, delivery_endpoints)
		if (((Endpoint *) lfirst(lc))->id == id)
			return lfirst(lc);
	return NULL;
}

static bool
pending_in(List *list, int64 id)
{
	ListCell   *lc;

	foreach(lc, list)
		if (((Pending *) lfirst(lc))->id == id)
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
	TupleDesc	desc = SPI_tuptable->tupdesc;

	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		bool		isnull;
		int64		id = DatumGetInt64(row_datum(tup, desc, 1, &isnull));
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
		p = pending_new(ep, id, SPI_getvalue(tup, desc, 4), SPI_getvalue(tup, desc, 5),
						DatumGetTimestampTz(row_datum(tup, desc, 6, &isnull)));
		due = row_datum(tup, desc, 3, &no_due);
		p->attempts = DatumGetInt32(row_datum(tup, desc, 2, &isnull));
		p->parked = true;
		p->waiting_key = no_due;
		p->due = no_due ? 0 : DatumGetTimestampTz(due);
		queue_insert(ep, p);
	}
}

/*
 * Set ep's configuration from its row.  Raises no error (see the top).  The
 * transport's state is replaced only when the row is usable; the transport
 * keeps the previous one for the requests in flight.
 */
static void
endpoint_configure(Endpoint *ep, const EndpointRow *row)
{
	EndpointOptions opt;
	char	   *problem = NULL;
	const TransportOps *transport = transport_for_url(row->url);
	MemoryContext old;
	ListCell   *lc;

	/* names and patterns live in their own context, replaced on each reload */
	if (ep->config_cxt)
		MemoryContextReset(ep->config_cxt);
	else
		ep->config_cxt = AllocSetContextCreate(ep->cxt, "outbox endpoint config",
											   ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(ep->config_cxt);
	ep->name = pstrdup(row->name);
	ep->patterns = NIL;
	foreach(lc, row->topics)
		ep->patterns = lappend(ep->patterns, pstrdup(lfirst(lc)));
	MemoryContextSwitchTo(old);

	/* a 410 not saved yet (its row was locked) still pauses it */
	ep->paused = row->paused || ep->pause_now;
	if (row->null_topic)
		problem = "a topic pattern is null";
	else if (transport == NULL)
		problem = "the URL's scheme has no transport";
	if (problem == NULL)
		problem = options_read(OPTIONS_ENDPOINT, row->options, &opt);
	if (problem == NULL)
	{
		TransportConfig cfg = {
			.name = row->name,
			.url = row->url,
			.secret = row->secret,
			.headers_json = row->headers,
			.options = row->options,
			.secret_options = row->secret_options,
			.timeout_ms = opt.timeout_ms,
			.batch_size = opt.batch_size,
		};
		void	   *prev = (ep->transport == transport) ? ep->conn : NULL;
		void	   *conn = transport->open(&cfg, prev, ep->cxt, &problem);

		if (conn != NULL)
		{
			if (ep->conn != NULL && ep->conn != conn)
				ep->transport->close(ep->conn);
			ep->transport = transport;
			ep->conn = conn;
		}
	}

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

static Endpoint *
endpoint_new(const EndpointRow *row)
{
	Endpoint   *ep = MemoryContextAllocZero(delivery_cxt, sizeof(Endpoint));
	MemoryContext old;

	ep->id = row->id;
	ep->cxt = AllocSetContextCreate(delivery_cxt, "outbox endpoint", ALLOCSET_DEFAULT_SIZES);
	dlist_init(&ep->queue);
	ep->want_fetch = true;
	ep->tokens_at = GetCurrentTimestamp();
	ep->cursor = ep->fetched = row->cursor_id;
	old = MemoryContextSwitchTo(ep->cxt);
	for (int i = 0; i < row->ndone_ahead; i++)
	{
		ids_add(&ep->done, &ep->ndone, &ep->maxdone, row->done_ahead[i]);
		ep->loaded_upto = Max(ep->loaded_upto, row->done_ahead[i]);
	}
	MemoryContextSwitchTo(delivery_cxt);
	delivery_endpoints = lappend(delivery_endpoints, ep);
	MemoryContextSwitchTo(old);
	return ep;
}

/*
 * Load the endpoint configuration; called when its generation changed.
 * Runs one transaction.
 */
void
delivery_reload(void)
{
	uint64		n;
	List	   *reloaded = NIL;
	EndpointColumns cols;
	ListCell   *lc;

	if (delivery_cxt == NULL)
		delivery_cxt = AllocSetContextCreate(TopMemoryContext, "outbox delivery",
											 ALLOCSET_DEFAULT_SIZES);

	/*
	 * Save first: parked rows are reloaded below, and a retry that just
	 * finished must not come back from its stale 'retry' row.
	 */
	delivery_persist();
	delivery_begin("outbox: loading endpoints");
	foreach(lc, delivery_endpoints)
		((Endpoint *) lfirst(lc))->dropped = true;
	/* the extension was dropped and created again: nothing carries over */
	if (extension_oid != get_extension_oid("outbox", false))
	{
		foreach(lc, delivery_endpoints)
			((Endpoint *) lfirst(lc))->id = -1;
		extension_oid = get_extension_oid("outbox", false);
	}

	n = outbox_spi_run(&plan_endpoints, NULL, NULL, true, 0, SPI_OK_SELECT);
	columns_find(SPI_tuptable->tupdesc, &cols);
	for (uint64 i = 0; i < n; i++)
	{
		EndpointRow row;
		Endpoint   *ep;

		endpoint_row_decode(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, &cols, &row);
		ep = endpoint_by_id(row.id);
		if (ep == NULL)
			ep = endpoint_new(&row);
		ep->dropped = false;
		endpoint_configure(ep, &row);
		reloaded = lappend(reloaded, ep);
	}
	foreach(lc, reloaded)
		endpoint_load_parked(lfirst(lc));
	delivery_end();

	/*
	 * Endpoints that left the catalog go once their requests are back; until
	 * then no later reload takes them for a catalog row.
	 */
	foreach(lc, list_copy(delivery_endpoints))
	{
		Endpoint   *ep = lfirst(lc);

		if (!ep->dropped)
			continue;
		ep->id = -1;
		endpoint_gone(ep);
	}
}
