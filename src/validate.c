/*-------------------------------------------------------------------------
 * validate.c
 *		Argument checks shared by outbox's SQL functions.
 *
 * Every user mistake gets a standard SQLSTATE: 22004 for a NULL that is not
 * allowed, 22023 for a bad value, 22001 for a name that is too long, 54000
 * for a payload over outbox.max_payload_bytes or a message too large to send.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "outbox.h"
#include "validate.h"

#define OUTBOX_MAX_COUNT 100000

static void
reject_null(const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
			 errmsg("%s must not be null", what)));
}

/*
 * Writers refuse to run in a read-only transaction or on a standby with
 * 25006, like any write command, before they touch anything.
 */
void
outbox_check_writable(const char *fname)
{
	PreventCommandIfReadOnly(fname);
	PreventCommandDuringRecovery(fname);
}

void
outbox_check_name(const char *what, const char *name, int len)
{
	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be empty", what)));
	if (len > OUTBOX_MAX_NAME_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("%s is too long", what),
				 errdetail("It is %d bytes long; the limit is %d bytes.",
						   len, OUTBOX_MAX_NAME_BYTES)));
}

/*
 * Topics and keys travel as HTTP header values (outbox-topic, outbox-key):
 * no control characters, so that no header or request can be smuggled in.
 */
void
outbox_check_header_value(const char *what, const char *value, int len)
{
	for (int i = 0; i < len; i++)
		if ((unsigned char) value[i] < 0x20 || value[i] == 0x7f)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s must not contain control characters", what),
					 errdetail("It is sent as an HTTP header value.")));
}

/* A non-NULL, non-empty text argument of at most OUTBOX_MAX_NAME_BYTES. */
char *
outbox_arg_name(FunctionCallInfo fcinfo, int argno, const char *what)
{
	text	   *t;

	if (PG_ARGISNULL(argno))
		reject_null(what);
	t = PG_GETARG_TEXT_PP(argno);
	outbox_check_name(what, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
	return text_to_cstring(t);
}

Jsonb *
outbox_arg_jsonb(FunctionCallInfo fcinfo, int argno, const char *what)
{
	if (PG_ARGISNULL(argno))
		reject_null(what);
	return PG_GETARG_JSONB_P(argno);
}

/* A max_count argument: 1 to OUTBOX_MAX_COUNT. */
int32
outbox_arg_count(FunctionCallInfo fcinfo, int argno, const char *what)
{
	int32		n;

	if (PG_ARGISNULL(argno))
		reject_null(what);
	n = PG_GETARG_INT32(argno);
	if (n < 1 || n > OUTBOX_MAX_COUNT)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be between 1 and %d", what, OUTBOX_MAX_COUNT),
				 errdetail("It is %d.", n)));
	return n;
}

/* A position, version or id to read after: zero or more. */
int64
outbox_arg_position(FunctionCallInfo fcinfo, int argno, const char *what)
{
	int64		n;

	if (PG_ARGISNULL(argno))
		reject_null(what);
	n = PG_GETARG_INT64(argno);
	if (n < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be negative", what)));
	return n;
}

/*
 * An event's data or metadata: within outbox.max_payload_bytes, and, printed
 * as JSON text (by readers, pg_dump, a webhook body), within
 * OUTBOX_MAX_MESSAGE_TEXT: a few bytes of jsonb such as 1e131000 print as
 * 131,000 digits, and an event that prints past 1 GB could never be read or
 * dumped again (events cannot be deleted).
 */
void
outbox_check_payload_size(const char *what, Jsonb *value)
{
	Size		size = VARSIZE(value) - VARHDRSZ;

	if (size > (Size) outbox_max_payload_bytes)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("%s is too large", what),
				 errdetail("It takes %zu bytes; outbox.max_payload_bytes is %d.",
						   size, outbox_max_payload_bytes)));
	if (size * OUTBOX_JSON_MAX_EXPANSION > OUTBOX_MAX_MESSAGE_TEXT &&
		webhook_json_length(value, OUTBOX_MAX_MESSAGE_TEXT) > OUTBOX_MAX_MESSAGE_TEXT)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("%s is too large as JSON text", what),
				 errdetail("It prints as more than %d bytes of JSON.", OUTBOX_MAX_MESSAGE_TEXT)));
}

