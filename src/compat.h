/*-------------------------------------------------------------------------
 * compat.h
 *		Every PostgreSQL version guard of outbox lives here.
 *
 * outbox targets PostgreSQL 15.  The rest of the code calls the wrappers
 * below and never tests PG_VERSION_NUM itself.
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_COMPAT_H
#define OUTBOX_COMPAT_H

#include "postgres.h"

#if PG_VERSION_NUM < 150000 || PG_VERSION_NUM >= 160000
#error "outbox supports PostgreSQL 15 only"
#endif

#include "catalog/namespace.h"

/*
 * Plans prepared under a pinned search_path keep it when they are re-planned
 * (the plan cache records the path in force at preparation), so operator
 * lookups in our SPI text can never be hijacked by a caller's search_path.
 * PostgreSQL 15 offers override search paths for this; 17 removes them.
 */
static inline void
compat_push_catalog_search_path(void)
{
	OverrideSearchPath path = {0};

	path.schemas = NIL;
	path.addCatalog = true;
	path.addTemp = false;
	PushOverrideSearchPath(&path);
}

static inline void
compat_pop_search_path(void)
{
	PopOverrideSearchPath();
}

#endif							/* OUTBOX_COMPAT_H */
