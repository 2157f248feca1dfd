/*-------------------------------------------------------------------------
 * http.c
 *		Everything that touches libcurl.  The only file that includes curl.
 *
 * The relay sends many requests at once through one curl multi handle and
 * waits for them together with its latch and postmaster death.  curl's
 * socket callback keeps the sockets curl wants watched in an epoll set of
 * our own; a WaitEventSet made once watches the latch, postmaster death and
 * that epoll descriptor, which becomes readable when any socket is ready.
 * (Rebuilding a wait set with every socket on each turn of the loop cost
 * hundreds of thousands of syscalls a second.)  curl's timer callback gives
 * a deadline, which bounds the wait; we tell curl which sockets became ready.
 * An idle relay sleeps in one epoll_wait.
 *
 * Rules that keep this safe inside a PostgreSQL backend:
 *  - curl callbacks never ereport, palloc or CHECK_FOR_INTERRUPTS: a longjmp
 *    must not cross libcurl.  They use malloc and report failure to curl.
 *  - CURLOPT_NOSIGNAL; explicit connect and total timeouts; only http and
 *    https; redirects are not followed; no proxy (not even one from the
 *    environment); TLS peers are verified; response bodies are capped
 *    (HTTP_MAX_BODY); connections are reused.
 *  - outbox.blocked_networks (netblock.c) is checked where curl opens a
 *    socket, after DNS resolution, and before each request on a reused
 *    connection; a refused request fails as "blocked", never retried.
 *  - No transaction is open while requests are in flight (the caller's job;
 *    relay.c asserts it).
 *
 * Endpoint URLs are parsed by libcurl's own URL parser, the one that will
 * send the requests, so a URL accepted by create_endpoint is one curl takes.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "backoff.h"
#include "outbox.h"
#include "http.h"
#include "netblock.h"

PG_FUNCTION_INFO_V1(outbox_check_url);

#define HTTP_MAX_BODY		OUTBOX_LAST_ERROR_BYTES	/* response bytes kept, for last_error */
#define HTTP_MAX_READY		256		/* sockets handled per wakeup */
#define HTTP_POOL			256		/* finished easy handles kept for reuse */
#define HTTP_MAX_CONNECTS	256		/* idle connections kept open for reuse */
#define HTTP_CONNECT_TIMEOUT_MS	10000	/* connecting may take this much of a request's timeout */

typedef struct HttpTransfer
{
	CURL	   *easy;
	struct curl_slist *headers;
	char	   *body;			/* request body, owned */
	void	   *owner;
	char		response[HTTP_MAX_BODY + 1];
	size_t		response_len;
	long		retry_after_ms;
	int			opened;			/* sockets opened for it */
	char		blocked[INET6_ADDRSTRLEN];	/* an address refused, or "" */
} HttpTransfer;

static CURLM *multi = NULL;
static int	epfd = -1;			/* the sockets curl wants watched */
/*
 * curl's timer: its callback gives a timeout relative to the moment it is
 * called, which may be long before http_wait runs; keep it as a deadline.
 */
static bool curl_timer_set = false;
static TimestampTz curl_deadline = 0;
static int	in_flight = 0;
static CURL *pool[HTTP_POOL];	/* easy handles to reuse: no malloc churn per request */
static int	npool = 0;

/* ---- curl callbacks: plain C only ---- */

static int
http_socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct epoll_event ev = {0};

	if (what == CURL_POLL_REMOVE)
	{
		(void) epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
		curl_multi_assign(multi, fd, NULL);
		return 0;
	}
	ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0);
	ev.data.fd = fd;
	/* socketp is non-NULL once the socket is in the epoll set */
	if (epoll_ctl(epfd, socketp ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) != 0)
		return -1;
	if (socketp == NULL)
		curl_multi_assign(multi, fd, (void *) 1);
	return 0;
}

static int
http_timer_cb(CURLM *m, long timeout_ms, void *userp)
{
	curl_timer_set = timeout_ms >= 0;
	if (curl_timer_set)
		curl_deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	return 0;
}

/*
 * outbox.blocked_networks, before a socket exists: curl has resolved the
 * name and asks for a socket to this address.  A blocked one gets none, so
 * not a packet leaves; curl tries the next address, if any.
 */
static curl_socket_t
http_opensocket_cb(void *clientp, curlsocktype purpose, struct curl_sockaddr *address)
{
	HttpTransfer *t = clientp;
	curl_socket_t fd;

	if (netblock_blocked(&address->addr, t->blocked, sizeof(t->blocked)))
		return CURL_SOCKET_BAD;
	fd = socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
	if (fd != CURL_SOCKET_BAD)
		t->opened++;
	return fd;
}

