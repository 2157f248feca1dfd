/*-------------------------------------------------------------------------
 * consume.c
 *		Reads Kafka topics back from the beginning and judges what the relay
 *		delivered: count, repeats, per-key order.
 *
 * Every record should carry the header outbox-id: msg_<id>.  The judge
 * reads every partition of the topics named (or matching a regular
 * expression) from its first offset until it has seen the ids expected and
 * reached the end of every partition, or until the timeout.  It prints one
 * line on stdout:
 *
 *   verdict complete=1 records=N distinct=N repeats=N violations=N
 *           split_keys=N noid=N missing=N stray=N topics=N partitions=N
 *
 * - repeats: records whose id was seen before (at-least-once allows them);
 * - violations: per topic and key, first arrivals of ids out of id order
 *   (a repeat of an id already seen is a repeat, not a violation);
 * - split_keys: keys found in more than one partition of a topic (murmur2
 *   partitioning puts a key in one);
 * - missing/stray: with --ids A-B, expected ids never seen / ids outside.
 * Details of the first violations go to stderr.  --dump FILE writes one JSON
 * object per record.  Exit status 0 if complete, 1 on timeout, 2 on error.
 * See README.md.
 *-------------------------------------------------------------------------
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <regex.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#define MAX_TOPICS			64
#define POLL_MS				100
#define METADATA_MS			5000	/* metadata request timeout */
#define RESCAN_S			1.0		/* look again for new topics/partitions */
#define SHOW_VIOLATIONS		10		/* detailed on stderr */
#define ID_HEADER			"outbox-id"
#define ID_PREFIX			"msg_"

/* An open-addressing hash set of ids */
typedef struct IdSet
{
	int64_t    *slots;			/* 0: empty (ids are positive) */
	size_t		size,
				used;
} IdSet;

static uint64_t
hash64(uint64_t x)
{
	x ^= x >> 33;
	x *= UINT64_C(0xff51afd7ed558ccd);
	x ^= x >> 33;
	return x;
}

/* adds id; false if it was there already */
static bool
idset_add(IdSet *s, int64_t id)
{
	size_t		i;

	if (2 * (s->used + 1) > s->size)
	{
		IdSet		n = {calloc(s->size ? 2 * s->size : 1024, sizeof(int64_t)),
		s->size ? 2 * s->size : 1024, 0};

		for (size_t j = 0; j < s->size; j++)
			if (s->slots[j])
				idset_add(&n, s->slots[j]);
		free(s->slots);
		*s = n;
	}
	for (i = hash64((uint64_t) id) & (s->size - 1); s->slots[i]; i = (i + 1) & (s->size - 1))
		if (s->slots[i] == id)
			return false;
	s->slots[i] = id;
	s->used++;
	return true;
}

/* Per topic and key: the partition it was seen in, the last first arrival */
typedef struct KeyState
{
	char	   *name;			/* topic '\0' key, namelen bytes */
	size_t		namelen;
	int32_t		partition;
	int64_t		last_id;
	bool		split;
} KeyState;

typedef struct KeyMap
{
	KeyState   *slots;
	size_t		size,
				used;
} KeyMap;

static uint64_t
hash_bytes(const char *p, size_t len)
{
	uint64_t	h = UINT64_C(14695981039346656037);

	while (len--)
		h = (h ^ (unsigned char) *p++) * UINT64_C(1099511628211);
	return h;
}

/* the state of (topic, key), created if new */
static KeyState *
keymap_get(KeyMap *m, const char *topic, const void *key, size_t keylen)
{
	size_t		tlen = strlen(topic) + 1;
	size_t		len = tlen + keylen;
	char		buf[1024];
	char	   *name = len <= sizeof(buf) ? buf : malloc(len);
	size_t		i;
	KeyState   *ks;

	memcpy(name, topic, tlen);
	memcpy(name + tlen, key, keylen);
	if (2 * (m->used + 1) > m->size)
	{
		KeyMap		n = {calloc(m->size ? 2 * m->size : 1024, sizeof(KeyState)),
		m->size ? 2 * m->size : 1024, 0};

		for (size_t j = 0; j < m->size; j++)
			if (m->slots[j].name)
			{
				KeyState   *o = &m->slots[j];

				for (i = hash_bytes(o->name, o->namelen) & (n.size - 1); n.slots[i].name;
					 i = (i + 1) & (n.size - 1))
					;
				n.slots[i] = *o;
				n.used++;
			}
		free(m->slots);
		*m = n;
	}
	for (i = hash_bytes(name, len) & (m->size - 1); m->slots[i].name; i = (i + 1) & (m->size - 1))
		if (m->slots[i].namelen == len && memcmp(m->slots[i].name, name, len) == 0)
		{
			if (name != buf)
				free(name);
			return &m->slots[i];
		}
	ks = &m->slots[i];
	ks->name = malloc(len);
	memcpy(ks->name, name, len);
	ks->namelen = len;
	ks->partition = -1;
	ks->last_id = 0;
	ks->split = false;
	m->used++;
	if (name != buf)
		free(name);
	return ks;
}

