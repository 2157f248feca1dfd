/*-------------------------------------------------------------------------
 * outbox.h
 *		Declarations shared by outbox's source files.
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_H
#define OUTBOX_H

#include "postgres.h"

#include "access/transam.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "nodes/execnodes.h"
#include "port/atomics.h"
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "utils/timestamp.h"
#include "fmgr.h"
#include "utils/jsonb.h"
#include "utils/snapshot.h"
#include "utils/uuid.h"

/*
 * outbox's own SQLSTATE class "OB".  Every code is listed in README.md.
 *   OB001  the expected ETag does not match the stream (retryable: re-read
 *          the stream, re-decide, append again)
 */
#define ERRCODE_OUTBOX_ETAG_MISMATCH	MAKE_SQLSTATE('O','B','0','0','1')

/* Longest stream, topic, key, consumer or message id, in bytes. */
#define OUTBOX_MAX_NAME_BYTES	255

/*
 * Largest webhook request body, in bytes: a message whose payload and
 * headers would print as more JSON text is refused by outbox.publish (and
 * dead-lettered by the relay, if it was published before this limit).
 */
#define OUTBOX_MAX_BODY_BYTES	(16 * 1024 * 1024)
/* ... of which a message's payload and headers may take this much (the rest: its envelope) */
#define OUTBOX_MAX_MESSAGE_TEXT	(OUTBOX_MAX_BODY_BYTES - 4096)

/*
 * Most bytes of JSON text one byte of jsonb can print as: a number of ten
 * bytes such as 1e131000 prints every digit (webhook_json_length).
 */
#define OUTBOX_JSON_MAX_EXPANSION	16384

/* Most events one call to outbox.append may write. */
#define OUTBOX_MAX_EVENTS_PER_APPEND	10000

/* GUCs (outbox.c) */
extern int	outbox_max_payload_bytes;
extern int	outbox_max_databases;
extern int	outbox_max_endpoints;
extern int	outbox_max_projections;
extern int	outbox_retention_s;
extern int	outbox_inbox_retention_s;

/* shmem.c: one slot per database relay (lock order and wakeups: shmem.c) */
typedef enum RelayState
{
	RELAY_NONE = 0,				/* no relay started yet */
	RELAY_STARTING,				/* registered by the launcher */
	RELAY_RUNNING,				/* attached and serving its database */
	RELAY_NO_EXTENSION,			/* exited: the database has no outbox extension */
	RELAY_BACKOFF,				/* exited with an error; restarts after next_start_at */
	RELAY_NEEDS_UPDATE,			/* waiting: the extension is not this library's version */
	RELAY_NO_SLOT				/* exited: max_databases relays run elsewhere */
} RelayState;

/*
 * Slots: one per relay of a database with the extension (at most
 * outbox.max_databases), plus one, so that a database can always be looked
 * at (is the extension there?) even while max_databases relays run.
 */
#define OUTBOX_NSLOTS(max_databases)	((max_databases) + 1)
/* databases with the extension that got no slot, listed in stat_workers */
#define OUTBOX_MAX_WAITING		64
/* CREATE EXTENSION in databases without a slot, for the launcher */
#define OUTBOX_MAX_REQUESTS		16

/*
 * The longest last_error kept, in bytes, terminator included: a delivery's
 * in outbox.dead_letters, an endpoint's in outbox.stat_endpoints.  An HTTP
 * failure's is "HTTP <status>: " and the start of the response body.
 */
#define OUTBOX_LAST_ERROR_BYTES	256

/* What the relay tells outbox.stat_endpoints about one endpoint. */
#define STAT_LATENCIES 256

typedef struct EndpointStats
{
	int			endpoint_id;	/* 0: unused */
	char		state[12];		/* closed (active), open, half_open, paused */
	int			queued;			/* fetched, not finished (includes in flight) */
	int			in_flight;		/* messages in requests out */
	int64		fetched;		/* highest log id read */
	uint64		delivered;
	uint64		failed_attempts;
	uint64		dead_lettered;
	TimestampTz oldest_pending;	/* created_at of the oldest unfinished message */
	TimestampTz last_success_at;
	TimestampTz last_failure_at;
	int			last_http_status;
	char		last_error[OUTBOX_LAST_ERROR_BYTES];
	int			nlatencies;		/* commit-to-2xx latencies, ms, most recent */
	float4		latencies[STAT_LATENCIES];
} EndpointStats;

