/*-------------------------------------------------------------------------
 * options.c
 *		Endpoint and projection options: one parser for checking what an
 *		admin passes and for reading what is stored.
 *
 * create_endpoint, alter_endpoint and create_projection store their options
 * as options_normalise makes them: every option present, each integer a
 * plain JSON integer (5000.0 and 5e3 are stored as 5000).  The relay and
 * appends read the stored options with options_read, the same parser, which
 * reports a problem instead of raising it: a stored value it cannot use (a
 * row changed by hand) puts that one endpoint or projection aside, with the
 * reason in its last_error, and never stops the others or the writers.
 *
 * An integer option is a JSON number whose value is an integer within the
 * option's range; a boolean option is true or false.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "outbox.h"
#include "validate.h"
#include "options.h"

PG_FUNCTION_INFO_V1(outbox_endpoint_options);
PG_FUNCTION_INFO_V1(outbox_projection_options);

typedef struct OptionDef
{
	const char *name;
	size_t		offset;			/* of its field in the options struct */
	bool		is_bool;
	int			min;			/* an integer option's range */
	int			max;
	int			dflt;			/* a boolean's: 0 or 1 */
} OptionDef;

#define INT_OPTION(type, field, min, max, dflt) {#field, offsetof(type, field), false, min, max, dflt}
#define BOOL_OPTION(type, field, dflt) {#field, offsetof(type, field), true, 0, 1, dflt}

/* in name order: the hint lists them so */
static const OptionDef endpoint_defs[] = {
	INT_OPTION(EndpointOptions, backoff_base_ms, 1, 86400000, 500),
	INT_OPTION(EndpointOptions, backoff_max_ms, 1, 604800000, 600000),
	INT_OPTION(EndpointOptions, batch_size, 1, 1000, 1),
	INT_OPTION(EndpointOptions, max_attempts, 1, 1000, 12),
	INT_OPTION(EndpointOptions, max_in_flight, 1, 1000, 16),
	BOOL_OPTION(EndpointOptions, ordered, true),
	INT_OPTION(EndpointOptions, rate_limit_per_sec, 0, 1000000, 0),
	INT_OPTION(EndpointOptions, timeout_ms, 100, 300000, 10000),
};

static const OptionDef projection_defs[] = {
	INT_OPTION(ProjectionOptions, backoff_base_ms, 1, 86400000, 1000),
	INT_OPTION(ProjectionOptions, backoff_max_ms, 1, 604800000, 60000),
	INT_OPTION(ProjectionOptions, batch_size, 1, 100000, 1000),
	INT_OPTION(ProjectionOptions, max_attempts, 1, 1000, 10),
};

typedef struct OptionSet
{
	const char *what;
	const OptionDef *defs;
	int			ndefs;
	size_t		size;			/* of the options struct */
	size_t		backoff_base;	/* offsets of the two that must be in order */
	size_t		backoff_max;
} OptionSet;

static const OptionSet option_sets[] = {
	[OPTIONS_ENDPOINT] = {"endpoint", endpoint_defs, lengthof(endpoint_defs), sizeof(EndpointOptions),
	offsetof(EndpointOptions, backoff_base_ms), offsetof(EndpointOptions, backoff_max_ms)},
	[OPTIONS_PROJECTION] = {"projection", projection_defs, lengthof(projection_defs), sizeof(ProjectionOptions),
	offsetof(ProjectionOptions, backoff_base_ms), offsetof(ProjectionOptions, backoff_max_ms)},
};

/* What is wrong with some options, ready for ereport or a last_error. */
typedef struct OptionsProblem
{
	char	   *message;
	char	   *value;			/* the value at fault, as JSON; NULL if none */
	char	   *hint;			/* NULL if none */
} OptionsProblem;

#define OPTION_FIELD(out, def, type) (*(type *) ((char *) (out) + (def)->offset))

static void
options_defaults(const OptionSet *set, void *out)
{
	for (int i = 0; i < set->ndefs; i++)
	{
		const OptionDef *def = &set->defs[i];

		if (def->is_bool)
			OPTION_FIELD(out, def, bool) = def->dflt != 0;
		else
			OPTION_FIELD(out, def, int) = def->dflt;
	}
}

static const OptionDef *
option_def(const OptionSet *set, const char *name, int len)
{
	for (int i = 0; i < set->ndefs; i++)
		if (strlen(set->defs[i].name) == len && strncmp(set->defs[i].name, name, len) == 0)
			return &set->defs[i];
	return NULL;
}

/* The value of one option, into its field; false if it is not a valid one. */
static bool
option_value(const OptionDef *def, const JsonbValue *v, void *out)
{
	char	   *digits;
	char	   *end;
	long		n;

	if (def->is_bool)
	{
		if (v->type != jbvBool)
			return false;
		OPTION_FIELD(out, def, bool) = v->val.boolean;
		return true;
	}
	if (v->type != jbvNumeric)
		return false;
	/* the value without trailing fractional zeros or exponent: 5e3 and 5000.0 are "5000" */
	digits = numeric_normalize(v->val.numeric);
	errno = 0;
	n = strtol(digits, &end, 10);
	if (*end != '\0' || errno != 0 || n < def->min || n > def->max)
		return false;
	OPTION_FIELD(out, def, int) = (int) n;
	return true;
}

static char *
jsonb_value_text(const JsonbValue *v)
{
	JsonbValue	copy = *v;

	return JsonbToCString(NULL, &JsonbValueToJsonb(&copy)->root, 0);
}

