/*-------------------------------------------------------------------------
 * kafka.c
 *		The Kafka transport: everything that touches librdkafka.  The only
 *		file that includes it.
 *
 * An endpoint whose URL is kafka://host:port[,host:port...]/TOPIC gets one
 * idempotent producer (acks=all, at most KAFKA_MAX_IN_FLIGHT_REQUESTS
 * requests in flight per broker connection, Java's murmur2 partitioner,
 * no message.timeout.ms of librdkafka's own: see "Per-key order").  TOPIC is a topic, or a
 * template in which {topic} stands for the message's topic.  Each message
 * becomes one record: key = the message's key, value = its payload as JSON
 * text, timestamp = its created_at, headers outbox-id ("msg_<id>", the
 * same on every retry), outbox-topic, the endpoint's headers, then the
 * message's (validate.c's rule: a message never overrides the others).
 *
 * Waiting.  Every producer's main queue (delivery reports, errors) raises
 * an IO event on one eventfd that init() returns, which the relay waits on
 * with its latch.  progress() clears the eventfd (if it was readable), then
 * serves every producer's queue until it is empty: librdkafka writes to
 * the eventfd when a queue goes from empty to not empty, so serving to
 * empty after clearing loses no wake-up, and an idle relay sleeps
 * (librdkafka's own threads wake about once a second).
 *
 * Rules that keep librdkafka safe inside a PostgreSQL backend:
 *  - librdkafka's callbacks never ereport, palloc, CHECK_FOR_INTERRUPTS or
 *    longjmp: a delivery report fills a record malloc'd when it was sent
 *    and links it into a FIFO; the error callback copies text into a fixed
 *    buffer; the log callback drops the line (errors reach last_error
 *    through the error callback and delivery reports).  Delivery reports
 *    and errors are served from the relay's thread only (rd_kafka_poll in
 *    progress); the log callback may run in librdkafka's threads and does
 *    nothing.
 *  - Nothing blocks the relay: produce is asynchronous (a full queue is
 *    "no room now"), purges do not wait, and a producer that is no longer
 *    used is destroyed once every record it took is reported, on a thread
 *    of its own with every signal blocked (rd_kafka_destroy waits for
 *    librdkafka's threads, one of which may be in a DNS lookup).
 *  - Properties that load code, run commands or read files on the database
 *    server are refused before librdkafka sees their names (setting
 *    plugin.library.paths loads the plugin at once).
 *  - outbox.blocked_networks holds for brokers too (bootstrap servers, and
 *    the addresses the cluster advertises): librdkafka's connect callback,
 *    in its broker threads, matches each address against the producer's
 *    own copy of the setting (a reload may free the backend's) and refuses
 *    a blocked one before connecting.  Records then time out, their
 *    last_error naming the address; a changed setting applies to the
 *    producers made after it (it is part of what open() compares, and the
 *    relay reloads its endpoints after SIGHUP, which makes new ones).
 *
 * Per-key order.  The core pipelines a key's messages on this transport
 * (pipelined = true): the idempotent producer keeps a partition's records
 * in order across its own retries (it retries a retriable error for as
 * long as the record has), and with one request in flight per connection
 * a partition has at most one batch in flight.  What it does not do is
 * hold back a key's later records when an earlier one fails for good:
 * librdkafka's own message.timeout.ms fails a partition's oldest queued
 * records while later ones still go once the cluster is back (measured:
 * test/kafka/README.md), and the core would then retry the failed ones
 * after their successors.  So librdkafka never times a record out here
 * (message.timeout.ms = 0), and the transport keeps the deadlines itself:
 * each record must be acknowledged within the endpoint's timeout_ms.  When
 * the oldest record of a producer passes its deadline, the producer's fence
 * goes up and everything it still holds is purged at once (QUEUE and
 * INFLIGHT): the records past their deadline come back as failed attempts
 * (TRANSPORT_RETRY), the others as TRANSPORT_NOT_SENT, and no record can
 * slip out between the first failure and the purge, since the purge is the
 * failure.  A delivery report that fails a record by itself (an error
 * librdkafka does not retry) raises the fence too; a permanent failure
 * does not (it is dead-lettered, never retried, so its successors may go).
 * While the fence is up:
 *  - rd_kafka_purge(QUEUE, NON_BLOCKING): records not yet in a request come
 *    back as _PURGE_QUEUE, reported TRANSPORT_NOT_SENT (no attempt), and
 *    the core re-queues them in id order behind the failed one;
 *  - send() takes nothing ("no room now") until every record the producer
 *    took is reported, so nothing sent after the failure can overtake a
 *    purged or failed record (purging is asynchronous: a record produced
 *    between the purge call and its execution might otherwise escape it).
 * A fatal error (rd_kafka_fatal_error: librdkafka fails the producer when
 * idempotence can no longer be kept, and purges its queue) retires the
 * producer; the next send() makes a new one, which, like the producer of
 * an endpoint whose settings changed, takes no record until the old one
 * has reported all of its own (records of two producers are not ordered).
 *
 * What remains (README, Kafka endpoints):
 *  - A record purged in flight may have been written ("possibly
 *    persisted"): its retry is then a repeat, after it, never before.
 *  - A retriable error that librdkafka does not retry by itself fails its
 *    record in a delivery report; its queued successors are purged when
 *    the relay serves that report, and one already in a request may be
 *    written first.  With idempotence on, librdkafka retries every
 *    retriable produce error itself; such reports come from fatal errors
 *    (which purge the queue themselves) and from errors of unknown kind.
 *  - The idempotent producer's guarantee stops at its epoch: a repeat after
 *    a relay crash (records re-sent by a new producer) may follow records
 *    already written, which is the documented at-least-once repeat.
 *
 * Outcomes of a delivery report (kafka_outcome):
 *   success                                     TRANSPORT_OK
 *   _PURGE_QUEUE, _PURGE_INFLIGHT: past the record's deadline, or
 *   after a fatal error                         TRANSPORT_RETRY
 *   _PURGE_QUEUE, _PURGE_INFLIGHT: otherwise (the fence,
 *   close)                                      TRANSPORT_NOT_SENT
 *   record too large (MSG_SIZE_TOO_LARGE,
 *   INVALID_MSG_SIZE, RECORD_LIST_TOO_LARGE),
 *   INVALID_RECORD, INVALID_TIMESTAMP,
 *   TOPIC_ / CLUSTER_AUTHORIZATION_FAILED,
 *   TOPIC_EXCEPTION (invalid topic), POLICY_VIOLATION,
 *   INVALID_REQUIRED_ACKS, UNSUPPORTED_FOR_MESSAGE_FORMAT,
 *   UNSUPPORTED_COMPRESSION_TYPE, _BAD_MSG, _INVALID_ARG  TRANSPORT_PERMANENT
 *   anything else: _TRANSPORT, NOT_ENOUGH_REPLICAS,
 *   NOT_LEADER_FOR_PARTITION, UNKNOWN_TOPIC_OR_PART and _UNKNOWN_TOPIC (a
 *   topic not created yet: retried, dead after max_attempts), _FATAL, an
 *   unknown code, ...                           TRANSPORT_RETRY
 * An authentication failure (SASL, TLS) fails no record by itself: records
 * pass their deadline, with the cluster's last error in last_error.  The error text
 * is "kafka: " and librdkafka's description.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "datatype/timestamp.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "backoff.h"
#include "kafka.h"
#include "kafka_conf.h"
#include "netblock.h"
#include "outbox.h"
#include "transport.h"
#include "validate.h"



/* A producer that could not be made again after a fatal error: retry after */
#define KAFKA_REMAKE_RETRY_MS	1000

/* librdkafka's error strings */
#define KAFKA_ERRSTR_BYTES		512

/* ----------------------------------------------------------------
 * Client properties: which an endpoint may set (an allowlist)
 * ----------------------------------------------------------------
 */

