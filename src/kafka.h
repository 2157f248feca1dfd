/*-------------------------------------------------------------------------
 * kafka.h
 *		The Kafka transport's exports besides kafka_transport (transport.h):
 *		kafka:// URLs and topics (kafkaurl.c), and the check of an
 *		endpoint's Kafka client properties (kafka.c), for create_endpoint,
 *		alter_endpoint, redact.c and the transport itself.
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_KAFKA_H
#define OUTBOX_KAFKA_H

#include "utils/jsonb.h"

/* The key of options that holds an endpoint's Kafka client properties. */
#define KAFKA_OPTIONS_KEY	"kafka"

/* kafkaurl.c: a kafka:// URL, parsed */
typedef struct KafkaUrl
{
	char	   *brokers;		/* "host:port,...", for bootstrap.servers */
	char	   *topic;			/* a topic, or a template with {topic} */
} KafkaUrl;

/* Parse url into out (palloc'd); false, with *problem (palloc'd), if it is not valid. */
extern bool kafka_url_parse(const char *url, KafkaUrl *out, char **problem);

/* A record's topic: {topic} replaced; NULL, with *why, if it is not a legal one. */
extern char *kafka_record_topic(const char *template, const char *topic, char **why);

/* Does the URL name a Kafka cluster (scheme "kafka", any case)? */
extern bool kafka_url_is_kafka(const char *url);

/*
 * A kafka:// URL as stored (palloc'd): scheme in lower case, hosts and
 * topic as given.  NULL, with *problem (palloc'd), if it is not a valid
 * one.  It carries no credentials, so outbox_reader may see all of it.
 */
extern char *kafka_url_check(const char *url, char **problem);

/*
 * An endpoint's Kafka client properties at create/alter time: given (the
 * "kafka" object of the options passed; NULL: none) merged over the stored
 * ones (shown: in options, secret: in the write-only column; NULL: none).
 * A property given as null is removed.  Checks every property (22023) and
 * returns the shown ones (never NULL) and the write-only ones (NULL when
 * there are none).
 */
extern void kafka_options_merge(Jsonb *given, Jsonb *shown, Jsonb *secret,
								Jsonb **shown_out, Jsonb **secret_out);

#endif							/* OUTBOX_KAFKA_H */
