/*-------------------------------------------------------------------------
 * projection.c
 *		Applying events to projections: a projection's definition, calling
 *		its handler, the inline path inside outbox.append, and the replay of
 *		rebuild_projection and resume_projection.  (projector.c is the
 *		async side, the projector worker.)
 *
 * A handler gets one outbox.events row.  It runs as the projection's run_as
 * role (its creator), as a restricted operation with a fixed search_path
 * and its setting changes undone (projection_invoke), and only ever outside
 * our SPI sections.  It is stored by signature and looked up when an event
 * first needs it, never a temporary function nor one owned by a role the
 * run_as role does not trust (projection_check_function).
 *
 * Inline projections are cached per backend.  Every change to them (create,
 * drop, pause, resume, rebuild) takes a SHARE lock on outbox._events, which
 * waits for the appends in flight and holds new ones back, and sends a
 * relcache invalidation of outbox._projections at commit.  An append reads
 * the cache only once it holds its own lock on outbox._events (taking it
 * processes that invalidation) and rebuilds it with a fresh snapshot.  So an
 * append applies exactly the inline projections running when it took its
 * lock, even in REPEATABLE READ.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/typcache.h"
#include "utils/xid8.h"

#include "outbox.h"
#include "catalog.h"
#include "eventparse.h"
#include "eventstore.h"
#include "gapless.h"
#include "projection.h"
#include "shmem.h"
#include "spi.h"
#include "options.h"

PG_FUNCTION_INFO_V1(outbox_create_projection);
PG_FUNCTION_INFO_V1(outbox_projections_changed);
PG_FUNCTION_INFO_V1(outbox_replay_projection);
PG_FUNCTION_INFO_V1(outbox_reset_projection);
PG_FUNCTION_INFO_V1(outbox_projection_live_applied);

#define REPLAY_BATCH	1000	/* events read per query by a replay (memory: rows are detoasted) */
#define EVENT_COLS		8		/* the columns of outbox.events */

static OutboxPlan plan_all = {
	"SELECT " PROJECTION_COLUMNS " FROM outbox._projections ORDER BY id",
	0, {0}
};
static OutboxPlan plan_by_id = {
	"SELECT " PROJECTION_COLUMNS " FROM outbox._projections WHERE id = $1",
	1, {INT4OID}
};
static OutboxPlan plan_create = {
	"SELECT outbox._create_projection($1, $2, $3, $4, $5, $6, $7, $8)",
	8, {TEXTOID, REGPROCEDUREOID, TEXTARRAYOID, TEXTOID, TEXTOID, REGPROCEDUREOID, JSONBOID, NAMEOID}
};

/* the inline projections cache: running inline projections, in id order */
static MemoryContext cache_cxt = NULL;
static List *inline_cache = NIL;
static bool cache_valid = false;
static bool cache_has_async = false;	/* appends must wake the projector */
static Oid	cache_relid = InvalidOid;	/* outbox._projections, for the callback */
static bool callback_registered = false;

static void
projection_cache_reset(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == cache_relid)
		cache_valid = false;
}

/* a function or a role changed: handlers, privileges and settings are looked up again */
static void
projection_cache_reset_syscache(Datum arg, int cacheid, uint32 hashvalue)
{
	cache_valid = false;
}

static char *function_search_path(Oid fn);

/* ---- definitions ---- */

