/*-------------------------------------------------------------------------
 * mockcluster.c
 *		A Kafka cluster for outbox's tests: librdkafka's mock brokers in a
 *		process of their own, driven by fault commands on stdin.
 *
 * It starts a mock cluster of --brokers brokers (default 3) listening on
 * 127.0.0.1, prints their bootstrap servers on the first line of stdout, then
 * reads one command per line from stdin and answers each with one line, "ok"
 * or "error <why>".  End of input quits, so the cluster dies with the test
 * that started it.  See README.md for the commands.
 *
 * librdkafka's mock brokers do not set TCP_NODELAY on the sockets they
 * accept: with several requests in flight on a connection, a response waits
 * for the client's delayed ACK (about 40 ms on Linux).  A real broker sets
 * it, so this program defines accept() and accept4(): librdkafka's calls
 * resolve to the executable's definitions first (symbol interposition),
 * which call libc's and set TCP_NODELAY.  --nagle leaves it off, to measure
 * the difference.
 *-------------------------------------------------------------------------
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define MAX_LINE		4096
#define MAX_ERRORS		1000000	/* entries one command may push */
#define API_PRODUCE		0		/* the Kafka protocol's ProduceRequest key */

static bool nagle = false;		/* --nagle: leave the mock's sockets alone */

/*
 * Interposed accept()/accept4(): the real call, then TCP_NODELAY.
 */
typedef int (*accept_fn) (int, struct sockaddr *, socklen_t *);
typedef int (*accept4_fn) (int, struct sockaddr *, socklen_t *, int);

static void
set_nodelay(int fd)
{
	int			on = 1;

	if (fd >= 0 && !nagle)
		(void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
}

int
accept(int fd, struct sockaddr *addr, socklen_t *len)
{
	static accept_fn real;
	int			s;

	if (!real)
		real = (accept_fn) dlsym(RTLD_NEXT, "accept");
	s = real(fd, addr, len);
	set_nodelay(s);
	return s;
}

int
accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
	static accept4_fn real;
	int			s;

	if (!real)
		real = (accept4_fn) dlsym(RTLD_NEXT, "accept4");
	s = real(fd, addr, len, flags);
	set_nodelay(s);
	return s;
}

/* Kafka protocol API keys by name (the ones tests are likely to fail) */
static const struct
{
	const char *name;
	int			key;
}			api_keys[] =
{
	{"Produce", 0}, {"Fetch", 1}, {"ListOffsets", 2}, {"Metadata", 3},
	{"OffsetCommit", 8}, {"OffsetFetch", 9}, {"FindCoordinator", 10},
	{"JoinGroup", 11}, {"Heartbeat", 12}, {"LeaveGroup", 13},
	{"SyncGroup", 14}, {"ApiVersions", 18}, {"InitProducerId", 22},
	{"AddPartitionsToTxn", 24}, {"EndTxn", 26},
};

/* an API key from its name or number, -1 if neither */
static int
parse_api_key(const char *s)
{
	char	   *end;
	long		n;

	for (size_t i = 0; i < sizeof(api_keys) / sizeof(api_keys[0]); i++)
		if (strcasecmp(s, api_keys[i].name) == 0)
			return api_keys[i].key;
	n = strtol(s, &end, 10);
	return (*s && !*end && n >= 0 && n < 100) ? (int) n : -1;
}

/*
 * An error code from its number or name: "6", "NOT_LEADER_FOR_PARTITION",
 * "RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION", "_TRANSPORT" (which makes the
 * mock broker drop the connection).  Returns false if unknown.
 */
static bool
parse_error(const char *s, rd_kafka_resp_err_t *err)
{
	const struct rd_kafka_err_desc *descs;
	size_t		n;
	char	   *end;
	long		v;

	v = strtol(s, &end, 10);
	if (*s && !*end)
	{
		*err = (rd_kafka_resp_err_t) v;
		return true;
	}
	if (strncasecmp(s, "RD_KAFKA_RESP_ERR_", 18) == 0)
		s += 18;
	rd_kafka_get_err_descs(&descs, &n);
	for (size_t i = 0; i < n; i++)
		if (descs[i].name && strcasecmp(descs[i].name, s) == 0)
		{
			*err = descs[i].code;
			return true;
		}
	return false;
}

static bool
parse_int(const char *s, long lo, long hi, long *out)
{
	char	   *end;

	if (!s)
		return false;
	errno = 0;
	*out = strtol(s, &end, 10);
	return *s && !*end && errno == 0 && *out >= lo && *out <= hi;
}

