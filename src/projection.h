/*-------------------------------------------------------------------------
 * projection.h
 *		Projections: definitions, handler calls, the inline path (projection.c).
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_PROJECTION_H
#define OUTBOX_PROJECTION_H

#include "outbox.h"
#include "eventparse.h"
#include "shmem.h"

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

/* projection.c, called by outbox.append */
extern void projection_apply_inline(const char *stream, const EventInput *evs, int n,
									const int64 *positions, int64 first_version,
									TimestampTz created_at);

#endif							/* OUTBOX_PROJECTION_H */