/*
 * A message: its payload and headers together within outbox.max_payload_bytes
 * (the relay loads and sends them together), and, printed as JSON, within
 * one request body.  Printing can multiply the size (numbers like 1e131000,
 * escaped control characters): the body is measured only when it could
 * matter, by walking the jsonb without printing it.
 */
void
outbox_check_message_size(Jsonb *payload, Jsonb *headers)
{
	Size		payload_size = VARSIZE(payload) - VARHDRSZ;
	Size		headers_size = VARSIZE(headers) - VARHDRSZ;
	Size		text;

	if (payload_size + headers_size > (Size) outbox_max_payload_bytes)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("message is too large"),
				 errdetail("Its payload takes %zu bytes and its headers %zu; together they may take %d bytes (outbox.max_payload_bytes).",
						   payload_size, headers_size, outbox_max_payload_bytes)));
	if ((payload_size + headers_size) * OUTBOX_JSON_MAX_EXPANSION <= OUTBOX_MAX_MESSAGE_TEXT)
		return;
	text = webhook_json_length(payload, OUTBOX_MAX_MESSAGE_TEXT) +
		webhook_json_length(headers, OUTBOX_MAX_MESSAGE_TEXT);
	if (text > OUTBOX_MAX_MESSAGE_TEXT)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("message is too large to send"),
				 errdetail("As JSON text its payload and headers take more than %d bytes; a webhook request body may take %d bytes.",
						   OUTBOX_MAX_MESSAGE_TEXT, OUTBOX_MAX_BODY_BYTES)));
}

/*
 * RFC 9110 token characters, allowed in header names: ASCII only, whatever
 * the server's locale (isalnum could accept a Latin-1 letter).
 */