/*
 * And before each request, new connection or reused: a connection made
 * before the setting blocked its address must not carry more requests.
 */
static int
http_prereq_cb(void *clientp, char *conn_primary_ip, char *conn_local_ip,
			   int conn_primary_port, int conn_local_port)
{
	HttpTransfer *t = clientp;

	if (netblock_blocked_text(conn_primary_ip, t->blocked, sizeof(t->blocked)))
		return CURL_PREREQFUNC_ABORT;
	return CURL_PREREQFUNC_OK;
}

static size_t
http_write_cb(char *data, size_t size, size_t nmemb, void *userp)
{
	HttpTransfer *t = userp;
	size_t		n = size * nmemb;
	size_t		keep = Min(n, HTTP_MAX_BODY - t->response_len);

	memcpy(t->response + t->response_len, data, keep);
	t->response_len += keep;
	return n;					/* the rest is read and dropped */
}

/* Retry-After: delay-seconds or an HTTP-date (RFC 9110 10.2.3) */
static size_t
http_header_cb(char *data, size_t size, size_t nitems, void *userp)
{
	HttpTransfer *t = userp;
	size_t		n = size * nitems;

	if (n > 12 && pg_strncasecmp(data, "retry-after:", 12) == 0)
	{
		char		value[64];
		size_t		len = Min(n - 12, sizeof(value) - 1);
		char	   *end;
		long		secs;

		memcpy(value, data + 12, len);
		value[len] = '\0';
		secs = strtol(value, &end, 10);
		if (end != value && secs >= 0)
			t->retry_after_ms = Min(secs, 86400L) * 1000;
		else
		{
			time_t		when = curl_getdate(value, NULL);

			if (when > 0)
				t->retry_after_ms = Max(0, Min((long) (when - time(NULL)), 86400L)) * 1000;
		}
	}
	return n;
}

/* ---- the relay's side ---- */

/*
 * Start libcurl for this relay; returns the descriptor (an epoll set of
 * curl's sockets) that becomes readable when any of them is ready.
 */
pgsocket
http_init(void)
{
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		elog(ERROR, "curl_global_init failed");
	multi = curl_multi_init();
	if (multi == NULL)
		elog(ERROR, "curl_multi_init failed");
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
		elog(ERROR, "epoll_create1 failed: %m");
	if (curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, http_socket_cb) != CURLM_OK ||
		curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, http_timer_cb) != CURLM_OK ||
		curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long) HTTP_MAX_CONNECTS) != CURLM_OK)
		elog(ERROR, "curl_multi_setopt failed");
	return epfd;
}

int
http_in_flight(void)
{
	return in_flight;
}

