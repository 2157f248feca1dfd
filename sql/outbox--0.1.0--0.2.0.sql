/*
 * outbox 0.1.0 -> 0.2.0 upgrade script.
 *
 * Every change of 0.2.0 to sql/outbox.sql is made here too, so that an
 * updated 0.1.0 install equals a fresh 0.2.0 one (test/t/006_upgrade.pl
 * compares the two catalogs, with data in every table).
 */
\echo Use "ALTER EXTENSION outbox UPDATE TO '0.2.0'" to load this file. \quit

/*
 * Finding 12: the append-only guard of outbox._events fires whatever
 * session_replication_role is (a superuser could set it to replica and
 * DELETE or TRUNCATE events).
 */
ALTER TABLE outbox._events ENABLE ALWAYS TRIGGER forbid_update_delete;
ALTER TABLE outbox._events ENABLE ALWAYS TRIGGER forbid_truncate;
