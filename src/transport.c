/*-------------------------------------------------------------------------
 * transport.c
 *		Choosing an endpoint's transport by its URL's scheme, and the relay's
 *		one wait: its latch, postmaster death, and each transport's
 *		descriptor, bounded by the transports' own deadlines (transport.h).
 *
 * The wait set is made once, when the relay starts: every transport is
 * started then, so that no descriptor ever has to be added to or removed
 * from it (a transport multiplexes its own sockets or queues behind its one
 * descriptor: curl's epoll set, librdkafka's event queue).  An idle relay
 * sleeps in one WaitEventSetWait.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/memutils.h"

#include "backoff.h"
#include "kafka.h"
#include "transport.h"

static const TransportOps *const transports[] = {
	&webhook_transport,
	&kafka_transport,
};

#define NTRANSPORTS		lengthof(transports)
/* latch, postmaster death, and a descriptor per transport */
#define WAIT_EVENTS		(2 + NTRANSPORTS)

static WaitEventSet *wait_set = NULL;

/* The transport of an endpoint URL (as create_endpoint normalised it), or NULL. */
const TransportOps *
transport_for_url(const char *url)
{
	if (pg_strncasecmp(url, "http://", 7) == 0 || pg_strncasecmp(url, "https://", 8) == 0)
		return &webhook_transport;
	if (kafka_url_is_kafka(url))
		return &kafka_transport;
	return NULL;
}

/* Start every transport and make the relay's wait set; once, at relay start. */
void
transport_init(void)
{
	wait_set = CreateWaitEventSet(TopMemoryContext, WAIT_EVENTS);
	AddWaitEventToSet(wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	for (int i = 0; i < NTRANSPORTS; i++)
	{
		pgsocket	fd = transports[i]->init();

		if (fd != PGINVALID_SOCKET)
			AddWaitEventToSet(wait_set, WL_SOCKET_READABLE, fd, NULL,
							  (void *) transports[i]);
	}
}

/*
 * Sleep until the latch is set, the postmaster dies, a transport has
 * progress to make, or timeout_ms passes (-1: no limit but the transports'
 * own deadlines); then let every transport make progress.  No transaction
 * may be open.
 */
void
transport_wait(long timeout_ms)
{
	WaitEvent	events[WAIT_EVENTS];
	int			nready;

	Assert(!IsTransactionState() && wait_set != NULL);
	for (int i = 0; i < NTRANSPORTS; i++)
		timeout_ms = sooner(timeout_ms, transports[i]->timeout());
	nready = WaitEventSetWait(wait_set, timeout_ms, events, lengthof(events), PG_WAIT_EXTENSION);
	for (int i = 0; i < NTRANSPORTS; i++)
	{
		bool		ready = false;

		for (int j = 0; j < nready; j++)
			if ((events[j].events & WL_SOCKET_READABLE) && events[j].user_data == transports[i])
				ready = true;
		transports[i]->progress(ready);
	}
}

/* The next finished request of any transport, if any. */
bool
transport_next_result(TransportResult *r)
{
	if (wait_set == NULL)
		return false;
	for (int i = 0; i < NTRANSPORTS; i++)
		if (transports[i]->next_result(r))
			return true;
	return false;
}

/* Free jb, a message's jsonb as a transport detoasted it from d, if it is a copy. */
void
transport_jsonb_free(Jsonb *jb, Datum d)
{
	if (jb != NULL && (Pointer) jb != DatumGetPointer(d))
		pfree(jb);
}

/* Requests out, not yet reported, of every transport. */
int
transport_in_flight(void)
{
	int			n = 0;

	if (wait_set == NULL)
		return 0;
	for (int i = 0; i < NTRANSPORTS; i++)
		n += transports[i]->in_flight();
	return n;
}
