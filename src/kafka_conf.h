/*-------------------------------------------------------------------------
 * kafka_conf.h
 *		The librdkafka producer configuration of outbox's Kafka endpoints,
 *		said once: src/kafka.c makes every producer with it, and the test
 *		tools (test/kafka/bare_producer.c, the benchmark's yardstick)
 *		produce exactly like the relay by including this file.  Plain C: no
 *		PostgreSQL or librdkafka header needed.
 *
 * kafka_conf_defaults come first and an endpoint's options.kafka may
 * change them; kafka_conf_fixed come last and nothing may (the client
 * properties an endpoint may set: kafka.c's allowlist).  bootstrap.servers
 * comes from the endpoint's URL.
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_KAFKA_CONF_H
#define OUTBOX_KAFKA_CONF_H

/*
 * Requests in flight per broker connection.  1 keeps a partition's batches
 * in order even against a broker that does not check idempotent sequence
 * numbers (librdkafka's mock cluster loses records with 5: test/kafka/
 * README.md, "Findings"); throughput on the mock is the same.  A user may
 * choose a lower value, never a higher one.
 */
#define KAFKA_MAX_IN_FLIGHT_REQUESTS	1
#define KAFKA_MAX_IN_FLIGHT_TEXT		"1"

static const char *const kafka_conf_defaults[][2] = {
	{"client.id", "outbox"},
	/*
	 * A record waits at most 1 ms for others to share its request (librdkafka
	 * says 5): while a request is out (one per connection), the next batch
	 * forms anyway, and each record counts against the endpoint's window
	 * (max_in_flight) until acknowledged, so waiting only lengthens the round
	 * trip the window is spread over.
	 */
	{"linger.ms", "1"},
	/* a broker that comes back is found within a second */
	{"reconnect.backoff.ms", "100"},
	{"reconnect.backoff.max.ms", "1000"},
	/* requests leave at once; Nagle would hold them for the previous ACK */
	{"socket.nagle.disable", "true"},
	{"max.in.flight.requests.per.connection", KAFKA_MAX_IN_FLIGHT_TEXT},
};

static const char *const kafka_conf_fixed[][2] = {
	/*
	 * librdkafka never fails a record on time by itself: that fails a
	 * partition's oldest records while later ones still go.  The relay keeps
	 * each record's deadline (timeout_ms) and purges everything at once
	 * (src/kafka.c, "Per-key order").
	 */
	{"message.timeout.ms", "0"},
	/* success means acknowledged by all in-sync replicas, exactly once */
	{"enable.idempotence", "true"},
	{"acks", "all"},
	/* Java-compatible: the same key lands in the same partition */
	{"partitioner", "murmur2_random"},
};

#define KAFKA_CONF_LEN(list)	((int) (sizeof(list) / sizeof((list)[0])))

#endif							/* OUTBOX_KAFKA_CONF_H */