/* to_regprocedure: a stored signature's function, or InvalidOid */
static Oid
function_oid(const char *signature)
{
	LOCAL_FCINFO(fcinfo, 1);
	Datum		result;

	InitFunctionCallInfoData(*fcinfo, NULL, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = CStringGetTextDatum(signature);
	fcinfo->args[0].isnull = false;
	result = to_regprocedure(fcinfo);
	return fcinfo->isnull ? InvalidOid : DatumGetObjectId(result);
}

/*
 * May a function owned by owner run with run_as's rights?  Only if whoever
 * can change it could act as run_as already: owner has run_as's privileges
 * (it is run_as, inherits from it, or is a superuser), and so has every
 * role that can become owner.  Not a role run_as is a member of: any other
 * member of that group (a writer in a shared team role, any member of
 * outbox_writer) could re-create the handler and have it run as run_as.
 * The handler's own schema is on its search_path (function_search_path),
 * so whoever may CREATE in it is trusted as much; the README says so.
 */
static bool
projection_trusts(Oid run_as, Oid owner)
{
	return has_privs_of_role(owner, run_as);
}

/*
 * Check that fn may be a handler or reset function (what) of projection
 * name, run as run_as: not a temporary function (its schema's name is
 * reused by other sessions), owned by a role run_as trusts, executable by
 * run_as.  At creation and at every resolution.
 */
static void
projection_check_function(const char *name, const char *what, Oid fn, Oid run_as)
{
	HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	Form_pg_proc proc;
	char	   *signature;

	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("%s %u of projection \"%s\" does not exist", what, fn, name)));
	proc = (Form_pg_proc) GETSTRUCT(tup);
	signature = format_procedure_qualified(fn);
	if (isAnyTempNamespace(proc->pronamespace))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s %s of projection \"%s\" is a temporary function", what, signature, name),
				 errdetail("A temporary function goes with its session, and another session can create one of the same name."),
				 errhint("Create the function in a permanent schema.")));
	if (!projection_trusts(run_as, proc->proowner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("%s %s of projection \"%s\" is owned by role \"%s\", which role \"%s\" does not trust",
						what, signature, name, GetUserNameFromId(proc->proowner, false),
						GetUserNameFromId(run_as, false)),
				 errdetail("The function runs as role \"%s\": it must be owned by that role, a role that has its privileges, or a superuser.",
						   GetUserNameFromId(run_as, false)),
				 errhint("Create the function as role \"%s\", or drop and create the projection again.",
						 GetUserNameFromId(run_as, false))));
	ReleaseSysCache(tup);
	if (pg_proc_aclcheck(fn, run_as, ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" may no longer execute %s %s of projection \"%s\"",
						GetUserNameFromId(run_as, false), what, signature, name)));
}

/*
 * A stored signature's function of p, checked (above), 42883 if it is gone;
 * resolves p's role first.
 */
static Oid
projection_function(Projection *p, const char *what, const char *signature)
{
	Oid			fn;

	if (!OidIsValid(p->run_as))
		p->run_as = get_role_oid(p->run_as_name, true);
	if (!OidIsValid(p->run_as))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role \"%s\" of projection \"%s\" does not exist", p->run_as_name, p->name),
				 errhint("Create the projection again as an existing role.")));
	fn = function_oid(signature);
	if (!OidIsValid(fn))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("%s %s of projection \"%s\" does not exist", what, signature, p->name),
				 errhint("Create the function again, or drop the projection with outbox.drop_projection().")));
	projection_check_function(p->name, what, fn, p->run_as);
	return fn;
}

/*
 * A projection from a row of PROJECTION_COLUMNS (the current SPI result),
 * allocated in cxt.  Its role and functions are resolved on first use
 * (projection_resolve): a dropped handler or role fails only what would
 * call the handler.
 */
Projection *
projection_from_spi(HeapTuple tup, MemoryContext cxt)
{
	TupleDesc	desc = SPI_tuptable->tupdesc;
	MemoryContext old = MemoryContextSwitchTo(cxt);
	Projection *p = palloc0(sizeof(Projection));
	bool		isnull;
	Datum		d;
	ProjectionOptions opt;

	options_read(OPTIONS_PROJECTION, NULL, &opt);
	p->cxt = cxt;
	p->id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
	p->name = SPI_getvalue(tup, desc, 2);
	p->state = SPI_getvalue(tup, desc, 4);
	p->position = DatumGetInt64(SPI_getbinval(tup, desc, 5, &isnull));
	p->run_as_name = SPI_getvalue(tup, desc, 8);
	p->handler_signature = SPI_getvalue(tup, desc, 6);
	p->reset_signature = SPI_getvalue(tup, desc, 7);
	d = SPI_getbinval(tup, desc, 9, &isnull);
	if (!isnull)
	{
		Datum	   *elems;

		deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT,
						  &elems, NULL, &p->ntypes);
		p->types = palloc(sizeof(char *) * p->ntypes);
		for (int i = 0; i < p->ntypes; i++)
			p->types[i] = TextDatumGetCString(elems[i]);
	}
	p->prefix = SPI_getvalue(tup, desc, 10);
	/* options.c; only async projections use them, and fail if they cannot */
	p->options_problem = options_read(OPTIONS_PROJECTION,
									  DatumGetJsonbP(SPI_getbinval(tup, desc, 11, &isnull)), &opt);
	p->batch_size = opt.batch_size;
	MemoryContextSwitchTo(old);
	return p;
}