/* curl_easy_setopt, checked: an option curl refuses must not be skipped silently */
#define HTTP_SETOPT(easy, opt, val) \
	do { \
		if (curl_easy_setopt((easy), (opt), (val)) != CURLE_OK) \
			elog(ERROR, "curl_easy_setopt(%s) failed", #opt); \
	} while (0)

/* Release a transfer's own memory (not its easy handle). */
static void
http_transfer_free(HttpTransfer *t)
{
	curl_slist_free_all(t->headers);
	free(t->body);
	free(t);
}

/*
 * Start a POST.  headers are complete "Name: value" lines; body is copied.
 * owner comes back with the result.  Every option is set here, each time,
 * because easy handles are reused.  Raises an error only before the
 * transfer is added (nothing is sent then).
 */
void
http_post(void *owner, const char *url, List *headers, const char *body, size_t body_len,
		  long timeout_ms)
{
	HttpTransfer *t = calloc(1, sizeof(HttpTransfer));
	ListCell   *lc;
	CURL	   *easy;

	if (t == NULL || (t->body = malloc(body_len + 1)) == NULL)
	{
		free(t);
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	}
	memcpy(t->body, body, body_len);
	t->owner = owner;
	t->retry_after_ms = -1;
	/* no "Expect: 100-continue" round trip */
	headers = lappend(list_copy(headers), "Expect:");
	foreach(lc, headers)
	{
		struct curl_slist *more = curl_slist_append(t->headers, lfirst(lc));

		/* a header dropped for want of memory could be the signature */
		if (more == NULL)
		{
			http_transfer_free(t);
			ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
		}
		t->headers = more;
	}
	list_free(headers);
	easy = npool > 0 ? pool[--npool] : curl_easy_init();
	if (easy == NULL)
	{
		http_transfer_free(t);
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	}
	t->easy = easy;
	PG_TRY();
	{
		HTTP_SETOPT(easy, CURLOPT_URL, url);
		HTTP_SETOPT(easy, CURLOPT_POSTFIELDS, t->body);
		HTTP_SETOPT(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) body_len);
		HTTP_SETOPT(easy, CURLOPT_HTTPHEADER, t->headers);
		HTTP_SETOPT(easy, CURLOPT_NOSIGNAL, 1L);
		HTTP_SETOPT(easy, CURLOPT_TIMEOUT_MS, timeout_ms);
		HTTP_SETOPT(easy, CURLOPT_CONNECTTIMEOUT_MS, Min(timeout_ms, (long) HTTP_CONNECT_TIMEOUT_MS));
		HTTP_SETOPT(easy, CURLOPT_PROTOCOLS_STR, "http,https");
		HTTP_SETOPT(easy, CURLOPT_FOLLOWLOCATION, 0L);
		/* "": no proxy, whatever http_proxy and friends say in the environment */
		HTTP_SETOPT(easy, CURLOPT_PROXY, "");
		HTTP_SETOPT(easy, CURLOPT_OPENSOCKETFUNCTION, http_opensocket_cb);
		HTTP_SETOPT(easy, CURLOPT_OPENSOCKETDATA, t);
		HTTP_SETOPT(easy, CURLOPT_PREREQFUNCTION, http_prereq_cb);
		HTTP_SETOPT(easy, CURLOPT_PREREQDATA, t);
		HTTP_SETOPT(easy, CURLOPT_SSL_VERIFYPEER, 1L);
		HTTP_SETOPT(easy, CURLOPT_SSL_VERIFYHOST, 2L);
		HTTP_SETOPT(easy, CURLOPT_USERAGENT, "outbox/" OUTBOX_VERSION);
		HTTP_SETOPT(easy, CURLOPT_WRITEFUNCTION, http_write_cb);
		HTTP_SETOPT(easy, CURLOPT_WRITEDATA, t);
		HTTP_SETOPT(easy, CURLOPT_HEADERFUNCTION, http_header_cb);
		HTTP_SETOPT(easy, CURLOPT_HEADERDATA, t);
		HTTP_SETOPT(easy, CURLOPT_PRIVATE, t);
		if (curl_multi_add_handle(multi, easy) != CURLM_OK)
			elog(ERROR, "curl_multi_add_handle failed");
	}
	PG_CATCH();
	{
		curl_easy_cleanup(easy);
		http_transfer_free(t);
		PG_RE_THROW();
	}
	PG_END_TRY();
	in_flight++;
}

/* A multi-interface call failed: curl's state is unknown, the relay restarts. */
static void
http_check_multi(CURLMcode rc)
{
	if (rc != CURLM_OK)
		elog(ERROR, "libcurl multi interface failed: %s", curl_multi_strerror(rc));
}

/* ms until curl's own timer, or -1 */
long
http_timeout(void)
{
	if (!curl_timer_set)
		return -1;
	return ms_until(curl_deadline, GetCurrentTimestamp());
}

/*
 * After the relay's wait (transport.c): let curl make progress on the
 * sockets that are ready (sockets_ready: the epoll set was readable), and
 * on its timer if it is due.
 */
