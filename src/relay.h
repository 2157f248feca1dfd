/*-------------------------------------------------------------------------
 * relay.h
 *		The relay's transactions, also used by the projector (relay.c).
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_RELAY_H
#define OUTBOX_RELAY_H

#include "outbox.h"

/* relay.c, also used by the projector */
extern void relay_xact_begin(const char *activity);
extern void relay_xact_end(void);
extern bool relay_turn_begin(MemoryContext loop_cxt);
extern bool relay_extension_current(void);

#endif							/* OUTBOX_RELAY_H */
