/*-------------------------------------------------------------------------
 * catalog.h
 *		Cached OIDs of the installed extension's objects (catalog.c).
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_CATALOG_H
#define OUTBOX_CATALOG_H

#include "outbox.h"

/* catalog.c: cached OIDs of the installed extension's objects */
extern Oid	outbox_schema_oid(void);
extern Oid	outbox_owner_oid(void);
extern Oid	outbox_relid(const char *relname);
extern Relation outbox_table_open(Oid relid, LOCKMODE lockmode);
extern char *outbox_extension_version(void);

#endif							/* OUTBOX_CATALOG_H */