/*
 * Look the role and the handler up and check them, once per loaded
 * projection (the inline cache is reloaded after any function or role
 * change).  A failure leaves p unresolved: the next use tries again.
 */
static void
projection_resolve(Projection *p)
{
	Oid			fn;
	MemoryContext old;

	if (OidIsValid(p->handler))
		return;
	fn = projection_function(p, "handler", p->handler_signature);
	old = MemoryContextSwitchTo(p->cxt);
	fmgr_info_cxt(fn, &p->flinfo, p->cxt);
	p->search_path = function_search_path(fn);
	MemoryContextSwitchTo(old);
	p->handler = fn;
}

/* Projection id, loaded in the current memory context; 42704 if it is gone. */
static Projection *
projection_by_id(int id)
{
	OutboxSpi	spi = OUTBOX_SPI_INIT;
	MemoryContext cxt = CurrentMemoryContext;
	Datum		arg = Int32GetDatum(id);
	Projection *p;

	outbox_spi_begin(&spi);
	if (outbox_spi_run(&plan_by_id, &arg, NULL, false, 0, SPI_OK_SELECT) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("projection %d does not exist", id)));
	p = projection_from_spi(SPI_tuptable->vals[0], cxt);
	outbox_spi_end(&spi);
	return p;
}

/* Does the event pass the projection's filters? */
bool
projection_matches(const Projection *p, const char *stream, const char *type)
{
	if (p->prefix != NULL && strncmp(stream, p->prefix, strlen(p->prefix)) != 0)
		return false;
	if (p->types == NULL)
		return true;
	for (int i = 0; i < p->ntypes; i++)
		if (strcmp(p->types[i], type) == 0)
			return true;
	return false;
}

/* ---- calling user code ---- */

/*
 * The search_path user code runs with: pg_catalog, the function's own
 * schema, and pg_temp last -- never the caller's, which (in an appending
 * session) a writer controls: an operator or table planted there would run
 * with the projection role's privileges.
 */
static char *
function_search_path(Oid fn)
{
	char	   *schema = get_namespace_name(get_func_namespace(fn));

	return psprintf("pg_catalog, %s, pg_temp", quote_identifier(schema));
}

/*
 * Call user code as the projection's role, as a maintenance operation:
 * SECURITY_RESTRICTED_OPERATION (no temp objects, no SET ROLE), the fixed
 * search_path above, and every setting it changes undone afterwards, so a
 * handler cannot leave traps in the session (or the relay) for the next.
 */
