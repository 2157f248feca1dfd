/*-------------------------------------------------------------------------
 * receiver.c
 *		A small, fast HTTP/1.1 webhook receiver for outbox tests and benchmarks.
 *
 * It answers webhook POSTs, verifies Standard Webhooks signatures, logs one
 * tab-separated line per delivered message, and injects faults (error
 * statuses, delays, hangs, resets, downtime) on command, through a small
 * control API or signals.  One thread, one epoll loop, non-blocking sockets.
 * Delayed responses and lingering closes wait in a min-heap of timers whose
 * earliest deadline is epoll_wait's timeout, so an idle receiver sleeps.
 * See README.md for the command line, control API and log format.
 *-------------------------------------------------------------------------
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#define MAX_HEADER		(64 * 1024)	/* request line + headers */
#define OUT_HIGH		(1024 * 1024)	/* stop answering while this much is unsent */
#define LINGER_US		2000000		/* drain input this long before closing */
#define LOG_FLUSH_US	100000		/* log lines reach the file this soon */
#define LOG_BUF			(1024 * 1024)
#define MAX_FIELD		256			/* longest value copied into a log line */
#define MAX_SECRETS		16

typedef enum
{
	CS_READ,					/* reading and answering requests */
	CS_DELAY,					/* the current request is answered by a timer */
	CS_HUNG,					/* the current request is never answered */
	CS_LINGER					/* output sent and shut down; draining input */
} ConnState;

/* Part of a request, as an offset from its start (input buffers move) */
typedef struct
{
	uint32_t	off;
	uint32_t	len;			/* 0 = absent; an empty header counts as absent */
} Span;

typedef struct Conn
{
	int			fd;
	ConnState	state;
	uint32_t	events;			/* epoll interest currently registered */
	int			heap_idx;		/* position in the timer heap, -1 if none */
	uint64_t	due;			/* monotonic µs at which the timer fires */
	bool		eof;			/* the peer has closed its side */
	bool		dead;			/* closed; freed at the end of the event batch */
	bool		close_after;	/* shut down once the queued output is sent */

	char	   *in;				/* the current request starts at in + in_off */
	size_t		in_off, in_len, in_cap;
	size_t		scan;			/* bytes already searched for the header end */

	/* The current request; hdr_len is 0 until its head is parsed. */
	size_t		hdr_len, body_len;
	bool		keepalive, http10, head, expect, cont_sent;
	Span		method, target, id, ts, sig, key, topic;
	int			status;			/* decided status of a delayed response */
	int64_t		arrival_us;

	char	   *out;
	size_t		out_off, out_len, out_cap;
	struct Conn *next;			/* graveyard link */
} Conn;

/* Fault settings: all numbers, so that one table parses and prints them. */
typedef struct
{
	double		fail_rate, status, status_rate, retry_after, delay_ms,
				hang_rate, reset_rate, down, seed, error_body;
} Faults;

static const struct
{
	const char *name;
	size_t		off;
	double		lo, hi;
	bool		integral;
}			knobs[] = {
	{"fail_rate", offsetof(Faults, fail_rate), 0, 1, false},
	{"status", offsetof(Faults, status), 0, 599, true},
	{"status_rate", offsetof(Faults, status_rate), 0, 1, false},
	{"retry_after", offsetof(Faults, retry_after), -1, 86400, true},
	{"delay_ms", offsetof(Faults, delay_ms), 0, 3600000, true},
	{"hang_rate", offsetof(Faults, hang_rate), 0, 1, false},
	{"reset_rate", offsetof(Faults, reset_rate), 0, 1, false},
	{"down", offsetof(Faults, down), 0, 1, true},
	{"seed", offsetof(Faults, seed), 0, 9007199254740992.0, true},
	{"error_body", offsetof(Faults, error_body), 0, 1048576, true},
};
#define NKNOBS (sizeof(knobs) / sizeof(knobs[0]))
#define KNOB(f, i) (*(double *) ((char *) (f) + knobs[i].off))

static const Faults no_faults = {.retry_after = -1, .seed = 1};

static struct
{
	uint64_t	requests_total, accepted, sig_valid, sig_invalid, sig_none;
	uint64_t	connections_opened, resets_injected, hangs_injected, log_lines;
	uint64_t	by_status[600];
	int			max_concurrent;
} stats;

static Faults faults;
static int	headers_fd = -1;	/* --headers: every webhook request's head */
static uint64_t rng;
static size_t max_body = 16 * 1024 * 1024;
static int	port;
static int	epfd, listen_fd = -1, sig_fd, spare_fd;
static bool is_down, running = true;
static int	want_down = -1;		/* from /_control, applied after the batch */

static Conn **conns;			/* indexed by fd */
static int	nslots, cur_conns;
static Conn *graveyard;
static Conn **heap;
static int	heap_len, heap_cap;

static EVP_MAC *hmac;
static EVP_MAC_CTX *secrets[MAX_SECRETS];
static int	nsecrets;

/* Our own log buffer, so that only whole lines ever reach the file. */
static int	log_fd = STDOUT_FILENO;
static char log_buf[LOG_BUF];
static size_t log_len;
static uint64_t log_since;		/* when the oldest unwritten line came */

/* Report msg, with err's meaning unless err is 0, and exit */
static void
die(const char *msg, int err)
{
	fprintf(stderr, "receiver: %s%s%s\n", msg, err ? ": " : "",
			err ? strerror(err) : "");
	exit(1);
}

