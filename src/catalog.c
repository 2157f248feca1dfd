/*-------------------------------------------------------------------------
 * catalog.c
 *		Cached OIDs of the extension's schema, owner and relations.
 *
 * The extension can be dropped and created again within one backend, so the
 * cache is reset by relcache and namespace invalidations rather than kept
 * forever.  Lookups go through the syscache and an index scan of
 * pg_extension (AccessShareLock, released at once).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "outbox.h"
#include "catalog.h"

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
 * The row of extension outbox in this database: its version (palloc'd),
 * owner and schema.  False if it is not installed.  Scans pg_extension:
 * there is no syscache for it.  Needs a transaction.
 */
static bool
catalog_read_extension(char **version, Oid *owner, Oid *nsp)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	bool		found;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum("outbox"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	found = HeapTupleIsValid(tup);
	if (found)
	{
		Form_pg_extension ext = (Form_pg_extension) GETSTRUCT(tup);
		bool		isnull;
		Datum		d = heap_getattr(tup, Anum_pg_extension_extversion,
									 RelationGetDescr(rel), &isnull);

		*version = isnull ? NULL : text_to_cstring(DatumGetTextPP(d));
		*owner = ext->extowner;
		*nsp = ext->extnamespace;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

/*
 * The version of extension outbox installed in this database (palloc'd),
 * or NULL if none.  Needs a transaction.
 */
char *
outbox_extension_version(void)
{
	char	   *version = NULL;
	Oid			owner;
	Oid			nsp;

	if (!catalog_read_extension(&version, &owner, &nsp))
		return NULL;
	return version;
}

/*
 * The OID of schema outbox; errors out when the extension is not installed
 * in this database (the library can be loaded without it), or is at another
 * version than the library (55000, until ALTER EXTENSION outbox UPDATE).
 * Only a database at the right version is cached.
 *
 * The owner is the extension's (pg_extension.extowner), never the schema's:
 * a schema outbox created before CREATE EXTENSION may belong to anyone, and
 * the C code and the relay run their statements as this role.  (The install
 * and upgrade scripts refuse a schema the extension owner does not own.)
 */
Oid
outbox_schema_oid(void)
{
	char	   *version = NULL;
	Oid			owner = InvalidOid;
	Oid			nsp = InvalidOid;

	if (OidIsValid(schema_oid))
		return schema_oid;

	if (!callbacks_registered)
	{
		CacheRegisterSyscacheCallback(NAMESPACEOID, catalog_reset, (Datum) 0);
		CacheRegisterRelcacheCallback(catalog_relcache_reset, (Datum) 0);
		callbacks_registered = true;
	}

	/* opening pg_extension may run catalog_reset: set the cache after it */
	if (!catalog_read_extension(&version, &owner, &nsp))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"outbox\" is not installed in this database"),
				 errhint("Run CREATE EXTENSION outbox.")));
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

/* The role that owns the extension, and runs its statements. */
Oid
outbox_owner_oid(void)
{
	(void) outbox_schema_oid();
	return owner_oid;
}

/*
 * Open a relation of the extension by its cached OID.  A DROP EXTENSION
 * that committed while we waited for the lock leaves the OID dangling:
 * that is 55000, not "could not open relation" (XX000).
 */
Relation
outbox_table_open(Oid relid, LOCKMODE lockmode)
{
	Relation	rel = try_table_open(relid, lockmode);

	if (rel == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"outbox\" was dropped or changed concurrently"),
				 errhint("Retry; if the extension is gone, run CREATE EXTENSION outbox.")));
	return rel;
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
