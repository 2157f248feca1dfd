/*-------------------------------------------------------------------------
 * netblock.h
 *		outbox.blocked_networks (netblock.c): used by outbox.c, http.c and
 *		kafka.c.
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_NETBLOCK_H
#define OUTBOX_NETBLOCK_H

#include "utils/guc.h"

struct sockaddr;

/* The parsed setting (netblock.c) */
typedef struct NetBlockList NetBlockList;

/*
 * Link-local (cloud metadata services live there: 169.254.169.254 and AWS's
 * fd00:ec2::254) and unspecified addresses.  Loopback and private ranges are
 * left to the operator: internal webhooks are the main use.
 */
#define NETBLOCK_DEFAULT \
	"169.254.0.0/16, fe80::/10, 0.0.0.0/8, ::/128, fd00:ec2::254/128"

extern char *outbox_blocked_networks;

extern bool netblock_check(char **newval, void **extra, GucSource source);
extern void netblock_assign(const char *newval, void *extra);
extern bool netblock_blocked(const struct sockaddr *sa, char *addrbuf, size_t buflen);
extern bool netblock_blocked_text(const char *ip, char *addrbuf, size_t buflen);
extern NetBlockList *netblock_copy(void);
extern bool netblock_blocked_in(const NetBlockList *list, const struct sockaddr *sa,
								char *addrbuf, size_t buflen);

#endif							/* OUTBOX_NETBLOCK_H */