/* One assigned partition */
typedef struct Part
{
	char	   *topic;
	int32_t		partition;
	int64_t		next_offset;	/* to resume it when the assignment changes */
	bool		eof;
} Part;

static Part *parts;
static int	nparts;

static Part *
find_part(const char *topic, int32_t partition)
{
	for (int i = 0; i < nparts; i++)
		if (parts[i].partition == partition && strcmp(parts[i].topic, topic) == 0)
			return &parts[i];
	return NULL;
}

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
 * Find the partitions of the topics wanted; assign them all (again) if any
 * is new.  Returns the number of topics found.
 */
static int
scan_topics(rd_kafka_t *rk, char **topics, int ntopics, regex_t *re)
{
	const struct rd_kafka_metadata *md;
	bool		changed = false;
	int			found = 0;
	rd_kafka_topic_partition_list_t *list;

	if (rd_kafka_metadata(rk, 1, NULL, &md, METADATA_MS) != RD_KAFKA_RESP_ERR_NO_ERROR)
		return -1;
	for (int t = 0; t < md->topic_cnt; t++)
	{
		const struct rd_kafka_metadata_topic *mt = &md->topics[t];
		bool		wanted = false;

		if (mt->err || mt->partition_cnt == 0)
			continue;
		for (int i = 0; i < ntopics && !wanted; i++)
			wanted = strcmp(topics[i], mt->topic) == 0;
		if (re && !wanted)
			wanted = regexec(re, mt->topic, 0, NULL, 0) == 0;
		if (!wanted)
			continue;
		found++;
		for (int p = 0; p < mt->partition_cnt; p++)
			if (!find_part(mt->topic, mt->partitions[p].id))
			{
				parts = realloc(parts, sizeof(Part) * (nparts + 1));
				parts[nparts].topic = strdup(mt->topic);
				parts[nparts].partition = mt->partitions[p].id;
				parts[nparts].next_offset = RD_KAFKA_OFFSET_BEGINNING;
				parts[nparts].eof = false;
				nparts++;
				changed = true;
			}
	}
	rd_kafka_metadata_destroy(md);
	if (!changed)
		return found;

	list = rd_kafka_topic_partition_list_new(nparts);
	for (int i = 0; i < nparts; i++)
		rd_kafka_topic_partition_list_add(list, parts[i].topic, parts[i].partition)->offset =
			parts[i].next_offset;
	if (rd_kafka_assign(rk, list) != RD_KAFKA_RESP_ERR_NO_ERROR)
		found = -1;
	rd_kafka_topic_partition_list_destroy(list);
	return found;
}

/* JSON string (or null) of len bytes */
static void
json_str(FILE *f, const void *data, size_t len)
{
	const unsigned char *p = data;

	if (!data)
	{
		fputs("null", f);
		return;
	}
	fputc('"', f);
	for (size_t i = 0; i < len; i++)
	{
		if (p[i] == '"' || p[i] == '\\')
			fprintf(f, "\\%c", p[i]);
		else if (p[i] < 0x20)
			fprintf(f, "\\u%04x", p[i]);
		else
			fputc(p[i], f);
	}
	fputc('"', f);
}

