/*-------------------------------------------------------------------------
 * kafkaurl.c
 *		kafka:// endpoint URLs and Kafka topic names: parsing a URL into its
 *		bootstrap servers and topic template (create_endpoint's check and the
 *		relay's), and a record's topic from the template.  Plain string work:
 *		kafka.c, the only file that includes librdkafka, uses it.
 *
 * kafka://host:port[,host:port...]/TOPIC: every broker with a port (IPv6
 * in brackets), no userinfo, query or fragment (credentials belong in
 * options.kafka, which keeps the secret ones write-only), and a topic or a
 * template in which {topic} stands for the message's topic.  A Kafka topic
 * is 1 to KAFKA_MAX_TOPIC_LEN of [a-zA-Z0-9._-], neither "." nor "..".
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"

#include "kafka.h"

PG_FUNCTION_INFO_V1(outbox_check_kafka_url);

#define KAFKA_SCHEME			"kafka://"
#define KAFKA_PLACEHOLDER		"{topic}"
#define KAFKA_MAX_TOPIC_LEN		249 /* Kafka's limit on a topic name */
#define KAFKA_MAX_HOST_LEN		253 /* a DNS name */
#define KAFKA_MAX_PORT			65535
/*
 * Bootstrap servers in one URL: librdkafka runs a thread with its own
 * sockets per broker, so a URL of thousands would exhaust the relay's file
 * descriptors (a few are plenty: the cluster advertises the rest).
 */
#define KAFKA_MAX_BROKERS		32

bool
kafka_url_is_kafka(const char *url)
{
	return pg_strncasecmp(url, "kafka:", strlen("kafka:")) == 0;
}

/* ASCII only, whatever the server's locale */
static bool
kafka_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static bool
kafka_topic_char(char c)
{
	return kafka_alnum(c) || c == '.' || c == '_' || c == '-';
}

/* Why name (len bytes) is not a legal Kafka topic name, or NULL. */
static const char *
kafka_topic_refused(const char *name, int len)
{
	if (len == 0)
		return "a Kafka topic name must not be empty";
	if (len > KAFKA_MAX_TOPIC_LEN)
		return "a Kafka topic name may have at most 249 characters";
	if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.'))
		return "a Kafka topic name may not be \".\" or \"..\"";
	for (int i = 0; i < len; i++)
		if (!kafka_topic_char(name[i]))
			return "a Kafka topic name may have letters, digits, \".\", \"_\" and \"-\" only";
	return NULL;
}

/* Why a topic template is not valid, or NULL. */
static const char *
kafka_template_refused(const char *t)
{
	int			literal = 0;
	int			placeholders = 0;
	int			plen = strlen(KAFKA_PLACEHOLDER);

	for (const char *p = t; *p;)
	{
		if (strncmp(p, KAFKA_PLACEHOLDER, plen) == 0)
		{
			placeholders++;
			p += plen;
			continue;
		}
		if (!kafka_topic_char(*p))
			return "the topic may have letters, digits, \".\", \"_\", \"-\" and {topic} only";
		literal++;
		p++;
	}
	if (placeholders == 0)
		return kafka_topic_refused(t, literal);
	if (literal + placeholders > KAFKA_MAX_TOPIC_LEN)
		return "the topic template is longer than any Kafka topic name may be";
	return NULL;
}

/* Why "host:port" (len bytes, IPv6 in brackets) is not valid, or NULL. */
static const char *
kafka_broker_refused(const char *s, int len)
{
	const char *colon;
	int			hostlen;
	long		port = 0;

	if (len == 0)
		return "a broker is missing between commas";
	if (s[0] == '[')
	{
		const char *close = memchr(s, ']', len);

		if (close == NULL || close == s + 1)
			return "an IPv6 address must be inside brackets: [::1]:9092";
		for (const char *p = s + 1; p < close; p++)
			if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') || (*p >= 'A' && *p <= 'F') ||
				  *p == ':' || *p == '.'))
				return "an IPv6 address may have hexadecimal digits, \":\" and \".\" only";
		colon = close + 1;
		if (colon >= s + len || *colon != ':')
			return "every broker needs a port: host:9092";
	}
	else
	{
		colon = NULL;
		for (const char *p = s; p < s + len; p++)
			if (*p == ':')
				colon = p;
		if (colon == NULL)
			return "every broker needs a port: host:9092";
		hostlen = colon - s;
		if (hostlen == 0 || hostlen > KAFKA_MAX_HOST_LEN)
			return "a broker's host name must have 1 to 253 characters";
		for (const char *p = s; p < colon; p++)
			if (!kafka_alnum(*p) && *p != '.' && *p != '-' && *p != '_')
				return "a broker's host may have letters, digits, \".\", \"-\" and \"_\" only (IPv6 addresses in brackets)";
	}
	if (colon + 1 == s + len || len - (colon + 1 - s) > 5)
		return "a broker's port must be a number from 1 to 65535";
	for (const char *p = colon + 1; p < s + len; p++)
	{
		if (*p < '0' || *p > '9')
			return "a broker's port must be a number from 1 to 65535";
		port = port * 10 + (*p - '0');
	}
	if (port < 1 || port > KAFKA_MAX_PORT)
		return "a broker's port must be a number from 1 to 65535";
	return NULL;
}

