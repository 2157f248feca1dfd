/*-------------------------------------------------------------------------
 * gapless.h
 *		The reading horizon of the gap-free logs (gapless.c).
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_GAPLESS_H
#define OUTBOX_GAPLESS_H

#include "outbox.h"

/* gapless.c: the reading horizon of the gap-free logs */
extern FullTransactionId gapless_horizon(void);
extern void gapless_take_xid(void);
extern bool gapless_holds_back(FullTransactionId xmark, FullTransactionId horizon);
extern FullTransactionId gapless_mark(void);
extern bool gapless_xid_excluded(TransactionId xid);
extern void gapless_exclude_self(pg_atomic_uint32 *entry);
extern void gapless_include_self(void);

#endif							/* OUTBOX_GAPLESS_H */