static void
dump_record(FILE *f, const rd_kafka_message_t *m, int64_t id)
{
	rd_kafka_timestamp_type_t tstype;
	int64_t		ts = rd_kafka_message_timestamp(m, &tstype);
	rd_kafka_headers_t *hdrs;
	const char *name;
	const void *val;
	size_t		size;

	fputs("{\"topic\":", f);
	json_str(f, rd_kafka_topic_name(m->rkt), strlen(rd_kafka_topic_name(m->rkt)));
	fprintf(f, ",\"partition\":%" PRId32 ",\"offset\":%" PRId64 ",\"key\":",
			m->partition, m->offset);
	json_str(f, m->key, m->key_len);
	if (id > 0)
		fprintf(f, ",\"id\":%" PRId64, id);
	else
		fputs(",\"id\":null", f);
	fprintf(f, ",\"timestamp\":%" PRId64 ",\"tstype\":\"%s\",\"headers\":[", ts,
			tstype == RD_KAFKA_TIMESTAMP_CREATE_TIME ? "create" :
			tstype == RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME ? "append" : "none");
	if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR)
		for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &val, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; i++)
		{
			fputs(i ? ",[" : "[", f);
			json_str(f, name, strlen(name));
			fputc(',', f);
			json_str(f, val, size);
			fputc(']', f);
		}
	fputs("],\"value\":", f);
	json_str(f, m->payload, m->len);
	fputs("}\n", f);
}

/* the id in the outbox-id header, 0 if none */
static int64_t
record_id(const rd_kafka_message_t *m)
{
	rd_kafka_headers_t *hdrs;
	const void *val;
	size_t		size;
	char		buf[32];
	char	   *end;
	int64_t		id;

	if (rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR ||
		rd_kafka_header_get_last(hdrs, ID_HEADER, &val, &size) != RD_KAFKA_RESP_ERR_NO_ERROR ||
		!val || size <= strlen(ID_PREFIX) || size >= sizeof(buf) ||
		memcmp(val, ID_PREFIX, strlen(ID_PREFIX)) != 0)
		return 0;
	memcpy(buf, (const char *) val + strlen(ID_PREFIX), size - strlen(ID_PREFIX));
	buf[size - strlen(ID_PREFIX)] = '\0';
	id = strtoll(buf, &end, 10);
	return (*end || id <= 0) ? 0 : id;
}