/* parse the ERR... arguments of errors/flaky into errs[0..*nerrs-1] */
static const char *
parse_errors(char **argv, int argc, rd_kafka_resp_err_t *errs, int *nerrs)
{
	static char why[128];

	*nerrs = 0;
	for (int i = 0; i < argc && *nerrs < 64; i++)
	{
		if (!parse_error(argv[i], &errs[*nerrs]))
		{
			snprintf(why, sizeof(why), "unknown error \"%s\"", argv[i]);
			return why;
		}
		(*nerrs)++;
	}
	return NULL;
}

/*
 * Run one command; NULL if it succeeded, else why it failed.
 */
static const char *
run_command(rd_kafka_mock_cluster_t *mc, int argc, char **argv, bool *quit)
{
	static char why[256];
	const char *cmd = argv[0];
	rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
	long		a,
				b,
				c;

	if (strcmp(cmd, "quit") == 0)
		*quit = true;
	else if (strcmp(cmd, "ping") == 0)
		;
	else if (strcmp(cmd, "create") == 0 && (argc == 3 || argc == 4))
	{
		/* create TOPIC PARTITIONS [REPLICATION] */
		if (!parse_int(argv[2], 1, 10000, &a))
			return "bad partition count";
		if (argc == 4 ? !parse_int(argv[3], 1, 100, &b) : (b = 3, false))
			return "bad replication factor";
		err = rd_kafka_mock_topic_create(mc, argv[1], (int) a, (int) b);
	}
	else if ((strcmp(cmd, "down") == 0 || strcmp(cmd, "up") == 0) && argc == 2)
	{
		/* down BROKERID | up BROKERID */
		if (!parse_int(argv[1], 1, 1000, &a))
			return "bad broker id";
		err = cmd[0] == 'd' ? rd_kafka_mock_broker_set_down(mc, (int32_t) a)
			: rd_kafka_mock_broker_set_up(mc, (int32_t) a);
	}
	else if (strcmp(cmd, "rtt") == 0 && argc == 3)
	{
		/* rtt BROKERID MS */
		if (!parse_int(argv[1], 1, 1000, &a) || !parse_int(argv[2], 0, 3600000, &b))
			return "usage: rtt BROKERID MS";
		err = rd_kafka_mock_broker_set_rtt(mc, (int32_t) a, (int) b);
	}
	else if (strcmp(cmd, "leader") == 0 && argc == 4)
	{
		/* leader TOPIC PARTITION BROKERID (-1: no leader) */
		if (!parse_int(argv[2], 0, 10000, &a) || !parse_int(argv[3], -1, 1000, &b))
			return "usage: leader TOPIC PARTITION BROKERID";
		err = rd_kafka_mock_partition_set_leader(mc, argv[1], (int32_t) a, (int32_t) b);
	}
	else if (strcmp(cmd, "clear") == 0 && argc == 2)
	{
		/* clear APIKEY: forget the errors pushed for it */
		if ((a = parse_api_key(argv[1])) < 0)
			return "unknown API key";
		rd_kafka_mock_clear_request_errors(mc, (int16_t) a);
	}
	else if (strcmp(cmd, "errors") == 0 && argc >= 4)
	{
		/*
		 * errors APIKEY CNT ERR [ERR...]: the next CNT requests of that type,
		 * to any broker, fail with the errors given, repeated in turn (0
		 * means success, so "errors Produce 4 0 REQUEST_TIMED_OUT" fails
		 * every other request of the next four).
		 */
		rd_kafka_resp_err_t errs[64],
				   *list;
		int			nerrs;
		const char *bad;

		if ((a = parse_api_key(argv[1])) < 0)
			return "unknown API key";
		if (!parse_int(argv[2], 1, MAX_ERRORS, &b))
			return "bad count";
		if ((bad = parse_errors(argv + 3, argc - 3, errs, &nerrs)))
			return bad;
		list = malloc(sizeof(*list) * b);
		for (long i = 0; i < b; i++)
			list[i] = errs[i % nerrs];
		rd_kafka_mock_push_request_errors_array(mc, (int16_t) a, (size_t) b, list);
		free(list);
	}
	else if (strcmp(cmd, "flaky") == 0 && argc >= 3)
	{
		/*
		 * flaky PCT CNT [ERR...]: each of the next CNT Produce requests fails
		 * with probability PCT %, with one of the errors given (in turn;
		 * default NOT_LEADER_FOR_PARTITION and REQUEST_TIMED_OUT, both
		 * retriable).  "clear Produce" ends it early.
		 */
		rd_kafka_resp_err_t errs[64] = {
			RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
			RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT
		},
				   *list;
		int			nerrs = 2,
					next = 0;
		const char *bad;

		if (!parse_int(argv[1], 0, 100, &a) || !parse_int(argv[2], 1, MAX_ERRORS, &b))
			return "usage: flaky PCT CNT [ERR...]";
		if (argc > 3 && (bad = parse_errors(argv + 3, argc - 3, errs, &nerrs)))
			return bad;
		list = malloc(sizeof(*list) * b);
		for (long i = 0; i < b; i++)
			list[i] = (random() % 100 < a) ? errs[next++ % nerrs]
				: RD_KAFKA_RESP_ERR_NO_ERROR;
		rd_kafka_mock_push_request_errors_array(mc, API_PRODUCE, (size_t) b, list);
		free(list);
	}
	else if (strcmp(cmd, "broker_errors") == 0 && argc >= 5 && argc <= 6)
	{
		/*
		 * broker_errors BROKERID APIKEY CNT ERR [RTT_MS]: the next CNT requests
		 * of that type to that broker fail with ERR (0: succeed) after RTT_MS
		 */
		rd_kafka_resp_err_t e;
		long		rtt = 0;

		if (!parse_int(argv[1], 1, 1000, &a) || (b = parse_api_key(argv[2])) < 0 ||
			!parse_int(argv[3], 1, 100000, &c) || !parse_error(argv[4], &e) ||
			(argc == 6 && !parse_int(argv[5], 0, 3600000, &rtt)))
			return "usage: broker_errors BROKERID APIKEY CNT ERR [RTT_MS]";
		for (long i = 0; i < c && !err; i++)
			err = rd_kafka_mock_broker_push_request_error_rtts(mc, (int32_t) a,
															   (int16_t) b, 1,
															   e, (int) rtt);
	}
	else
		return "unknown command or wrong arguments";

	if (err)
	{
		snprintf(why, sizeof(why), "%s", rd_kafka_err2str(err));
		return why;
	}
	return NULL;
}

