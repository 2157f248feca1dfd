/*-------------------------------------------------------------------------
 * shmem.h
 *		Shared memory: one slot per database (relay and projector), endpoint
 *		figures, wake-ups (shmem.c).
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_SHMEM_H
#define OUTBOX_SHMEM_H

#include "outbox.h"

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
	int			nlatencies;		/* commit-to-acknowledgement latencies, ms, most recent */
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
	uint64		requests;		/* requests finished (HTTP requests, Kafka records) */
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

#endif							/* OUTBOX_SHMEM_H */