static bool
option_problem(OptionsProblem *problem, const OptionDef *def, const JsonbValue *v)
{
	if (def->is_bool)
		problem->message = psprintf("option \"%s\" must be true or false", def->name);
	else
		problem->message = psprintf("option \"%s\" must be an integer from %d to %d",
									def->name, def->min, def->max);
	problem->value = jsonb_value_text(v);
	return false;
}

/*
 * Apply the options in object jb to out.  Options named in skip (when not
 * NULL) are left out, and so are unknown ones if skip_unknown; otherwise an
 * unknown option is a problem.  Returns false, with *problem, at the first
 * one that is wrong.
 */
static bool
options_apply(const OptionSet *set, Jsonb *jb, Jsonb *skip, bool skip_unknown,
			  void *out, OptionsProblem *problem)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	const OptionDef *def = NULL;

	if (!JB_ROOT_IS_OBJECT(jb))
	{
		problem->message = pstrdup("options must be a JSON object");
		return false;
	}
	it = JsonbIteratorInit(&jb->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
		{
			def = option_def(set, v.val.string.val, v.val.string.len);
			if (def == NULL && !skip_unknown)
			{
				StringInfoData names;

				initStringInfo(&names);
				for (int i = 0; i < set->ndefs; i++)
					appendStringInfo(&names, "%s%s", i ? ", " : "", set->defs[i].name);
				problem->message = psprintf("unknown %s option \"%.*s\"", set->what,
											v.val.string.len, v.val.string.val);
				problem->hint = psprintf("Options: %s.", names.data);
				return false;
			}
			if (def != NULL && skip != NULL &&
				getKeyJsonValueFromContainer(&skip->root, def->name, strlen(def->name), NULL) != NULL)
				def = NULL;
		}
		else if (tok == WJB_VALUE && def != NULL && !option_value(def, &v, out))
			return option_problem(problem, def, &v);
	}
	return true;
}

static bool
options_consistent(const OptionSet *set, void *out, OptionsProblem *problem)
{
	if (*(int *) ((char *) out + set->backoff_base) > *(int *) ((char *) out + set->backoff_max))
	{
		problem->message = pstrdup("option \"backoff_base_ms\" must not exceed \"backoff_max_ms\"");
		return false;
	}
	return true;
}

char *
options_read(OptionsKind kind, Jsonb *stored, void *out)
{
	const OptionSet *set = &option_sets[kind];
	void	   *opts = palloc(set->size);
	OptionsProblem problem = {0};

	options_defaults(set, opts);
	if ((stored != NULL && !options_apply(set, stored, NULL, false, opts, &problem)) ||
		!options_consistent(set, opts, &problem))
		return problem.value ? psprintf("%s, not %s", problem.message, problem.value) : problem.message;
	memcpy(out, opts, set->size);
	pfree(opts);
	return NULL;
}

/* The options as they are stored: every one, in name order. */
static Jsonb *
options_jsonb(const OptionSet *set, void *opts)
{
	JsonbParseState *state = NULL;
	JsonbValue	v;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	for (int i = 0; i < set->ndefs; i++)
	{
		const OptionDef *def = &set->defs[i];

		v.type = jbvString;
		v.val.string.val = (char *) def->name;
		v.val.string.len = strlen(def->name);
		pushJsonbValue(&state, WJB_KEY, &v);
		if (def->is_bool)
		{
			v.type = jbvBool;
			v.val.boolean = OPTION_FIELD(opts, def, bool);
		}
		else
		{
			v.type = jbvNumeric;
			v.val.numeric = int64_to_numeric(OPTION_FIELD(opts, def, int));
		}
		pushJsonbValue(&state, WJB_VALUE, &v);
	}
	return JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_OBJECT, NULL));
}

/*
 * given merged over base (the current options; NULL: the defaults), checked
 * and normalised.  22004 if given is NULL, 22023 naming the option if
 * anything is wrong.  What base holds that cannot be used (a row changed by
 * hand) is dropped if unknown, reported like given's if given does not
 * replace it.
 */
static Datum
options_normalise(FunctionCallInfo fcinfo, const OptionSet *set)
{
	Jsonb	   *given = outbox_arg_jsonb(fcinfo, 0, "options");
	Jsonb	   *base = (PG_NARGS() > 1 && !PG_ARGISNULL(1)) ? PG_GETARG_JSONB_P(1) : NULL;
	void	   *opts = palloc(set->size);
	OptionsProblem problem = {0};

	options_defaults(set, opts);
	/* each step stops at the first problem, leaving it in problem */
	if (!JB_ROOT_IS_OBJECT(given))
		problem.message = pstrdup("options must be a JSON object");
	else if ((base == NULL || !JB_ROOT_IS_OBJECT(base) ||
			  options_apply(set, base, given, true, opts, &problem)) &&
			 options_apply(set, given, NULL, false, opts, &problem))
		options_consistent(set, opts, &problem);
	if (problem.message != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg_internal("%s", problem.message),
				 problem.value ? errdetail("It is %s.", problem.value) : 0,
				 problem.hint ? errhint("%s", problem.hint) : 0));
	PG_RETURN_JSONB_P(options_jsonb(set, opts));
}

/* outbox._endpoint_options(given jsonb, base jsonb DEFAULT NULL) returns jsonb */
Datum
outbox_endpoint_options(PG_FUNCTION_ARGS)
{
	return options_normalise(fcinfo, &option_sets[OPTIONS_ENDPOINT]);
}

/* outbox._projection_options(given jsonb) returns jsonb */
Datum
outbox_projection_options(PG_FUNCTION_ARGS)
{
	return options_normalise(fcinfo, &option_sets[OPTIONS_PROJECTION]);
}
