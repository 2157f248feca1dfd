/*-------------------------------------------------------------------------
 * outbox.h
 *		What every outbox source file shares: its SQLSTATEs, its limits and
 *		its GUCs.  Each module declares what it exports in its own header.
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_H
#define OUTBOX_H

#include "postgres.h"

#include "access/transam.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "nodes/execnodes.h"
#include "port/atomics.h"
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "utils/timestamp.h"
#include "fmgr.h"
#include "utils/jsonb.h"
#include "utils/snapshot.h"
#include "utils/uuid.h"

/*
 * outbox's own SQLSTATE class "OB".  Every code is listed in README.md.
 *   OB001  the expected ETag does not match the stream (retryable: re-read
 *          the stream, re-decide, append again)
 */
#define ERRCODE_OUTBOX_ETAG_MISMATCH	MAKE_SQLSTATE('O','B','0','0','1')

/* Longest stream, topic, key, consumer or message id, in bytes. */
#define OUTBOX_MAX_NAME_BYTES	255

/*
 * Largest webhook request body, in bytes: a message whose payload and
 * headers would print as more JSON text is refused by outbox.publish (and
 * dead-lettered by the relay, if it was published before this limit).
 */
#define OUTBOX_MAX_BODY_BYTES	(16 * 1024 * 1024)
/* ... of which a message's payload and headers may take this much (the rest: its envelope) */
#define OUTBOX_MAX_MESSAGE_TEXT	(OUTBOX_MAX_BODY_BYTES - 4096)

/*
 * Most bytes of JSON text one byte of jsonb can print as: a number of ten
 * bytes such as 1e131000 prints every digit (webhook_json_length).
 */
#define OUTBOX_JSON_MAX_EXPANSION	16384

/* Most events one call to outbox.append may write. */
#define OUTBOX_MAX_EVENTS_PER_APPEND	10000

/*
 * The longest last_error kept, in bytes, terminator included: a delivery's
 * in outbox.dead_letters, an endpoint's in outbox.stat_endpoints.  An HTTP
 * failure's is "HTTP <status>: " and the start of the response body.
 */
#define OUTBOX_LAST_ERROR_BYTES	256

/* GUCs (outbox.c) */
extern int	outbox_max_payload_bytes;
extern int	outbox_max_databases;
extern int	outbox_max_endpoints;
extern int	outbox_max_projections;
extern int	outbox_retention_s;
extern int	outbox_inbox_retention_s;

/* webhook.c: an upper bound of a jsonb's length as JSON text (validate.c) */
extern Size webhook_json_length(Jsonb *jb, Size limit);

#endif							/* OUTBOX_H */