/*
 * One inline projection's handler calls since the server started, in its
 * database's slot (for stat_projections.events_applied).
 */
typedef struct ProjectionProgress
{
	pg_atomic_uint32 id;		/* _projections.id; 0: free */
	pg_atomic_uint64 live_applied;	/* handler calls, rolled-back appends included */
} ProjectionProgress;

/* The async projector of a database (projector.c), in its slot. */
typedef enum ProjectorState
{
	PROJECTOR_NONE = 0,			/* none: the database has no async projection */
	PROJECTOR_STARTING,			/* registered by the relay */
	PROJECTOR_RUNNING,			/* attached and applying */
	PROJECTOR_BACKOFF			/* exited with an error; restarts after next_start_at */
} ProjectorState;

typedef struct ProjectorInfo
{
	/* protected by OutboxShmem->lock */
	pid_t		pid;			/* the running projector, 0 if none */
	Latch	   *latch;			/* its latch */
	ProjectorState state;
	TimestampTz started_at;
	TimestampTz last_activity_at;
	int			failures;		/* consecutive error exits (the relay's backoff) */
	TimestampTz next_start_at;	/* the relay: not before */
	uint64		loops;			/* turns of the projector loop */
	TimestampTz horizon_blocked_since;	/* a running transaction holds reading back */
} ProjectorInfo;

typedef struct RelaySlot
{
	/* protected by OutboxShmem->lock */
	Oid			dboid;			/* InvalidOid: free slot */
	pid_t		pid;			/* the running relay, 0 if none */
	Latch	   *latch;			/* its latch */
	RelayState	state;
	bool		has_extension;	/* its relay found the extension: counts against max_databases */
	TimestampTz started_at;
	TimestampTz last_activity_at;
	int			failures;		/* consecutive error exits (launcher backoff) */
	TimestampTz next_start_at;	/* launcher: not before */
	TimestampTz hold_until;		/* DROP DATABASE and friends: not before */
	uint64		loops;			/* turns of the relay loop */
	uint64		requests;		/* HTTP requests finished */
	TimestampTz horizon_blocked_since;	/* a running transaction holds reading back */
	/* atomics, no lock */
	pg_atomic_uint32 wake_pending;	/* a commit wants the relay awake */
	pg_atomic_uint32 start_wanted;	/* CREATE EXTENSION wants a relay started */
	pg_atomic_uint64 config_generation; /* bumped by every endpoint change */
	pg_atomic_uint32 events_pending;	/* a commit appended events for async projections */
	pg_atomic_uint32 projector_xid; /* the projector's xid while it holds no log
									 * position (gapless.c); 0: none */
	pg_atomic_uint64 progress_count;	/* bumped before each progress_cv broadcast */
	ConditionVariable progress_cv;	/* broadcast when a projection's checkpoint moves */
	ProjectorInfo projector;	/* protected by OutboxShmem->lock */
} RelaySlot;

typedef struct OutboxShmem
{
	LWLock	   *lock;
	Latch	   *launcher_latch;
	pg_atomic_uint32 launcher_wanted;
	/* protected by lock: databases wanting a relay that have no slot */
	int			nrequests;		/* -1: more than OUTBOX_MAX_REQUESTS */
	Oid			requests[OUTBOX_MAX_REQUESTS];
	int			nwaiting;		/* the launcher's list of databases without a slot */
	Oid			waiting[OUTBOX_MAX_WAITING];
	int			nslots;
	int			endpoints_per_slot;
	int			projections_per_slot;
	EndpointStats *stats;		/* nslots * endpoints_per_slot, after the slots */
	ProjectionProgress *progress;	/* nslots * projections_per_slot, after the stats */
	RelaySlot	slots[FLEXIBLE_ARRAY_MEMBER];
} OutboxShmem;

