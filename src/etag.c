/*-------------------------------------------------------------------------
 * etag.c
 *		Stream ETags: "<version>-<hash of the stream name>".
 *
 * An ETag is a strong HTTP entity tag (a quoted string of visible ASCII), so
 * it can be sent verbatim in an ETag or If-Match header.  The version makes
 * it change with every append; the 96-bit hash of the stream name makes an
 * ETag of one stream fail to match any other stream.  Version 0 is the
 * "empty stream" ETag, known before the stream exists.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "utils/builtins.h"

#include "outbox.h"
#include "etag.h"

#define ETAG_SEED_A UINT64CONST(0x6f7574626f780001)
#define ETAG_SEED_B UINT64CONST(0x6f7574626f780002)

static void
etag_hash(const char *stream, char *hex)
{
	int			len = strlen(stream);
	uint64		a = hash_bytes_extended((const unsigned char *) stream, len, ETAG_SEED_A);
	uint64		b = hash_bytes_extended((const unsigned char *) stream, len, ETAG_SEED_B);

	snprintf(hex, 25, "%016" INT64_MODIFIER "x%08x", a, (uint32) b);
}

text *
etag_make(const char *stream, int64 version)
{
	char		hex[25];
	char		buf[64];

	etag_hash(stream, hex);
	snprintf(buf, sizeof(buf), "\"" INT64_FORMAT "-%s\"", version, hex);
	return cstring_to_text(buf);
}

/*
 * The version an ETag stands for, or -1 when it is a well-formed ETag of a
 * different stream.  A string that is not an outbox ETag at all is an error.
 */
int64
etag_version(const char *stream, const char *etag)
{
	char		hex[25];
	const char *p = etag;
	char	   *end;
	int64		version;

	if (*p != '"' || !isdigit((unsigned char) p[1]))
		goto malformed;
	errno = 0;
	version = strtoi64(p + 1, &end, 10);
	if (errno != 0 || *end != '-' || strlen(end) != 1 + 24 + 1 || end[25] != '"')
		goto malformed;
	for (int i = 1; i <= 24; i++)
		if (!isxdigit((unsigned char) end[i]) || isupper((unsigned char) end[i]))
			goto malformed;

	etag_hash(stream, hex);
	if (memcmp(end + 1, hex, 24) != 0)
		return -1;
	return version;

malformed:
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid ETag \"%s\"", etag),
			 errdetail("An ETag is a quoted string returned by outbox.append, outbox.stream_etag or outbox.lock_stream, or '*' for \"any existing stream\"."),
			 errhint("Pass the ETag exactly as returned, quotes included.")));
	return -1;					/* keep compiler quiet */
}
