/*-------------------------------------------------------------------------
 * bare_producer.c
 *		A bare librdkafka producer with the relay's configuration, for the
 *		benchmark (the relay's yardstick) and the order experiments.
 *
 * Produces N records with K keys to one topic, shaped like the relay's
 * (header outbox-id: msg_<id>, ids increasing, so each key's records carry
 * increasing ids), waits for every delivery report and prints one line:
 *
 *   produced=N delivered=N failed=N unreported=N seconds=S msgs_per_sec=R
 *   lat_p50_ms=L lat_p99_ms=L dr_reorders=N gap_keys=N [err.NAME=N...]
 *
 * seconds runs from the first record produced to the last delivery report;
 * lat_* are produce-call-to-delivery-report latencies of delivered records.
 * With --stats, also requests=N (Produce requests sent) and resent=N
 * (records transmitted more than once: retries), from librdkafka's
 * statistics.
 *
 * dr_reorders counts successful delivery reports that arrived for a key
 * after a report of a later record of that key.  gap_keys counts keys with
 * a failed record before a delivered one: producing the failed record again
 * would break the key's order.  Exit status 0 if every
 * record was delivered, 1 if not, 2 on bad usage.  See README.md.
 *-------------------------------------------------------------------------
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "../../src/kafka_conf.h"

#define MAX_OVERRIDES	64
#define POLL_MS			10		/* wait for room when the local queue is full */
#define STATS_MS		"100"	/* statistics.interval.ms with --stats */

static long delivered,
			failed;
static long err_count[RD_KAFKA_RESP_ERR_END_ALL - RD_KAFKA_RESP_ERR__BEGIN];
static int64_t *last_acked;		/* per key index: highest record index acked */
static int64_t *first_failed;	/* per key index: lowest record index failed */
static long nkeys;
static long dr_reorders;
static double last_dr;			/* time of the last delivery report */
static double start;			/* when the first record was produced */
static long purge_after = -1;	/* --purge-after MS, -1: never */
static bool purge_inflight;		/* --purge-inflight */
static double *sent_at;			/* per record: when produced */
static double *latency;			/* per delivered record, seconds */
static long stat_requests,		/* from the last statistics: Produce requests */
			stat_txmsgs;		/* and records transmitted, retries included */

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	int64_t		i = (int64_t) (intptr_t) m->_private;

	last_dr = now();
	if (m->err)
	{
		failed++;
		if (nkeys > 0 && (first_failed[i % nkeys] < 0 || i < first_failed[i % nkeys]))
			first_failed[i % nkeys] = i;
		if (m->err > RD_KAFKA_RESP_ERR__BEGIN && m->err < RD_KAFKA_RESP_ERR_END_ALL)
			err_count[m->err - RD_KAFKA_RESP_ERR__BEGIN]++;
		return;
	}
	latency[delivered++] = last_dr - sent_at[i];
	if (nkeys > 0)
	{
		int64_t    *last = &last_acked[i % nkeys];

		if (i < *last)
			dr_reorders++;
		else
			*last = i;
	}
}

/*
 * The sum of the values of "name": over the statistics JSON, or the last
 * one (the top-level totals come last)
 */
static long
stat_field(const char *json, const char *name, bool last)
{
	long		sum = 0,
				v = 0;
	size_t		len = strlen(name);

	for (const char *p = strstr(json, name); p; p = strstr(p + len, name))
		sum += (v = atol(p + len));
	return last ? v : sum;
}

static int
stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
	stat_requests = stat_field(json, "\"Produce\":", false);
	stat_txmsgs = stat_field(json, "\"txmsgs\":", true);
	return 0;
}

static int
cmp_double(const void *a, const void *b)
{
	double		x = *(const double *) a,
				y = *(const double *) b;

	return x < y ? -1 : x > y;
}

/* the p-th percentile of the delivered records' latencies, in ms */
static double
percentile_ms(double p)
{
	return delivered ? 1000 * latency[(long) (p / 100 * (delivered - 1))] : 0;
}