extern OutboxShmem *outbox_shmem;
extern void shmem_init(void);
extern RelaySlot *shmem_find_slot(Oid dboid);
extern void shmem_reset_slot(RelaySlot *slot, Oid dboid);
extern void shmem_wake_relay_at_commit(void);
extern void shmem_notify_relay_at_commit(void);
extern EndpointStats *shmem_slot_stats(RelaySlot *slot);
extern ProjectionProgress *shmem_projection_progress(Oid dboid, int id, bool create);
extern void shmem_wake_projector_at_commit(void);
extern void shmem_projection_progressed(Oid dboid);
extern void shmem_keep_projections(Oid dboid, const int *ids, int n);

/* webhook.c: an upper bound of a jsonb's length as JSON text (validate.c) */
extern Size webhook_json_length(Jsonb *jb, Size limit);

/* redact.c: what outbox_reader may see of URLs and errors */
extern void redact_error_for_caller(char *error);

/* subscription.c: pull consumers, and the topic patterns they share with endpoints */
extern bool outbox_topic_matches(const char *pattern, const char *topic);

/* retention.c: deleting delivered messages */
extern long retention_expire(void);
extern void retention_soon(void);
extern void retention_changed(void);

/* projection.c: applying events to projections */
#define PROJECTION_COLUMNS \
	"id, name, mode, state, position, handler, reset, run_as, event_types, stream_prefix," \
	" options"

typedef struct Projection
{
	int			id;
	char	   *name;
	char	   *state;			/* running, paused, failed, rebuilding */
	int64		position;		/* async: checkpoint */
	char	   *handler_signature;	/* as stored; resolved on first use */
	char	   *reset_signature;	/* NULL: none */
	Oid			handler;		/* InvalidOid until resolved (projection_resolve) */
	char	   *run_as_name;	/* the role handler and reset run as */
	Oid			run_as;			/* its OID, InvalidOid until resolved */
	MemoryContext cxt;			/* where the projection and its resolution live */
	int			ntypes;
	char	  **types;			/* event_types; NULL: every type */
	char	   *prefix;			/* stream_prefix; NULL: every stream */
	int			batch_size;		/* async: events per transaction */
	char	   *options_problem;	/* why its stored options cannot be used, or NULL */
	FmgrInfo	flinfo;			/* the handler's, once resolved */
	char	   *search_path;	/* the one the handler runs with, once resolved */
	ProjectionProgress *progress;	/* shared counters; NULL if none */
} Projection;

typedef struct ProjectionEvent
{
	int64		position;
	char	   *stream;
	char	   *type;
	Datum		row;			/* an outbox.events row, the handler's argument */
} ProjectionEvent;

extern Projection *projection_from_spi(HeapTuple tup, MemoryContext cxt);
extern bool projection_matches(const Projection *p, const char *stream, const char *type);
extern void projection_call(Projection *p, Datum row);
extern int	projection_enter(Projection *p);
extern void projection_leave(int nest);
extern int	projection_read(int64 after, int limit, bool gapless, ProjectionEvent **out,
							bool *held_back);

/* projector.c: the async projector worker, and the relay's side of it */
extern long projector_supervise(void);
extern bool projector_needs_relay(void);
extern void projector_stop(void);

/* relay.c, also used by the projector */
extern void relay_xact_begin(const char *activity);
extern void relay_xact_end(void);
extern bool relay_turn_begin(MemoryContext loop_cxt);
extern bool relay_extension_current(void);

/* launcher.c */
extern void launcher_register(void);
extern void launcher_init_hooks(void);

/* catalog.c: cached OIDs of the installed extension's objects */
extern Oid	outbox_schema_oid(void);
extern Oid	outbox_owner_oid(void);
extern Oid	outbox_relid(const char *relname);
extern Relation outbox_table_open(Oid relid, LOCKMODE lockmode);
extern char *outbox_extension_version(void);

/*
 * spi.c: every statement outbox runs goes through a plan prepared once per
 * backend, with typed parameters, run as the extension owner.
 */
typedef struct OutboxPlan
{
	const char *sql;
	int			nargs;
	Oid			argtypes[9];
	SPIPlanPtr	plan;			/* prepared on first use, kept for the backend */
} OutboxPlan;

typedef struct OutboxSpi
{
	bool		connected;
	Oid			saved_userid;
	int			saved_sec_context;
} OutboxSpi;

