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
 *
 * A Kafka endpoint (kafka:// URL) has options of its own ranges (batch_size
 * 1 only, a larger max_in_flight: it counts records not yet acknowledged),
 * and its client properties under "kafka" (checked by kafka.c; the
 * write-only ones are kept apart, in outbox._endpoints.kafka_secrets).  The
 * stored options of a Kafka endpoint always hold "kafka" (maybe {}), which
 * is how options_read tells them apart.  When an endpoint changes from one
 * kind to the other, an option left at the old kind's default takes the
 * new kind's.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "funcapi.h"

#include "kafka.h"
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
	const char *hint;			/* why the range is what it is; NULL if plain */
} OptionDef;

#define INT_OPTION(type, field, min, max, dflt) {#field, offsetof(type, field), false, min, max, dflt, NULL}
#define BOOL_OPTION(type, field, dflt) {#field, offsetof(type, field), true, 0, 1, dflt, NULL}

/* Endpoint options that webhook and Kafka endpoints share */
#define ENDPOINT_BACKOFF_BASE	INT_OPTION(EndpointOptions, backoff_base_ms, 1, 86400000, 500)
#define ENDPOINT_BACKOFF_MAX	INT_OPTION(EndpointOptions, backoff_max_ms, 1, 604800000, 600000)
#define ENDPOINT_MAX_ATTEMPTS	INT_OPTION(EndpointOptions, max_attempts, 1, 1000, 12)
#define ENDPOINT_ORDERED		BOOL_OPTION(EndpointOptions, ordered, true)
#define ENDPOINT_RATE_LIMIT		INT_OPTION(EndpointOptions, rate_limit_per_sec, 0, 1000000, 0)
#define ENDPOINT_TIMEOUT		INT_OPTION(EndpointOptions, timeout_ms, 100, 300000, 10000)

/* in name order: the hint lists them so */
static const OptionDef endpoint_defs[] = {
	ENDPOINT_BACKOFF_BASE,
	ENDPOINT_BACKOFF_MAX,
	INT_OPTION(EndpointOptions, batch_size, 1, 1000, 1),
	ENDPOINT_MAX_ATTEMPTS,
	INT_OPTION(EndpointOptions, max_in_flight, 1, 1000, 16),
	ENDPOINT_ORDERED,
	ENDPOINT_RATE_LIMIT,
	ENDPOINT_TIMEOUT,
};

/*
 * A Kafka endpoint: one record per message (the producer batches records
 * itself), and max_in_flight counts records not yet acknowledged.
 */
static const OptionDef kafka_endpoint_defs[] = {
	ENDPOINT_BACKOFF_BASE,
	ENDPOINT_BACKOFF_MAX,
	{"batch_size", offsetof(EndpointOptions, batch_size), false, 1, 1, 1,
	"The Kafka producer batches records by itself: see linger.ms and batch.size (options.kafka)."},
	ENDPOINT_MAX_ATTEMPTS,
	INT_OPTION(EndpointOptions, max_in_flight, 1, 2048, 2048),
	ENDPOINT_ORDERED,
	ENDPOINT_RATE_LIMIT,
	ENDPOINT_TIMEOUT,
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
	bool		kafka;			/* has a "kafka" section of client properties */
} OptionSet;

static const OptionSet option_sets[] = {
	[OPTIONS_ENDPOINT] = {"endpoint", endpoint_defs, lengthof(endpoint_defs), sizeof(EndpointOptions),
	offsetof(EndpointOptions, backoff_base_ms), offsetof(EndpointOptions, backoff_max_ms), false},
	[OPTIONS_PROJECTION] = {"projection", projection_defs, lengthof(projection_defs), sizeof(ProjectionOptions),
	offsetof(ProjectionOptions, backoff_base_ms), offsetof(ProjectionOptions, backoff_max_ms), false},
};

static const OptionSet kafka_endpoint_set = {
	"Kafka endpoint", kafka_endpoint_defs, lengthof(kafka_endpoint_defs), sizeof(EndpointOptions),
	offsetof(EndpointOptions, backoff_base_ms), offsetof(EndpointOptions, backoff_max_ms), true
};

/* Does the object have this key? */
static bool
options_has(Jsonb *jb, const char *key)
{
	return JB_ROOT_IS_OBJECT(jb) &&
		getKeyJsonValueFromContainer(&jb->root, key, strlen(key), NULL) != NULL;
}