static bool
is_tchar(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		(c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/*
 * Which headers an endpoint's or a message's own headers may add.
 *
 * The request's headers come from, in order: outbox (webhook-*, outbox-*,
 * Content-Type; curl adds Host, Content-Length, User-Agent, Accept), the
 * endpoint's headers (its admin's: credentials, say), then the message's
 * (its writer's).  Neither may name a header outbox sets or one that
 * governs the connection; a message may not name one that carries
 * credentials or speaks for the client (Authorization, Cookie,
 * X-Forwarded-For, User-Agent, ...), and at send time a message header
 * whose name the endpoint (or anything before it) already set is left out.
 * No value may be empty: to curl, an empty header removes the one it would
 * send.  Names compare case-insensitively; a name may appear once.
 */
static const char *const outbox_headers[] = {
	"content-type", "content-length", "content-encoding", "host"
};
/* hop-by-hop (RFC 9110 7.6.1), and Expect: curl's, and outbox turns it off */
static const char *const connection_headers[] = {
	"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
	"upgrade", "expect"
};
/* credentials, the client's identity or address, and proxy routing hints */
static const char *const endpoint_only_headers[] = {
	"authorization", "proxy-authorization", "cookie", "forwarded", "x-real-ip",
	"user-agent", "accept", "accept-encoding", "via", "true-client-ip", "cf-connecting-ip",
	"x-client-ip", "x-original-url", "x-rewrite-url", "x-http-method-override"
};

static bool
header_in(const char *name, int len, const char *const *list, int n)
{
	for (int i = 0; i < n; i++)
		if (strlen(list[i]) == len && pg_strncasecmp(name, list[i], len) == 0)
			return true;
	return false;
}

static bool
header_prefixed(const char *name, int len, const char *prefix)
{
	int			plen = strlen(prefix);

	return len >= plen && pg_strncasecmp(name, prefix, plen) == 0;
}

/* Why the header name may not be set, or NULL if it may. */
static const char *
header_name_refused(const char *name, int len, bool from_message)
{
	if (header_prefixed(name, len, "webhook-") || header_prefixed(name, len, "outbox-") ||
		header_in(name, len, outbox_headers, lengthof(outbox_headers)))
		return "is set by outbox and cannot be overridden";
	if (header_in(name, len, connection_headers, lengthof(connection_headers)))
		return "governs the connection and cannot be set";
	if (from_message &&
		(header_prefixed(name, len, "x-forwarded-") ||
		 header_in(name, len, endpoint_only_headers, lengthof(endpoint_only_headers))))
		return "can only be set by an endpoint, not by a message";
	return NULL;
}

static bool
header_refuse(HeaderProblem *problem, char *message, const char *detail, const char *hint)
{
	problem->message = message;
	problem->detail = detail;
	problem->hint = hint;
	return false;
}

/*
 * May an endpoint (or a message, if from_message) carry this header?  If
 * not, false and what is wrong in *problem.  The checks of create_endpoint,
 * alter_endpoint and publish, and the relay's filter of stored rows (which
 * may predate a rule): one rule for both.  Names must be HTTP tokens and
 * values free of control characters but HTAB (RFC 9110 5.5), so that no
 * header can be smuggled in and no receiver or proxy sees a value it may
 * parse differently.
 */
bool
outbox_header_allowed(const char *name, int len, const JsonbValue *value, bool from_message,
					  HeaderProblem *problem)
{
	const char *refused;
	bool		blank = true;

	if (len == 0)
		return header_refuse(problem, pstrdup("a header name must not be empty"), NULL, NULL);
	for (int i = 0; i < len; i++)
		if (!is_tchar(name[i]))
			return header_refuse(problem, psprintf("invalid header name \"%.*s\"", len, name),
								 "Header names may contain letters, digits and !#$%&'*+-.^_`|~ only.",
								 NULL);
	refused = header_name_refused(name, len, from_message);
	if (refused != NULL)
		return header_refuse(problem, psprintf("header \"%.*s\" %s", len, name, refused), NULL,
							 from_message ? "Set it in the endpoint's headers." : NULL);
	if (value->type != jbvString)
		return header_refuse(problem, psprintf("the value of header \"%.*s\" must be a string", len, name),
							 NULL, NULL);
	for (int i = 0; i < value->val.string.len; i++)
	{
		unsigned char c = value->val.string.val[i];

		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return header_refuse(problem,
								 psprintf("the value of header \"%.*s\" must not contain control characters", len, name),
								 "Only a tab may appear among the characters of a value.", NULL);
		blank &= (c == ' ' || c == '\t');
	}
	if (blank)
		return header_refuse(problem, psprintf("the value of header \"%.*s\" must not be empty", len, name),
							 "An empty header would remove the one the request carries.", NULL);
	return true;
}

static int
header_name_cmp(const ListCell *a, const ListCell *b)
{
	return pg_strcasecmp(lfirst(a), lfirst(b));
}

/*
 * Headers are a JSON object of header names and values that
 * outbox_header_allowed allows, each name once.  22023 for anything else.
 */
void
outbox_check_headers(const char *what, Jsonb *headers, bool from_message)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *name = NULL;
	int			namelen = 0;
	List	   *names = NIL;
	HeaderProblem problem;

	if (!JB_ROOT_IS_OBJECT(headers))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a JSON object of header names and string values", what)));

	it = JsonbIteratorInit(&headers->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
		{
			name = v.val.string.val;
			namelen = v.val.string.len;
			names = lappend(names, pnstrdup(name, namelen));
		}
		else if (tok == WJB_VALUE && !outbox_header_allowed(name, namelen, &v, from_message, &problem))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: %s", what, problem.message),
					 problem.detail ? errdetail("%s", problem.detail) : 0,
					 problem.hint ? errhint("%s", problem.hint) : 0));
	}
	/* names are case-insensitive: "X-A" and "x-a" would be sent twice */
	list_sort(names, header_name_cmp);
	for (int i = 1; i < list_length(names); i++)
		if (pg_strcasecmp(list_nth(names, i - 1), list_nth(names, i)) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: header \"%s\" is given twice", what, (char *) list_nth(names, i)),
					 errdetail("Header names are case-insensitive.")));
	list_free_deep(names);
}

/* outbox._check_headers(headers jsonb): the SQL face of outbox_check_headers */
PG_FUNCTION_INFO_V1(outbox_check_headers_sql);

Datum
outbox_check_headers_sql(PG_FUNCTION_ARGS)
{
	outbox_check_headers("headers", outbox_arg_jsonb(fcinfo, 0, "headers"), false);
	PG_RETURN_VOID();
}
