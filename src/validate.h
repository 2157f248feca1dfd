/*-------------------------------------------------------------------------
 * validate.h
 *		Argument checks shared by every SQL function (validate.c).
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_VALIDATE_H
#define OUTBOX_VALIDATE_H

#include "outbox.h"

/* validate.c: argument checks shared by every SQL function */
extern char *outbox_arg_name(FunctionCallInfo fcinfo, int argno, const char *what);
extern Jsonb *outbox_arg_jsonb(FunctionCallInfo fcinfo, int argno, const char *what);
extern int32 outbox_arg_count(FunctionCallInfo fcinfo, int argno, const char *what);
extern int64 outbox_arg_position(FunctionCallInfo fcinfo, int argno, const char *what);
extern void outbox_check_writable(const char *fname);
extern void outbox_check_header_value(const char *what, const char *value, int len);
extern void outbox_check_name(const char *what, const char *name, int len);
extern void outbox_check_payload_size(const char *what, Jsonb *value);
extern void outbox_check_message_size(Jsonb *payload, Jsonb *headers);
extern void outbox_check_headers(const char *what, Jsonb *headers, bool from_message);

typedef struct HeaderProblem
{
	char	   *message;		/* names the header */
	const char *detail;			/* NULL if none */
	const char *hint;			/* NULL if none */
} HeaderProblem;

extern bool outbox_header_allowed(const char *name, int len, const JsonbValue *value,
								  bool from_message, HeaderProblem *problem);

#endif							/* OUTBOX_VALIDATE_H */