/* Parse kafka://brokers/topic; false with *problem if it is not valid. */
bool
kafka_url_parse(const char *url, KafkaUrl *out, char **problem)
{
	const char *rest;
	const char *slash;
	const char *why = NULL;
	int			nbrokers = 0;

	if (pg_strncasecmp(url, KAFKA_SCHEME, strlen(KAFKA_SCHEME)) != 0)
		why = "the URL must start with kafka://";
	else if (strchr(url, '@'))
		why = "the URL may not carry credentials: give them in options.kafka (sasl.username, sasl.password)";
	else if (strpbrk(url, "?#"))
		why = "the URL may not have a query or a fragment";
	else if ((slash = strchr(url + strlen(KAFKA_SCHEME), '/')) == NULL || slash[1] == '\0')
		why = "the URL needs a topic after the brokers: kafka://host:9092/topic";
	else
	{
		rest = url + strlen(KAFKA_SCHEME);
		if (rest == slash)
			why = "the URL needs at least one broker: kafka://host:9092/topic";
		for (const char *b = rest; why == NULL && b < slash;)
		{
			const char *comma = memchr(b, ',', slash - b);
			const char *end = comma ? comma : slash;

			why = kafka_broker_refused(b, end - b);
			if (why == NULL && ++nbrokers > KAFKA_MAX_BROKERS)
				why = "the URL may name at most " CppAsString2(KAFKA_MAX_BROKERS) " bootstrap brokers";
			b = comma ? comma + 1 : slash;
			if (why == NULL && comma != NULL && b == slash)
				why = "a broker is missing after the last comma";
		}
		if (why == NULL)
			why = kafka_template_refused(slash + 1);
		if (why == NULL)
		{
			out->brokers = pnstrdup(rest, slash - rest);
			out->topic = pstrdup(slash + 1);
			return true;
		}
	}
	*problem = pstrdup(why);
	return false;
}

char *
kafka_url_check(const char *url, char **problem)
{
	KafkaUrl	u;

	if (!kafka_url_parse(url, &u, problem))
		return NULL;
	return psprintf(KAFKA_SCHEME "%s/%s", u.brokers, u.topic);
}

/* outbox._check_kafka_url(url text) returns text: the URL as stored, or 22023 */
Datum
outbox_check_kafka_url(PG_FUNCTION_ARGS)
{
	char	   *url = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *problem = NULL;
	char	   *normal = kafka_url_check(url, &problem);

	if (normal == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid Kafka endpoint URL \"%s\"", url),
				 errdetail("%c%s.", pg_toupper((unsigned char) problem[0]), problem + 1),
				 errhint("Give kafka://host:port[,host:port...]/topic, where {topic} in the topic stands for the message's topic.")));
	PG_RETURN_TEXT_P(cstring_to_text(normal));
}


/* The record's topic: {topic} replaced; NULL, with *why, if it is not a legal one. */
char *
kafka_record_topic(const char *template, const char *topic, char **why)
{
	StringInfoData s;
	int			plen = strlen(KAFKA_PLACEHOLDER);
	const char *refused;

	initStringInfo(&s);
	for (const char *p = template; *p;)
	{
		const char *at = strstr(p, KAFKA_PLACEHOLDER);

		if (at == NULL)
		{
			appendStringInfoString(&s, p);
			break;
		}
		appendBinaryStringInfo(&s, p, at - p);
		appendStringInfoString(&s, topic);
		p = at + plen;
	}
	refused = kafka_topic_refused(s.data, s.len);
	if (refused == NULL)
		return s.data;
	*why = psprintf("kafka: %s: \"%s\"", refused, s.data);
	return NULL;
}