typedef enum KafkaRule
{
	KAFKA_ALLOWED,				/* passed to librdkafka as given */
	KAFKA_SECRET,				/* allowed, write-only: kept out of every view */
	KAFKA_RESTRICTED,			/* allowed with some values (kafka_value_refused) */
	KAFKA_REFUSED				/* never: why says why */
} KafkaRule;

typedef struct KafkaProperty
{
	const char *name;
	KafkaRule	rule;
	const char *why;			/* KAFKA_REFUSED: completes "property X ..." */
} KafkaProperty;

#define WHY_URL		"is set from the endpoint's URL"
#define WHY_TIMEOUT	"is set from the endpoint's timeout_ms option"
#define WHY_CODE	"would load code or run a command on the database server"
#define WHY_FILE	"would read a file on the database server"
#define WHY_OUTBOX	"is managed by outbox"
#define WHY_HTTP	"would make HTTP requests from the database server, outside outbox.blocked_networks"
#define WHY_RETRIES	"is fixed: a record is retried until timeout_ms runs out (fewer retries could fail records out of order)"
#define WHY_JWT		"is for development only: librdkafka's unsecured JWT crashes the database server when it refreshes its token"

static const KafkaProperty kafka_properties[] = {
	/* the cluster, and what outbox sets */
	{"bootstrap.servers", KAFKA_REFUSED, WHY_URL},
	{"metadata.broker.list", KAFKA_REFUSED, WHY_URL},
	{"message.timeout.ms", KAFKA_REFUSED, WHY_TIMEOUT},
	{"delivery.timeout.ms", KAFKA_REFUSED, WHY_TIMEOUT},
	{"client.id", KAFKA_ALLOWED},
	{"client.rack", KAFKA_ALLOWED},
	/* the guarantees */
	{"acks", KAFKA_RESTRICTED},
	{"request.required.acks", KAFKA_RESTRICTED},
	{"enable.idempotence", KAFKA_RESTRICTED},
	{"max.in.flight", KAFKA_RESTRICTED},
	{"max.in.flight.requests.per.connection", KAFKA_RESTRICTED},
	{"retries", KAFKA_REFUSED, WHY_RETRIES},
	{"message.send.max.retries", KAFKA_REFUSED, WHY_RETRIES},
	{"enable.gapless.guarantee", KAFKA_REFUSED, "would stop the producer at the first failed record (outbox keeps each key in order itself)"},
	{"partitioner", KAFKA_REFUSED, "is fixed: keys are partitioned as Java producers do (murmur2_random)"},
	{"queuing.strategy", KAFKA_REFUSED, "would reorder records"},
	{"transactional.id", KAFKA_REFUSED, "is not used: outbox does not produce in transactions"},
	{"transaction.timeout.ms", KAFKA_REFUSED, "is not used: outbox does not produce in transactions"},
	{"delivery.report.only.error", KAFKA_REFUSED, WHY_OUTBOX},
	{"debug", KAFKA_REFUSED, WHY_OUTBOX},
	{"log_level", KAFKA_REFUSED, WHY_OUTBOX},
	{"log.queue", KAFKA_REFUSED, WHY_OUTBOX},
	{"statistics.interval.ms", KAFKA_REFUSED, WHY_OUTBOX},
	{"enabled_events", KAFKA_REFUSED, WHY_OUTBOX},
	{"internal.termination.signal", KAFKA_REFUSED, WHY_OUTBOX},
	{"opaque", KAFKA_REFUSED, WHY_OUTBOX},
	{"default_topic_conf", KAFKA_REFUSED, WHY_OUTBOX},
	/* code, commands and files of the database server */
	{"plugin.library.paths", KAFKA_REFUSED, WHY_CODE},
	{"interceptors", KAFKA_REFUSED, WHY_CODE},
	{"ssl.engine.location", KAFKA_REFUSED, WHY_CODE},
	{"ssl.engine.id", KAFKA_REFUSED, WHY_CODE},
	{"ssl.providers", KAFKA_REFUSED, WHY_CODE},
	{"sasl.kerberos.kinit.cmd", KAFKA_REFUSED, WHY_CODE},
	{"sasl.kerberos.keytab", KAFKA_REFUSED, WHY_FILE},
	{"ssl.key.location", KAFKA_REFUSED, WHY_FILE},
	{"ssl.certificate.location", KAFKA_REFUSED, WHY_FILE},
	{"ssl.crl.location", KAFKA_REFUSED, WHY_FILE},
	{"ssl.keystore.location", KAFKA_REFUSED, WHY_FILE},
	{"ssl.keystore.password", KAFKA_REFUSED, WHY_FILE},
	{"ssl.ca.certificate.stores", KAFKA_REFUSED, WHY_FILE},
	{"ssl.ca.location", KAFKA_RESTRICTED},
	/* TLS and SASL */
	{"security.protocol", KAFKA_ALLOWED},
	{"ssl.cipher.suites", KAFKA_ALLOWED},
	{"ssl.curves.list", KAFKA_ALLOWED},
	{"ssl.sigalgs.list", KAFKA_ALLOWED},
	{"ssl.ca.pem", KAFKA_ALLOWED},
	{"ssl.certificate.pem", KAFKA_ALLOWED},
	{"ssl.key.pem", KAFKA_SECRET},
	{"ssl.key.password", KAFKA_SECRET},
	{"enable.ssl.certificate.verification", KAFKA_ALLOWED},
	{"ssl.endpoint.identification.algorithm", KAFKA_ALLOWED},
	{"sasl.mechanism", KAFKA_RESTRICTED},
	{"sasl.mechanisms", KAFKA_RESTRICTED},
	{"sasl.username", KAFKA_ALLOWED},
	{"sasl.password", KAFKA_SECRET},
	{"sasl.oauthbearer.method", KAFKA_ALLOWED},
	{"sasl.oauthbearer.client.id", KAFKA_ALLOWED},
	{"sasl.oauthbearer.client.secret", KAFKA_SECRET},
	{"sasl.oauthbearer.config", KAFKA_SECRET},
	{"sasl.oauthbearer.scope", KAFKA_ALLOWED},
	{"sasl.oauthbearer.extensions", KAFKA_ALLOWED},
	{"sasl.oauthbearer.token.endpoint.url", KAFKA_REFUSED, WHY_HTTP},
	{"enable.sasl.oauthbearer.unsecure.jwt", KAFKA_REFUSED, WHY_JWT},
	/* throughput, batching, compression */
	{"linger.ms", KAFKA_ALLOWED},
	{"queue.buffering.max.ms", KAFKA_ALLOWED},
	{"queue.buffering.max.messages", KAFKA_ALLOWED},
	{"queue.buffering.max.kbytes", KAFKA_ALLOWED},
	{"queue.buffering.backpressure.threshold", KAFKA_ALLOWED},
	{"batch.num.messages", KAFKA_ALLOWED},
	{"batch.size", KAFKA_ALLOWED},
	{"sticky.partitioning.linger.ms", KAFKA_ALLOWED},
	{"compression.type", KAFKA_ALLOWED},
	{"compression.codec", KAFKA_ALLOWED},
	{"compression.level", KAFKA_ALLOWED},
	{"message.max.bytes", KAFKA_ALLOWED},
	{"message.copy.max.bytes", KAFKA_ALLOWED},
	{"receive.message.max.bytes", KAFKA_ALLOWED},
	{"request.timeout.ms", KAFKA_ALLOWED},
	{"retry.backoff.ms", KAFKA_ALLOWED},
	/* connections and metadata */
	{"socket.timeout.ms", KAFKA_ALLOWED},
	{"socket.send.buffer.bytes", KAFKA_ALLOWED},
	{"socket.receive.buffer.bytes", KAFKA_ALLOWED},
	{"socket.keepalive.enable", KAFKA_ALLOWED},
	{"socket.nagle.disable", KAFKA_ALLOWED},
	{"socket.max.fails", KAFKA_ALLOWED},
	{"socket.connection.setup.timeout.ms", KAFKA_ALLOWED},
	{"connections.max.idle.ms", KAFKA_ALLOWED},
	{"broker.address.ttl", KAFKA_ALLOWED},
	{"broker.address.family", KAFKA_ALLOWED},
	{"reconnect.backoff.ms", KAFKA_ALLOWED},
	{"reconnect.backoff.max.ms", KAFKA_ALLOWED},
	{"topic.metadata.refresh.interval.ms", KAFKA_ALLOWED},
	{"metadata.max.age.ms", KAFKA_ALLOWED},
	{"topic.metadata.refresh.fast.interval.ms", KAFKA_ALLOWED},
	{"topic.metadata.refresh.sparse", KAFKA_ALLOWED},
	{"topic.metadata.propagation.max.ms", KAFKA_ALLOWED},
	{"api.version.request", KAFKA_ALLOWED},
	{"api.version.request.timeout.ms", KAFKA_ALLOWED},
	{"api.version.fallback.ms", KAFKA_ALLOWED},
	{"broker.version.fallback", KAFKA_ALLOWED},
};