void
http_progress(bool sockets_ready)
{
	struct epoll_event ready[HTTP_MAX_READY];
	int			nready;
	int			running;

	if (sockets_ready)
	{
		nready = epoll_wait(epfd, ready, lengthof(ready), 0);
		for (int i = 0; i < nready; i++)
		{
			int			flags = 0;

			if (ready[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
				flags |= CURL_CSELECT_IN;
			if (ready[i].events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
				flags |= CURL_CSELECT_OUT;
			http_check_multi(curl_multi_socket_action(multi, ready[i].data.fd, flags, &running));
		}
	}
	if (curl_timer_set && GetCurrentTimestamp() >= curl_deadline)
	{
		long		next_ms;

		/*
		 * curl calls the timer callback only when its next deadline changes:
		 * if this action leaves it as it was (the timer we were given fired a
		 * little early, by curl's clock), no callback comes and the timer
		 * must not be lost.  So clear it first, and ask curl for it if no
		 * callback set it again.  (Clearing it after the action lost a timer
		 * that way, and a timed-out request then waited for ever.)
		 */
		curl_timer_set = false;
		http_check_multi(curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running));
		if (!curl_timer_set && curl_multi_timeout(multi, &next_ms) == CURLM_OK && next_ms >= 0)
			http_timer_cb(multi, next_ms, NULL);
	}
}

/*
 * The next finished request, if any: *status is the HTTP status, or 0 for a
 * transport failure (error says which: refused, reset, timeout...).
 */
bool
http_next_result(HttpResult *r)
{
	int			queued;
	CURLMsg    *msg;

	while ((msg = curl_multi_info_read(multi, &queued)) != NULL)
	{
		HttpTransfer *t;
		long		status = 0;

		if (msg->msg != CURLMSG_DONE)
			continue;
		if (curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &t) != CURLE_OK)
			elog(ERROR, "curl_easy_getinfo(CURLINFO_PRIVATE) failed");
		if (msg->data.result == CURLE_OK &&
			curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK)
			status = 0;			/* reported as a transport failure */
		r->owner = t->owner;
		r->status = (int) status;
		r->retry_after_ms = t->retry_after_ms;
		/* refused by outbox.blocked_networks: every address, or a reused connection's */
		r->blocked = msg->data.result != CURLE_OK && t->blocked[0] != '\0' &&
			(t->opened == 0 || msg->data.result == CURLE_ABORTED_BY_CALLBACK);
		if (r->blocked)
			snprintf(r->error, sizeof(r->error),
					 "address %s is blocked by outbox.blocked_networks", t->blocked);
		else if (msg->data.result != CURLE_OK)
			strlcpy(r->error, curl_easy_strerror(msg->data.result), sizeof(r->error));
		else
		{
			t->response[t->response_len] = '\0';
			/* redact.c shows readers the part before the colon */
			snprintf(r->error, sizeof(r->error), "HTTP %ld: %s", status, t->response);
		}
		/* stored as text: keep printable ASCII only, whatever the body's encoding */
		for (char *c = r->error; *c; c++)
			if ((unsigned char) *c < 0x20 || (unsigned char) *c >= 0x7f)
				*c = '?';
		http_check_multi(curl_multi_remove_handle(multi, t->easy));
		/* every option is set again by http_post: keep the handle for the next */
		if (npool < HTTP_POOL)
			pool[npool++] = t->easy;
		else
			curl_easy_cleanup(t->easy);
		http_transfer_free(t);
		in_flight--;
		return true;
	}
	return false;
}

/*
 * scheme://host[:port]/ of a URL (no userinfo, path, query or fragment),
 * palloc'd; NULL if libcurl cannot parse it.  For redact.c.
 */
char *
http_url_origin(const char *url)
{
	CURLU	   *h = curl_url();
	char	   *origin = NULL;
	char	   *result = NULL;

	if (h == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	if (curl_url_set(h, CURLUPART_URL, url, 0) == CURLUE_OK &&
		curl_url_set(h, CURLUPART_USER, NULL, 0) == CURLUE_OK &&
		curl_url_set(h, CURLUPART_PASSWORD, NULL, 0) == CURLUE_OK &&
		curl_url_set(h, CURLUPART_OPTIONS, NULL, 0) == CURLUE_OK &&
		curl_url_set(h, CURLUPART_PATH, NULL, 0) == CURLUE_OK &&
		curl_url_set(h, CURLUPART_QUERY, NULL, 0) == CURLUE_OK &&
		curl_url_set(h, CURLUPART_FRAGMENT, NULL, 0) == CURLUE_OK &&
		curl_url_get(h, CURLUPART_URL, &origin, 0) == CURLUE_OK)
		result = pstrdup(origin);
	curl_free(origin);
	curl_url_cleanup(h);
	return result;
}

/*
 * outbox._check_url(url text) returns text: the URL as libcurl normalises
 * it, or an error (22023) for anything that is not an absolute http or https
 * URL with a host.
 */
Datum
outbox_check_url(PG_FUNCTION_ARGS)
{
	char	   *url = text_to_cstring(PG_GETARG_TEXT_PP(0));
	CURLU	   *h = curl_url();
	CURLUcode	rc;
	char	   *scheme = NULL;
	char	   *host = NULL;
	char	   *normal = NULL;
	bool		ok;
	text	   *result = NULL;

	if (h == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	rc = curl_url_set(h, CURLUPART_URL, url, 0);
	if (rc == CURLUE_OK)
		rc = curl_url_get(h, CURLUPART_SCHEME, &scheme, 0);
	if (rc == CURLUE_OK)
		rc = curl_url_get(h, CURLUPART_HOST, &host, 0);
	if (rc == CURLUE_OK)
		rc = curl_url_get(h, CURLUPART_URL, &normal, 0);
	ok = rc == CURLUE_OK &&
		(pg_strcasecmp(scheme, "http") == 0 || pg_strcasecmp(scheme, "https") == 0);
	if (ok)
		result = cstring_to_text(normal);
	curl_free(scheme);
	curl_free(host);
	curl_free(normal);
	curl_url_cleanup(h);

	if (rc != CURLUE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid endpoint URL \"%s\"", url),
				 errdetail("libcurl: %s.", curl_url_strerror(rc)),
				 errhint("Give an absolute http:// or https:// URL.")));
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("endpoint URL \"%s\" is not http or https", url),
				 errhint("Only http:// and https:// endpoints are supported.")));
	PG_RETURN_TEXT_P(result);
}
