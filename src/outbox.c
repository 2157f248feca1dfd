/*-------------------------------------------------------------------------
 * outbox.c
 *		Module magic, _PG_init and the GUCs.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "outbox.h"
#include "launcher.h"
#include "shmem.h"
#include "netblock.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

int			outbox_max_payload_bytes = 1024 * 1024;
int			outbox_max_databases = 16;
int			outbox_max_endpoints = 64;
int			outbox_max_projections = 64;
int			outbox_retention_s = 3600;
int			outbox_inbox_retention_s = 7 * 24 * 3600;

/*
 * The value set by the server's configuration (file, command line, ALTER
 * SYSTEM).  Sessions, roles and databases may only lower the limit below it.
 */
static int	payload_ceiling = 1024 * 1024;

/*
 * Check hook of outbox.max_payload_bytes: configuration sources set the
 * ceiling, every later source (ALTER DATABASE/ROLE SET, PGOPTIONS, SET) may
 * only go down from it.  No catalog access here: the hook also runs while a
 * backend starts and in the postmaster.
 */
static bool
check_max_payload_bytes(int *newval, void **extra, GucSource source)
{
	if (source <= PGC_S_ARGV)
	{
		payload_ceiling = *newval;
		return true;
	}
	if (source != PGC_S_OVERRIDE && *newval > payload_ceiling)
	{
		GUC_check_errdetail("outbox.max_payload_bytes can only be lowered below the server's setting of %d bytes.",
							payload_ceiling);
		GUC_check_errhint("Raise it in postgresql.conf or with ALTER SYSTEM.");
		return false;
	}
	return true;
}

void
_PG_init(void)
{
	DefineCustomIntVariable("outbox.max_payload_bytes",
							"Largest message payload or event data outbox accepts.",
							"Measured in PostgreSQL's binary jsonb form. Sessions may lower it, not raise it.",
							&outbox_max_payload_bytes,
							1024 * 1024,
							1,
							MaxAllocSize / 2,
							PGC_USERSET,
							GUC_UNIT_BYTE,
							check_max_payload_bytes,
							NULL,
							NULL);

	DefineCustomIntVariable("outbox.retention",
							"How long consumed messages are kept before the relay deletes them.",
							"Messages an endpoint still has to deliver (waiting, retrying, dead-lettered) or a subscription has not acknowledged are kept regardless.",
							&outbox_retention_s,
							3600,
							0,
							INT_MAX / 1000,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL,
							NULL,
							NULL);

	DefineCustomIntVariable("outbox.inbox_retention",
							"How long outbox.consume_once remembers a message id.",
							"The relay deletes older rows of outbox._inbox; a repeat arriving later is not recognised.  0 keeps them forever.",
							&outbox_inbox_retention_s,
							7 * 24 * 3600,
							0,
							INT_MAX / 1000,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL,
							NULL,
							NULL);

	DefineCustomStringVariable("outbox.blocked_networks",
							   "Networks the relay never connects to (comma-separated CIDRs, IPv4 and IPv6).",
							   "Checked against the address each connection goes to, after DNS resolution. "
							   "A delivery to a blocked address is dead-lettered at once.",
							   &outbox_blocked_networks,
							   NETBLOCK_DEFAULT,
							   PGC_SIGHUP,
							   GUC_LIST_INPUT,
							   netblock_check,
							   netblock_assign,
							   NULL);

	/*
	 * Workers and their settings need shared_preload_libraries: PGC_POSTMASTER
	 * settings cannot even be defined later (a FATAL error).  Without it the
	 * SQL API still works.
	 */
	if (process_shared_preload_libraries_in_progress)
	{
		DefineCustomIntVariable("outbox.max_endpoints",
								"Most endpoints per database whose statistics outbox.stat_endpoints shows.",
								"Each takes a little shared memory per database slot; delivery itself has no limit.",
								&outbox_max_endpoints,
								64,
								1,
								10000,
								PGC_POSTMASTER,
								0,
								NULL,
								NULL,
								NULL);
		DefineCustomIntVariable("outbox.max_projections",
								"Most inline projections per database whose handler calls outbox.stat_projections counts.",
								"Each takes a few bytes of shared memory per database slot; projections themselves have no limit.",
								&outbox_max_projections,
								64,
								1,
								10000,
								PGC_POSTMASTER,
								0,
								NULL,
								NULL,
								NULL);
		DefineCustomIntVariable("outbox.max_databases",
								"Most databases that can have a relay at once.",
								"Each takes a shared-memory slot; a relay also needs a max_worker_processes slot.",
								&outbox_max_databases,
								16,
								1,
								1024,
								PGC_POSTMASTER,
								0,
								NULL,
								NULL,
								NULL);
	}

	/* after every definition: it drops the placeholders of unknown names */
	MarkGUCPrefixReserved("outbox");

	shmem_init();
	if (process_shared_preload_libraries_in_progress)
	{
		launcher_init_hooks();
		if (!IsBinaryUpgrade)
			launcher_register();
	}
}