/* rd_kafka_purge() once, when --purge-after has passed */
static void
purge_if_due(rd_kafka_t *rk)
{
	static bool purged;

	if (purge_after < 0 || purged || now() - start < purge_after / 1000.0)
		return;
	rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE |
				   (purge_inflight ? RD_KAFKA_PURGE_F_INFLIGHT : 0));
	purged = true;
}

static void
usage(void)
{
	fprintf(stderr,
			"usage: bare_producer -b BOOTSTRAP -t TOPIC [-n N] [-k KEYS] [-s VALUE_BYTES]\n"
			"                     [--first-id ID] [--rate MSGS_PER_SEC] [-X PROP=VALUE]...\n"
			"                     [--purge-after MS [--purge-inflight]] [--wait SECONDS] [--stats]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	const char *bootstrap = NULL,
			   *topic = NULL;
	const char *overrides[MAX_OVERRIDES];
	int			noverrides = 0;
	long		n = 1000,
				size = 100,
				rate = 0,
				wait_s = 60;
	int64_t		first_id = 1;
	bool		stats = false;
	char		errstr[512];
	rd_kafka_conf_t *conf;
	rd_kafka_t *rk;
	char	   *value;
	double		secs;
	long		gap_keys = 0;

	nkeys = 100;
	for (int i = 1; i < argc; i++)
	{
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--purge-inflight") == 0)
			purge_inflight = true;
		else if (strcmp(a, "--stats") == 0)
			stats = true;
		else if (!v)
			usage();
		else
		{
			i++;
			if (strcmp(a, "-b") == 0)
				bootstrap = v;
			else if (strcmp(a, "-t") == 0)
				topic = v;
			else if (strcmp(a, "-n") == 0)
				n = atol(v);
			else if (strcmp(a, "-k") == 0)
				nkeys = atol(v);
			else if (strcmp(a, "-s") == 0)
				size = atol(v);
			else if (strcmp(a, "--first-id") == 0)
				first_id = atoll(v);
			else if (strcmp(a, "--rate") == 0)
				rate = atol(v);
			else if (strcmp(a, "--purge-after") == 0)
				purge_after = atol(v);
			else if (strcmp(a, "--wait") == 0)
				wait_s = atol(v);
			else if (strcmp(a, "-X") == 0 && noverrides < MAX_OVERRIDES && strchr(v, '='))
				overrides[noverrides++] = v;
			else
				usage();
		}
	}
	if (!bootstrap || !topic || n < 0 || nkeys < 0 || size < 0 || size > 1000000)
		usage();

	conf = rd_kafka_conf_new();
	/*
	 * The relay's configuration (src/kafka_conf.h), then -X (experiments may
	 * change even what the relay fixes), then the cluster.
	 */
	for (int i = 0; i < KAFKA_CONF_LEN(kafka_conf_defaults) + KAFKA_CONF_LEN(kafka_conf_fixed) + noverrides + 1; i++)
	{
		int			ndefaults = KAFKA_CONF_LEN(kafka_conf_defaults);
		int			nfixed = KAFKA_CONF_LEN(kafka_conf_fixed);
		char		prop[256];
		const char *name,
				   *val;

		if (i < ndefaults)
		{
			name = kafka_conf_defaults[i][0];
			val = kafka_conf_defaults[i][1];
		}
		else if (i < ndefaults + nfixed)
		{
			name = kafka_conf_fixed[i - ndefaults][0];
			val = kafka_conf_fixed[i - ndefaults][1];
		}
		else if (i < ndefaults + nfixed + noverrides)
		{
			const char *o = overrides[i - ndefaults - nfixed];
			size_t		len = strchr(o, '=') - o;

			snprintf(prop, sizeof(prop), "%.*s", (int) len, o);
			name = prop;
			val = o + len + 1;
		}
		else
		{
			name = "bootstrap.servers";
			val = bootstrap;
		}
		if (rd_kafka_conf_set(conf, name, val, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
		{
			fprintf(stderr, "bare_producer: %s\n", errstr);
			return 2;
		}
	}
	rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
	if (stats)
	{
		rd_kafka_conf_set_stats_cb(conf, stats_cb);
		if (rd_kafka_conf_set(conf, "statistics.interval.ms", STATS_MS, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
		{
			fprintf(stderr, "bare_producer: %s\n", errstr);
			return 2;
		}
	}
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	if (!rk)
	{
		fprintf(stderr, "bare_producer: %s\n", errstr);
		return 2;
	}

	last_acked = calloc(nkeys > 0 ? nkeys : 1, sizeof(*last_acked));
	first_failed = calloc(nkeys > 0 ? nkeys : 1, sizeof(*first_failed));
	for (long k = 0; k < nkeys; k++)
		last_acked[k] = first_failed[k] = -1;
	value = malloc(size + 1);
	sent_at = malloc(sizeof(double) * (n ? n : 1));
	latency = malloc(sizeof(double) * (n ? n : 1));
	start = now();
	for (long i = 0; i < n; i++)
	{
		char		key[32],
					id[32];
		int			keylen = snprintf(key, sizeof(key), "key-%ld", nkeys ? i % nkeys : 0);
		int			idlen = snprintf(id, sizeof(id), "msg_%" PRId64, first_id + i);
		rd_kafka_resp_err_t err;

		/* value: the id, padded to size bytes */
		memset(value, 'x', size);
		memcpy(value, id, (size_t) idlen < (size_t) size ? (size_t) idlen : (size_t) size);

		if (rate > 0)
		{
			double		due = start + (double) i / rate;

			while (now() < due)
				rd_kafka_poll(rk, (int) ((due - now()) * 1000) + 1);
		}
		purge_if_due(rk);
		sent_at[i] = now();
		do
		{
			err = rd_kafka_producev(rk,
									RD_KAFKA_V_TOPIC(topic),
									RD_KAFKA_V_KEY(nkeys ? key : NULL, nkeys ? (size_t) keylen : 0),
									RD_KAFKA_V_VALUE(value, (size_t) size),
									RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
									RD_KAFKA_V_HEADER("outbox-id", id, idlen),
									RD_KAFKA_V_HEADER("outbox-topic", topic, -1),
									RD_KAFKA_V_OPAQUE((void *) (intptr_t) i),
									RD_KAFKA_V_END);
			if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL)
				rd_kafka_poll(rk, POLL_MS);
			else if (err)
			{
				fprintf(stderr, "bare_producer: produce failed: %s\n", rd_kafka_err2str(err));
				return 1;
			}
		} while (err);
		rd_kafka_poll(rk, 0);
	}

	/* wait for the reports, purging on schedule if asked */
	while (rd_kafka_outq_len(rk) > 0 && now() - start < wait_s)
	{
		purge_if_due(rk);
		rd_kafka_poll(rk, 50);
	}

	secs = (delivered + failed > 0 ? last_dr : now()) - start;
	if (stats)
	{
		/* one more round of statistics, taken after the last report */
		double		until = now() + 2 * atoi(STATS_MS) / 1000.0;

		while (now() < until)
			rd_kafka_poll(rk, 10);
	}
	qsort(latency, delivered, sizeof(double), cmp_double);
	for (long k = 0; k < nkeys; k++)
		if (first_failed[k] >= 0 && first_failed[k] < last_acked[k])
			gap_keys++;
	printf("produced=%ld delivered=%ld failed=%ld unreported=%ld seconds=%.3f msgs_per_sec=%.0f "
		   "lat_p50_ms=%.1f lat_p99_ms=%.1f dr_reorders=%ld gap_keys=%ld",
		   n, delivered, failed, n - delivered - failed, secs,
		   secs > 0 ? delivered / secs : 0.0, percentile_ms(50), percentile_ms(99), dr_reorders, gap_keys);
	if (stats)
		printf(" requests=%ld resent=%ld", stat_requests, stat_txmsgs - delivered - failed);
	for (int e = 0; e < RD_KAFKA_RESP_ERR_END_ALL - RD_KAFKA_RESP_ERR__BEGIN; e++)
		if (err_count[e])
			printf(" err.%s=%ld", rd_kafka_err2name(e + RD_KAFKA_RESP_ERR__BEGIN), err_count[e]);
	printf("\n");
	fflush(stdout);

	rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
	rd_kafka_poll(rk, 0);
	rd_kafka_destroy(rk);
	free(value);
	free(sent_at);
	free(latency);
	free(last_acked);
	free(first_failed);
	return delivered == n ? 0 : 1;
}
