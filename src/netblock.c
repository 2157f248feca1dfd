/*-------------------------------------------------------------------------
 * netblock.c
 *		outbox.blocked_networks: the networks the relay never connects to.
 *
 * The setting is a comma-separated list of CIDRs (IPv4 and IPv6; a bare
 * address means just that address).  http.c checks it against the address
 * curl is about to open a socket to, after DNS resolution, and again
 * against the peer of a connection it is about to reuse (the list may have
 * changed since the connection was made).  So numeric spellings of an
 * address (http://2130706433/, http://0/), names that resolve to a blocked
 * address and DNS rebinding all meet the same check.
 *
 * An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is checked as the IPv4
 * address it carries as well, so ::ffff:169.254.169.254 is as blocked as
 * 169.254.169.254.
 *
 * The check hook parses the list into malloc'd "extra" (the GUC machinery
 * owns it); it runs in the postmaster too, so it never ereports.  A reload
 * may free that list at any time, so librdkafka's threads (kafka.c checks
 * the addresses its brokers connect to) match against a copy of their own
 * (netblock_copy).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "utils/guc.h"

#include "netblock.h"

typedef struct NetBlock
{
	int			family;			/* AF_INET or AF_INET6 */
	int			bits;			/* prefix length */
	uint8		addr[16];		/* network address, host bits cleared */
} NetBlock;

struct NetBlockList
{
	int			n;
	NetBlock	blocks[FLEXIBLE_ARRAY_MEMBER];
};

char	   *outbox_blocked_networks = NULL;
static const NetBlockList *blocked = NULL;	/* the parsed setting */

/* Does addr (len bytes) fall in the first bits of net? */
static bool
netblock_prefix_match(const uint8 *addr, const uint8 *net, int bits)
{
	int			whole = bits / 8;
	int			rest = bits % 8;

	if (memcmp(addr, net, whole) != 0)
		return false;
	return rest == 0 || ((addr[whole] ^ net[whole]) & (0xff << (8 - rest))) == 0;
}

/* Parse one CIDR ("10.0.0.0/8", "fe80::/10", "::1") into b; false if bad. */
static bool
netblock_parse_one(const char *item, NetBlock *b)
{
	char		host[INET6_ADDRSTRLEN];
	const char *slash = strchr(item, '/');
	size_t		hostlen = slash ? slash - item : strlen(item);
	int			maxbits;

	if (hostlen >= sizeof(host))
		return false;
	memcpy(host, item, hostlen);
	host[hostlen] = '\0';
	memset(b, 0, sizeof(NetBlock));
	if (inet_pton(AF_INET, host, b->addr) == 1)
	{
		b->family = AF_INET;
		maxbits = 32;
	}
	else if (inet_pton(AF_INET6, host, b->addr) == 1)
	{
		b->family = AF_INET6;
		maxbits = 128;
	}
	else
		return false;
	b->bits = maxbits;
	if (slash)
	{
		char	   *end;
		long		bits = strtol(slash + 1, &end, 10);

		/* digits only: strtol would also take " 8", "+8" and "-0" */
		if (!isdigit((unsigned char) slash[1]) || *end != '\0' || bits > maxbits)
			return false;
		b->bits = (int) bits;
	}
	/* clear the host bits, so that matching compares prefixes only */
	for (int i = 0; i < 16; i++)
	{
		int			keep = Min(8, Max(0, b->bits - 8 * i));

		b->addr[i] &= (uint8) (0xff00 >> keep);
	}
	return true;
}

