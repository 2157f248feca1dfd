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

#ifdef __GLIBC__
#include <malloc.h>
#endif

/*
 * Pin the search_path to pg_catalog while outbox's own statements run, so
 * operator lookups in our SPI text can never be hijacked by a caller's
 * search_path.  PostgreSQL 15 offers override search paths for this; 17
 * removes them (a GUC nest level does the same there).
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

/*
 * Give large freed blocks back to the system at once.  glibc raises its
 * mmap threshold each time it frees a large mapped block (up to 32 MB),
 * after which request bodies come from the heap and stay there once freed:
 * the relay's memory would keep its high-water mark, not its live size.
 * Other allocators need nothing here.
 */
static inline void
compat_return_large_blocks(void)
{
#ifdef __GLIBC__
	mallopt(M_MMAP_THRESHOLD, 1024 * 1024);
#endif
}

#endif							/* OUTBOX_COMPAT_H */
