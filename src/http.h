/*-------------------------------------------------------------------------
 * http.h
 *		libcurl's multi interface, driven from the relay's wait (http.c, the
 *		only file that includes curl).  webhook.c builds the requests.
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_HTTP_H
#define OUTBOX_HTTP_H

#include "postgres.h"

#include "nodes/pg_list.h"

#include "outbox.h"

typedef struct HttpResult
{
	void	   *owner;
	int			status;			/* HTTP status; 0 = transport failure */
	long		retry_after_ms; /* -1 if none */
	bool		blocked;		/* refused by outbox.blocked_networks: never retried */
	char		error[OUTBOX_LAST_ERROR_BYTES];
} HttpResult;

extern pgsocket http_init(void);
extern long http_timeout(void);
extern void http_progress(bool sockets_ready);
extern int	http_in_flight(void);
extern void http_post(void *owner, const char *url, List *headers, const char *body,
					  size_t body_len, long timeout_ms);
extern bool http_next_result(HttpResult *r);
extern char *http_url_origin(const char *url);

#endif							/* OUTBOX_HTTP_H */