/* Check hook of outbox.blocked_networks: parse it, or say which item is bad. */
bool
netblock_check(char **newval, void **extra, GucSource source)
{
	char	   *copy = pstrdup(*newval ? *newval : "");
	int			max = 1;
	NetBlockList *list;
	char	   *tok;
	char	   *save;

	for (char *c = copy; *c; c++)
		if (*c == ',')
			max++;
	list = malloc(offsetof(NetBlockList, blocks) + sizeof(NetBlock) * max);
	if (list == NULL)
	{
		pfree(copy);
		GUC_check_errcode(ERRCODE_OUT_OF_MEMORY);
		return false;
	}
	list->n = 0;
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
	{
		char	   *item = tok;
		char	   *end;

		while (*item == ' ' || *item == '\t' || *item == '\n')
			item++;
		end = item + strlen(item);
		while (end > item && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n'))
			*--end = '\0';
		if (*item == '\0')
			continue;
		if (!netblock_parse_one(item, &list->blocks[list->n]))
		{
			GUC_check_errdetail("\"%s\" is not an IPv4 or IPv6 network in CIDR notation.", item);
			GUC_check_errhint("Give a comma-separated list such as \"169.254.0.0/16, fe80::/10\".");
			free(list);
			pfree(copy);
			return false;
		}
		list->n++;
	}
	pfree(copy);
	*extra = list;
	return true;
}

void
netblock_assign(const char *newval, void *extra)
{
	blocked = extra;
}

/*
 * A copy of the current setting for another thread (malloc'd, never
 * changed; free() it), or NULL if nothing is blocked.  In the relay only.
 */
NetBlockList *
netblock_copy(void)
{
	NetBlockList *copy;
	size_t		size;

	if (blocked == NULL || blocked->n == 0)
		return NULL;
	size = offsetof(NetBlockList, blocks) + sizeof(NetBlock) * blocked->n;
	copy = malloc(size);
	if (copy == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	memcpy(copy, blocked, size);
	return copy;
}

/* Is the socket address sa blocked by the current setting?  See netblock_blocked_in. */
bool
netblock_blocked(const struct sockaddr *sa, char *addrbuf, size_t buflen)
{
	return netblock_blocked_in(blocked, sa, addrbuf, buflen);
}

/*
 * Is the socket address sa in list (NULL: none)?  If so, its text form goes
 * to addrbuf.  Plain C, no palloc or ereport: curl's callbacks and
 * librdkafka's threads call it.
 */
bool
netblock_blocked_in(const NetBlockList *list, const struct sockaddr *sa, char *addrbuf, size_t buflen)
{
	uint8		addr[16];
	uint8		mapped[4];
	bool		is_mapped = false;
	int			family = sa->sa_family;

	if (list == NULL)
		return false;
	if (family == AF_INET)
		memcpy(addr, &((const struct sockaddr_in *) sa)->sin_addr, 4);
	else if (family == AF_INET6)
	{
		static const uint8 v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

		memcpy(addr, &((const struct sockaddr_in6 *) sa)->sin6_addr, 16);
		is_mapped = memcmp(addr, v4mapped, 12) == 0;
		memcpy(mapped, addr + 12, 4);
	}
	else
		return false;			/* nothing else is opened for http(s) or Kafka */

	for (int i = 0; i < list->n; i++)
	{
		const NetBlock *b = &list->blocks[i];
		bool		hit;

		if (b->family == family)
			hit = netblock_prefix_match(addr, b->addr, b->bits);
		else
			hit = is_mapped && b->family == AF_INET &&
				netblock_prefix_match(mapped, b->addr, b->bits);
		if (hit)
		{
			inet_ntop(family, addr, addrbuf, buflen);
			return true;
		}
	}
	return false;
}

/* The same, for an address curl gives as text (a reused connection's peer). */
bool
netblock_blocked_text(const char *ip, char *addrbuf, size_t buflen)
{
	struct sockaddr_in6 sa6 = {0};
	struct sockaddr_in sa4 = {0};

	if (inet_pton(AF_INET, ip, &sa4.sin_addr) == 1)
	{
		sa4.sin_family = AF_INET;
		return netblock_blocked((struct sockaddr *) &sa4, addrbuf, buflen);
	}
	if (inet_pton(AF_INET6, ip, &sa6.sin6_addr) == 1)
	{
		sa6.sin6_family = AF_INET6;
		return netblock_blocked((struct sockaddr *) &sa6, addrbuf, buflen);
	}
	return false;
}