/* What is wrong with a property or a URL, ready for ereport or a last_error. */
typedef struct KafkaProblem
{
	char	   *message;
	char	   *detail;			/* NULL if none */
	char	   *hint;			/* NULL if none */
} KafkaProblem;

/* One client property, name and value as librdkafka takes them. */
typedef struct KafkaProp
{
	char	   *name;
	char	   *value;
} KafkaProp;

static bool
kafka_problem(KafkaProblem *problem, char *message, char *detail, char *hint)
{
	problem->message = message;
	problem->detail = detail;
	problem->hint = hint;
	return false;
}

static const KafkaProperty *
kafka_property(const char *name)
{
	for (int i = 0; i < lengthof(kafka_properties); i++)
		if (strcmp(kafka_properties[i].name, name) == 0)
			return &kafka_properties[i];
	return NULL;
}

/*
 * Why a restricted property may not have this value (librdkafka's own
 * spelling of it, read back after setting it), or NULL if it may.
 */
static const char *
kafka_value_refused(const char *name, const char *value)
{
	if (strcmp(name, "acks") == 0 || strcmp(name, "request.required.acks") == 0)
		return strcmp(value, "-1") == 0 ? NULL :
			"must be \"all\": a record is delivered once every in-sync replica has it";
	if (strcmp(name, "enable.idempotence") == 0)
		return strcmp(value, "true") == 0 ? NULL :
			"must be true: broker retries must neither repeat nor reorder records";
	if (strcmp(name, "max.in.flight") == 0 || strcmp(name, "max.in.flight.requests.per.connection") == 0)
		return atoi(value) <= KAFKA_MAX_IN_FLIGHT_REQUESTS ? NULL :
			psprintf("must be at most %d: more requests in flight could reorder a key's records",
					 KAFKA_MAX_IN_FLIGHT_REQUESTS);
	if (strcmp(name, "ssl.ca.location") == 0)
		return strcmp(value, "probe") == 0 ? NULL :
			"may only be \"probe\" (the system's CA certificates): it would read a file on the database server";
	if (strcmp(name, "sasl.mechanism") == 0 || strcmp(name, "sasl.mechanisms") == 0)
	{
		if (pg_strcasecmp(value, "GSSAPI") == 0)
			return "may not be GSSAPI: Kerberos would run kinit on the database server";
		/* its tokens would come from OIDC (WHY_HTTP) or the unsecured JWT (WHY_JWT) */
		if (pg_strcasecmp(value, "OAUTHBEARER") == 0)
			return "may not be OAUTHBEARER: outbox has no way to obtain its tokens";
	}
	return NULL;
}

/*
 * Check one property and set it in conf.  *secret tells whether it is
 * write-only.  The refusal list is looked at before librdkafka sees the
 * name, so that no property with side effects is ever set.
 */
static bool
kafka_property_set(rd_kafka_conf_t *conf, const char *name, const char *value, bool *secret,
				   KafkaProblem *problem)
{
	const KafkaProperty *prop = kafka_property(name);
	char		errstr[KAFKA_ERRSTR_BYTES];
	rd_kafka_conf_res_t res;
	int			len = strlen(name);

	*secret = prop != NULL && prop->rule == KAFKA_SECRET;
	if (prop == NULL && len > 3 && strcmp(name + len - 3, "_cb") == 0)
		return kafka_problem(problem, psprintf("Kafka client property \"%s\" %s", name, WHY_OUTBOX),
							 NULL, NULL);
	if (prop != NULL && prop->rule == KAFKA_REFUSED)
		return kafka_problem(problem, psprintf("Kafka client property \"%s\" %s", name, prop->why),
							 NULL,
							 strcmp(prop->why, WHY_FILE) == 0 ?
							 pstrdup("Give certificates and keys inline: ssl.ca.pem, ssl.certificate.pem, ssl.key.pem.") : NULL);

	res = rd_kafka_conf_set(conf, name, value, errstr, sizeof(errstr));
	if (res == RD_KAFKA_CONF_UNKNOWN)
		return kafka_problem(problem, psprintf("unknown Kafka client property \"%s\"", name), NULL,
							 pstrdup("See librdkafka's CONFIGURATION.md for the producer's properties."));
	if (prop == NULL)
		return kafka_problem(problem, psprintf("Kafka client property \"%s\" is not allowed", name), NULL,
							 pstrdup("An endpoint may set the cluster's security (security.protocol, sasl.*, ssl.* given inline), compression, batching, buffering, socket, reconnect and metadata properties."));
	if (res != RD_KAFKA_CONF_OK)
	{
		int			n = strlen(errstr);

		while (n > 0 && (errstr[n - 1] == '\n' || errstr[n - 1] == '.'))
			errstr[--n] = '\0';
		return kafka_problem(problem, psprintf("invalid value for Kafka client property \"%s\"", name),
							 psprintf("librdkafka: %s.", errstr), NULL);
	}
	if (prop->rule == KAFKA_RESTRICTED)
	{
		char		set[KAFKA_ERRSTR_BYTES];
		size_t		size = sizeof(set);
		const char *why;

		if (rd_kafka_conf_get(conf, name, set, &size) != RD_KAFKA_CONF_OK)
			elog(ERROR, "could not read back Kafka client property \"%s\"", name);
		why = kafka_value_refused(name, set);
		if (why != NULL)
			return kafka_problem(problem, psprintf("Kafka client property \"%s\" %s", name, why), NULL, NULL);
	}
	return true;
}

/* A JSON value of a property as librdkafka takes it; NULL if of another type. */
static char *
kafka_value_text(const JsonbValue *v)
{
	switch (v->type)
	{
		case jbvString:
			return pnstrdup(v->val.string.val, v->val.string.len);
		case jbvNumeric:
			return numeric_normalize(v->val.numeric);
		case jbvBool:
			return pstrdup(v->val.boolean ? "true" : "false");
		default:
			return NULL;
	}
}

static int
kafka_prop_cmp(const ListCell *a, const ListCell *b)
{
	return strcmp(((KafkaProp *) lfirst(a))->name, ((KafkaProp *) lfirst(b))->name);
}

/*
 * Properties of a JSON object, merged into props (a list sorted by name):
 * a name already there gets the new value; a JSON null removes it if
 * nulls_remove.  False, with *problem, at a value of another type.
 */
