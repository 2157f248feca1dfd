/*-------------------------------------------------------------------------
 * projector.h
 *		The async projector worker and the relay's side of it (projector.c).
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_PROJECTOR_H
#define OUTBOX_PROJECTOR_H

#include "outbox.h"

/* projector.c: the async projector worker, and the relay's side of it */
extern long projector_supervise(void);
extern bool projector_needs_relay(void);
extern void projector_stop(void);

#endif							/* OUTBOX_PROJECTOR_H */