static void
usage(void)
{
	fprintf(stderr,
			"usage: consume -b BOOTSTRAP (-t TOPIC... | -r REGEX) [--expect N | --ids FIRST-LAST]\n"
			"               [--timeout SECONDS] [--dump FILE]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	const char *bootstrap = NULL,
			   *regex = NULL,
			   *dump_path = NULL;
	char	   *topics[MAX_TOPICS];
	int			ntopics = 0;
	long		expect = 0;
	int64_t		first = 0,
				last = -1;
	double		timeout = 30,
				deadline,
				next_scan = 0;
	regex_t		re;
	char		errstr[512];
	char		group[64];
	rd_kafka_conf_t *conf;
	rd_kafka_t *rk;
	FILE	   *dump = NULL;
	IdSet		ids = {0};
	KeyMap		keys = {0};
	long		records = 0,
				repeats = 0,
				violations = 0,
				split_keys = 0,
				noid = 0,
				stray = 0,
				in_range = 0;
	int			found = 0;
	bool		complete = false;

	for (int i = 1; i < argc; i++)
	{
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[++i] : NULL;

		if (!v)
			usage();
		if (strcmp(a, "-b") == 0)
			bootstrap = v;
		else if (strcmp(a, "-t") == 0 && ntopics < MAX_TOPICS)
			topics[ntopics++] = (char *) v;
		else if (strcmp(a, "-r") == 0)
			regex = v;
		else if (strcmp(a, "--expect") == 0)
			expect = atol(v);
		else if (strcmp(a, "--ids") == 0)
		{
			if (sscanf(v, "%" SCNd64 "-%" SCNd64, &first, &last) != 2 || first < 1 || last < first)
				usage();
			expect = (long) (last - first + 1);
		}
		else if (strcmp(a, "--timeout") == 0)
			timeout = atof(v);
		else if (strcmp(a, "--dump") == 0)
			dump_path = v;
		else
			usage();
	}
	if (!bootstrap || (ntopics == 0 && !regex))
		usage();
	if (regex && regcomp(&re, regex, REG_EXTENDED | REG_NOSUB) != 0)
	{
		fprintf(stderr, "consume: bad regular expression \"%s\"\n", regex);
		return 2;
	}
	if (dump_path && !(dump = fopen(dump_path, "w")))
	{
		perror(dump_path);
		return 2;
	}

	snprintf(group, sizeof(group), "outbox-consume-%d", (int) getpid());
	conf = rd_kafka_conf_new();
	if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr, sizeof(errstr)) ||
		rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof(errstr)) ||
		rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof(errstr)) ||
		rd_kafka_conf_set(conf, "enable.partition.eof", "true", errstr, sizeof(errstr)) ||
		rd_kafka_conf_set(conf, "fetch.wait.max.ms", "50", errstr, sizeof(errstr)) ||
		rd_kafka_conf_set(conf, "socket.nagle.disable", "true", errstr, sizeof(errstr)) ||
		rd_kafka_conf_set(conf, "reconnect.backoff.max.ms", "1000", errstr, sizeof(errstr)) ||
		rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof(errstr)))
	{
		fprintf(stderr, "consume: %s\n", errstr);
		return 2;
	}
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
	if (!rk)
	{
		fprintf(stderr, "consume: %s\n", errstr);
		return 2;
	}
	rd_kafka_poll_set_consumer(rk);

	deadline = now() + timeout;
	while (now() < deadline)
	{
		rd_kafka_message_t *m;
		bool		all_eof;

		if (now() >= next_scan)
		{
			int			r = scan_topics(rk, topics, ntopics, regex ? &re : NULL);

			if (r > found)
				found = r;
			next_scan = now() + RESCAN_S;
		}
		all_eof = nparts > 0 && found >= ntopics;
		for (int i = 0; i < nparts && all_eof; i++)
			all_eof = parts[i].eof;
		if (all_eof && (long) ids.used >= expect)
		{
			complete = true;
			break;
		}

		m = rd_kafka_consumer_poll(rk, POLL_MS);
		if (!m)
			continue;
		if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
		{
			Part	   *p = find_part(rd_kafka_topic_name(m->rkt), m->partition);

			if (p && m->offset >= p->next_offset)
				p->eof = true;
		}
		else if (m->err)
			fprintf(stderr, "consume: %s\n", rd_kafka_message_errstr(m));
		else
		{
			const char *topic = rd_kafka_topic_name(m->rkt);
			Part	   *p = find_part(topic, m->partition);
			int64_t		id = record_id(m);

			records++;
			if (p)
			{
				p->eof = false;
				p->next_offset = m->offset + 1;
			}
			if (dump)
				dump_record(dump, m, id);
			if (id == 0)
				noid++;
			else if (!idset_add(&ids, id))
				repeats++;
			else
			{
				if (last >= first)
				{
					if (id >= first && id <= last)
						in_range++;
					else
						stray++;
				}
				if (m->key)
				{
					KeyState   *ks = keymap_get(&keys, topic, m->key, m->key_len);

					if (id < ks->last_id)
					{
						if (violations++ < SHOW_VIOLATIONS)
							fprintf(stderr, "consume: violation: topic %s partition %" PRId32
									" key %.*s: id %" PRId64 " after %" PRId64 "\n",
									topic, m->partition, (int) m->key_len,
									(const char *) m->key, id, ks->last_id);
					}
					else
						ks->last_id = id;
				}
			}
			if (m->key)
			{
				KeyState   *ks = keymap_get(&keys, topic, m->key, m->key_len);

				if (ks->partition < 0)
					ks->partition = m->partition;
				else if (ks->partition != m->partition && !ks->split)
				{
					ks->split = true;
					split_keys++;
				}
			}
		}
		rd_kafka_message_destroy(m);
	}

	printf("verdict complete=%d records=%ld distinct=%ld repeats=%ld violations=%ld "
		   "split_keys=%ld noid=%ld missing=%ld stray=%ld topics=%d partitions=%d\n",
		   complete, records, (long) ids.used, repeats, violations, split_keys, noid,
		   last >= first ? (long) (last - first + 1) - in_range : 0, stray, found, nparts);
	fflush(stdout);
	if (dump)
		fclose(dump);
	rd_kafka_consumer_close(rk);
	rd_kafka_destroy(rk);
	return complete ? 0 : 1;
}