static bool
kafka_props_merge(List **props, JsonbContainer *obj, bool nulls_remove, KafkaProblem *problem)
{
	JsonbIterator *it = JsonbIteratorInit(obj);
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *name = NULL;

	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		ListCell   *lc;
		KafkaProp  *prop;

		if (tok == WJB_KEY)
			name = pnstrdup(v.val.string.val, v.val.string.len);
		if (tok != WJB_VALUE)
			continue;
		foreach(lc, *props)
			if (strcmp(((KafkaProp *) lfirst(lc))->name, name) == 0)
			{
				*props = foreach_delete_current(*props, lc);
				break;
			}
		if (v.type == jbvNull && nulls_remove)
			continue;
		prop = palloc(sizeof(KafkaProp));
		prop->name = name;
		prop->value = kafka_value_text(&v);
		if (prop->value == NULL)
			return kafka_problem(problem,
								 psprintf("Kafka client property \"%s\" must be a string, a number or a boolean", name),
								 NULL, nulls_remove ? pstrdup("Give null to remove it.") : NULL);
		*props = lappend(*props, prop);
	}
	list_sort(*props, kafka_prop_cmp);
	return true;
}

/* The properties of a stored object (shown or write-only), NULL: none. */
static bool
kafka_props_stored(List **props, Jsonb *stored, KafkaProblem *problem)
{
	if (stored == NULL)
		return true;
	if (!JB_ROOT_IS_OBJECT(stored))
		return kafka_problem(problem, pstrdup("stored Kafka client properties are not a JSON object"),
							 NULL, NULL);
	return kafka_props_merge(props, &stored->root, false, problem);
}

/* The shown (or, if want_secret, the write-only) properties as an object; NULL: no write-only ones. */
static Jsonb *
kafka_props_jsonb(List *props, bool want_secret)
{
	JsonbParseState *state = NULL;
	JsonbValue	v;
	ListCell   *lc;
	int			n = 0;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	foreach(lc, props)
	{
		KafkaProp  *p = lfirst(lc);
		const KafkaProperty *prop = kafka_property(p->name);

		if ((prop != NULL && prop->rule == KAFKA_SECRET) != want_secret)
			continue;
		n++;
		v.type = jbvString;
		v.val.string.val = p->name;
		v.val.string.len = strlen(p->name);
		pushJsonbValue(&state, WJB_KEY, &v);
		v.val.string.val = p->value;
		v.val.string.len = strlen(p->value);
		pushJsonbValue(&state, WJB_VALUE, &v);
	}
	if (want_secret && n == 0)
		return NULL;
	return JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_OBJECT, NULL));
}

/* Check props against a scratch configuration; false with *problem at the first bad one. */
static bool
kafka_props_check(List *props, KafkaProblem *problem)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	ListCell   *lc;
	bool		ok = true;

	if (conf == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	foreach(lc, props)
	{
		KafkaProp  *p = lfirst(lc);
		bool		secret;

		if (!kafka_property_set(conf, p->name, p->value, &secret, problem))
		{
			ok = false;
			break;
		}
	}
	rd_kafka_conf_destroy(conf);
	return ok;
}

void
kafka_options_merge(Jsonb *given, Jsonb *shown, Jsonb *secret, Jsonb **shown_out, Jsonb **secret_out)
{
	List	   *props = NIL;
	KafkaProblem problem = {0};

	if (given != NULL && !JB_ROOT_IS_OBJECT(given))
		kafka_problem(&problem, pstrdup("option \"" KAFKA_OPTIONS_KEY "\" must be a JSON object of Kafka client properties"),
					  NULL, NULL);
	else if (kafka_props_stored(&props, shown, &problem) &&
			 kafka_props_stored(&props, secret, &problem) &&
			 (given == NULL || kafka_props_merge(&props, &given->root, true, &problem)))
		kafka_props_check(props, &problem);
	if (problem.message != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg_internal("%s", problem.message),
				 problem.detail ? errdetail_internal("%s", problem.detail) : 0,
				 problem.hint ? errhint("%s", problem.hint) : 0));
	*shown_out = kafka_props_jsonb(props, false);
	*secret_out = kafka_props_jsonb(props, true);
}

/* ----------------------------------------------------------------
 * Producers, delivery reports and their results
 * ----------------------------------------------------------------
 */

typedef struct KafkaProducer
{
	struct KafkaProducer *next; /* in producers */
	uint64		id;				/* never reused */
	uint64		after;			/* its predecessor: it takes no record until that one
								 * has reported all of its own; 0: none */
	rd_kafka_t *rk;
	rd_kafka_queue_t *mainq;	/* its main queue, raising events on kafka_eventfd */
	int			refs;			/* endpoints (KafkaConn) sending to it */
	int			outstanding;	/* records taken, not reported by librdkafka yet */
	int			unpopped;		/* records reported, not returned by next_result yet */
	bool		fenced;			/* a record failed: take none until all are returned */
	struct KafkaRecord *oldest; /* records taken, not reported, in the order taken */
	struct KafkaRecord *newest;
	TimestampTz purged_at;		/* the last purge for a passed deadline; 0: none */
	bool		purge_wanted;	/* the fence was raised: purge its queue */
	bool		fatal;			/* librdkafka raised a fatal error: replace it */
	bool		error_logged;	/* the cluster's error since the last success is logged */
	bool		destroying;		/* handed to a destroying thread: callbacks do nothing */
	bool		blocked_logged;
	char		name[OUTBOX_MAX_NAME_BYTES + 1];	/* its endpoint's, for the log */
	char		cluster_error[OUTBOX_LAST_ERROR_BYTES]; /* from the error callback */
	/* outbox.blocked_networks, for librdkafka's threads */
	NetBlockList *blocked_networks; /* its copy; NULL: nothing blocked */
	pg_atomic_uint32 blocked_state; /* KAFKA_BLOCKED_*: set in a broker thread */
	char		blocked_address[INET6_ADDRSTRLEN]; /* written once, before SEEN */
} KafkaProducer;

/* KafkaProducer.blocked_state: has a broker thread refused a blocked address? */
#define KAFKA_BLOCKED_NONE		0
#define KAFKA_BLOCKED_WRITING	1	/* a broker thread writes blocked_address */
#define KAFKA_BLOCKED_SEEN		2	/* blocked_address holds it */

/* A record sent, malloc'd at send time and filled in by its delivery report. */
typedef struct KafkaRecord
{
	struct KafkaRecord *next;	/* in the results FIFO, once reported */
	struct KafkaRecord *older;	/* in its producer's list, until reported */
	struct KafkaRecord *newer;
	TimestampTz deadline;		/* acknowledged by then, or purged */
	KafkaProducer *producer;
	void	   *owner;
	TransportOutcome outcome;
	char		error[OUTBOX_LAST_ERROR_BYTES];
} KafkaRecord;

/* One of an endpoint's headers, as sent */
typedef struct KafkaHeader
{
	char	   *name;
	char	   *value;
} KafkaHeader;

/*
 * An endpoint's connection state, in a memory context of its own (a child
 * of the endpoint's), deleted when the core is done with it.
 */
typedef struct KafkaConn
{
	KafkaProducer *producer;	/* where its records go */
	MemoryContext cxt;
	char	   *name;
	char	   *fingerprint;	/* what the producer is made of */
	char	   *headers_json;
	KafkaUrl	url;
	int			timeout_ms;
	List	   *props;			/* KafkaProp: its client properties, to remake the producer */
	int			nheaders;
	KafkaHeader *headers;		/* its headers, as sent */
} KafkaConn;

static int	kafka_eventfd = -1;
static const uint64 kafka_event_payload = 1;	/* what librdkafka writes to it */
static KafkaProducer *producers = NULL; /* every producer not handed over for destruction */
static uint64 producer_ids = 0;
static KafkaRecord *results_head = NULL;
static KafkaRecord *results_tail = NULL;
static int	unreported = 0;		/* records taken, not yet returned by next_result */
static TimestampTz remake_retry_at = 0; /* a producer could not be remade; 0: none */

