/*-------------------------------------------------------------------------
 * webhook.c
 *		The webhook transport (transport.h): the HTTP request for a message
 *		(or a batch): body, headers and the Standard Webhooks signature,
 *		sent through http.c, and what its outcome means for the delivery
 *		core (2xx delivered; transport errors, timeouts, 408, 429, 5xx and
 *		3xx retried; other 4xx and a blocked address dead-lettered at once;
 *		410 also pauses the endpoint).
 *
 * Standard Webhooks (https://www.standardwebhooks.com): headers webhook-id
 * (stable across retries: "msg_<id>"), webhook-timestamp (Unix seconds of
 * this attempt) and, when the endpoint has secrets, webhook-signature: one
 * "v1,<base64 HMAC-SHA256 of id.timestamp.body>" per secret, separated by
 * spaces, so that receivers can rotate secrets.  A "whsec_<base64>" secret
 * signs with its base64-decoded bytes, any other with its raw bytes.  The
 * crypto is PostgreSQL's own (common/hmac.h, common/base64.h).
 *
 * The endpoint's own headers are parsed once (webhook_json_headers, when the
 * relay loads the endpoint), the message's for each request; which of them
 * are sent is validate.c's rule (outbox_header_allowed): the endpoint's
 * never give way to a message's.
 *
 * batch_size 1: the body is the payload itself, with outbox-topic,
 * outbox-key and the message's headers as HTTP headers.  batch_size > 1: the
 * body is a JSON array of envelopes {"id", "topic", "key", "timestamp",
 * "headers", "payload"} (of one message, too), and webhook-id names the
 * batch.  Bodies are printed straight from the messages' jsonb, one message
 * at a time, so that the relay can cut a batch before it grows too large
 * (webhook_json_length tells the size first) and never holds a message's
 * text anywhere but in the body.
 *
 * Memory bounds (README, "Memory"), whatever the payloads and the batch
 * settings:
 *   BATCH_BODY_MAX		a batch is cut before the message that would take its
 *						body past this (nginx's default limit); a message alone
 *						may take up to OUTBOX_MAX_BODY_BYTES
 *   IN_FLIGHT_BODY_MAX	request bodies out at once per endpoint: no new request
 *						starts beyond it (one always may)
 * A body is freed as soon as curl has its copy.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/base64.h"
#include "common/hmac.h"
#include "common/sha2.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/json.h"
#include "utils/resowner.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "outbox.h"
#include "validate.h"
#include "http.h"
#include "transport.h"

#define BATCH_BODY_MAX		(1024 * 1024)
#define IN_FLIGHT_BODY_MAX	(8 * 1024 * 1024)

/* An endpoint's state (transport.h's conn), in its own memory context. */
typedef struct WebhookConn
{
	MemoryContext cxt;
	char	   *url;
	List	   *keys;			/* WebhookKey *, one per active secret */
	List	   *header_lines;	/* the endpoint's headers, "Name: value" */
	int			timeout_ms;
	int			batch_size;
	Size		body_bytes;		/* request bodies in flight */
	int			in_flight;		/* requests in flight */
	bool		closed;			/* the core is done with it: free when idle */
} WebhookConn;

/* One request in flight. */
typedef struct WebhookRequest
{
	WebhookConn *conn;
	void	   *owner;			/* the core's */
	Size		body_len;
} WebhookRequest;

typedef struct WebhookKey
{
	uint8	   *key;
	int			len;
} WebhookKey;

/* Decode one configured secret into its signing key; NULL if it is not valid. */
static WebhookKey *
webhook_key(const char *secret)
{
	WebhookKey *k = palloc(sizeof(WebhookKey));

	if (strncmp(secret, "whsec_", 6) == 0)
	{
		int			len = strlen(secret + 6);

		k->key = palloc(pg_b64_dec_len(len));
		k->len = pg_b64_decode(secret + 6, len, (char *) k->key, pg_b64_dec_len(len));
		if (k->len < 0)
			return NULL;		/* create_endpoint checks it: a row changed by hand */
	}
	else
	{
		k->len = strlen(secret);
		k->key = (uint8 *) pstrdup(secret);
	}
	return k;
}

/*
 * "v1,<sig> v1,<sig>..." for the signed content id.timestamp.body.
 *
 * The relay signs outside any transaction, but PostgreSQL's HMAC (with
 * OpenSSL) registers its context with CurrentResourceOwner: lend it one.
 */
