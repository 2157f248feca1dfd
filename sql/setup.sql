-- Shared by every regression test: the extension and a helper that turns an
-- error into "SQLSTATE: message", so each bad input shows its code.
CREATE EXTENSION outbox;
CREATE SCHEMA regress;
GRANT USAGE ON SCHEMA regress TO PUBLIC;
CREATE FUNCTION regress.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;
SELECT extversion FROM pg_extension WHERE extname = 'outbox';
