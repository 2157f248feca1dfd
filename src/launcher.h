/*-------------------------------------------------------------------------
 * launcher.h
 *		The launcher and the utility hook (launcher.c).
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_LAUNCHER_H
#define OUTBOX_LAUNCHER_H

#include "outbox.h"

/* launcher.c */
extern void launcher_register(void);
extern void launcher_init_hooks(void);

#endif							/* OUTBOX_LAUNCHER_H */