static char *
webhook_signature(List *keys, const char *id, int64 ts, const StringInfo body)
{
	static ResourceOwner signing_owner = NULL;
	ResourceOwner saved_owner = CurrentResourceOwner;
	StringInfoData sig;
	char	   *prefix = psprintf("%s." INT64_FORMAT ".", id, ts);
	ListCell   *lc;

	if (signing_owner == NULL)
		signing_owner = ResourceOwnerCreate(NULL, "outbox webhook signing");
	if (CurrentResourceOwner == NULL)
		CurrentResourceOwner = signing_owner;

	initStringInfo(&sig);
	foreach(lc, keys)
	{
		WebhookKey *k = lfirst(lc);
		pg_hmac_ctx *ctx = pg_hmac_create(PG_SHA256);
		uint8		mac[PG_SHA256_DIGEST_LENGTH];
		char		b64[64];
		int			n;

		if (ctx == NULL ||
			pg_hmac_init(ctx, k->key, k->len) < 0 ||
			pg_hmac_update(ctx, (uint8 *) prefix, strlen(prefix)) < 0 ||
			pg_hmac_update(ctx, (uint8 *) body->data, body->len) < 0 ||
			pg_hmac_final(ctx, mac, sizeof(mac)) < 0)
			elog(ERROR, "could not compute the webhook signature");
		pg_hmac_free(ctx);
		n = pg_b64_encode((char *) mac, sizeof(mac), b64, sizeof(b64));
		appendStringInfo(&sig, "%sv1,%.*s", sig.len ? " " : "", n, b64);
	}
	CurrentResourceOwner = saved_owner;
	pfree(prefix);
	return sig.data;
}

/* Does a "Name: value" line among lines have this name (case-insensitive)? */
static bool
webhook_header_present(List *lines, const char *name, int len)
{
	ListCell   *lc;

	foreach(lc, lines)
	{
		const char *line = lfirst(lc);

		if (pg_strncasecmp(line, name, len) == 0 && line[len] == ':')
			return true;
	}
	return false;
}

/*
 * Append "Name: value" lines for a stored JSON object of string headers: an
 * endpoint's, or a message's (from_message).  Leaves out what the rule of
 * validate.c (outbox_header_allowed) refuses, in rows stored before it or
 * changed by hand, and any name already among lines: what outbox and the
 * endpoint set wins, nothing is sent twice.
 */
static List *
webhook_jsonb_headers(List *lines, Jsonb *jb, bool from_message)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *name = NULL;
	int			namelen = 0;
	List	   *own = NIL;
	HeaderProblem problem;

	it = JsonbIteratorInit(&jb->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
		{
			name = v.val.string.val;
			namelen = v.val.string.len;
		}
		else if (tok == WJB_VALUE &&
				 outbox_header_allowed(name, namelen, &v, from_message, &problem) &&
				 !webhook_header_present(lines, name, namelen) &&
				 !webhook_header_present(own, name, namelen))
			own = lappend(own, psprintf("%.*s: %.*s", namelen, name,
										v.val.string.len, v.val.string.val));
	}
	return list_concat(lines, own);
}

/* The same, for the object as JSON text. */
static List *
webhook_json_headers(List *lines, const char *json, bool from_message)
{
	if (json == NULL || strcmp(json, "{}") == 0)
		return lines;
	return webhook_jsonb_headers(lines, DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(json))),
								 from_message);
}

/* Length of s as a JSON string: quotes and escapes (escape_json's rules). */
static Size
webhook_string_length(const char *s, int len)
{
	Size		n = 2;

	for (int i = 0; i < len; i++)
	{
		unsigned char c = s[i];

		if (c == '"' || c == '\\' || c == '\b' || c == '\f' || c == '\n' || c == '\r' || c == '\t')
			n += 2;
		else
			n += c < ' ' ? 6 : 1;
	}
	return n;
}

/*
 * An upper bound of the length of jb as JSON text (what JsonbToCString
 * writes), found without writing it: a payload of 1 MB can print as
 * gigabytes (numbers like 1e131000 print every digit, a control character
 * takes six bytes), which no request body could hold.  Stops as soon as the
 * length passes limit.
 */
