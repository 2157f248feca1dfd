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

/* RFC 9110 token characters, allowed in header names. */
static bool
is_tchar(char c)
{
	return isalnum((unsigned char) c) || (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* Headers the relay sets itself; a message or endpoint must not override them. */
static bool
is_reserved_header(const char *name, int len)
{
	static const char *const reserved[] = {
		"content-type", "content-length", "host", "transfer-encoding",
		"connection", "expect", "te", "upgrade", "keep-alive"
	};

	if ((len >= 8 && pg_strncasecmp(name, "webhook-", 8) == 0) ||
		(len >= 7 && pg_strncasecmp(name, "outbox-", 7) == 0))
		return true;
	for (int i = 0; i < lengthof(reserved); i++)
		if (strlen(reserved[i]) == len && pg_strncasecmp(name, reserved[i], len) == 0)
			return true;
	return false;
}

/*
 * Headers are a JSON object of string values, each name an HTTP token and
 * each value free of CR and LF (so no header can be smuggled in).
 */
void
outbox_check_headers(const char *what, Jsonb *headers)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *name = NULL;
	int			namelen = 0;

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
			if (namelen == 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%s: a header name must not be empty", what)));
			for (int i = 0; i < namelen; i++)
				if (!is_tchar(name[i]))
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("%s: invalid header name \"%.*s\"", what, namelen, name),
							 errdetail("Header names may contain letters, digits and !#$%%&'*+-.^_`|~ only.")));
			if (is_reserved_header(name, namelen))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%s: header \"%.*s\" is set by outbox and cannot be overridden", what, namelen, name)));
		}
		else if (tok == WJB_VALUE)
		{
			if (v.type != jbvString)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%s: the value of header \"%.*s\" must be a string", what, namelen, name)));
			for (int i = 0; i < v.val.string.len; i++)
				if (v.val.string.val[i] == '\r' || v.val.string.val[i] == '\n')
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("%s: the value of header \"%.*s\" must not contain a line break", what, namelen, name)));
		}
	}
}

/* outbox._check_headers(headers jsonb): the SQL face of outbox_check_headers */
PG_FUNCTION_INFO_V1(outbox_check_headers_sql);

Datum
outbox_check_headers_sql(PG_FUNCTION_ARGS)
{
	outbox_check_headers("headers", outbox_arg_jsonb(fcinfo, 0, "headers"));
	PG_RETURN_VOID();
}
