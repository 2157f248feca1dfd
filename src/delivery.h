/*-------------------------------------------------------------------------
 * delivery.h
 *		The delivery core, as the relay's loop (relay.c) drives it: load
 *		endpoints (endpoint.c), read the log, send, take results
 *		(delivery.c), save progress (progress.c), publish figures
 *		(report.c).  The core knows no transport but through transport.h.
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_DELIVERY_H
#define OUTBOX_DELIVERY_H

#include "outbox.h"
#include "shmem.h"
#include "transport.h"

extern void delivery_reload(void);
extern bool delivery_fetch(bool woken);
extern bool delivery_send(void);
extern void delivery_complete(const TransportResult *r);
extern void delivery_persist(void);
extern bool delivery_should_persist(void);
extern long delivery_next_timeout(void);
extern bool delivery_horizon_blocked(void);
extern void delivery_report(RelaySlot *slot, bool horizon_blocked);

#endif							/* OUTBOX_DELIVERY_H */
