/*-------------------------------------------------------------------------
 * redact.c
 *		What outbox_reader may see of an endpoint's URL and of an error.
 *
 * A webhook URL often carries its secret: userinfo, a token in the query,
 * or (Slack-style) a secret path.  A response body may be an internal
 * service's answer (SSRF).  So, unless the caller has the privileges of
 * outbox_admin (superusers do):
 *   - a URL is shown as its origin only: scheme://host[:port]/; a kafka://
 *     URL carries no credentials (kafka.c refuses userinfo, query and
 *     fragment; credentials live in write-only client properties) and is
 *     shown whole, brokers and topic;
 *   - an error is shown without the response body: "HTTP 500: <body>"
 *     becomes "HTTP 500" (http.c makes that form); transport errors and
 *     outbox.blocked_networks refusals carry no body and stay.
 * outbox.stat_endpoints (url, last_error) and outbox.dead_letters
 * (last_error) apply these rules, as does outbox._stat_endpoints(), which
 * readers may call directly.  Admins see the same columns in full.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"

#include "kafka.h"
#include "outbox.h"
#include "redact.h"
#include "http.h"

PG_FUNCTION_INFO_V1(outbox_shown_url);
PG_FUNCTION_INFO_V1(outbox_shown_error);

/* Does the current user have the privileges of outbox_admin? */
static bool
redact_caller_is_admin(void)
{
	Oid			admin = get_role_oid("outbox_admin", true);

	return superuser() || (OidIsValid(admin) && has_privs_of_role(GetUserId(), admin));
}

/* Cut the response body off an error in place: "HTTP 500: body" -> "HTTP 500". */
static void
redact_strip_body(char *error)
{
	char	   *p = error;

	if (strncmp(p, "HTTP ", 5) != 0)
		return;
	p += 5;
	while (*p >= '0' && *p <= '9')
		p++;
	if (p > error + 5 && *p == ':')
		*p = '\0';
}

/* An error as the current user may see it, in place. */
void
redact_error_for_caller(char *error)
{
	if (!redact_caller_is_admin())
		redact_strip_body(error);
}

/* outbox._shown_url(url text): the URL, or its origin for non-admins. */
Datum
outbox_shown_url(PG_FUNCTION_ARGS)
{
	char	   *url;
	char	   *origin;
	char	   *problem;

	if (redact_caller_is_admin())
		PG_RETURN_DATUM(PG_GETARG_DATUM(0));
	url = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (kafka_url_is_kafka(url))
		origin = kafka_url_check(url, &problem);
	else
		origin = http_url_origin(url);
	if (origin == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(origin));
}

/* outbox._shown_error(error text): the error, without a response body for non-admins. */
Datum
outbox_shown_error(PG_FUNCTION_ARGS)
{
	char	   *error = text_to_cstring(PG_GETARG_TEXT_PP(0));

	redact_error_for_caller(error);
	PG_RETURN_TEXT_P(cstring_to_text(error));
}