static void
usage(void)
{
	fprintf(stderr, "usage: mockcluster [--brokers N] [--seed N] [--nagle]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	int			brokers = 3;
	unsigned	seed = (unsigned) time(NULL) ^ (unsigned) getpid();
	char		errstr[512];
	char		line[MAX_LINE];
	rd_kafka_conf_t *conf;
	rd_kafka_t *rk;
	rd_kafka_mock_cluster_t *mc;
	bool		quit = false;

	for (int i = 1; i < argc; i++)
	{
		if (strcmp(argv[i], "--brokers") == 0 && i + 1 < argc)
			brokers = atoi(argv[++i]);
		else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc)
			seed = (unsigned) strtoul(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--nagle") == 0)
			nagle = true;
		else
			usage();
	}
	if (brokers < 1 || brokers > 100)
		usage();
	srandom(seed);

	/*
	 * The mock cluster needs a client handle for its bookkeeping; this one
	 * has no brokers of its own and produces nothing.
	 */
	conf = rd_kafka_conf_new();
	if (rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
	{
		fprintf(stderr, "mockcluster: %s\n", errstr);
		return 1;
	}
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	if (!rk)
	{
		fprintf(stderr, "mockcluster: %s\n", errstr);
		return 1;
	}
	mc = rd_kafka_mock_cluster_new(rk, brokers);
	if (!mc)
	{
		fprintf(stderr, "mockcluster: could not create the mock cluster\n");
		return 1;
	}
	printf("%s\n", rd_kafka_mock_cluster_bootstraps(mc));
	fflush(stdout);

	while (!quit && fgets(line, sizeof(line), stdin))
	{
		char	   *args[64];
		int			n = 0;
		const char *why;

		for (char *tok = strtok(line, " \t\r\n"); tok && n < 64; tok = strtok(NULL, " \t\r\n"))
			args[n++] = tok;
		if (n == 0 || args[0][0] == '#')
			continue;
		why = run_command(mc, n, args, &quit);
		if (why)
			printf("error %s\n", why);
		else
			printf("ok\n");
		fflush(stdout);
	}

	rd_kafka_mock_cluster_destroy(mc);
	rd_kafka_destroy(rk);
	return 0;
}
