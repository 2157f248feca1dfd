/*-------------------------------------------------------------------------
 * producer_conf.h
 *		The librdkafka producer configuration of outbox's Kafka transport, as
 *		the test tools use it.
 *
 * The bare producer of the benchmark (bare_producer.c) and the order
 * experiments must produce exactly like the relay does, so this list must
 * stay identical to the one in src/kafka.c.  Each entry is a property and its
 * value, applied in order; endpoint options come after and may not weaken
 * the first four.
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_PRODUCER_CONF_H
#define OUTBOX_PRODUCER_CONF_H

static const char *const outbox_producer_conf[][2] = {
	/* success means acknowledged by all in-sync replicas, exactly once */
	{"enable.idempotence", "true"},
	{"acks", "all"},
	/*
	 * One request in flight per broker: on the mock cluster, which checks
	 * sequence numbers only for transactional producers, more lose records
	 * when a request fails (test/kafka/README.md, "Findings"); throughput on
	 * the mock is the same
	 */
	{"max.in.flight.requests.per.connection", "1"},
	/* Java-compatible: the same key lands in the same partition */
	{"partitioner", "murmur2_random"},
	{"linger.ms", "5"},
	/* a broker that comes back is found within a second */
	{"reconnect.backoff.ms", "100"},
	{"reconnect.backoff.max.ms", "1000"},
	/*
	 * retries stop and the delivery report fails after this; it fails a
	 * partition's oldest records while later ones may still succeed (README)
	 */
	{"message.timeout.ms", "10000"},
	/* requests leave at once; Nagle would hold them for the previous ACK */
	{"socket.nagle.disable", "true"},
};

#define OUTBOX_PRODUCER_CONF_LEN \
	((int) (sizeof(outbox_producer_conf) / sizeof(outbox_producer_conf[0])))

#endif							/* OUTBOX_PRODUCER_CONF_H */
