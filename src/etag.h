/*-------------------------------------------------------------------------
 * etag.h
 *		Making and parsing ETags (etag.c).
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_ETAG_H
#define OUTBOX_ETAG_H

#include "outbox.h"

/* etag.c */
extern text *etag_make(const char *stream, int64 version);
extern int64 etag_version(const char *stream, const char *etag);

#endif							/* OUTBOX_ETAG_H */
