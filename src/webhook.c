/*-------------------------------------------------------------------------
 * webhook.c
 *		The HTTP request for a message (or a batch): body, headers and the
 *		Standard Webhooks signature.
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
 * "headers", "payload"}, and webhook-id names the batch.
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
#include "utils/timestamp.h"

#include "outbox.h"

/* Decode one configured secret into its signing key; NULL if it is not valid. */
WebhookKey *
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
	StringInfoData content;
	ListCell   *lc;

	if (signing_owner == NULL)
		signing_owner = ResourceOwnerCreate(NULL, "outbox webhook signing");
	if (CurrentResourceOwner == NULL)
		CurrentResourceOwner = signing_owner;

	initStringInfo(&content);
	appendStringInfo(&content, "%s." INT64_FORMAT ".", id, ts);
	appendBinaryStringInfo(&content, body->data, body->len);

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
			pg_hmac_update(ctx, (uint8 *) content.data, content.len) < 0 ||
			pg_hmac_final(ctx, mac, sizeof(mac)) < 0)
			elog(ERROR, "could not compute the webhook signature");
		pg_hmac_free(ctx);
		n = pg_b64_encode((char *) mac, sizeof(mac), b64, sizeof(b64));
		appendStringInfo(&sig, "%sv1,%.*s", sig.len ? " " : "", n, b64);
	}
	CurrentResourceOwner = saved_owner;
	pfree(content.data);
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
List *
webhook_json_headers(List *lines, const char *json, bool from_message)
{
	Jsonb	   *jb;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *name = NULL;
	int			namelen = 0;
	List	   *own = NIL;
	HeaderProblem problem;

	if (json == NULL || strcmp(json, "{}") == 0)
		return lines;
	jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(json)));
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

/*
 * Build the request for msgs[0 .. n-1] to endpoint ep: the body into body,
 * the header lines (palloc'd "Name: value") as the result.
 */
List *
webhook_build(const WebhookEndpoint *ep, WebhookMessage **msgs, int n, StringInfo body)
{
	List	   *lines = NIL;
	int64		ts = (int64) time(NULL);
	char	   *id;

	if (n == 1)
	{
		id = psprintf("msg_" INT64_FORMAT, msgs[0]->id);
		appendStringInfoString(body, msgs[0]->payload);
		lines = lappend(lines, psprintf("outbox-topic: %s", msgs[0]->topic));
		if (msgs[0]->key)
			lines = lappend(lines, psprintf("outbox-key: %s", msgs[0]->key));
	}
	else
	{
		id = psprintf("batch_" INT64_FORMAT "_" INT64_FORMAT, msgs[0]->id, msgs[n - 1]->id);
		appendStringInfoChar(body, '[');
		for (int i = 0; i < n; i++)
		{
			appendStringInfo(body, "%s{\"id\":\"msg_" INT64_FORMAT "\",\"topic\":", i ? "," : "", msgs[i]->id);
			escape_json(body, msgs[i]->topic);
			appendStringInfoString(body, ",\"key\":");
			if (msgs[i]->key)
				escape_json(body, msgs[i]->key);
			else
				appendStringInfoString(body, "null");
			appendStringInfo(body, ",\"timestamp\":" INT64_FORMAT ",\"headers\":%s,\"payload\":%s}",
							 (int64) timestamptz_to_time_t(msgs[i]->created_at),
							 msgs[i]->headers ? msgs[i]->headers : "{}", msgs[i]->payload);
		}
		appendStringInfoChar(body, ']');
	}

	lines = lappend(lines, "Content-Type: application/json");
	lines = lappend(lines, psprintf("webhook-id: %s", id));
	lines = lappend(lines, psprintf("webhook-timestamp: " INT64_FORMAT, ts));
	if (ep->keys != NIL)
		lines = lappend(lines, psprintf("webhook-signature: %s",
										webhook_signature(ep->keys, id, ts, body)));
	lines = list_concat(lines, ep->header_lines);
	if (n == 1)
		lines = webhook_json_headers(lines, msgs[0]->headers, true);
	return lines;
}