static TransportOutcome
kafka_outcome(rd_kafka_resp_err_t err)
{
	switch (err)
	{
		case RD_KAFKA_RESP_ERR_NO_ERROR:
			return TRANSPORT_OK;
		case RD_KAFKA_RESP_ERR__PURGE_QUEUE:
		case RD_KAFKA_RESP_ERR__PURGE_INFLIGHT:
			return TRANSPORT_NOT_SENT;	/* unless past its deadline: kafka_dr_cb */
		case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
		case RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE:
		case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
		case RD_KAFKA_RESP_ERR_INVALID_RECORD:
		case RD_KAFKA_RESP_ERR_INVALID_TIMESTAMP:
		case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
		case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
		case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
		case RD_KAFKA_RESP_ERR_POLICY_VIOLATION:
		case RD_KAFKA_RESP_ERR_INVALID_REQUIRED_ACKS:
		case RD_KAFKA_RESP_ERR_UNSUPPORTED_FOR_MESSAGE_FORMAT:
		case RD_KAFKA_RESP_ERR_UNSUPPORTED_COMPRESSION_TYPE:
		case RD_KAFKA_RESP_ERR__BAD_MSG:
		case RD_KAFKA_RESP_ERR__INVALID_ARG:
			return TRANSPORT_PERMANENT;
		default:
			return TRANSPORT_RETRY;
	}
}

/* A blocked address a broker thread refused (in the relay), or NULL. */
static const char *
kafka_blocked_address(KafkaProducer *p)
{
	if (pg_atomic_read_u32(&p->blocked_state) != KAFKA_BLOCKED_SEEN)
		return NULL;
	pg_read_barrier();
	return p->blocked_address;
}

/*
 * "kafka: <description>"; after a timeout, why: a blocked address, or the
 * cluster's last error.
 */
static void
kafka_error_text(char *buf, size_t size, rd_kafka_resp_err_t err, KafkaProducer *p)
{
	const char *blocked = kafka_blocked_address(p);
	bool		timeout = err == RD_KAFKA_RESP_ERR__MSG_TIMED_OUT || err == RD_KAFKA_RESP_ERR__TIMED_OUT;

	if (timeout && blocked != NULL)
		snprintf(buf, size, "kafka: %s (address %s is blocked by outbox.blocked_networks)",
				 rd_kafka_err2str(err), blocked);
	else if (timeout && p->cluster_error[0] != '\0')
		snprintf(buf, size, "kafka: %s (%s)", rd_kafka_err2str(err), p->cluster_error);
	else
		snprintf(buf, size, "kafka: %s", rd_kafka_err2str(err));
}

/* Out of p's records not yet reported (it was reported). */
static void
kafka_unlink(KafkaProducer *p, KafkaRecord *rec)
{
	if (rec->older)
		rec->older->newer = rec->newer;
	else
		p->oldest = rec->newer;
	if (rec->newer)
		rec->newer->older = rec->older;
	else
		p->newest = rec->older;
	p->outstanding--;
}

/* Taken by p: the newest of its records not yet reported. */
static void
kafka_link(KafkaProducer *p, KafkaRecord *rec)
{
	rec->newer = NULL;
	rec->older = p->newest;
	if (p->newest)
		p->newest->newer = rec;
	else
		p->oldest = rec;
	p->newest = rec;
	p->outstanding++;
}

/* A record's outcome is known: into the FIFO; a failure raises the fence. */
static void
kafka_reported(KafkaProducer *p, KafkaRecord *rec)
{
	if ((rec->outcome == TRANSPORT_RETRY || rec->outcome == TRANSPORT_NOT_SENT) && !p->fenced)
	{
		p->fenced = true;
		p->purge_wanted = true;
	}
	p->unpopped++;
	rec->next = NULL;
	if (results_tail)
		results_tail->next = rec;
	else
		results_head = rec;
	results_tail = rec;
}

/*
 * librdkafka's delivery report, served by rd_kafka_poll in progress():
 * fills in the record.  No palloc, no ereport.
 */
static void
kafka_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	KafkaProducer *p = opaque;
	KafkaRecord *rec = m->_private;
	char		fatal[KAFKA_ERRSTR_BYTES];

	if (p->destroying || rec == NULL)
		return;
	rec->outcome = kafka_outcome(m->err);
	if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		rec->error[0] = '\0';
		p->cluster_error[0] = '\0'; /* it works again */
		p->error_logged = false;
	}
	else if (rec->outcome == TRANSPORT_NOT_SENT && p->purged_at != 0 && rec->deadline <= p->purged_at)
	{
		/* purged because its time was up: a failed attempt */
		rec->outcome = TRANSPORT_RETRY;
		kafka_error_text(rec->error, sizeof(rec->error), RD_KAFKA_RESP_ERR__MSG_TIMED_OUT, p);
	}
	else if (rec->outcome == TRANSPORT_NOT_SENT &&
			 rd_kafka_fatal_error(rk, fatal, sizeof(fatal)) != RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		/*
		 * Purged by a fatal error (a cluster that refuses idempotence, say):
		 * a failed attempt, so that backoff and the breaker pace the new
		 * producers, which the same cluster may fail at once again.
		 */
		rec->outcome = TRANSPORT_RETRY;
		snprintf(rec->error, sizeof(rec->error), "kafka: %s", fatal);
	}
	else
		kafka_error_text(rec->error, sizeof(rec->error), m->err, p);
	kafka_unlink(p, rec);
	kafka_reported(p, rec);
}

/* An error of the cluster or the client (fatal ones too): kept for last_error. */
static void
kafka_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	KafkaProducer *p = opaque;

	if (!p->destroying)
		snprintf(p->cluster_error, sizeof(p->cluster_error), "%s", reason);
}

/*
 * librdkafka's connect, in its broker threads: outbox.blocked_networks (the
 * producer's copy) first, then a non-blocking connect, as librdkafka's own.
 * Plain C: no palloc, no ereport.
 */
static int
kafka_connect_cb(int sockfd, const struct sockaddr *addr, int addrlen, const char *id, void *opaque)
{
	KafkaProducer *p = opaque;
	char		text[INET6_ADDRSTRLEN];
	uint32		none = KAFKA_BLOCKED_NONE;

	if (netblock_blocked_in(p->blocked_networks, addr, text, sizeof(text)))
	{
		if (pg_atomic_compare_exchange_u32(&p->blocked_state, &none, KAFKA_BLOCKED_WRITING))
		{
			strlcpy(p->blocked_address, text, sizeof(p->blocked_address));
			pg_write_barrier();
			pg_atomic_write_u32(&p->blocked_state, KAFKA_BLOCKED_SEEN);
		}
		return EACCES;
	}
	if (connect(sockfd, addr, addrlen) != 0 && errno != EINPROGRESS)
		return errno;
	return 0;
}

/* librdkafka's log lines, from any of its threads: dropped */
static void
kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
}

static KafkaProducer *
kafka_producer_find(uint64 id)
{
	for (KafkaProducer *p = producers; p; p = p->next)
		if (p->id == id)
			return p;
	return NULL;
}

/*
 * Has p, and every predecessor it waits for, returned all its records?  A
 * producer no longer in the list has.
 */
static bool
kafka_drained(KafkaProducer *p)
{
	for (; p != NULL; p = p->after ? kafka_producer_find(p->after) : NULL)
		if (p->outstanding > 0 || p->unpopped > 0)
			return false;
	return true;
}

/* The fence falls once every record the producer took is returned. */
static void
kafka_settle(KafkaProducer *p)
{
	if (p->fenced && !p->fatal && p->outstanding == 0 && p->unpopped == 0)
		p->fenced = false;
}

