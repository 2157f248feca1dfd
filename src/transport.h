/*-------------------------------------------------------------------------
 * transport.h
 *		The interface between the delivery core (delivery.c and friends) and
 *		a transport: HTTP webhooks (webhook.c over http.c) or Kafka
 *		(kafka.c).  A transport knows nothing of SQL, cursors, queues,
 *		retries or the breaker: it turns messages into a request (an HTTP
 *		POST, a Kafka record), sends it without blocking, and reports the
 *		request's outcome.  The core knows nothing of HTTP or Kafka.
 *
 * The relay waits in one place (transport.c): its latch, postmaster death,
 * and one descriptor per transport that becomes readable when the transport
 * has progress to make (curl's sockets, librdkafka's event queue), bounded
 * by the transports' own deadlines.  No transport keeps a transaction open
 * or raises an error from a library callback.
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_TRANSPORT_H
#define OUTBOX_TRANSPORT_H

#include "postgres.h"

#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "outbox.h"

/* What became of a request. */
typedef enum TransportOutcome
{
	TRANSPORT_OK,				/* delivered: 2xx, a delivery report without error */
	TRANSPORT_RETRY,			/* failed, may succeed later: an attempt, then backoff */
	TRANSPORT_PERMANENT,		/* will never succeed as it is: dead-letter now */
	TRANSPORT_NOT_SENT			/* withdrawn before it left: no attempt was made */
} TransportOutcome;

typedef struct TransportResult
{
	void	   *owner;			/* as given to send() */
	TransportOutcome outcome;
	int			status;			/* HTTP status, 0 if none (last_status) */
	long		retry_after_ms; /* not before this (Retry-After); -1: none */
	bool		pause;			/* the receiver asks for the endpoint to pause (410) */
	char		error[OUTBOX_LAST_ERROR_BYTES]; /* "" on success */
} TransportResult;

/*
 * One message to send.  payload and headers are the jsonb datums as stored
 * (possibly TOASTed): detoast them one message at a time while printing,
 * and free the copy, so that a batch never holds every payload at once.
 */
typedef struct TransportMessage
{
	int64		id;
	const char *topic;
	const char *key;			/* NULL: none */
	TimestampTz created_at;
	Datum		payload;		/* jsonb */
	Datum		headers;		/* jsonb: the message's own headers; 0: none */
} TransportMessage;

/* An endpoint's configuration, from its catalog row, as a transport needs it. */
typedef struct TransportConfig
{
	const char *name;
	const char *url;
	const char *secret;			/* as stored; NULL: none */
	const char *headers_json;	/* the endpoint's headers, a JSON object's text */
	Jsonb	   *options;		/* its options; a transport reads its own section */
	Jsonb	   *secret_options; /* write-only settings (Kafka credentials); NULL: none */
	int			timeout_ms;
	int			batch_size;
} TransportConfig;

typedef struct TransportOps
{
	const char *name;			/* "http", "kafka" */

	/*
	 * Does the transport keep the messages of one key in order while several
	 * are in flight at once (Kafka's idempotent producer)?  If not, the core
	 * sends a key's next message only after the previous one's outcome.
	 */
	bool		pipelined;

	/* ---- per relay ---- */

	/*
	 * Called once per relay, lazily; returns the descriptor the relay waits
	 * on for this transport (readable: call progress), or PGINVALID_SOCKET.
	 */
	pgsocket	(*init) (void);
	/* ms until the transport needs progress() without its descriptor, or -1 */
	long		(*timeout) (void);
	/* after a wait: make progress (ready: its descriptor was readable) */
	void		(*progress) (bool ready);
	/* the next finished request, if any */
	bool		(*next_result) (TransportResult *r);
	/* requests out, not yet reported */
	int			(*in_flight) (void);

	/* ---- per endpoint ---- */

	/*
	 * Make an endpoint's connection state from cfg (memory in cxt, which
	 * lives as long as the endpoint).  Called at every reload with the
	 * previous state (NULL the first time); may return prev itself when
	 * nothing it uses changed.  Requests in flight may still use prev after
	 * it is replaced: the transport keeps what they need until they are
	 * reported.  Raises no error: returns NULL with *problem set (palloc'd)
	 * if cfg cannot be used.
	 */
	void	   *(*open) (const TransportConfig *cfg, void *prev, MemoryContext cxt,
						 char **problem);

	/*
	 * Start one request carrying msgs[0..n) (n <= the endpoint's batch
	 * size), in id order.  Returns how many of them, from the first, the
	 * request took; those left go in a later request.  Returns 0 either
	 * with *refusal set (palloc'd): msgs[0] can never be sent, dead-letter
	 * it; or with *refusal NULL: no room now, try again after a result.
	 * Runs inside the core's short transaction (it may detoast the jsonb),
	 * but does no network I/O: that happens in the relay's wait.
	 */
	int			(*send) (void *conn, void *owner, const TransportMessage *msgs, int n,
						 char **refusal);

	/*
	 * The core is done with conn: its endpoint is gone, or open() replaced
	 * it.  Requests of conn still in flight are still reported (through
	 * next_result); the transport frees conn once they are.  Never blocks.
	 */
	void		(*close) (void *conn);
} TransportOps;

/* transport.c: choosing a transport, and the relay's one wait */
extern const TransportOps *transport_for_url(const char *url);
extern void transport_init(void);
extern void transport_wait(long timeout_ms);
extern bool transport_next_result(TransportResult *r);
extern int	transport_in_flight(void);
extern void transport_jsonb_free(Jsonb *jb, Datum d);

/* the transports */
extern const TransportOps webhook_transport;	/* webhook.c */
extern const TransportOps kafka_transport;	/* kafka.c */

#endif							/* OUTBOX_TRANSPORT_H */
