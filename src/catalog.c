/*-------------------------------------------------------------------------
 * catalog.c
 *		Cached OIDs of the extension's schema, owner and relations.
 *
 * The extension can be dropped and created again within one backend, so the
 * cache is reset by relcache and namespace invalidations rather than kept
 * forever.  Lookups go through the syscache; no locks are taken here.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_namespace.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "outbox.h"

#define MAX_CACHED_RELS 16

typedef struct CachedRel
{
	const char *name;			/* a string literal of the caller's */
	Oid			relid;
} CachedRel;

static bool callbacks_registered = false;
static Oid	schema_oid = InvalidOid;
static Oid	owner_oid = InvalidOid;
static CachedRel rels[MAX_CACHED_RELS];
static int	nrels = 0;

static void
catalog_reset(Datum arg, int cacheid, uint32 hashvalue)
{
	schema_oid = InvalidOid;
	owner_oid = InvalidOid;
	nrels = 0;
}

static void
catalog_relcache_reset(Datum arg, Oid relid)
{
	/* InvalidOid: every relation (ALTER EXTENSION outbox UPDATE sends it) */
	if (relid == InvalidOid)
	{
		catalog_reset(arg, 0, 0);
		return;
	}
	for (int i = 0; i < nrels; i++)
	{
		if (rels[i].relid == relid)
		{
			catalog_reset(arg, 0, 0);
			return;
		}
	}
}

/*
 * The version of extension outbox installed in this database (palloc'd),
 * or NULL if none.  Scans pg_extension: there is no syscache for it.  Needs
 * a transaction.
 */
char *
outbox_extension_version(void)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	char	   *version = NULL;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum("outbox"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, Anum_pg_extension_extversion,
									 RelationGetDescr(rel), &isnull);

		if (!isnull)
			version = text_to_cstring(DatumGetTextPP(d));
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return version;
}

/*
 * The OID of schema outbox; errors out when the extension is not installed
 * in this database (the library can be loaded without it), or is at another
 * version than the library (55000, until ALTER EXTENSION outbox UPDATE).
 * Only a database at the right version is cached.
 */
Oid
outbox_schema_oid(void)
{
	HeapTuple	tup;
	Oid			nsp;
	Oid			owner;
	char	   *version;

	if (OidIsValid(schema_oid))
		return schema_oid;

	if (!callbacks_registered)
	{
		CacheRegisterSyscacheCallback(NAMESPACEOID, catalog_reset, (Datum) 0);
		CacheRegisterRelcacheCallback(catalog_relcache_reset, (Datum) 0);
		callbacks_registered = true;
	}

	tup = SearchSysCache1(NAMESPACENAME, CStringGetDatum("outbox"));
	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"outbox\" is not installed in this database"),
				 errhint("Run CREATE EXTENSION outbox.")));
	nsp = ((Form_pg_namespace) GETSTRUCT(tup))->oid;
	owner = ((Form_pg_namespace) GETSTRUCT(tup))->nspowner;
	ReleaseSysCache(tup);
	/* opening pg_extension may run catalog_reset: set the cache after it */
	version = outbox_extension_version();
	if (version != NULL && strcmp(version, OUTBOX_VERSION) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"outbox\" is at version %s, but its library is version %s",
						version, OUTBOX_VERSION),
				 errhint("Run ALTER EXTENSION outbox UPDATE.")));
	schema_oid = nsp;
	owner_oid = owner;
	return schema_oid;
}

/* The role that owns the extension's objects, and runs its statements. */
Oid
outbox_owner_oid(void)
{
	(void) outbox_schema_oid();
	return owner_oid;
}

/* The OID of relation outbox.<relname>; relname must be a string literal. */
Oid
outbox_relid(const char *relname)
{
	Oid			nsp = outbox_schema_oid();
	Oid			relid;

	for (int i = 0; i < nrels; i++)
		if (strcmp(rels[i].name, relname) == 0)
			return rels[i].relid;

	relid = get_relname_relid(relname, nsp);
	if (!OidIsValid(relid))
		elog(ERROR, "relation outbox.%s is missing", relname);
	if (nrels < MAX_CACHED_RELS)
	{
		rels[nrels].name = relname;
		rels[nrels].relid = relid;
		nrels++;
	}
	return relid;
}