/* The set of a kind, or the Kafka endpoint set for stored options that have its section. */
static const OptionSet *
options_set(OptionsKind kind, Jsonb *stored)
{
	if (kind == OPTIONS_ENDPOINT && stored != NULL && options_has(stored, KAFKA_OPTIONS_KEY))
		return &kafka_endpoint_set;
	return &option_sets[kind];
}

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
option_problem(OptionsProblem *problem, const OptionSet *set, const OptionDef *def, const JsonbValue *v)
{
	if (def->is_bool)
		problem->message = psprintf("option \"%s\" must be true or false", def->name);
	else if (def->min == def->max)
		problem->message = psprintf("option \"%s\" must be %d for a %s", def->name, def->min, set->what);
	else
		problem->message = psprintf("option \"%s\" must be an integer from %d to %d",
									def->name, def->min, def->max);
	problem->value = jsonb_value_text(v);
	if (def->hint != NULL)
		problem->hint = pstrdup(def->hint);
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
			if (def == NULL && set->kafka && v.val.string.len == strlen(KAFKA_OPTIONS_KEY) &&
				strncmp(v.val.string.val, KAFKA_OPTIONS_KEY, v.val.string.len) == 0)
				continue;		/* the client properties: kafka.c's */
			if (def == NULL && !skip_unknown)
			{
				StringInfoData names;

				initStringInfo(&names);
				for (int i = 0; i < set->ndefs; i++)
					appendStringInfo(&names, "%s%s", i ? ", " : "", set->defs[i].name);
				if (set->kafka)
					appendStringInfoString(&names, ", " KAFKA_OPTIONS_KEY);
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
			return option_problem(problem, set, def, &v);
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
	const OptionSet *set = options_set(kind, stored);
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

/*
 * The options as they are stored: every one, in name order, and a Kafka
 * endpoint's client properties (kafka: never NULL for such an endpoint).
 */
static Jsonb *
options_jsonb(const OptionSet *set, void *opts, Jsonb *kafka)
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
	if (set->kafka)
	{
		v.type = jbvString;
		v.val.string.val = KAFKA_OPTIONS_KEY;
		v.val.string.len = strlen(KAFKA_OPTIONS_KEY);
		pushJsonbValue(&state, WJB_KEY, &v);
		v.type = jbvBinary;
		v.val.binary.data = &kafka->root;
		v.val.binary.len = VARSIZE(kafka) - VARHDRSZ;
		pushJsonbValue(&state, WJB_VALUE, &v);
	}
	return JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_OBJECT, NULL));
}

/*
 * Carry the options of base (stored as set from has them) over to opts (of
 * set to), but those given replaces.  When the endpoint changes kind, an
 * option left at the old kind's default takes the new kind's.  What base
 * holds that cannot be used (a row changed by hand) is dropped if unknown,
 * reported if given does not replace it.
 */
static bool
options_carry(const OptionSet *from, const OptionSet *to, Jsonb *base, Jsonb *given,
			  void *opts, OptionsProblem *problem)
{
	void	   *old = palloc(from->size);

	options_defaults(from, old);
	if (!options_apply(from, base, given, true, old, problem))
		return false;
	for (int i = 0; i < to->ndefs; i++)
	{
		const OptionDef *def = &to->defs[i];
		const OptionDef *was = option_def(from, def->name, strlen(def->name));
		JsonbValue	v;

		if (was == NULL || options_has(given, def->name))
			continue;
		if (def->is_bool)
		{
			v.type = jbvBool;
			v.val.boolean = OPTION_FIELD(old, was, bool);
			if (from != to && v.val.boolean == (was->dflt != 0))
				continue;
		}
		else
		{
			v.type = jbvNumeric;
			v.val.numeric = int64_to_numeric(OPTION_FIELD(old, was, int));
			if (from != to && OPTION_FIELD(old, was, int) == was->dflt)
				continue;
		}
		if (!option_value(def, &v, opts))
			return option_problem(problem, to, def, &v);
	}
	return true;
}

/*
 * given merged over base (the current options, stored as set from has
 * them; NULL: the defaults) into the options of set, checked.  22004 if
 * given is NULL, 22023 naming the option if anything is wrong.
 */