static void
projection_invoke(Projection *p, FmgrInfo *flinfo, int nargs, Datum arg, const char *search_path)
{
	LOCAL_FCINFO(fcinfo, 1);
	Oid			save_userid;
	int			save_sec_context;
	int			nest;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(p->run_as, save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	nest = NewGUCNestLevel();
	/* setting it costs a namespace recomputation: batches set it once (projection_enter) */
	if (strcmp(namespace_search_path, search_path) != 0)
		(void) set_config_option("search_path", search_path, PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	InitFunctionCallInfoData(*fcinfo, flinfo, nargs, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = arg;
	fcinfo->args[0].isnull = false;
	(void) FunctionCallInvoke(fcinfo);
	/* an error instead: (sub)transaction abort restores both */
	AtEOXact_GUC(false, nest);
	SetUserIdAndSecContext(save_userid, save_sec_context);
}

/*
 * Around a batch of calls to p's handler: resolves it, and sets its
 * search_path once; undone by projection_leave (or by abort).
 */
int
projection_enter(Projection *p)
{
	int			nest;

	projection_resolve(p);
	nest = NewGUCNestLevel();

	(void) set_config_option("search_path", p->search_path, PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	return nest;
}

void
projection_leave(int nest)
{
	AtEOXact_GUC(false, nest);
}

/* Call the handler with one outbox.events row. */
void
projection_call(Projection *p, Datum row)
{
	projection_resolve(p);
	projection_invoke(p, &p->flinfo, 1, row, p->search_path);
}

/* An outbox.events row from its column values. */
static Datum
event_row(Datum *values)
{
	TupleDesc	desc = lookup_rowtype_tupdesc(get_rel_type_id(outbox_relid("events")), -1);
	bool		nulls[EVENT_COLS] = {0};
	Datum		row;

	Assert(desc->natts == EVENT_COLS);
	row = HeapTupleGetDatum(heap_form_tuple(desc, values, nulls));
	ReleaseTupleDesc(desc);
	return row;
}

/* ---- reading the log ---- */

/*
 * Up to limit events after position after, in position order, allocated in
 * the current memory context.  With gapless, the read uses the active
 * snapshot and stops where a running transaction could still add an event
 * before (gapless.c; *held_back says so); without, it takes a fresh
 * snapshot (the caller holds a lock that keeps appends out).
 */
int
projection_read(int64 after, int limit, bool gapless, ProjectionEvent **out, bool *held_back)
{
	OutboxSpi	spi = OUTBOX_SPI_INIT;
	MemoryContext cxt = CurrentMemoryContext;
	Datum		args[2] = {Int64GetDatum(after), Int32GetDatum(limit)};
	FullTransactionId horizon = InvalidFullTransactionId;
	ProjectionEvent *events;
	uint64		n;
	int			kept = 0;

	if (held_back)
		*held_back = false;
	outbox_spi_begin(&spi);
	if (gapless)
		horizon = gapless_horizon();
	n = outbox_spi_run(&outbox_plan_read_all, args, NULL, gapless, 0, SPI_OK_SELECT);
	events = MemoryContextAlloc(cxt, sizeof(ProjectionEvent) * Max(n, 1));
	for (uint64 i = 0; i < n; i++)
	{
		Datum		values[EVENT_COLS + 1];
		bool		nulls[EVENT_COLS + 1];
		MemoryContext old;

		heap_deform_tuple(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, values, nulls);
		if (gapless && gapless_holds_back(DatumGetFullTransactionId(values[EVENT_COLS]), horizon))
		{
			if (held_back)
				*held_back = true;
			break;
		}
		old = MemoryContextSwitchTo(cxt);
		events[kept].position = DatumGetInt64(values[0]);
		events[kept].stream = TextDatumGetCString(values[1]);
		events[kept].type = TextDatumGetCString(values[3]);
		events[kept].row = event_row(values);
		MemoryContextSwitchTo(old);
		kept++;
	}
	outbox_spi_end(&spi);
	*out = events;
	return kept;
}

/* ---- inline ---- */

/* The running inline projections, rebuilt after any change (see the top). */
static List *
inline_projections(void)
{
	OutboxSpi	spi = OUTBOX_SPI_INIT;
	MemoryContext cxt;
	List	   *volatile list = NIL;
	volatile bool has_async = false;
	uint64		n;

	if (cache_valid)
		return inline_cache;
	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(projection_cache_reset, (Datum) 0);
		CacheRegisterSyscacheCallback(PROCOID, projection_cache_reset_syscache, (Datum) 0);
		CacheRegisterSyscacheCallback(AUTHOID, projection_cache_reset_syscache, (Datum) 0);
		CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, projection_cache_reset_syscache, (Datum) 0);
		callback_registered = true;
	}
	/* set first: an invalidation arriving while we read clears it again */
	cache_valid = true;
	cache_relid = outbox_relid("_projections");
	cxt = AllocSetContextCreate(TopMemoryContext, "outbox inline projections", ALLOCSET_SMALL_SIZES);
	PG_TRY();
	{
		outbox_spi_begin(&spi);
		n = outbox_spi_run_latest(&plan_all, NULL, NULL, SPI_OK_SELECT);
		for (uint64 i = 0; i < n; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			char	   *mode = SPI_getvalue(tup, SPI_tuptable->tupdesc, 3);
			char	   *state = SPI_getvalue(tup, SPI_tuptable->tupdesc, 4);
			Projection *p;

			if (strcmp(mode, "async") == 0)
			{
				has_async |= strcmp(state, "running") == 0 || strcmp(state, "rebuilding") == 0;
				continue;
			}
			if (strcmp(state, "running") != 0)
				continue;
			p = projection_from_spi(tup, cxt);
			p->progress = shmem_projection_progress(MyDatabaseId, p->id, true);
			{
				MemoryContext old = MemoryContextSwitchTo(cxt);

				list = lappend((List *) list, p);
				MemoryContextSwitchTo(old);
			}
		}
		outbox_spi_end(&spi);
	}
	PG_CATCH();
	{
		cache_valid = false;
		MemoryContextDelete(cxt);
		PG_RE_THROW();
	}
	PG_END_TRY();

	/*
	 * A handler running now may be iterating over the old list (a handler
	 * that appends): free it with the transaction, not now.
	 */
	if (cache_cxt != NULL)
		MemoryContextSetParent(cache_cxt, TopTransactionContext);
	cache_cxt = cxt;
	inline_cache = (List *) list;
	cache_has_async = has_async;
	return inline_cache;
}

/*
 * Called by outbox.append after it inserted events versions first_version ..
 * first_version + n - 1 of stream, holding its lock on outbox._events: call
 * every matching inline handler, event by event in version order, and ask
 * for the projector at commit if async projections wait for events.  An error
 * aborts the append.
 */
void
projection_apply_inline(const char *stream, const EventInput *evs, int n, const int64 *positions,
						int64 first_version, TimestampTz created_at)
{
	List	   *projections = inline_projections();
	int			nest = -1;

	if (cache_has_async)
		shmem_wake_projector_at_commit();
	if (projections == NIL)
		return;
	CommandCounterIncrement();	/* handlers see the new events */
	for (int i = 0; i < n; i++)
	{
		Datum		row = (Datum) 0;
		ListCell   *lc;

		foreach(lc, projections)
		{
			Projection *p = lfirst(lc);

			if (!projection_matches(p, stream, evs[i].type))
				continue;
			if (row == (Datum) 0)
			{
				Datum		values[EVENT_COLS] = {
					Int64GetDatum(positions[i]), CStringGetTextDatum(stream),
					Int64GetDatum(first_version + i), CStringGetTextDatum(evs[i].type),
					JsonbPGetDatum(evs[i].data), JsonbPGetDatum(evs[i].metadata),
					UUIDPGetDatum(evs[i].id), TimestampTzGetDatum(created_at)
				};

				row = event_row(values);
			}
			/* the first handler to run resolves and sets its search_path */
			if (nest < 0)
				nest = projection_enter(p);
			projection_call(p, row);
			if (p->progress)
				pg_atomic_fetch_add_u64(&p->progress->live_applied, 1);
		}
	}
	if (nest >= 0)
		projection_leave(nest);
}

/* ---- SQL-callable ---- */

/*
 * outbox.create_projection(name, handler, event_types, stream_prefix, mode,
 * reset, options): the handler will run as the calling role, taken here
 * before becoming the extension owner; the checks and the insert are in
 * the private PL/pgSQL function _create_projection, granted to no one.
 */
Datum
outbox_create_projection(PG_FUNCTION_ARGS)
{
	OutboxSpi	spi = OUTBOX_SPI_INIT;
	Datum		args[8];
	char		nulls[8];
	NameData	run_as;

	namestrcpy(&run_as, GetUserNameFromId(GetUserId(), false));
	for (int i = 0; i < 7; i++)
	{
		args[i] = PG_ARGISNULL(i) ? (Datum) 0 : PG_GETARG_DATUM(i);
		nulls[i] = PG_ARGISNULL(i) ? 'n' : ' ';
	}
	args[7] = NameGetDatum(&run_as);
	nulls[7] = ' ';
	outbox_spi_begin(&spi);
	outbox_spi_run(&plan_create, args, nulls, false, 0, SPI_OK_SELECT);
	outbox_spi_end(&spi);
	/* valid now (the checks above passed): refuse what a resolution would */
	projection_check_function(TextDatumGetCString(args[0]), "handler", DatumGetObjectId(args[1]), GetUserId());
	if (!PG_ARGISNULL(5))
		projection_check_function(TextDatumGetCString(args[0]), "reset function", DatumGetObjectId(args[5]),
								  GetUserId());
	PG_RETURN_VOID();
}

/* ---- SQL-callable, private ---- */

/* outbox._projections_changed(): see the top of the file */
Datum
outbox_projections_changed(PG_FUNCTION_ARGS)
{
	CacheInvalidateRelcacheByRelid(outbox_relid("_projections"));
	shmem_wake_projector_at_commit();
	PG_RETURN_VOID();
}

/*
 * outbox._replay_projection(id int, after_position bigint) returns bigint
 *
 * Apply every matching event after a position, in position order, in the
 * caller's transaction, in batches of REPLAY_BATCH events.  The caller holds
 * a SHARE lock on outbox._events (outbox._lock_events, READ COMMITTED only),
 * so the log cannot change meanwhile; each read takes a fresh snapshot.
 */
Datum
outbox_replay_projection(PG_FUNCTION_ARGS)
{
	Projection *p = projection_by_id(PG_GETARG_INT32(0));
	int64		after = PG_GETARG_INT64(1);
	int64		applied = 0;
	MemoryContext batch_cxt;
	MemoryContext old;
	int			n;
	int			nest;

	batch_cxt = AllocSetContextCreate(CurrentMemoryContext, "outbox replay", ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(batch_cxt);
	nest = projection_enter(p);
	do
	{
		ProjectionEvent *events;

		MemoryContextReset(batch_cxt);
		n = projection_read(after, REPLAY_BATCH, false, &events, NULL);
		for (int i = 0; i < n; i++)
		{
			after = events[i].position;
			if (!projection_matches(p, events[i].stream, events[i].type))
				continue;
			projection_call(p, events[i].row);
			applied++;
		}
		CHECK_FOR_INTERRUPTS();
	} while (n == REPLAY_BATCH);
	projection_leave(nest);
	MemoryContextSwitchTo(old);
	MemoryContextDelete(batch_cxt);
	PG_RETURN_INT64(applied);
}

/* outbox._reset_projection(id int): call its reset function, if any */
Datum
outbox_reset_projection(PG_FUNCTION_ARGS)
{
	Projection *p = projection_by_id(PG_GETARG_INT32(0));

	if (p->reset_signature != NULL)
	{
		Oid			fn = projection_function(p, "reset function", p->reset_signature);
		FmgrInfo	flinfo;

		fmgr_info(fn, &flinfo);
		projection_invoke(p, &flinfo, 0, (Datum) 0, function_search_path(fn));
	}
	PG_RETURN_VOID();
}

/* outbox._projection_live_applied(id int): inline handler calls since start */
Datum
outbox_projection_live_applied(PG_FUNCTION_ARGS)
{
	ProjectionProgress *progress = shmem_projection_progress(MyDatabaseId, PG_GETARG_INT32(0), false);

	PG_RETURN_INT64(progress ? (int64) pg_atomic_read_u64(&progress->live_applied) : 0);
}