Size
webhook_json_length(Jsonb *jb, Size limit)
{
	JsonbIterator *it = JsonbIteratorInit(&jb->root);
	JsonbValue	v;
	JsonbIteratorToken tok;
	Size		n = 0;

	while (n <= limit && (tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		n += 2;					/* a bracket, or a separator: ", " ": " */
		if (tok != WJB_KEY && tok != WJB_VALUE && tok != WJB_ELEM)
			continue;
		switch (v.type)
		{
			case jbvString:
				n += webhook_string_length(v.val.string.val, v.val.string.len);
				break;
			case jbvNumeric:
				{
					char	   *num = DatumGetCString(DirectFunctionCall1(numeric_out,
																		  NumericGetDatum(v.val.numeric)));

					n += strlen(num);
					pfree(num);
				}
				break;
			default:
				n += 5;			/* null, true, false */
				break;
		}
	}
	return n;
}

/*
 * A request's body: the payload itself (not batched), or a JSON array of
 * envelopes {"id", "topic", "key", "timestamp", "headers", "payload"}
 * (batched).  webhook_body_add appends one message, webhook_build closes
 * the body and makes the headers.
 */
static void
webhook_body_add(StringInfo body, bool batched, const TransportMessage *m, Jsonb *payload,
				 Jsonb *headers)
{
	if (!batched)
	{
		JsonbToCString(body, &payload->root, VARSIZE(payload));
		return;
	}
	appendStringInfo(body, "%c{\"id\":\"msg_" INT64_FORMAT "\",\"topic\":", body->len ? ',' : '[', m->id);
	escape_json(body, m->topic);
	appendStringInfoString(body, ",\"key\":");
	if (m->key)
		escape_json(body, m->key);
	else
		appendStringInfoString(body, "null");
	appendStringInfo(body, ",\"timestamp\":" INT64_FORMAT ",\"headers\":",
					 (int64) timestamptz_to_time_t(m->created_at));
	if (headers)
		JsonbToCString(body, &headers->root, VARSIZE(headers));
	else
		appendStringInfoString(body, "{}");
	appendStringInfoString(body, ",\"payload\":");
	JsonbToCString(body, &payload->root, VARSIZE(payload));
	appendStringInfoChar(body, '}');
}

/* What webhook_body_add adds for m besides its headers and payload (a bound). */
static Size
webhook_envelope_length(const TransportMessage *m)
{
	return 128 + webhook_string_length(m->topic, strlen(m->topic)) +
		(m->key ? webhook_string_length(m->key, strlen(m->key)) : 0);
}

/*
 * Finish the request for msgs[0 .. n-1] to endpoint ep, whose body
 * webhook_body_add wrote: close a batch, and return the header lines
 * (palloc'd "Name: value").  headers: the message's own, not batched.
 */
static List *
webhook_build(const WebhookConn *ep, const TransportMessage *msgs, int n, bool batched,
			  Jsonb *headers, StringInfo body)
{
	List	   *lines = NIL;
	int64		ts = (int64) time(NULL);
	char	   *id;

	if (!batched)
	{
		id = psprintf("msg_" INT64_FORMAT, msgs[0].id);
		lines = lappend(lines, psprintf("outbox-topic: %s", msgs[0].topic));
		if (msgs[0].key)
			lines = lappend(lines, psprintf("outbox-key: %s", msgs[0].key));
	}
	else
	{
		id = psprintf("batch_" INT64_FORMAT "_" INT64_FORMAT, msgs[0].id, msgs[n - 1].id);
		appendStringInfoChar(body, ']');
	}

	lines = lappend(lines, "Content-Type: application/json");
	lines = lappend(lines, psprintf("webhook-id: %s", id));
	lines = lappend(lines, psprintf("webhook-timestamp: " INT64_FORMAT, ts));
	if (ep->keys != NIL)
		lines = lappend(lines, psprintf("webhook-signature: %s",
										webhook_signature(ep->keys, id, ts, body)));
	lines = list_concat(lines, ep->header_lines);
	if (!batched && headers)
		lines = webhook_jsonb_headers(lines, headers, true);
	return lines;
}

/* ---- the transport (transport.h) ---- */

static pgsocket
webhook_init(void)
{
	return http_init();
}

/*
 * The endpoint's signing keys and headers, from its row.  Raises no error:
 * a secret that is not valid base64 (a row changed by hand) is a problem.
 */
static void *
webhook_open(const TransportConfig *cfg, void *prev, MemoryContext cxt, char **problem)
{
	MemoryContext conn_cxt = AllocSetContextCreate(cxt, "outbox webhook endpoint",
												   ALLOCSET_SMALL_SIZES);
	MemoryContext old = MemoryContextSwitchTo(conn_cxt);
	WebhookConn *conn = palloc0(sizeof(WebhookConn));

	conn->cxt = conn_cxt;
	conn->url = pstrdup(cfg->url);
	conn->timeout_ms = cfg->timeout_ms;
	conn->batch_size = cfg->batch_size;
	*problem = NULL;
	if (cfg->secret)
	{
		char	   *secrets = pstrdup(cfg->secret);
		char	   *save;

		for (char *tok = strtok_r(secrets, " \t\n", &save); tok; tok = strtok_r(NULL, " \t\n", &save))
		{
			WebhookKey *key = webhook_key(tok);

			if (key == NULL)
				*problem = pstrdup("a secret is not valid base64");
			else
				conn->keys = lappend(conn->keys, key);
		}
	}
	conn->header_lines = webhook_json_headers(NIL, cfg->headers_json, false);
	MemoryContextSwitchTo(old);
	if (*problem)
	{
		*problem = pstrdup(*problem);
		MemoryContextDelete(conn_cxt);
		return NULL;
	}
	/* prev keeps counting its own bodies in flight until they are back */
	return conn;
}

static void
webhook_close(void *p)
{
	WebhookConn *conn = p;

	conn->closed = true;
	if (conn->in_flight == 0)
		MemoryContextDelete(conn->cxt);
}

/*
 * Start the request for msgs (transport.h): one message, or a batch cut
 * before the message that would take its body past BATCH_BODY_MAX.  Each
 * payload is detoasted, printed into the body and freed in turn.
 */
static int
webhook_send(void *p, void *owner, const TransportMessage *msgs, int n, char **refusal)
{
	WebhookConn *conn = p;
	bool		batched = conn->batch_size > 1;
	Jsonb	   *single_headers = NULL;
	StringInfoData body;
	MemoryContext body_cxt;
	MemoryContext old;
	WebhookRequest *req;
	int			sent = 0;

	*refusal = NULL;
	if (conn->in_flight > 0 && conn->body_bytes >= IN_FLIGHT_BODY_MAX)
		return 0;
	body_cxt = AllocSetContextCreate(CurrentMemoryContext, "outbox request body",
									 ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(body_cxt);
	initStringInfo(&body);
	for (int i = 0; i < n; i++)
	{
		Jsonb	   *payload = DatumGetJsonbP(msgs[i].payload);
		Jsonb	   *headers = msgs[i].headers ? DatumGetJsonbP(msgs[i].headers) : NULL;
		Size		len = webhook_json_length(payload, OUTBOX_MAX_MESSAGE_TEXT) +
			(headers ? webhook_json_length(headers, OUTBOX_MAX_MESSAGE_TEXT) : 0);
		bool		cut;

		/* too large for any body: published before outbox.publish refused such */
		if (len > OUTBOX_MAX_MESSAGE_TEXT && sent == 0)
		{
			MemoryContextSwitchTo(old);
			*refusal = psprintf("message too large to send: more than %d bytes as JSON text",
								OUTBOX_MAX_MESSAGE_TEXT);
			MemoryContextDelete(body_cxt);
			return 0;
		}
		cut = len > OUTBOX_MAX_MESSAGE_TEXT ||
			(batched && sent > 0 &&
			 body.len + len + webhook_envelope_length(&msgs[i]) > BATCH_BODY_MAX);
		if (!cut)
		{
			/* a message larger than a batch gets a body of its size, not twice it */
			if (sent == 0 && len >= BATCH_BODY_MAX)
				body.data = repalloc(body.data, body.maxlen = len + webhook_envelope_length(&msgs[i]) + 1);
			webhook_body_add(&body, batched, &msgs[i], payload, headers);
			sent++;
		}
		transport_jsonb_free(payload, msgs[i].payload);
		if (!batched && !cut)
			single_headers = headers;
		else
			transport_jsonb_free(headers, msgs[i].headers);
		if (cut)
			break;				/* the rest go in a later request */
	}

	req = MemoryContextAlloc(conn->cxt, sizeof(WebhookRequest));
	req->conn = conn;
	req->owner = owner;
	req->body_len = body.len;
	/* curl copies the body and the headers */
	http_post(req, conn->url, webhook_build(conn, msgs, sent, batched, single_headers, &body),
			  body.data, body.len, conn->timeout_ms);
	conn->body_bytes += body.len;
	conn->in_flight++;
	MemoryContextSwitchTo(old);
	MemoryContextDelete(body_cxt);
	return sent;
}

static bool
status_retryable(int status)
{
	return status == 0 || status == 408 || status == 429 || status >= 500 ||
		(status >= 300 && status < 400);
}

static bool
webhook_next_result(TransportResult *r)
{
	HttpResult	h;
	WebhookRequest *req;
	WebhookConn *conn;

	if (!http_next_result(&h))
		return false;
	req = h.owner;
	conn = req->conn;
	r->owner = req->owner;
	r->status = h.status;
	r->retry_after_ms = h.retry_after_ms;
	r->pause = h.status == 410;
	if (h.status >= 200 && h.status < 300)
	{
		r->outcome = TRANSPORT_OK;
		r->error[0] = '\0';
	}
	else
	{
		r->outcome = !h.blocked && status_retryable(h.status) ? TRANSPORT_RETRY : TRANSPORT_PERMANENT;
		strlcpy(r->error, h.error, sizeof(r->error));
	}
	conn->body_bytes -= req->body_len;
	conn->in_flight--;
	pfree(req);
	if (conn->closed && conn->in_flight == 0)
		MemoryContextDelete(conn->cxt);
	return true;
}

const TransportOps webhook_transport = {
	.name = "http",
	.pipelined = false,
	.init = webhook_init,
	.timeout = http_timeout,
	.progress = http_progress,
	.next_result = webhook_next_result,
	.in_flight = http_in_flight,
	.open = webhook_open,
	.send = webhook_send,
	.close = webhook_close,
};