static uint64_t
now_us(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return (uint64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* splitmix64: tiny and seedable, so fault patterns can be reproduced */
static bool
chance(double rate)
{
	uint64_t	z;

	if (rate <= 0)
		return false;
	z = (rng += UINT64_C(0x9e3779b97f4a7c15));
	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return ((z ^ (z >> 31)) >> 11) * (1.0 / 9007199254740992.0) < rate;
}

/* Grow a buffer to at least need bytes, at least doubling to amortize */
static void
reserve(char **buf, size_t *cap, size_t need)
{
	size_t		n = *cap * 2;

	if (need <= *cap)
		return;
	if (n < need)
		n = need < 4096 ? 4096 : need;
	if ((*buf = realloc(*buf, n)) == NULL)
		die("out of memory", 0);
	*cap = n;
}

static void
out_append(Conn *c, const char *data, size_t len)
{
	reserve(&c->out, &c->out_cap, c->out_len + len);
	memcpy(c->out + c->out_len, data, len);
	c->out_len += len;
}

/*
 * Timer heap keyed by due time.  A connection has at most one timer and
 * knows its slot, so cancelling it on close is O(log n).
 */
static void
heap_fix(int i)
{
	Conn	   *c = heap[i];
	int			k;

	for (; i > 0 && heap[(i - 1) / 2]->due > c->due; i = (i - 1) / 2)
		(heap[i] = heap[(i - 1) / 2])->heap_idx = i;
	for (; (k = 2 * i + 1) < heap_len; i = k)
	{
		if (k + 1 < heap_len && heap[k + 1]->due < heap[k]->due)
			k++;
		if (heap[k]->due >= c->due)
			break;
		(heap[i] = heap[k])->heap_idx = i;
	}
	(heap[i] = c)->heap_idx = i;
}

static void
timer_set(Conn *c, uint64_t due)
{
	c->due = due;
	if (c->heap_idx < 0)
	{
		if (heap_len == heap_cap)
		{
			heap_cap = heap_cap ? heap_cap * 2 : 256;
			if ((heap = realloc(heap, heap_cap * sizeof(Conn *))) == NULL)
				die("out of memory", 0);
		}
		heap[heap_len] = c;
		c->heap_idx = heap_len++;
	}
	heap_fix(c->heap_idx);
}

static void
timer_clear(Conn *c)
{
	int			i = c->heap_idx;

	if (i < 0)
		return;
	c->heap_idx = -1;
	if (i < --heap_len)			/* move the last entry into the hole */
	{
		heap[i] = heap[heap_len];
		heap_fix(i);
	}
}

static void
conn_new(int fd)
{
	Conn	   *c = calloc(1, sizeof(Conn));
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
	int			one = 1;

	if (c == NULL)
		die("out of memory", 0);
	if (fd >= nslots)
	{
		int			n = nslots ? nslots * 2 : 1024;

		while (n <= fd)
			n *= 2;
		if ((conns = realloc(conns, n * sizeof(Conn *))) == NULL)
			die("out of memory", 0);
		memset(conns + nslots, 0, (n - nslots) * sizeof(Conn *));
		nslots = n;
	}
	c->fd = fd;
	c->heap_idx = -1;
	c->events = EPOLLIN;
	conns[fd] = c;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		die("epoll_ctl", errno);
	stats.connections_opened++;
	if (++cur_conns > stats.max_concurrent)
		stats.max_concurrent = cur_conns;
}

/*
 * Close (with rst, SO_LINGER {1,0} makes it an RST).  The struct is freed at
 * the end of the event batch, so callers holding it can still test c->dead.
 */
static void
conn_close(Conn *c, bool rst)
{
	struct linger l = {1, 0};

	if (c->dead)
		return;
	if (rst)
		setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
	close(c->fd);
	conns[c->fd] = NULL;
	timer_clear(c);
	c->dead = true;
	cur_conns--;
	c->next = graveyard;
	graveyard = c;
}

static void
conn_update_events(Conn *c)
{
	uint32_t	ev = 0;
	struct epoll_event e = {.data.fd = c->fd};

	/* Stop reading when pipelined input piles up beyond any one request. */
	if (!c->eof && (c->state == CS_HUNG || c->state == CS_LINGER ||
					c->in_len - c->in_off < max_body + 2 * MAX_HEADER))
		ev |= EPOLLIN;
	if (c->out_len > c->out_off)
		ev |= EPOLLOUT;
	if (ev != c->events)
	{
		e.events = c->events = ev;
		if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e) < 0)
			die("epoll_ctl", errno);
	}
}

static void
conn_read(Conn *c)
{
	for (;;)
	{
		ssize_t		n;

		if (c->state == CS_HUNG || c->state == CS_LINGER)
			c->in_off = c->in_len = 0;	/* nothing more will be parsed */
		else if (c->in_cap - c->in_len < 4096)
		{
			size_t		need = c->in_len - c->in_off + 4096;

			if (c->in_off > 0)
			{
				memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
				c->in_len -= c->in_off;
				c->in_off = 0;
			}
			/* make room for an announced body at once, not by doublings */
			if (c->hdr_len + c->body_len > need)
				need = c->hdr_len + c->body_len;
			reserve(&c->in, &c->in_cap, need);
		}
		n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
		if (n > 0)
		{
			c->in_len += n;
			if (c->in_len - c->in_off >= max_body + 2 * MAX_HEADER &&
				(c->state == CS_READ || c->state == CS_DELAY))
				return;
		}
		else if (n == 0)
		{
			c->eof = true;
			return;
		}
		else if (errno != EINTR)
		{
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				conn_close(c, false);
			return;
		}
	}
}

