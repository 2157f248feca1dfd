/*-------------------------------------------------------------------------
 * http.c
 *		Everything that touches libcurl.  The only file that includes curl.
 *
 * Endpoint URLs are parsed by libcurl's own URL parser, the same one that
 * will send the requests, so a URL accepted by create_endpoint is a URL the
 * relay can use.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "fmgr.h"
#include "utils/builtins.h"

#include "outbox.h"

PG_FUNCTION_INFO_V1(outbox_check_url);

/*
 * outbox._check_url(url text) returns text: the URL as libcurl normalises
 * it, or an error (22023) for anything that is not an absolute http or https
 * URL with a host.
 */
Datum
outbox_check_url(PG_FUNCTION_ARGS)
{
	char	   *url = outbox_arg_name(fcinfo, 0, "url");
	CURLU	   *h = curl_url();
	CURLUcode	rc;
	char	   *scheme = NULL;
	char	   *host = NULL;
	char	   *normal = NULL;
	text	   *result;

	if (h == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	rc = curl_url_set(h, CURLUPART_URL, url, 0);
	if (rc == CURLUE_OK)
		rc = curl_url_get(h, CURLUPART_SCHEME, &scheme, 0);
	if (rc == CURLUE_OK)
		rc = curl_url_get(h, CURLUPART_HOST, &host, 0);
	if (rc == CURLUE_OK)
		rc = curl_url_get(h, CURLUPART_URL, &normal, 0);
	if (rc != CURLUE_OK)
	{
		const char *why = curl_url_strerror(rc);

		curl_url_cleanup(h);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid endpoint URL \"%s\"", url),
				 errdetail("libcurl: %s.", why),
				 errhint("Give an absolute http:// or https:// URL.")));
	}
	if (pg_strcasecmp(scheme, "http") != 0 && pg_strcasecmp(scheme, "https") != 0)
	{
		char	   *s = pstrdup(scheme);

		curl_free(scheme);
		curl_free(host);
		curl_free(normal);
		curl_url_cleanup(h);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("endpoint URL scheme \"%s\" is not supported", s),
				 errhint("Only http:// and https:// endpoints are supported.")));
	}
	result = cstring_to_text(normal);
	curl_free(scheme);
	curl_free(host);
	curl_free(normal);
	curl_url_cleanup(h);
	PG_RETURN_TEXT_P(result);
}
