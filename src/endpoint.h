/*-------------------------------------------------------------------------
 * endpoint.h
 *		The delivery core's in-memory state, shared by its files only:
 *		endpoint.c (loading endpoints from the catalog), delivery.c (the
 *		state machine), progress.c (saving progress) and report.c
 *		(publishing figures for outbox.stat_endpoints).  Nothing here knows
 *		HTTP or Kafka: an endpoint talks to its transport (transport.h).
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_ENDPOINT_H
#define OUTBOX_ENDPOINT_H

#include "postgres.h"

#include "lib/ilist.h"
#include "nodes/pg_list.h"
#include "utils/array.h"
#include "utils/timestamp.h"

#include "outbox.h"
#include "shmem.h"
#include "transport.h"

/*
 * Memory bounds (README, "Memory"), whatever the payloads and the batch
 * settings.  The queue holds ids, topics and keys only: payloads and headers
 * are read when a request is built.
 *   WINDOW_MAX		messages per endpoint read past its cursor and not passed
 *					yet: queued ones (also limited by 2 * max_in_flight *
 *					batch_size) plus delivered ones (done_ahead, saved with
 *					the cursor).  One request that hangs holds the others
 *					back after this many.
 */
#define WINDOW_MAX			4096

/* One message an endpoint has fetched and not finished. */
typedef struct Pending
{
	dlist_node	node;
	int64		id;
	char	   *topic;
	char	   *key;			/* NULL when none */
	TimestampTz created_at;
	int			attempts;		/* attempts made so far */
	TimestampTz due;			/* not before; 0 = now */
	bool		waiting_key;	/* parked behind an earlier message with its key */
	bool		parked;			/* has a 'retry' row in outbox._deliveries */
	bool		in_flight;
	bool		save;			/* its _deliveries row must be written */
	int			last_status;
	char	   *last_error;
} Pending;

typedef enum BreakerState
{
	BREAKER_CLOSED,
	BREAKER_OPEN,
	BREAKER_HALF_OPEN
} BreakerState;

typedef struct Endpoint
{
	int			id;				/* -1 once it left the catalog */
	char	   *name;
	const TransportOps *transport;
	void	   *conn;			/* the transport's state; NULL while invalid */
	List	   *patterns;		/* topic patterns (char *) */
	int			max_attempts;
	int			backoff_base_ms;
	int			backoff_max_ms;
	int			timeout_ms;
	int			max_in_flight;
	int			rate_limit;		/* messages per second, 0 = unlimited */
	int			batch_size;
	bool		ordered;
	bool		paused;
	bool		pause_now;		/* a 410 asks to pause it */
	bool		dropped;		/* gone from the catalog; freed when idle */
	bool		invalid;		/* its stored configuration cannot be used */

	int64		cursor;
	int64		fetched;		/* highest id read from the log */
	int64		loaded_upto;	/* highest id loaded from done_ahead or parked rows */
	int64	   *done;			/* ids > cursor already delivered, unsorted */
	int			ndone;
	int			maxdone;
	int64	   *forget;			/* ids whose _deliveries row must go */
	int			nforget;
	int			maxforget;
	List	   *dead;			/* Pending *, dead-lettered, to save */
	dlist_head	queue;			/* Pending *, in id order */
	int			queued;
	int			in_flight;		/* requests out */
	bool		want_fetch;		/* the log may have messages we have not read */
	TimestampTz refetch_at;		/* the horizon held the last fetch back */
	int			refetch_ms;		/* current re-read interval while held back */
	bool		dirty;			/* may have progress to save */
	int			unsaved;		/* finished requests whose outcome is not saved yet */
	bool		done_changed;	/* done grew since the last save */

	BreakerState breaker;
	int			failures;		/* consecutive failed requests */
	int			trips;
	TimestampTz open_until;

	double		tokens;
	TimestampTz tokens_at;

	/* for outbox.stat_endpoints (report.c) */
	uint64		delivered;
	uint64		failed_attempts;
	uint64		dead_lettered;
	TimestampTz last_success_at;
	TimestampTz last_failure_at;
	int			last_http_status;
	char		last_error[OUTBOX_LAST_ERROR_BYTES];
	float4		latencies[STAT_LATENCIES];	/* ring of commit-to-acknowledgement ms */
	int			nlatencies;
	int			latency_pos;

	MemoryContext cxt;
	MemoryContext config_cxt;	/* name, patterns; replaced on each reload */
} Endpoint;

/* endpoint.c */
extern List *delivery_endpoints;	/* Endpoint * */
extern MemoryContext delivery_cxt;
extern void endpoint_gone(Endpoint *ep);

/* delivery.c, for endpoint.c and progress.c */
extern Pending *pending_new(Endpoint *ep, int64 id, const char *topic, const char *key,
							TimestampTz created_at);
extern void pending_release(Pending *p);
extern void queue_insert(Endpoint *ep, Pending *p);
extern bool queue_contains(Endpoint *ep, int64 id);

/* a set of keys for one pass over a queue (delivery.c) */
typedef struct KeySet
{
	const char **keys;			/* open addressing; NULL: free */
	uint32		mask;
} KeySet;

extern void keyset_init(KeySet *s, int expected);
extern bool keyset_add(KeySet *s, const char *key);
extern bool keyset_contains(const KeySet *s, const char *key);
extern void keyset_free(KeySet *s);

/* progress.c: when grouped saves are due */
extern TimestampTz delivery_persist_due(void);

/* small growable arrays of ids */
extern void ids_add(int64 **ids, int *n, int *max, int64 id);
extern bool ids_contains(const int64 *ids, int n, int64 id);
extern ArrayType *ids_array(const int64 *ids, int n);

/* the core's short transactions (one at a time) */
extern void delivery_begin(const char *activity);
extern void delivery_end(void);

#endif							/* OUTBOX_ENDPOINT_H */