static void
conn_flush(Conn *c)
{
	while (c->out_off < c->out_len)
	{
		ssize_t		n = send(c->fd, c->out + c->out_off,
							 c->out_len - c->out_off, MSG_NOSIGNAL);

		if (n > 0)
			c->out_off += n;
		else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		else if (n == 0 || errno != EINTR)
		{
			conn_close(c, false);
			return;
		}
	}
	c->out_off = c->out_len = 0;
}

/* Queue a response; a NULL body means a small JSON naming the status */
static void
respond(Conn *c, int status, const char *extra, const char *body)
{
	static const struct
	{
		int			code;
		const char *text;
	}			reasons[] = {
		{200, "OK"}, {202, "Accepted"}, {204, "No Content"},
		{400, "Bad Request"}, {405, "Method Not Allowed"}, {410, "Gone"},
		{411, "Length Required"}, {413, "Content Too Large"},
		{429, "Too Many Requests"}, {431, "Request Header Fields Too Large"},
		{500, "Internal Server Error"}, {502, "Bad Gateway"},
		{503, "Service Unavailable"}, {504, "Gateway Timeout"},
	};
	const char *reason = "Status";
	char		head[512], dflt[64], clen[48] = "";
	size_t		i;
	int			n;

	for (i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
		if (reasons[i].code == status)
			reason = reasons[i].text;
	if (body == NULL)
		snprintf(dflt, sizeof(dflt), "{\"ok\":false,\"status\":%d}", status);
	body = status == 204 ? "" : body ? body : dflt;
	if (status != 204)			/* which must not have one (RFC 9110, 8.6) */
		snprintf(clen, sizeof(clen), "Content-Length: %zu\r\n", strlen(body));
	n = snprintf(head, sizeof(head),
				 "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n%s%s%s\r\n",
				 status, reason, clen, extra ? extra : "",
				 !c->keepalive ? "Connection: close\r\n" :
				 c->http10 ? "Connection: keep-alive\r\n" : "");
	out_append(c, head, n);
	if (!c->head)
		out_append(c, body, strlen(body));
	c->close_after |= !c->keepalive;
}

/* Answer a malformed or refused request and close after it; returns false */
static bool
refuse(Conn *c, int status)
{
	c->keepalive = false;
	respond(c, status, NULL, NULL);
	return false;
}

static bool
span_is(const char *req, Span s, const char *lit)
{
	return s.len == strlen(lit) && strncasecmp(req + s.off, lit, s.len) == 0;
}

static bool
contains_ci(const char *p, size_t len, const char *word)
{
	size_t		wl = strlen(word);

	for (; len >= wl; p++, len--)
		if (strncasecmp(p, word, wl) == 0)
			return true;
	return false;
}

/* Parse the request line and headers of the request at req */
static bool
parse_head(Conn *c, const char *req)
{
	const char *end = req + c->hdr_len;
	const char *eol = memmem(req, c->hdr_len, "\r\n", 2);
	const char *sp1 = memchr(req, ' ', eol - req);
	const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', eol - sp1 - 1) : NULL;
	const char *p;
	bool		have_cl = false, te = false, close_tok = false, ka_tok = false;

	if (sp2 == NULL || sp1 == req || sp2 == sp1 + 1 || eol - sp2 != 9 ||
		memcmp(sp2 + 1, "HTTP/1.", 7) != 0 || (sp2[8] != '0' && sp2[8] != '1'))
		return refuse(c, 400);
	c->http10 = sp2[8] == '0';
	c->method = (Span) {0, sp1 - req};
	c->target = (Span) {sp1 + 1 - req, sp2 - sp1 - 1};
	c->id = c->ts = c->sig = c->key = c->topic = (Span) {0, 0};
	c->expect = false;

	for (p = eol + 2; p < end - 2; p = eol + 2)
	{
		const char *colon, *v;
		size_t		nlen, n = 0, i;
		Span		val;

		eol = memmem(p, end - p, "\r\n", 2);
		colon = memchr(p, ':', eol - p);
		if (colon == NULL || colon == p || *p == ' ' || *p == '\t')
			return refuse(c, 400);
		nlen = colon - p;
		for (v = colon + 1; v < eol && (*v == ' ' || *v == '\t'); v++)
			;
		val = (Span) {v - req, eol - v};
		while (val.len > 0 && (v[val.len - 1] == ' ' || v[val.len - 1] == '\t'))
			val.len--;

#define NAME_IS(s) (nlen == sizeof(s) - 1 && strncasecmp(p, s, nlen) == 0)
		if (NAME_IS("content-length"))
		{
			for (i = 0; i < val.len; i++)
			{
				if (v[i] < '0' || v[i] > '9')
					return refuse(c, 400);
				/* saturate: anything this large gets a 413 anyway */
				n = n > SIZE_MAX / 20 ? SIZE_MAX / 2 : n * 10 + (v[i] - '0');
			}
			if (val.len == 0 || (have_cl && n != c->body_len))
				return refuse(c, 400);
			have_cl = true;
			c->body_len = n;
		}
		else if (NAME_IS("transfer-encoding"))
			te = true;
		else if (NAME_IS("connection"))
		{
			close_tok |= contains_ci(v, val.len, "close");
			ka_tok |= contains_ci(v, val.len, "keep-alive");
		}
		else if (NAME_IS("expect"))
			c->expect = span_is(req, val, "100-continue");
		else if (NAME_IS("webhook-id"))
			c->id = val;
		else if (NAME_IS("webhook-timestamp"))
			c->ts = val;
		else if (NAME_IS("webhook-signature"))
			c->sig = val;
		else if (NAME_IS("outbox-key"))
			c->key = val;
		else if (NAME_IS("outbox-topic"))
			c->topic = val;
#undef NAME_IS
	}
	c->keepalive = c->http10 ? ka_tok && !close_tok : !close_tok;
	c->head = span_is(req, c->method, "HEAD");
	/* Chunked bodies are not needed: refuse them rather than misframe them */
	if (te)
		return refuse(c, 411);
	if (c->body_len > max_body)
		return refuse(c, 413);
	return true;
}

/* Is a whole request buffered?  Parses its head once, when that arrives. */
static bool
request_ready(Conn *c)
{
	if (c->hdr_len == 0)
	{
		char	   *req, *hend;
		size_t		avail, from;

		/* stray CRLFs between requests are allowed (RFC 9112, 2.2) */
		while (c->in_off < c->in_len &&
			   (c->in[c->in_off] == '\r' || c->in[c->in_off] == '\n'))
			c->in_off++;
		req = c->in + c->in_off;
		avail = c->in_len - c->in_off;
		from = c->scan > 3 ? c->scan - 3 : 0;	/* don't rescan: no O(n^2) */
		hend = avail > from ? memmem(req + from, avail - from, "\r\n\r\n", 4) : NULL;
		if (hend == NULL || hend + 4 - req > MAX_HEADER)
		{
			c->scan = avail;
			return avail > MAX_HEADER ? refuse(c, 431) : false;
		}
		c->scan = 0;
		c->hdr_len = hend + 4 - req;
		if (!parse_head(c, req))
			return false;
	}
	if (c->in_len - c->in_off >= c->hdr_len + c->body_len)
		return true;
	if (c->expect && !c->cont_sent)
		out_append(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
	c->cont_sent = true;
	return false;
}

static void
request_done(Conn *c)
{
	c->in_off += c->hdr_len + c->body_len;
	c->hdr_len = c->body_len = 0;
	c->head = c->cont_sent = false;
	if (c->in_off == c->in_len)
		c->in_off = c->in_len = 0;
}

/*
 * Standard Webhooks: base64(HMAC-SHA256(key, id "." timestamp "." body)) in
 * space-separated "v1,<base64>" entries; any entry may match any secret.
 * Each secret's context keeps its key, so a check only re-initializes it.
 */
static const char *
check_signature(Conn *c, const char *req, const char *body)
{
	const char *sig = req + c->sig.off;
	const char *send = sig + c->sig.len;
	int			i;

	if (c->sig.len == 0)
		return stats.sig_none++, "none";
	for (i = 0; i < nsecrets; i++)
	{
		EVP_MAC_CTX *ctx = secrets[i];
		unsigned char mac[EVP_MAX_MD_SIZE], b64[EVP_MAX_MD_SIZE * 2];
		size_t		mlen = 0;
		int			blen;
		const char *p, *e;

		if (!EVP_MAC_init(ctx, NULL, 0, NULL) ||
			!EVP_MAC_update(ctx, (const unsigned char *) req + c->id.off, c->id.len) ||
			!EVP_MAC_update(ctx, (const unsigned char *) ".", 1) ||
			!EVP_MAC_update(ctx, (const unsigned char *) req + c->ts.off, c->ts.len) ||
			!EVP_MAC_update(ctx, (const unsigned char *) ".", 1) ||
			!EVP_MAC_update(ctx, (const unsigned char *) body, c->body_len) ||
			!EVP_MAC_final(ctx, mac, &mlen, sizeof(mac)))
			die("HMAC failed", 0);
		blen = EVP_EncodeBlock(b64, mac, (int) mlen);
		for (p = sig; p < send; p = e + 1)
		{
			for (e = p; e < send && *e != ' '; e++)
				;
			if (e - p == blen + 3 && memcmp(p, "v1,", 3) == 0 &&
				CRYPTO_memcmp(p + 3, b64, blen) == 0)
				return stats.sig_valid++, "valid";
		}
	}
	return stats.sig_invalid++, "invalid";
}

/* What the log needs from one JSON envelope */
typedef struct
{
	const char *id, *key, *topic;
	size_t		id_len, key_len, topic_len;
	long long	seq;
	int			seq_depth;		/* 0 = no seq found */
} Fields;

static const char *
skip_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
		p++;
	return p;
}

/* p is at an opening quote; returns the position past the closing one */
static const char *
skip_string(const char *p, const char *end)
{
	for (p++; p < end; p++)
		if (*p == '\\')
			p++;
		else if (*p == '"')
			return p + 1;
	return NULL;				/* unterminated */
}

/* An integer at p; the body is not NUL-terminated, so no strtoll */
static bool
parse_json_int(const char *p, const char *end, long long *out)
{
	bool		neg = p < end && *p == '-';
	const char *start = p += neg;
	unsigned long long n = 0;

	for (; p < end && *p >= '0' && *p <= '9' && p - start < 19; p++)
		n = n * 10 + (*p - '0');
	if (p == start || (p < end && (*p == '.' || *p == 'e' || *p == 'E')))
		return false;
	*out = neg ? -(long long) n : (long long) n;
	return true;
}

/*
 * Scan one JSON value at p, collecting the "id", "key" and "topic" string
 * members of its outermost object and the shallowest integer "seq" member
 * (the relay puts seq inside "payload").  Not a validator: it only follows
 * strings and nesting.  Returns the position after the value, or at the ','
 * or ']' that ends a scalar.
 */
static const char *
scan_value(const char *p, const char *end, Fields *f)
{
	int			depth = 0;

	while (p < end)
	{
		const char *s = p + 1, *v, *ve;
		size_t		nlen;

		if (*p == '"')
		{
			if ((p = skip_string(p, end)) == NULL)
				return end;
			nlen = p - 1 - s;
			v = skip_ws(p, end);
			if (depth == 0)
				return p;
			if (v >= end || *v != ':')
				continue;		/* a value, not a member name */
			p = v = skip_ws(v + 1, end);
#define NAME_IS(k) (nlen == sizeof(k) - 1 && memcmp(s, k, nlen) == 0)
			if (NAME_IS("seq") && (f->seq_depth == 0 || depth < f->seq_depth) &&
				parse_json_int(v, end, &f->seq))
				f->seq_depth = depth;
			if (depth != 1 || v >= end || *v != '"' ||
				(ve = skip_string(v, end)) == NULL)
				continue;
			if (NAME_IS("id") && !f->id)
				f->id = v + 1, f->id_len = ve - v - 2;
			else if (NAME_IS("key") && !f->key)
				f->key = v + 1, f->key_len = ve - v - 2;
			else if (NAME_IS("topic") && !f->topic)
				f->topic = v + 1, f->topic_len = ve - v - 2;
#undef NAME_IS
			continue;
		}
		if (*p == '{' || *p == '[')
			depth++;
		else if (*p == '}' || *p == ']')
		{
			if (depth == 0)
				return p;
			if (--depth == 0)
				return p + 1;
		}
		else if (*p == ',' && depth == 0)
			return p;
		p++;
	}
	return p;
}

static void
log_flush(void)
{
	size_t		off = 0;

	while (off < log_len)
	{
		ssize_t		n = write(log_fd, log_buf + off, log_len - off);

		if (n < 0 && errno != EINTR)
			die("cannot write the log", errno);
		off += n > 0 ? n : 0;
	}
	log_len = 0;
}

/* Append a log field: '-' if absent, control characters (tabs!) as '?' */
static void
put_field(const char *s, size_t len)
{
	char	   *d = log_buf + log_len;
	size_t		i;

	*d++ = '\t';
	if (len == 0)
		*d++ = '-';
	for (i = 0; i < len && i < MAX_FIELD; i++)
		*d++ = ((unsigned char) s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
	log_len = d - log_buf;
}

static void
log_message(Conn *c, const Fields *f, const char *sig)
{
	if (LOG_BUF - log_len < 4 * MAX_FIELD + 128)
		log_flush();
	if (log_len == 0)
		log_since = now_us(CLOCK_MONOTONIC);
	log_len += sprintf(log_buf + log_len, "%" PRId64, c->arrival_us);
	put_field(f->id, f->id_len);
	put_field(f->key, f->key_len);
	put_field(f->topic, f->topic_len);
	log_len += sprintf(log_buf + log_len, "\t%s\t%zu\t", sig, c->body_len);
	if (f->seq_depth > 0)
		log_len += sprintf(log_buf + log_len, "%lld\n", f->seq);
	else
		log_len += sprintf(log_buf + log_len, "-\n");
	stats.log_lines++;
}

/* Fill f's missing id, key, topic and seq from g */
static void
fill_fields(Fields *f, const Fields *g)
{
	if (!f->id_len)
		f->id = g->id, f->id_len = g->id_len;
	if (!f->key_len)
		f->key = g->key, f->key_len = g->key_len;
	if (!f->topic_len)
		f->topic = g->topic, f->topic_len = g->topic_len;
	if (!f->seq_depth)
		f->seq = g->seq, f->seq_depth = g->seq_depth;
}

/*
 * Log an accepted request: one line, or one per element of a batch (a JSON
 * array).  A single message's headers win over its body's fields; a batch
 * element's own fields win over the headers.
 */
static void
log_request(Conn *c, const char *req, const char *body, const char *sig)
{
	const char *end = body + c->body_len;
	const char *p = skip_ws(body, end);
	const Fields hdr = {req + c->id.off, req + c->key.off, req + c->topic.off,
	c->id.len, c->key.len, c->topic.len, 0, 0};
	Fields		f = hdr, b = {0};

	if (p >= end || *p != '[')
	{
		scan_value(p, end, &b);
		fill_fields(&f, &b);
		log_message(c, &f, sig);
		return;
	}
	for (p = skip_ws(p + 1, end); p < end && *p != ']'; p = skip_ws(p + 1, end))
	{
		memset(&f, 0, sizeof(f));
		p = skip_ws(scan_value(p, end, &f), end);
		fill_fields(&f, &hdr);
		log_message(c, &f, sig);
		if (p >= end || *p != ',')
			break;
	}
}

/* The body of a failure answer: error_body bytes of "x", or NULL (the default) */
static const char *
error_body(void)
{
	static char *body;
	static size_t len;

	if (faults.error_body <= 0)
		return NULL;
	if (len != (size_t) faults.error_body)
	{
		len = (size_t) faults.error_body;
		if ((body = realloc(body, len + 1)) == NULL)
			die("out of memory", 0);
		memset(body, 'x', len);
		body[len] = '\0';
	}
	return body;
}

/* Send the decided response to the current webhook request */
static void
webhook_finish(Conn *c)
{
	const char *req = c->in + c->in_off;
	const char *body = req + c->hdr_len;
	const char *sig = check_signature(c, req, body);
	bool		ok = c->status >= 200 && c->status < 300;
	char		extra[64] = "";

	if (ok)
	{
		stats.accepted++;
		log_request(c, req, body, sig);
	}
	stats.by_status[c->status]++;
	if ((c->status == 429 || c->status == 503) && faults.retry_after >= 0)
		snprintf(extra, sizeof(extra), "Retry-After: %.0f\r\n", faults.retry_after);
	respond(c, c->status, extra, ok ? "{\"ok\":true}" : error_body());
	request_done(c);
}

/* Decide a webhook request's fate: (down >) reset > hang > status > fail */
static void
webhook_start(Conn *c)
{
	stats.requests_total++;
	c->arrival_us = now_us(CLOCK_REALTIME);
	/* tests only: unbuffered, the head as received (it ends with a blank line) */
	if (headers_fd >= 0 && write(headers_fd, c->in + c->in_off, c->hdr_len) != (ssize_t) c->hdr_len)
		die("cannot write the --headers file", errno);
	if (chance(faults.reset_rate))
	{
		stats.resets_injected++;
		conn_close(c, true);
		return;
	}
	if (chance(faults.hang_rate))
	{
		stats.hangs_injected++;
		c->state = CS_HUNG;
		return;
	}
	c->status = 200;
	if (faults.status && chance(faults.status_rate))
		c->status = (int) faults.status;
	else if (chance(faults.fail_rate))
		c->status = 500;
	if (faults.delay_ms > 0)
	{
		c->state = CS_DELAY;
		timer_set(c, now_us(CLOCK_MONOTONIC) + (uint64_t) faults.delay_ms * 1000);
	}
	else
		webhook_finish(c);
}

static size_t
faults_json(char *buf, size_t cap)
{
	size_t		n = 0, i;

	for (i = 0; i < NKNOBS && n < cap; i++)
		n += snprintf(buf + n, cap - n,
					  knobs[i].integral ? "%c\"%s\":%.0f" : "%c\"%s\":%g",
					  i ? ',' : '{', knobs[i].name, KNOB(&faults, i));
	return n < cap ? n + snprintf(buf + n, cap - n, "}") : n;
}

static void
stats_json(char *buf, size_t cap)
{
	size_t		n;
	int			s;
	const char *sep = "";

	n = snprintf(buf, cap,
				 "{\"requests_total\":%" PRIu64 ",\"accepted\":%" PRIu64
				 ",\"sig_valid\":%" PRIu64 ",\"sig_invalid\":%" PRIu64
				 ",\"sig_none\":%" PRIu64 ",\"connections_opened\":%" PRIu64
				 ",\"connections_current\":%d,\"max_concurrent_connections\":%d"
				 ",\"resets_injected\":%" PRIu64 ",\"hangs_injected\":%" PRIu64
				 ",\"log_lines\":%" PRIu64 ",\"by_status\":{",
				 stats.requests_total, stats.accepted, stats.sig_valid,
				 stats.sig_invalid, stats.sig_none, stats.connections_opened,
				 cur_conns, stats.max_concurrent, stats.resets_injected,
				 stats.hangs_injected, stats.log_lines);
	for (s = 100; s < 600 && n < cap; s++)
		if (stats.by_status[s])
		{
			n += snprintf(buf + n, cap - n, "%s\"%d\":%" PRIu64, sep, s,
						  stats.by_status[s]);
			sep = ",";
		}
	if (n < cap)
		n += snprintf(buf + n, cap - n, "},\"faults\":");
	if (n < cap)
		n += faults_json(buf + n, cap - n);
	if (n < cap)
		snprintf(buf + n, cap - n, "}");
}

/* Apply "k=v&k=v" to *f; false, with a JSON message in err, if one is bad */
static bool
apply_params(Faults *f, const char *s, size_t len, char *err, size_t errcap)
{
	const char *end = s + len;
	bool		saw_status = false, saw_rate = false;

	for (; s < end; s++)
	{
		const char *amp = memchr(s, '&', end - s);
		int			ilen = (int) ((amp ? amp : end) - s);
		char		item[96], *v, *vend = NULL;
		double		d = 0;
		size_t		i = NKNOBS;

		snprintf(item, sizeof(item), "%.*s", ilen, s);
		s += ilen;
		if ((v = strchr(item, '=')) != NULL)
		{
			*v++ = '\0';
			d = strtod(v, &vend);
			for (i = 0; i < NKNOBS && strcmp(item, knobs[i].name) != 0; i++)
				;
		}
		if (ilen == 0)
			continue;
		if (i == NKNOBS || vend == v || *vend || !(d >= knobs[i].lo && d <= knobs[i].hi) ||
			(knobs[i].integral && d != (double) (long long) d) ||
			(knobs[i].off == offsetof(Faults, status) && d > 0 && d < 200))
		{
			/* say which, keeping the JSON valid whatever the client sent */
			snprintf(item, sizeof(item), "%.*s", ilen, s - ilen);
			for (v = item; *v; v++)
				if (*v == '"' || *v == '\\' || (unsigned char) *v < 0x20)
					*v = '_';
			snprintf(err, errcap, "{\"error\":\"bad parameter: %s\"}", item);
			return false;
		}
		KNOB(f, i) = d;
		saw_status |= knobs[i].off == offsetof(Faults, status);
		saw_rate |= knobs[i].off == offsetof(Faults, status_rate);
	}
	/* "status=NNN" alone means every request; "status=0" clears it */
	if (saw_status && !saw_rate)
		f->status_rate = f->status ? 1 : 0;
	return true;
}

/* /_stats, /_reset and /_control: never subject to faults */
static void
handle_control(Conn *c, const char *path, const char *query, size_t qlen)
{
	char		buf[16384];
	Faults		f = faults;

	if (strncmp(path, "/_stats", 7) == 0)
		stats_json(buf, sizeof(buf));
	else if (strncmp(path, "/_reset", 7) == 0)
	{
		memset(&stats, 0, sizeof(stats));
		stats.max_concurrent = cur_conns;
		faults = no_faults;
		rng = (uint64_t) faults.seed;
		faults_json(buf, sizeof(buf));
	}
	/* parameters come in the query string or a form-encoded body */
	else if (!apply_params(&f, query, qlen, buf, sizeof(buf)) ||
			 !apply_params(&f, c->in + c->in_off + c->hdr_len, c->body_len,
						   buf, sizeof(buf)))
	{
		respond(c, 400, NULL, buf);
		return;
	}
	else
	{
		if (f.seed != faults.seed)
			rng = (uint64_t) f.seed;
		if (f.down != faults.down)
			want_down = (int) f.down;	/* after this response is sent */
		faults = f;
		faults_json(buf, sizeof(buf));
	}
	respond(c, 200, NULL, buf);
}

static void
handle_request(Conn *c)
{
	const char *req = c->in + c->in_off;
	const char *path = req + c->target.off;
	const char *q = memchr(path, '?', c->target.len);
	size_t		plen = q ? (size_t) (q - path) : c->target.len;

	if ((plen >= 9 && strncmp(path, "/_control", 9) == 0) ||
		(plen >= 7 && (strncmp(path, "/_stats", 7) == 0 ||
					   strncmp(path, "/_reset", 7) == 0)))
	{
		handle_control(c, path, q ? q + 1 : path, q ? c->target.len - plen - 1 : 0);
		request_done(c);
	}
	else if (span_is(req, c->method, "POST"))
		webhook_start(c);
	else
	{
		respond(c, 405, "Allow: POST\r\n", NULL);
		request_done(c);
	}
}

/*
 * Move a connection on: answer the buffered requests (until one is delayed
 * or hung, or too much output waits), send, then close, linger or wait.
 */
static void
conn_advance(Conn *c)
{
	while (!c->dead && c->state == CS_READ && !c->close_after &&
		   c->out_len - c->out_off < OUT_HIGH && request_ready(c))
		handle_request(c);
	if (!c->dead)
		conn_flush(c);
	if (c->dead)
		return;

	/*
	 * A client that closes while its response is delayed or hung has given
	 * up: drop the request unlogged, since a reply would be lost anyway.
	 */
	if (c->eof && (c->state != CS_READ || c->out_len == 0))
		conn_close(c, false);
	else
	{
		/* half-close and drain, so our last response is not lost to an RST */
		if (c->close_after && c->state == CS_READ && c->out_len == 0)
		{
			shutdown(c->fd, SHUT_WR);
			c->state = CS_LINGER;
			timer_set(c, now_us(CLOCK_MONOTONIC) + LINGER_US);
		}
		conn_update_events(c);
	}
}

static int
listener_open(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t	len = sizeof(sa);
	int			one = 1;
	int			fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};

	sa.sin_port = htons(port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 ||
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
		bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 ||
		listen(fd, 4096) < 0 ||
		getsockname(fd, (struct sockaddr *) &sa, &len) < 0 ||
		epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
	{
		fprintf(stderr, "receiver: cannot listen on 127.0.0.1:%d: %s\n",
				port, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	port = ntohs(sa.sin_port);
	return listen_fd = fd;
}

/* Down means no listener and no connections: clients get "refused" */
static void
set_down(bool down)
{
	int			fd;

	if (down && !is_down)
	{
		close(listen_fd);
		listen_fd = -1;
		for (fd = 0; fd < nslots; fd++)
			if (conns[fd])
				conn_close(conns[fd], false);
		is_down = true;
	}
	else if (!down && is_down && listener_open() >= 0)
		is_down = false;
	faults.down = is_down;
}

static void
accept_all(void)
{
	for (;;)
	{
		int			fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd >= 0)
			conn_new(fd);
		else if ((errno == EMFILE || errno == ENFILE) && spare_fd >= 0)
		{
			/*
			 * Out of descriptors: shed the connection, or the listener stays
			 * readable and epoll_wait spins.
			 */
			close(spare_fd);
			if ((fd = accept(listen_fd, NULL, NULL)) >= 0)
				close(fd);
			spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		}
		else if (errno != EINTR && errno != ECONNABORTED)
			return;
	}
}

static void
handle_signals(void)
{
	struct signalfd_siginfo si;

	while (read(sig_fd, &si, sizeof(si)) == sizeof(si))
	{
		if (si.ssi_signo == SIGUSR1)
			set_down(true);
		else if (si.ssi_signo == SIGUSR2)
			set_down(false);
		else
			running = false;
	}
}

/* Fire due timers and flush the log if a line has waited long enough */
static void
run_timers(void)
{
	uint64_t	now = now_us(CLOCK_MONOTONIC);

	while (heap_len > 0 && heap[0]->due <= now)
	{
		Conn	   *c = heap[0];

		timer_clear(c);
		if (c->state == CS_DELAY)
		{
			c->state = CS_READ;
			webhook_finish(c);
			conn_advance(c);
		}
		else
			conn_close(c, false);	/* lingered long enough */
	}
	if (log_len > 0 && now - log_since >= LOG_FLUSH_US)
		log_flush();
}

/* Milliseconds until the next timer or log flush, rounded up; -1 = none */
static int
next_timeout(void)
{
	uint64_t	due = heap_len > 0 ? heap[0]->due : UINT64_MAX;
	uint64_t	now = now_us(CLOCK_MONOTONIC);

	if (log_len > 0 && log_since + LOG_FLUSH_US < due)
		due = log_since + LOG_FLUSH_US;
	if (due == UINT64_MAX)
		return -1;
	return due <= now ? 0 : (int) ((due - now + 999) / 1000);
}

/* A secret is "whsec_<base64 key>", else the key is the string's bytes */
static void
add_secret(const char *s)
{
	size_t		len = strlen(s);
	unsigned char *key = malloc(len + 4);
	char	   *b64 = malloc(len + 4);
	int			klen = (int) len;
	OSSL_PARAM	params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
		OSSL_PARAM_construct_end()
	};

	if (key == NULL || b64 == NULL || nsecrets == MAX_SECRETS || len == 0)
		die("too many or empty --secret", 0);
	memcpy(key, s, len);
	if (strncmp(s, "whsec_", 6) == 0)
	{
		/* EVP_DecodeBlock wants padding and counts it as zero bytes */
		for (len = strlen(strcpy(b64, s + 6)); len % 4; len++)
			b64[len] = '=';
		klen = EVP_DecodeBlock(key, (unsigned char *) b64, (int) len);
		klen -= (len > 0 && b64[len - 1] == '=') + (len > 1 && b64[len - 2] == '=');
		if (klen <= 0)
			die("--secret whsec_...: bad base64", 0);
	}
	if ((secrets[nsecrets] = EVP_MAC_CTX_new(hmac)) == NULL ||
		!EVP_MAC_init(secrets[nsecrets++], key, klen, params))
		die("cannot set up HMAC-SHA256", 0);
	free(key);
	free(b64);
}

static void
usage(void)
{
	fprintf(stderr, "usage: receiver --port N [--secret S]... [--log FILE] "
			"[--headers FILE] [--max-body BYTES]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	struct epoll_event evs[512];
	struct rlimit rl;
	sigset_t	mask;
	const char *log_path = NULL;
	int			i;

	if ((hmac = EVP_MAC_fetch(NULL, "HMAC", NULL)) == NULL)
		die("no HMAC in libcrypto", 0);
	for (i = 1; i < argc; i += 2)
	{
		const char *val = argv[i + 1];	/* argv[argc] is NULL */
		char	   *end = "";

		if (val == NULL)
			usage();
		else if (strcmp(argv[i], "--port") == 0)
			port = (int) strtol(val, &end, 10);
		else if (strcmp(argv[i], "--max-body") == 0)
			max_body = (size_t) strtoull(val, &end, 10);
		else if (strcmp(argv[i], "--secret") == 0)
			add_secret(val);
		else if (strcmp(argv[i], "--log") == 0)
			log_path = val;
		else if (strcmp(argv[i], "--headers") == 0)
		{
			if ((headers_fd = open(val, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)) < 0)
				die("cannot open the --headers file", errno);
		}
		else
			usage();
		if (*end || port < 0 || port > 65535 || max_body == 0)
			usage();
	}
	if (log_path &&
		(log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)) < 0)
		die("cannot open the --log file", errno);
	faults = no_faults;
	rng = (uint64_t) faults.seed;
	signal(SIGPIPE, SIG_IGN);
	/* thousands of connections need thousands of descriptors */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max)
	{
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}

	/* signals arrive as input on an fd, handled outside any handler */
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGUSR1);
	sigaddset(&mask, SIGUSR2);
	evs[0].events = EPOLLIN;
	if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0 ||
		(evs[0].data.fd = sig_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC)) < 0 ||
		(epfd = epoll_create1(EPOLL_CLOEXEC)) < 0 ||
		epoll_ctl(epfd, EPOLL_CTL_ADD, sig_fd, &evs[0]) < 0)
		die("setup failed", errno);
	spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (listener_open() < 0)
		exit(1);
	printf("listening on %d\n", port);
	fflush(stdout);

	while (running)
	{
		int			n = epoll_wait(epfd, evs, 512, next_timeout());

		if (n < 0 && errno != EINTR)
			die("epoll_wait", errno);
		for (i = 0; i < n; i++)
		{
			int			fd = evs[i].data.fd;
			Conn	   *c = fd >= 0 && fd < nslots ? conns[fd] : NULL;

			if (fd == sig_fd)
				handle_signals();
			else if (fd == listen_fd)
				accept_all();
			else if (c == NULL)
				continue;		/* closed earlier in this batch */
			/* after a reset or a full shutdown no more input can come */
			else if (evs[i].events & (EPOLLHUP | EPOLLERR))
				conn_close(c, false);
			else
			{
				if (evs[i].events & EPOLLIN)
					conn_read(c);
				if (!c->dead && (evs[i].events & EPOLLOUT))
					conn_flush(c);
				if (!c->dead)
					conn_advance(c);
			}
		}
		run_timers();
		if (want_down >= 0)
			set_down(want_down);
		want_down = -1;
		while (graveyard != NULL)
		{
			Conn	   *c = graveyard;

			graveyard = c->next;
			free(c->in);
			free(c->out);
			free(c);
		}
	}
	log_flush();
	return 0;
}
