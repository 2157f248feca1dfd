/*-------------------------------------------------------------------------
 * eventstore.h
 *		The event store's plans shared with projections (eventstore.c).
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_EVENTSTORE_H
#define OUTBOX_EVENTSTORE_H

#include "outbox.h"
#include "spi.h"

/* eventstore.c: the log in position order, with xmark last (gapless.c) */
extern OutboxPlan outbox_plan_read_all;

#endif							/* OUTBOX_EVENTSTORE_H */