static void
kafka_purge(KafkaProducer *p, int what)
{
	rd_kafka_resp_err_t err = rd_kafka_purge(p->rk, what | RD_KAFKA_PURGE_F_NON_BLOCKING);

	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
		elog(WARNING, "outbox: could not purge the Kafka producer of endpoint \"%s\": %s",
			 p->name, rd_kafka_err2str(err));
}

static void *
kafka_destroy_main(void *arg)
{
	KafkaProducer *p = arg;

	rd_kafka_destroy(p->rk);
	free(p->blocked_networks);
	free(p);
	return NULL;
}

/*
 * Destroy a producer that has returned every record, on a thread of its
 * own (with every signal blocked, as librdkafka's threads are), so that the
 * relay never waits for librdkafka's threads to end.
 */
static void
kafka_producer_destroy(KafkaProducer *p)
{
	pthread_t	thread;
	pthread_attr_t attr;
	sigset_t	all;
	sigset_t	saved;
	bool		started = false;

	rd_kafka_queue_io_event_enable(p->mainq, -1, NULL, 0);
	rd_kafka_queue_destroy(p->mainq);
	p->destroying = true;
	if (sigfillset(&all) == 0 && pthread_sigmask(SIG_SETMASK, &all, &saved) == 0)
	{
		if (pthread_attr_init(&attr) == 0)
		{
			started = pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) == 0 &&
				pthread_create(&thread, &attr, kafka_destroy_main, p) == 0;
			pthread_attr_destroy(&attr);
		}
		if (pthread_sigmask(SIG_SETMASK, &saved, NULL) != 0)
			elog(FATAL, "could not restore the signal mask");
	}
	if (!started)
		kafka_destroy_main(p);	/* it takes milliseconds as a rule */
}

/*
 * librdkafka raised a fatal error on p (it has purged p's queue): the next
 * send() replaces p, once p has returned its records.
 */
static void
kafka_producer_failed(KafkaProducer *p)
{
	char		errstr[KAFKA_ERRSTR_BYTES];

	if (p->fatal)
		return;
	if (rd_kafka_fatal_error(p->rk, errstr, sizeof(errstr)) == RD_KAFKA_RESP_ERR_NO_ERROR)
		strlcpy(errstr, "fatal error", sizeof(errstr));
	p->fatal = p->fenced = true;
	ereport(LOG,
			(errcode(ERRCODE_CONNECTION_FAILURE),
			 errmsg("outbox: the Kafka producer of endpoint \"%s\" failed: %s", p->name, errstr),
			 errdetail("A new producer takes over once the failed one has reported its records.")));
}

/* An endpoint stops using p; when none does, its queued records come back (not sent). */
static void
kafka_producer_unref(KafkaProducer *p)
{
	if (--p->refs == 0)
		kafka_purge(p, RD_KAFKA_PURGE_F_QUEUE);
}

