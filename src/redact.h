/*-------------------------------------------------------------------------
 * redact.h
 *		What outbox_reader may see of URLs and errors (redact.c).
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_REDACT_H
#define OUTBOX_REDACT_H

#include "outbox.h"

/* redact.c: what outbox_reader may see of URLs and errors */
extern void redact_error_for_caller(char *error);

#endif							/* OUTBOX_REDACT_H */