static void *
options_check(const OptionSet *set, const OptionSet *from, Jsonb *given, Jsonb *base)
{
	void	   *opts = palloc(set->size);
	OptionsProblem problem = {0};

	options_defaults(set, opts);
	/* each step stops at the first problem, leaving it in problem */
	if (!JB_ROOT_IS_OBJECT(given))
		problem.message = pstrdup("options must be a JSON object");
	else if (!set->kafka && options_has(given, KAFKA_OPTIONS_KEY))
	{
		problem.message = pstrdup("option \"" KAFKA_OPTIONS_KEY "\" is for kafka:// endpoints only");
		problem.hint = pstrdup("Kafka client properties apply to an endpoint whose URL is kafka://host:port/topic.");
	}
	else if ((base == NULL || !JB_ROOT_IS_OBJECT(base) ||
			  options_carry(from, set, base, given, opts, &problem)) &&
			 options_apply(set, given, NULL, false, opts, &problem))
		options_consistent(set, opts, &problem);
	if (problem.message != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg_internal("%s", problem.message),
				 problem.value ? errdetail("It is %s.", problem.value) : 0,
				 problem.hint ? errhint("%s", problem.hint) : 0));
	return opts;
}

/* The value of key in object jb as a jsonb of its own; NULL if absent. */
static Jsonb *
options_section(Jsonb *jb, const char *key)
{
	JsonbValue	v;

	if (jb == NULL || !JB_ROOT_IS_OBJECT(jb) ||
		getKeyJsonValueFromContainer(&jb->root, key, strlen(key), &v) == NULL)
		return NULL;
	return JsonbValueToJsonb(&v);
}

/*
 * outbox._endpoint_options(given jsonb, base jsonb, url text, base_kafka_secrets jsonb,
 *                          OUT options jsonb, OUT kafka_secrets jsonb)
 * given merged over base (the current options; NULL: the defaults) for an
 * endpoint at url, checked and normalised, and its write-only Kafka client
 * properties (the current ones: base_kafka_secrets) apart.
 */
Datum
outbox_endpoint_options(PG_FUNCTION_ARGS)
{
	Jsonb	   *given = outbox_arg_jsonb(fcinfo, 0, "options");
	Jsonb	   *base = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);
	const OptionSet *webhook = &option_sets[OPTIONS_ENDPOINT];
	bool		kafka;
	Jsonb	   *base_secrets;
	const OptionSet *set;
	const OptionSet *from;
	void	   *opts;
	Jsonb	   *shown = NULL;
	Jsonb	   *secrets = NULL;
	TupleDesc	tupdesc;
	Datum		values[2];
	bool		nulls[2] = {false, false};

	/*
	 * Its former two-argument form, returning the options (of a webhook):
	 * the 0.1.0 to 0.2.0 update script normalises the stored options with it
	 * before it replaces it.
	 */
	if (PG_NARGS() == 2)
		PG_RETURN_JSONB_P(options_jsonb(webhook, options_check(webhook, webhook, given, base), NULL));

	kafka = !PG_ARGISNULL(2) && kafka_url_is_kafka(text_to_cstring(PG_GETARG_TEXT_PP(2)));
	base_secrets = PG_ARGISNULL(3) ? NULL : PG_GETARG_JSONB_P(3);
	set = kafka ? &kafka_endpoint_set : webhook;
	from = options_set(OPTIONS_ENDPOINT, base);
	opts = options_check(set, from, given, base);
	if (kafka)
	{
		JsonbValue	v;
		Jsonb	   *kafka_given = NULL;

		/* a JSON null is not an object: kafka.c says so */
		if (getKeyJsonValueFromContainer(&given->root, KAFKA_OPTIONS_KEY, strlen(KAFKA_OPTIONS_KEY), &v) != NULL)
			kafka_given = JsonbValueToJsonb(&v);
		if (from->kafka)
			kafka_options_merge(kafka_given, options_section(base, KAFKA_OPTIONS_KEY), base_secrets,
								&shown, &secrets);
		else
			kafka_options_merge(kafka_given, NULL, NULL, &shown, &secrets);
	}
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "outbox._endpoint_options must return a record");
	values[0] = JsonbPGetDatum(options_jsonb(set, opts, shown));
	values[1] = secrets ? JsonbPGetDatum(secrets) : (Datum) 0;
	nulls[1] = secrets == NULL;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/* outbox._projection_options(given jsonb) returns jsonb: the defaults filled in */
Datum
outbox_projection_options(PG_FUNCTION_ARGS)
{
	const OptionSet *set = &option_sets[OPTIONS_PROJECTION];
	Jsonb	   *given = outbox_arg_jsonb(fcinfo, 0, "options");

	PG_RETURN_JSONB_P(options_jsonb(set, options_check(set, set, given, NULL), NULL));
}