static void
kafka_init_once(void)
{
	if (kafka_eventfd >= 0)
		return;
	kafka_eventfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (kafka_eventfd < 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create an eventfd for Kafka delivery reports: %m")));
}

/*
 * A new producer for conn's settings, or NULL with *problem.  Defaults
 * first, then the endpoint's properties (checked again: a row changed by
 * hand), then what outbox fixes.
 */
static KafkaProducer *
kafka_producer_new(KafkaConn *conn, char **problem)
{
	const char *const bootstrap[2] = {"bootstrap.servers", conn->url.brokers};
	rd_kafka_conf_t *conf;
	KafkaProducer *p;
	char		errstr[KAFKA_ERRSTR_BYTES];
	KafkaProblem bad = {0};
	ListCell   *lc;

	kafka_init_once();
	p = calloc(1, sizeof(KafkaProducer));
	conf = rd_kafka_conf_new();
	if (p == NULL || conf == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	strlcpy(p->name, conn->name, sizeof(p->name));
	pg_atomic_init_u32(&p->blocked_state, KAFKA_BLOCKED_NONE);
	p->blocked_networks = netblock_copy();

	for (int i = 0; i < lengthof(kafka_conf_defaults) && bad.message == NULL; i++)
		if (rd_kafka_conf_set(conf, kafka_conf_defaults[i][0], kafka_conf_defaults[i][1],
							  errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
			bad.message = pstrdup(errstr);
	foreach(lc, conn->props)
	{
		KafkaProp  *prop = lfirst(lc);
		bool		secret;

		if (bad.message != NULL || !kafka_property_set(conf, prop->name, prop->value, &secret, &bad))
			break;
	}
	for (int i = 0; i < lengthof(kafka_conf_fixed) && bad.message == NULL; i++)
		if (rd_kafka_conf_set(conf, kafka_conf_fixed[i][0], kafka_conf_fixed[i][1],
							  errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
			bad.message = pstrdup(errstr);
	if (bad.message == NULL &&
		rd_kafka_conf_set(conf, bootstrap[0], bootstrap[1], errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
			bad.message = pstrdup(errstr);
	if (bad.message != NULL)
	{
		rd_kafka_conf_destroy(conf);
		free(p->blocked_networks);
		free(p);
		*problem = bad.detail ? psprintf("%s: %s", bad.message, bad.detail) : bad.message;
		return NULL;
	}

	rd_kafka_conf_set_opaque(conf, p);
	rd_kafka_conf_set_dr_msg_cb(conf, kafka_dr_cb);
	rd_kafka_conf_set_error_cb(conf, kafka_error_cb);
	rd_kafka_conf_set_log_cb(conf, kafka_log_cb);
	rd_kafka_conf_set_connect_cb(conf, kafka_connect_cb);
	p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	if (p->rk == NULL)
	{
		rd_kafka_conf_destroy(conf);	/* rd_kafka_new keeps it only on success */
		free(p->blocked_networks);
		free(p);
		*problem = psprintf("kafka: %s", errstr);
		return NULL;
	}
	p->mainq = rd_kafka_queue_get_main(p->rk);
	rd_kafka_queue_io_event_enable(p->mainq, kafka_eventfd, &kafka_event_payload,
								   sizeof(kafka_event_payload));
	p->id = ++producer_ids;
	p->refs = 1;
	p->next = producers;
	producers = p;
	return p;
}

/*
 * May conn's producer take a record now?  Replaces a producer that hit a
 * fatal error; waits for predecessors and for the fence to fall.
 */
static bool
kafka_conn_ready(KafkaConn *conn)
{
	KafkaProducer *p = conn->producer;

	if (p->fatal)
	{
		char	   *problem = NULL;
		KafkaProducer *fresh;

		if (remake_retry_at != 0)
			return false;
		fresh = kafka_producer_new(conn, &problem);
		if (fresh == NULL)
		{
			ereport(LOG,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("outbox: could not make a new Kafka producer for endpoint \"%s\": %s",
							conn->name, problem)));
			remake_retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), KAFKA_REMAKE_RETRY_MS);
			return false;
		}
		fresh->after = p->id;
		kafka_producer_unref(p);
		conn->producer = p = fresh;
	}
	if (p->after != 0)
	{
		if (!kafka_drained(kafka_producer_find(p->after)))
			return false;
		p->after = 0;
	}
	return !p->fenced;
}

/* ----------------------------------------------------------------
 * The transport
 * ----------------------------------------------------------------
 */

static pgsocket
kafka_init(void)
{
	kafka_init_once();
	return kafka_eventfd;
}

static long
kafka_timeout(void)
{
	TimestampTz next = remake_retry_at;

	if (results_head != NULL)
		return 0;				/* results made in send(): hand them over now */
	/* the oldest record's deadline of each producer (not purged for it yet) */
	for (KafkaProducer *p = producers; p; p = p->next)
		if (p->oldest != NULL && p->purged_at < p->oldest->deadline &&
			(next == 0 || p->oldest->deadline < next))
			next = p->oldest->deadline;
	return ms_until(next, GetCurrentTimestamp());
}

/* Serve every producer's queue to empty; fences, fatal errors, destruction. */
static void
kafka_progress(bool ready)
{
	KafkaProducer **link = &producers;

	if (ready)
	{
		uint64		n;

		/* first clear the eventfd, then serve to empty: no wake-up is lost */
		while (read(kafka_eventfd, &n, sizeof(n)) == sizeof(n))
			;
	}
	if (remake_retry_at != 0 && GetCurrentTimestamp() >= remake_retry_at)
		remake_retry_at = 0;

	while (*link != NULL)
	{
		KafkaProducer *p = *link;
		char		errstr[KAFKA_ERRSTR_BYTES];

		while (rd_kafka_poll(p->rk, 0) > 0)
			;
		if (!p->fatal && rd_kafka_fatal_error(p->rk, errstr, sizeof(errstr)) != RD_KAFKA_RESP_ERR_NO_ERROR)
			kafka_producer_failed(p);
		if (p->oldest != NULL && p->oldest->deadline <= GetCurrentTimestamp() &&
			p->purged_at < p->oldest->deadline)
		{
			/* time is up for its oldest record: fail everything it holds at once */
			p->fenced = true;
			p->purge_wanted = false;
			p->purged_at = GetCurrentTimestamp();
			kafka_purge(p, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
			/* the purged records are reported by the next poll */
			while (rd_kafka_poll(p->rk, 0) > 0)
				;
		}
		if (p->purge_wanted)
		{
			kafka_purge(p, RD_KAFKA_PURGE_F_QUEUE);
			p->purge_wanted = false;
		}
		if (!p->blocked_logged && kafka_blocked_address(p) != NULL)
		{
			ereport(LOG,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("outbox: Kafka endpoint \"%s\": address %s is blocked by outbox.blocked_networks",
							p->name, kafka_blocked_address(p))));
			p->blocked_logged = true;
		}
		if (p->cluster_error[0] != '\0' && !p->error_logged)
		{
			/* once per failure, not at every reconnect attempt */
			ereport(LOG,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("outbox: Kafka endpoint \"%s\": %s", p->name, p->cluster_error)));
			p->error_logged = true;
		}
		kafka_settle(p);
		if (p->refs == 0 && p->outstanding == 0 && p->unpopped == 0)
		{
			/*
			 * Its own records are back: its successors wait for its
			 * predecessor instead, so that an endpoint changed again and
			 * again while its oldest producer drains keeps two producers,
			 * not one per change.
			 */
			for (KafkaProducer *q = producers; q; q = q->next)
				if (q->after == p->id)
					q->after = p->after;
			*link = p->next;
			kafka_producer_destroy(p);
			continue;
		}
		link = &p->next;
	}
}

/*
 * Records are made and freed on the relay's main thread only (delivery
 * reports are served by its rd_kafka_poll, and a producer being destroyed
 * reports nothing), thousands per turn: finished ones are kept for reuse,
 * up to RECORDS_KEPT, rather than each going back to malloc, which already
 * serves half a dozen allocations per record inside librdkafka.
 */
#define RECORDS_KEPT		4096
static KafkaRecord *spare_records = NULL;	/* linked by next */
static int	nspare = 0;

static KafkaRecord *
kafka_record_new(void)
{
	KafkaRecord *rec = spare_records;

	if (rec != NULL)
	{
		spare_records = rec->next;
		nspare--;
		return rec;
	}
	rec = malloc(sizeof(KafkaRecord));
	if (rec == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	return rec;
}

static void
kafka_record_free(KafkaRecord *rec)
{
	if (nspare >= RECORDS_KEPT)
	{
		free(rec);
		return;
	}
	rec->next = spare_records;
	spare_records = rec;
	nspare++;
}

static bool
kafka_next_result(TransportResult *r)
{
	KafkaRecord *rec = results_head;

	if (rec == NULL)
		return false;
	results_head = rec->next;
	if (results_head == NULL)
		results_tail = NULL;
	unreported--;
	rec->producer->unpopped--;
	kafka_settle(rec->producer);
	r->owner = rec->owner;
	r->outcome = rec->outcome;
	r->status = 0;
	r->retry_after_ms = -1;
	r->pause = false;
	strlcpy(r->error, rec->error, sizeof(r->error));
	kafka_record_free(rec);
	return true;
}

static int
kafka_in_flight(void)
{
	return unreported;
}

/* Is name (len bytes) among the first n headers (case-insensitive)? */
static bool
kafka_header_taken(const KafkaHeader *headers, int n, const char *name, int len)
{
	for (int i = 0; i < n; i++)
		if (strlen(headers[i].name) == len && pg_strncasecmp(headers[i].name, name, len) == 0)
			return true;
	return false;
}

/* The endpoint's headers, as sent: validate.c's rule, each name once. */
static void
kafka_conn_headers(KafkaConn *conn)
{
	Jsonb	   *jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(conn->headers_json)));
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *name = NULL;
	int			namelen = 0;
	HeaderProblem problem;

	conn->nheaders = 0;
	conn->headers = NULL;
	if (!JB_ROOT_IS_OBJECT(jb))
		return;
	conn->headers = palloc(sizeof(KafkaHeader) * Max(JB_ROOT_COUNT(jb), 1));
	it = JsonbIteratorInit(&jb->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
		{
			name = v.val.string.val;
			namelen = v.val.string.len;
		}
		if (tok != WJB_VALUE || !outbox_header_allowed(name, namelen, &v, false, &problem) ||
			kafka_header_taken(conn->headers, conn->nheaders, name, namelen))
			continue;
		conn->headers[conn->nheaders].name = pnstrdup(name, namelen);
		conn->headers[conn->nheaders].value = pnstrdup(v.val.string.val, v.val.string.len);
		conn->nheaders++;
	}
}

static void *
kafka_open(const TransportConfig *cfg, void *prev, MemoryContext cxt, char **problem)
{
	KafkaConn  *old = prev;
	MemoryContext mine = AllocSetContextCreate(cxt, "outbox kafka endpoint", ALLOCSET_SMALL_SIZES);
	MemoryContext saved = MemoryContextSwitchTo(mine);
	KafkaConn  *conn = palloc0(sizeof(KafkaConn));
	Jsonb	   *shown = NULL;
	Jsonb	   *secret = cfg->secret_options;
	KafkaProblem bad = {0};
	JsonbValue	v;
	char	   *why = NULL;

	*problem = NULL;
	conn->cxt = mine;
	conn->name = pstrdup(cfg->name);
	conn->timeout_ms = cfg->timeout_ms;
	conn->headers_json = pstrdup(cfg->headers_json ? cfg->headers_json : "{}");
	if (cfg->options != NULL && JB_ROOT_IS_OBJECT(cfg->options) &&
		getKeyJsonValueFromContainer(&cfg->options->root, KAFKA_OPTIONS_KEY, strlen(KAFKA_OPTIONS_KEY), &v) != NULL)
	{
		if (v.type == jbvBinary && JsonContainerIsObject(v.val.binary.data))
			shown = JsonbValueToJsonb(&v);
		else
			kafka_problem(&bad, pstrdup("option \"" KAFKA_OPTIONS_KEY "\" is not a JSON object"), NULL, NULL);
	}
	if (cfg->batch_size != 1)
		why = psprintf("option \"batch_size\" is %d: a Kafka endpoint sends one record per message",
					   cfg->batch_size);
	else if (!kafka_url_parse(cfg->url, &conn->url, &why))
		why = psprintf("invalid Kafka endpoint URL: %s", why);
	else if (bad.message != NULL ||
			 !kafka_props_stored(&conn->props, shown, &bad) ||
			 !kafka_props_stored(&conn->props, secret, &bad))
		why = bad.message;
	else
		kafka_conn_headers(conn);
	/* a producer keeps the blocked networks of its making: a new setting makes a new one */
	conn->fingerprint = psprintf("%s\n%d\n%s\n%s\n%s", cfg->url, cfg->timeout_ms,
								 outbox_blocked_networks ? outbox_blocked_networks : "",
								 shown ? JsonbToCString(NULL, &shown->root, VARSIZE(shown)) : "",
								 secret ? JsonbToCString(NULL, &secret->root, VARSIZE(secret)) : "");
	MemoryContextSwitchTo(saved);
	if (why != NULL)
	{
		*problem = pstrdup(why);
		MemoryContextDelete(mine);
		return NULL;
	}

	if (old != NULL && strcmp(old->fingerprint, conn->fingerprint) == 0)
	{
		if (strcmp(old->headers_json, conn->headers_json) == 0)
		{
			MemoryContextDelete(mine);	/* nothing changed */
			return old;
		}
		conn->producer = old->producer; /* only the headers changed */
		conn->producer->refs++;
		return conn;
	}
	conn->producer = kafka_producer_new(conn, problem);
	if (conn->producer == NULL)
	{
		MemoryContextDelete(mine);
		return NULL;
	}
	/* records of two producers are not ordered: the old one returns all of its own first */
	if (old != NULL)
		conn->producer->after = old->producer->id;
	return conn;
}

/* created_at (microseconds since 2000-01-01) as Kafka's milliseconds since 1970 */
static int64
kafka_timestamp(TimestampTz t)
{
	int64		us = t + (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY;
	int64		ms = us / 1000 - (us % 1000 < 0 ? 1 : 0);

	return Max(ms, 0);			/* 0: librdkafka stamps it now */
}

/* The record's headers: outbox's, the endpoint's, then the message's own (NULL: none). */
static rd_kafka_headers_t *
kafka_record_headers(KafkaConn *conn, const TransportMessage *m, Jsonb *own)
{
	rd_kafka_headers_t *h = rd_kafka_headers_new(2 + conn->nheaders);
	char		id[32];
	bool		ok;

	memcpy(id, "msg_", 4);
	pg_lltoa(m->id, id + 4);
	ok = rd_kafka_header_add(h, "outbox-id", -1, id, -1) == RD_KAFKA_RESP_ERR_NO_ERROR &&
		rd_kafka_header_add(h, "outbox-topic", -1, m->topic, -1) == RD_KAFKA_RESP_ERR_NO_ERROR;
	for (int i = 0; ok && i < conn->nheaders; i++)
		ok = rd_kafka_header_add(h, conn->headers[i].name, -1, conn->headers[i].value, -1) ==
			RD_KAFKA_RESP_ERR_NO_ERROR;
	if (ok && own != NULL && JB_ROOT_IS_OBJECT(own))
	{
		JsonbIterator *it = JsonbIteratorInit(&own->root);
		JsonbValue	v;
		JsonbIteratorToken tok;
		char	   *name = NULL;
		int			namelen = 0;
		HeaderProblem problem;

		while (ok && (tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		{
			if (tok == WJB_KEY)
			{
				name = v.val.string.val;
				namelen = v.val.string.len;
			}
			/* outbox-* are refused by the rule; the endpoint's win */
			if (tok == WJB_VALUE && outbox_header_allowed(name, namelen, &v, true, &problem) &&
				!kafka_header_taken(conn->headers, conn->nheaders, name, namelen))
				ok = rd_kafka_header_add(h, name, namelen, v.val.string.val, v.val.string.len) ==
					RD_KAFKA_RESP_ERR_NO_ERROR;
		}
	}
	if (!ok)
		elog(ERROR, "could not add a header to a Kafka record");
	return h;
}


/*
 * Produce one record; the error librdkafka returns at once.  The payload
 * and headers are detoasted, printed and freed here, one message at a time.
 */
static rd_kafka_resp_err_t
kafka_produce(KafkaConn *conn, KafkaRecord *rec, const char *topic, const TransportMessage *m)
{
	Jsonb	   *payload = DatumGetJsonbP(m->payload);
	Jsonb	   *own = m->headers ? DatumGetJsonbP(m->headers) : NULL;
	char	   *value = JsonbToCString(NULL, &payload->root, VARSIZE(payload));
	rd_kafka_headers_t *headers = kafka_record_headers(conn, m, own);
	rd_kafka_resp_err_t err;

	transport_jsonb_free(payload, m->payload);
	transport_jsonb_free(own, m->headers);

	err = rd_kafka_producev(conn->producer->rk,
							RD_KAFKA_V_TOPIC(topic),
							RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
							RD_KAFKA_V_VALUE(value, strlen(value)),
							RD_KAFKA_V_KEY(m->key, m->key ? strlen(m->key) : 0),
							RD_KAFKA_V_TIMESTAMP(kafka_timestamp(m->created_at)),
							RD_KAFKA_V_HEADERS(headers),
							RD_KAFKA_V_OPAQUE(rec),
							RD_KAFKA_V_END);
	pfree(value);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
		rd_kafka_headers_destroy(headers);	/* the producer keeps them only on success */
	return err;
}

/*
 * One record for msgs[0] (batch_size is 1).  0 with a refusal: its topic is
 * not legal, or librdkafka refuses the record for good (too large); 0
 * without: the producer's queue is full, its fence is up, or it waits for a
 * predecessor (a result will come).
 */
static int
kafka_send(void *connp, void *owner, const TransportMessage *msgs, int n, char **refusal)
{
	KafkaConn  *conn = connp;
	const TransportMessage *m = &msgs[0];
	KafkaRecord *rec;
	rd_kafka_resp_err_t err;
	char	   *topic;

	*refusal = NULL;
	Assert(n >= 1);
	topic = kafka_record_topic(conn->url.topic, m->topic, refusal);
	if (topic == NULL)
		return 0;
	rec = kafka_record_new();
	rec->owner = owner;
	rec->outcome = TRANSPORT_RETRY;
	rec->error[0] = '\0';

	/* a producer found fatal here is replaced at once, once */
	for (int turn = 0; turn < 2; turn++)
	{
		if (!kafka_conn_ready(conn))
			err = RD_KAFKA_RESP_ERR__QUEUE_FULL;
		else if ((err = kafka_produce(conn, rec, topic, m)) == RD_KAFKA_RESP_ERR__FATAL)
		{
			kafka_producer_failed(conn->producer);
			err = RD_KAFKA_RESP_ERR__QUEUE_FULL;
			continue;
		}
		break;
	}
	pfree(topic);

	if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		rec->producer = conn->producer;
		rec->deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), conn->timeout_ms);
		kafka_link(conn->producer, rec);
		unreported++;
		return 1;
	}
	if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL)
	{
		kafka_record_free(rec);
		return 0;
	}
	if (kafka_outcome(err) == TRANSPORT_PERMANENT)
	{
		*refusal = psprintf("kafka: %s", rd_kafka_err2str(err));
		kafka_record_free(rec);
		return 0;
	}
	/* taken, and failed at once (a topic the cluster does not have, say) */
	kafka_error_text(rec->error, sizeof(rec->error), err, conn->producer);
	rec->producer = conn->producer;
	unreported++;
	kafka_reported(conn->producer, rec);
	return 1;
}

/* The core is done with conn: its producer drains and goes once no endpoint uses it. */
static void
kafka_close(void *connp)
{
	KafkaConn  *conn = connp;

	kafka_producer_unref(conn->producer);
	MemoryContextDelete(conn->cxt);
}

const TransportOps kafka_transport = {
	.name = "kafka",
	.pipelined = true,
	.init = kafka_init,
	.timeout = kafka_timeout,
	.progress = kafka_progress,
	.next_result = kafka_next_result,
	.in_flight = kafka_in_flight,
	.open = kafka_open,
	.send = kafka_send,
	.close = kafka_close,
};
