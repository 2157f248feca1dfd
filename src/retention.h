/*-------------------------------------------------------------------------
 * retention.h
 *		Deleting what nothing needs any more, in the relay (retention.c).
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_RETENTION_H
#define OUTBOX_RETENTION_H

#include "outbox.h"

/* retention.c: deleting delivered messages */
extern long retention_expire(void);
extern void retention_soon(void);
extern void retention_changed(void);

#endif							/* OUTBOX_RETENTION_H */
