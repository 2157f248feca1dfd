/*-------------------------------------------------------------------------
 * eventparse.h
 *		The events argument of outbox.append (eventparse.c).
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_EVENTPARSE_H
#define OUTBOX_EVENTPARSE_H

#include "outbox.h"

/* eventparse.c: the events argument of outbox.append */
typedef struct EventInput
{
	char	   *type;
	Jsonb	   *data;
	Jsonb	   *metadata;
	pg_uuid_t  *id;				/* NULL when the caller gave none */
} EventInput;

extern int	es_parse_events(Jsonb *events, EventInput **out, bool *all_have_ids);
extern pg_uuid_t *es_random_uuid(void);

#endif							/* OUTBOX_EVENTPARSE_H */
