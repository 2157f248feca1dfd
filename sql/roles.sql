-- Roles: outbox_writer, outbox_reader, outbox_admin; PUBLIC gets nothing.
CREATE ROLE regress_writer LOGIN IN ROLE outbox_writer;
CREATE ROLE regress_reader LOGIN IN ROLE outbox_reader;
CREATE ROLE regress_admin LOGIN IN ROLE outbox_admin;
CREATE ROLE regress_nobody LOGIN;

-- PUBLIC can execute none of outbox's functions and read none of its relations.
SELECT count(*) AS public_functions FROM pg_proc
 WHERE pronamespace = 'outbox'::regnamespace AND has_function_privilege('regress_nobody', oid, 'EXECUTE');
SELECT count(*) AS public_relations FROM pg_class
 WHERE relnamespace = 'outbox'::regnamespace AND relkind IN ('r', 'v', 'S')
   AND has_table_privilege('regress_nobody', oid, 'SELECT,INSERT,UPDATE,DELETE,TRUNCATE');

SET ROLE regress_writer;
SELECT regress.try($$SELECT outbox.append('roles-1', '{"type": "A"}')$$) AS writer_append;
SELECT regress.try($$SELECT outbox.append('roles-1', '{"type": "B"}', outbox.lock_stream('roles-1'))$$) AS writer_lock_stream;
SELECT regress.try($$SELECT outbox.stream_etag('roles-1')$$) AS writer_stream_etag;
SELECT regress.try($$SELECT outbox.publish('t', '{}')$$) AS writer_publish;
SELECT regress.try($$SELECT outbox.consume_once('c', 'm')$$) AS writer_consume_once;
SELECT regress.try($$UPDATE outbox.events SET type = 'x'$$) AS writer_update_events;
SELECT regress.try($$DELETE FROM outbox.messages$$) AS writer_delete_messages;
SELECT regress.try($$INSERT INTO outbox._events SELECT * FROM outbox._events$$) AS writer_insert_events;
SELECT regress.try($$DELETE FROM outbox._inbox$$) AS writer_forget_inbox;
SELECT regress.try($$SELECT count(*) FROM outbox.read_all()$$) AS writer_read_all;
SELECT regress.try($$SELECT outbox.delete_stream('roles-1', 'x')$$) AS writer_delete_stream;
RESET ROLE;

SET ROLE regress_reader;
SELECT regress.try($$SELECT count(*) FROM outbox.read_all()$$) AS reader_read_all;
SELECT regress.try($$SELECT count(*) FROM outbox.read_stream('roles-1')$$) AS reader_read_stream;
SELECT regress.try($$SELECT count(*) FROM outbox.read_messages()$$) AS reader_read_messages;
SELECT regress.try($$SELECT count(*) FROM outbox.events$$) AS reader_events;
SELECT regress.try($$SELECT count(*) FROM outbox.messages$$) AS reader_messages;
SELECT regress.try($$SELECT outbox.stream_etag('roles-1')$$) AS reader_stream_etag;
SELECT regress.try($$SELECT outbox.append('roles-1', '{"type": "C"}')$$) AS reader_append;
SELECT regress.try($$SELECT outbox.publish('t', '{}')$$) AS reader_publish;
SELECT regress.try($$SELECT count(*) FROM outbox._events$$) AS reader_private_table;
RESET ROLE;

SET ROLE regress_nobody;
SELECT regress.try($$SELECT outbox.append('roles-1', '{"type": "D"}')$$) AS nobody_append;
SELECT regress.try($$SELECT count(*) FROM outbox.events$$) AS nobody_events;
SELECT regress.try($$SELECT outbox.consume_once('c', 'm2')$$) AS nobody_consume_once;
RESET ROLE;

SET ROLE regress_admin;
SELECT regress.try($$SELECT outbox.append('roles-1', '{"type": "E"}')$$) AS admin_append;
SELECT regress.try($$SELECT count(*) FROM outbox.read_all()$$) AS admin_read_all;
SELECT regress.try($$SELECT outbox.delete_stream('roles-1', 'test')$$) AS admin_delete_stream;
SELECT regress.try($$SELECT count(*) FROM outbox.stream_deletions$$) AS admin_audit;
RESET ROLE;

-- Rows written through the functions belong to the extension, whoever called them.
SELECT deleted_by FROM outbox.stream_deletions WHERE reason = 'test';

-- Roles are cluster-wide: a second and a third database install the extension too,
-- and DROP EXTENSION followed by CREATE EXTENSION works.
SELECT current_database() AS origdb \gset
CREATE DATABASE regress_outbox_db2;
CREATE DATABASE regress_outbox_db3;
\c regress_outbox_db2
CREATE EXTENSION outbox;
SELECT outbox.append('s', '{"type": "InDb2"}') IS NOT NULL AS db2_works;
\c regress_outbox_db3
CREATE EXTENSION outbox;
SET ROLE regress_writer;
SELECT regress_writer_can_append FROM (SELECT outbox.publish('t', '{}') IS NOT NULL AS regress_writer_can_append) s;
RESET ROLE;
DROP EXTENSION outbox;
SELECT count(*) AS roles_survive_drop FROM pg_roles WHERE rolname LIKE 'outbox\_%';
CREATE EXTENSION outbox;
SELECT outbox.append('s', '{"type": "AfterRecreate"}') AS recreated_etag;
\c :origdb
DROP DATABASE regress_outbox_db2;
DROP DATABASE regress_outbox_db3;

-- Dropping and re-creating the extension inside one session keeps working
-- (cached plans and OIDs are refreshed).
CREATE DATABASE regress_outbox_db4;
\c regress_outbox_db4
CREATE EXTENSION outbox;
SELECT outbox.append('s', '{"type": "One"}') AS before_drop;
DROP EXTENSION outbox;
CREATE EXTENSION outbox;
SELECT outbox.append('s', '{"type": "Two"}') AS after_recreate;
SELECT outbox.publish('t', '{}') AS first_message_id;
\c :origdb
DROP DATABASE regress_outbox_db4;

DROP ROLE regress_writer, regress_reader, regress_admin, regress_nobody;