#define OUTBOX_SPI_INIT {false, InvalidOid, 0}

/* eventstore.c: the log in position order, with xmark last (gapless.c) */
extern OutboxPlan outbox_plan_read_all;

extern void outbox_spi_begin(OutboxSpi *ctx);
extern void outbox_spi_end(OutboxSpi *ctx);
extern uint64 outbox_spi_run(OutboxPlan *plan, Datum *values, const char *nulls,
							 bool read_only, long count, int expected_rc);
extern uint64 outbox_spi_run_latest(OutboxPlan *plan, Datum *values, const char *nulls,
									int expected_rc);
extern int64 outbox_spi_getint64(int col, bool *isnull);
extern void outbox_spi_emit(FunctionCallInfo fcinfo, bool gapless);
extern Datum outbox_spi_read(FunctionCallInfo fcinfo, OutboxPlan *plan, Datum *args,
							 bool gapless);

/* rows.c: direct row access, in the caller's transaction */
typedef struct OutboxRows
{
	Relation	rel;
	EState	   *estate;
	ResultRelInfo *rri;
	TupleTableSlot *slot;		/* the row rows_lock_by_key locked */
	TupleTableSlot *newslot;
	EPQState	epq;
} OutboxRows;

extern void rows_open(OutboxRows *r, Oid relid);
extern void rows_close(OutboxRows *r);
extern void rows_insert(OutboxRows *r, Datum *values, bool *nulls, int natts);
extern void rows_update(OutboxRows *r, Datum *values, bool *nulls, int natts);
extern bool rows_fetch_by_key(Relation rel, Oid idxid, Datum key, Oid eqproc,
							  Snapshot snap, TupleTableSlot *slot);
extern bool rows_lock_by_key(OutboxRows *r, Oid idxid, Datum key, Oid eqproc);

/* eventparse.c: the events argument of outbox.append */
typedef struct EventInput
{
	char	   *type;
	Jsonb	   *data;
	Jsonb	   *metadata;
	pg_uuid_t  *id;				/* NULL when the caller gave none */
} EventInput;

extern int	es_parse_events(Jsonb *events, EventInput **out, bool *all_have_ids);

/* projection.c, called by outbox.append */
extern void projection_apply_inline(const char *stream, const EventInput *evs, int n,
									const int64 *positions, int64 first_version,
									TimestampTz created_at);
extern pg_uuid_t *es_random_uuid(void);

/* validate.c: argument checks shared by every SQL function */
extern char *outbox_arg_name(FunctionCallInfo fcinfo, int argno, const char *what);
extern Jsonb *outbox_arg_jsonb(FunctionCallInfo fcinfo, int argno, const char *what);
extern int32 outbox_arg_count(FunctionCallInfo fcinfo, int argno, const char *what);
extern int64 outbox_arg_position(FunctionCallInfo fcinfo, int argno, const char *what);
extern void outbox_check_writable(const char *fname);
extern void outbox_check_header_value(const char *what, const char *value, int len);
extern void outbox_check_name(const char *what, const char *name, int len);
extern void outbox_check_payload_size(const char *what, Jsonb *value);
extern void outbox_check_message_size(Jsonb *payload, Jsonb *headers);
extern void outbox_check_headers(const char *what, Jsonb *headers, bool from_message);

typedef struct HeaderProblem
{
	char	   *message;		/* names the header */
	const char *detail;			/* NULL if none */
	const char *hint;			/* NULL if none */
} HeaderProblem;

extern bool outbox_header_allowed(const char *name, int len, const JsonbValue *value,
								  bool from_message, HeaderProblem *problem);

/* etag.c */
extern text *etag_make(const char *stream, int64 version);
extern int64 etag_version(const char *stream, const char *etag);

/* gapless.c: the reading horizon of the gap-free logs */
extern FullTransactionId gapless_horizon(void);
extern void gapless_take_xid(void);
extern bool gapless_holds_back(FullTransactionId xmark, FullTransactionId horizon);
extern FullTransactionId gapless_mark(void);
extern bool gapless_xid_excluded(TransactionId xid);
extern void gapless_exclude_self(pg_atomic_uint32 *entry);
extern void gapless_include_self(void);

#endif							/* OUTBOX_H */
