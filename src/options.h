/*-------------------------------------------------------------------------
 * options.h
 *		Endpoint and projection options (options.c): one parser for checking
 *		what an admin passes and for reading what is stored.
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_OPTIONS_H
#define OUTBOX_OPTIONS_H

#include "utils/jsonb.h"

typedef enum OptionsKind
{
	OPTIONS_ENDPOINT,
	OPTIONS_PROJECTION
} OptionsKind;

/* outbox._endpoints.options */
typedef struct EndpointOptions
{
	int			max_attempts;
	int			backoff_base_ms;
	int			backoff_max_ms;
	int			timeout_ms;
	int			max_in_flight;
	int			rate_limit_per_sec;
	int			batch_size;
	bool		ordered;
} EndpointOptions;

/* outbox._projections.options */
typedef struct ProjectionOptions
{
	int			batch_size;
	int			max_attempts;
	int			backoff_base_ms;
	int			backoff_max_ms;
} ProjectionOptions;

/*
 * Read stored options (NULL: the defaults) into out (an EndpointOptions or
 * ProjectionOptions).  A Kafka endpoint's stored options (they hold a
 * "kafka" section) are read with its own ranges: OPTIONS_ENDPOINT serves
 * both kinds.
 * Never raises an error: returns NULL, or what is wrong (palloc'd), and
 * then leaves out as it was.
 */
extern char *options_read(OptionsKind kind, Jsonb *stored, void *out);

#endif							/* OUTBOX_OPTIONS_H */
