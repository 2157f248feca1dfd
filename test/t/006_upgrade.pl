# Upgrading in place from 0.1.0: a database filled by the 0.1.0 library
# (test/t/data/outbox-0.1.0.sql, made by make_outbox_0.1.0.sh) is loaded at
# 0.1.0 under the current library.  While it waits for ALTER EXTENSION
# outbox UPDATE, the relay says so once, delivers nothing, uses no CPU and
# does not restart, and every 0.1.0 C function either works or refuses with
# 55000 and a hint.  After the update: the outbox schema's catalog equals a
# fresh install's, every row is still there, and delivery and the async
# projection carry on from where 0.1.0 left them.
use strict;
use warnings;
use lib 'test/t';
use OutboxTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $whsec  = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
my $raw    = 'a-raw-secret-of-the-flaky-one';
my $tmp    = $PostgreSQL::Test::Utils::tmp_check;
my $rx_ok  = start_receiver(log => "$tmp/upgrade_ok.log",  secrets => [ $whsec, $raw ]);
my $rx_bad = start_receiver(log => "$tmp/upgrade_bad.log", secrets => [ $whsec, $raw ]);
$rx_bad->control('fail_rate=1');

my $node = PostgreSQL::Test::Cluster->new('upgrade');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'outbox'\n");
$node->start;

sub sql { my ($db, $q) = @_; return $node->safe_psql($db, $q); }

# ---- the canonical text of the outbox schema's catalog ----
# Names, never OIDs; every line is "kind name" and its attributes.
my $catalog_sql = <<'SQL';
WITH x AS (SELECT * FROM pg_extension WHERE extname = 'outbox'),
n AS (SELECT 'outbox'::regnamespace AS oid),
lines(s, k, v) AS (
    SELECT 'extension', extname::text,
           format('version=%s relocatable=%s schema=%s owner=%s', extversion, extrelocatable,
                  extnamespace::regnamespace, pg_get_userbyid(extowner))
      FROM x
    UNION ALL
    SELECT 'config_dump', c.rel::regclass::text, 'condition=' || coalesce(quote_literal(x.extcondition[c.i]), 'NULL')
      FROM x, unnest(x.extconfig) WITH ORDINALITY c(rel, i)
    UNION ALL
    SELECT 'member', pg_describe_object(d.classid, d.objid, d.objsubid), ''
      FROM pg_depend d, x WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = x.oid AND d.deptype = 'e'
    UNION ALL
    SELECT 'schema', nspname::text, format('owner=%s acl=%s', pg_get_userbyid(nspowner), nspacl)
      FROM pg_namespace WHERE oid = (SELECT oid FROM n)
    UNION ALL
    SELECT 'function', p.oid::regprocedure::text,
           format('kind=%s secdef=%s leakproof=%s strict=%s retset=%s volatile=%s parallel=%s cost=%s rows=%s config=%s owner=%s acl=%s',
                  prokind, prosecdef, proleakproof, proisstrict, proretset, provolatile, proparallel,
                  procost, prorows, proconfig, pg_get_userbyid(proowner), proacl)
           || E'\n' || CASE WHEN prokind <> 'a' THEN pg_get_functiondef(p.oid) ELSE '' END
      FROM pg_proc p WHERE pronamespace = (SELECT oid FROM n)
    UNION ALL
    SELECT 'relation', c.oid::regclass::text,
           format('kind=%s persistence=%s options=%s acl=%s owner=%s replident=%s rls=%s/%s am=%s',
                  relkind, relpersistence, reloptions, relacl, pg_get_userbyid(relowner), relreplident,
                  relrowsecurity, relforcerowsecurity, (SELECT amname FROM pg_am WHERE oid = c.relam))
      FROM pg_class c WHERE relnamespace = (SELECT oid FROM n)
    UNION ALL
    SELECT 'column', c.oid::regclass::text || '.' || a.attname,
           format('pos=%s type=%s collation=%s notnull=%s default=%s identity=%s generated=%s storage=%s compression=%s options=%s stattarget=%s acl=%s',
                  row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum),
                  format_type(a.atttypid, a.atttypmod), co.collname, a.attnotnull, pg_get_expr(d.adbin, d.adrelid),
                  a.attidentity, a.attgenerated, a.attstorage, a.attcompression,
                  -- pg_attver: this server's private version stamp, not a setting
                  (SELECT array_agg(o ORDER BY o) FROM unnest(a.attoptions) o WHERE o NOT LIKE 'pg\_attver=%'),
                  a.attstattarget, a.attacl)
      FROM pg_class c
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
      LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
      LEFT JOIN pg_collation co ON co.oid = a.attcollation
     WHERE c.relnamespace = (SELECT oid FROM n)
    UNION ALL
    SELECT 'index', i.indexrelid::regclass::text,
           pg_get_indexdef(i.indexrelid) || format(' primary=%s replident=%s clustered=%s valid=%s',
                                                   indisprimary, indisreplident, indisclustered, indisvalid)
      FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid WHERE c.relnamespace = (SELECT oid FROM n)
    UNION ALL
    SELECT 'constraint', conrelid::regclass::text || ' ' || conname,
           format('type=%s deferrable=%s deferred=%s validated=%s ', contype, condeferrable, condeferred, convalidated)
           || pg_get_constraintdef(oid)
      FROM pg_constraint WHERE connamespace = (SELECT oid FROM n)
    UNION ALL
    SELECT 'trigger', tgrelid::regclass::text || ' ' || tgname, pg_get_triggerdef(t.oid) || ' enabled=' || tgenabled::text
      FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
     WHERE c.relnamespace = (SELECT oid FROM n) AND NOT tgisinternal
    UNION ALL
    SELECT 'view', c.oid::regclass::text, pg_get_viewdef(c.oid, true)
      FROM pg_class c WHERE relnamespace = (SELECT oid FROM n) AND relkind IN ('v', 'm')
    UNION ALL
    SELECT 'rule', schemaname || '.' || tablename || ' ' || rulename, definition
      FROM pg_rules WHERE schemaname = 'outbox'
    UNION ALL
    SELECT 'policy', schemaname || '.' || tablename || ' ' || policyname,
           format('%s %s %s %s %s', permissive, roles, cmd, qual, with_check)
      FROM pg_policies WHERE schemaname = 'outbox'
    UNION ALL
    SELECT 'sequence', s.seqrelid::regclass::text,
           format('type=%s start=%s increment=%s min=%s max=%s cache=%s cycle=%s owned_by=%s',
                  format_type(seqtypid, NULL), seqstart, seqincrement, seqmin, seqmax, seqcache, seqcycle,
                  (SELECT string_agg(d.refobjid::regclass || '.' || a.attname || ' (' || d.deptype::text || ')', ', ')
                     FROM pg_depend d
                     JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                    WHERE d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid
                      AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')))
      FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid WHERE c.relnamespace = (SELECT oid FROM n)
    UNION ALL
    SELECT 'type', t.oid::regtype::text,
           format('type=%s base=%s notnull=%s default=%s acl=%s owner=%s enum=%s', typtype,
                  nullif(typbasetype, 0)::regtype, typnotnull, typdefault, typacl, pg_get_userbyid(typowner),
                  (SELECT string_agg(enumlabel, ',' ORDER BY enumsortorder) FROM pg_enum WHERE enumtypid = t.oid))
      FROM pg_type t WHERE typnamespace = (SELECT oid FROM n)
    UNION ALL
    SELECT 'comment', pg_describe_object(d.classoid, d.objoid, d.objsubid), d.description
      FROM pg_description d
     WHERE (pg_identify_object(d.classoid, d.objoid, d.objsubid)).schema = 'outbox'
        OR (d.classoid = 'pg_namespace'::regclass AND d.objoid = (SELECT oid FROM n))
        OR (d.classoid = 'pg_extension'::regclass AND d.objoid = (SELECT oid FROM x))
    UNION ALL
    SELECT 'default_acl', pg_get_userbyid(defaclrole) || ' ' || coalesce(defaclnamespace::regnamespace::text, '-')
           || ' ' || defaclobjtype::text, defaclacl::text
      FROM pg_default_acl
     WHERE defaclnamespace = (SELECT oid FROM n) OR pg_get_userbyid(defaclrole) LIKE 'outbox\_%'
    UNION ALL
    SELECT 'database_acl', 'current', datacl::text FROM pg_database WHERE datname = current_database()
    UNION ALL
    SELECT 'role', rolname::text,
           format('super=%s inherit=%s createrole=%s createdb=%s login=%s replication=%s bypassrls=%s connlimit=%s config=%s comment=%s',
                  rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication, rolbypassrls,
                  rolconnlimit, rolconfig, shobj_description(oid, 'pg_authid'))
      FROM pg_roles WHERE rolname LIKE 'outbox\_%'
    UNION ALL
    SELECT 'role_member', m.member::regrole::text || ' in ' || m.roleid::regrole::text,
           format('admin=%s grantor=%s', admin_option, m.grantor::regrole)
      FROM pg_auth_members m
     WHERE m.roleid::regrole::text LIKE 'outbox\_%' OR m.member::regrole::text LIKE 'outbox\_%'
)
SELECT s || ' ' || k || CASE WHEN v <> '' THEN E'\n    ' || replace(v, E'\n', E'\n    ') ELSE '' END
  FROM lines ORDER BY s COLLATE "C", k COLLATE "C", v COLLATE "C";
SQL

sub catalog_dump { return sql($_[0], $catalog_sql) . "\n"; }

sub unified_diff
{
	my ($x, $y) = @_;
	open(my $fa, '>', "$tmp/catalog_updated.txt") or die;
	print $fa $x;
	close $fa;
	open(my $fb, '>', "$tmp/catalog_fresh.txt") or die;
	print $fb $y;
	close $fb;
	return scalar `diff -u '$tmp/catalog_updated.txt' '$tmp/catalog_fresh.txt'`;
}

# ---- every row of 0.1.0's tables, as counts and checksums ----
# Columns as 0.1.0 made them, xmark aside (0.2.0 may recompute it); in one
# statement, so that it can run inside the transaction of the update.
my %columns = (
	'outbox._streams'          => 'stream, version',
	'outbox._events'           => 'position, stream, version, type, data, metadata, event_id, created_at',
	'outbox.stream_deletions'  => 'stream_sha256, events_deleted, deleted_by, deleted_at, reason',
	'outbox._messages'         => 'id, topic, key, payload, headers, created_at',
	'outbox._inbox'            => 'consumer, message_id, consumed_at',
	'outbox._endpoints'        => 'id, name, url, topics, secret, headers, options, paused, created_at, cursor_id, done_ahead',
	'outbox._deliveries'       => 'endpoint_id, message_id, state, attempts, next_attempt_at, last_status, last_error, updated_at',
	'outbox._projections'      => 'id, name, handler, reset, event_types, stream_prefix, mode, run_as, options, state, position, events_applied, attempts, retry_at, last_error, last_applied_at, created_at',
	'outbox._events_position_seq'  => 'last_value, is_called',
	'outbox._messages_id_seq'      => 'last_value, is_called',
	'outbox._endpoints_id_seq'     => 'last_value, is_called',
	'outbox._projections_id_seq'   => 'last_value, is_called',
	'public.inline_seen'       => '*',
	'public.async_seen'        => '*');
my $rows_sql = join("\nUNION ALL ",
	map { "SELECT '$_', count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM (SELECT $columns{$_} FROM $_) t" }
	  sort keys %columns) . "\nORDER BY 1;";

# ======== database a: 0.1.0, filled by the 0.1.0 library ========
sql('postgres', 'CREATE DATABASE a');
sql('a', q{CREATE EXTENSION outbox VERSION '0.1.0'});
$node->command_ok(
	[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('a'), '-f', 'test/t/data/outbox-0.1.0.sql' ],
	'the 0.1.0 data loads into a 0.1.0 extension');
# xmark is an absolute transaction id of the cluster that made the data:
# take this one past it, so that the gap-free readers see the rows
sql('a', q{DO $$
BEGIN
    WHILE pg_current_xact_id() <= (SELECT max(x) FROM (SELECT xmark FROM outbox._events
                                     UNION ALL SELECT xmark FROM outbox._messages) m(x)) LOOP
        COMMIT;
    END LOOP;
END $$});
is(sql('a', q{SELECT extversion FROM pg_extension WHERE extname = 'outbox'}), '0.1.0', 'database a is at 0.1.0');

# ---- the relay waits for the update ----
ok(wait_until(20, sub { sql('a', q{SELECT state FROM outbox.stat_workers WHERE database = 'a'}) eq 'needs_update' }),
	'stat_workers shows the relay of a 0.1.0 database as needs_update')
  or diag(sql('a', 'SELECT * FROM outbox.stat_workers'));
my $relay = sql('a', q{SELECT pid FROM outbox.stat_workers WHERE database = 'a'});
like($relay, qr/^\d+$/, 'the waiting relay is running');

# endpoints point at this test's receivers; the plpgsql endpoint functions
# work at 0.1.0 (and wake the relay, which must keep waiting quietly)
for my $ep ([ 'main', $rx_ok ], [ 'later', $rx_ok ], [ 'flaky', $rx_bad ], [ 'doomed', $rx_bad ])
{
	my $url = $ep->[1]->url("/$ep->[0]");
	sql('a', qq{SELECT outbox.alter_endpoint('$ep->[0]', '{"url": "$url"}')});
}
my $cpu_before = cpu_ticks($relay);
sleep 4;
my $needs_update_lines = () = slurp_file($node->logfile) =~ /has extension outbox 0\.1\.0, the library is 0\.2\.0/g;
is($needs_update_lines, 1, 'one log line says the database waits for ALTER EXTENSION outbox UPDATE');
like(slurp_file($node->logfile), qr/HINT:  Run ALTER EXTENSION outbox UPDATE in database "a"/, 'with a hint');
is(sql('a', q{SELECT pid || ' ' || state FROM outbox.stat_workers WHERE database = 'a'}), "$relay needs_update",
	'the same relay, still waiting: no crash loop');
my $ticks = cpu_ticks($relay) - $cpu_before;
ok($ticks <= 3, 'no CPU while waiting');
note("the waiting relay used $ticks CPU ticks (1/100 s) in 4 s, with 4 endpoint changes waking it");
is($rx_ok->stats->{requests_total} + $rx_bad->stats->{requests_total}, 0, 'nothing is delivered');

# ---- every C function of 0.1.0 works or refuses with 55000 and the hint ----
my %calls = (
	outbox_append              => q{SELECT outbox.append('order-1', '{"type": "x"}')},
	outbox_stream_etag         => q{SELECT outbox.stream_etag('order-1')},
	outbox_lock_stream         => q{SELECT outbox.lock_stream('order-1')},
	outbox_read_stream         => q{SELECT count(*) FROM outbox.read_stream('order-1')},
	outbox_read_all            => q{SELECT count(*) FROM outbox.read_all()},
	outbox_delete_stream       => q{SELECT outbox.delete_stream('order-1', 'test')},
	outbox_publish             => q{SELECT outbox.publish('orders.x', '{}')},
	outbox_read_messages       => q{SELECT count(*) FROM outbox.read_messages()},
	outbox_consume_once        => q{SELECT outbox.consume_once('c', 'm')},
	outbox_check_url           => q{SELECT outbox._check_url('http://127.0.0.1/')},
	outbox_check_headers_sql   => q{SELECT outbox._check_headers('{"x-a": "b"}')},
	outbox_notify_relay        => q{SELECT outbox._notify_relay()},
	outbox_create_projection   => q{SELECT outbox.create_projection('p2', 'public.async_h(outbox.events)')},
	outbox_projections_changed => q{SELECT outbox._projections_changed()},
	outbox_replay_projection   => q{SELECT outbox._replay_projection(1, 0)},
	outbox_reset_projection    => q{SELECT outbox._reset_projection(2)},
	outbox_projection_live_applied => q{SELECT outbox._projection_live_applied(1)},
	outbox_wait_for_projection =>
	  q{SELECT outbox.wait_for_projection('async_typed', 'order-1', '"2-0e9acdcc9386ade9611ae821"', '0 s')},
	outbox_stat_endpoints => q{SELECT count(*) FROM outbox._stat_endpoints()},
	outbox_stat_workers   => q{SELECT count(*) FROM outbox._stat_workers()},
	# the append-only trigger: rejecting is its job
	outbox_forbid_change => q{DELETE FROM outbox._events WHERE position = 1});
is( sql('a', q{SELECT string_agg(DISTINCT prosrc, ' ' ORDER BY prosrc) FROM pg_proc
                WHERE pronamespace = 'outbox'::regnamespace AND prolang = (SELECT oid FROM pg_language WHERE lanname = 'c')}),
	join(' ', sort keys %calls),
	'every C symbol of the 0.1.0 script exists in the library (CREATE EXTENSION checked) and is called below');
my (@works, @refuses);
for my $sym (sort keys %calls)
{
	my ($rc, $out, $err) = $node->psql('a', "BEGIN; $calls{$sym}; ROLLBACK;",
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	if ($rc == 0)
	{
		push @works, $sym;
	}
	elsif ($err =~ /ERROR:  55000: extension "outbox" is at version 0\.1\.0, but its library is version 0\.2\.0/
		&& $err =~ /HINT:  Run ALTER EXTENSION outbox UPDATE\./)
	{
		push @refuses, $sym;
	}
	elsif ($sym eq 'outbox_forbid_change' && $err =~ /ERROR:  42501:/)
	{
		push @works, $sym;
	}
	else
	{
		fail("$sym at 0.1.0: $err");
	}
}
note('at 0.1.0, work: ' . join(' ', @works));
note('at 0.1.0, refuse with 55000: ' . join(' ', @refuses));
is(scalar(@works) + scalar(@refuses), scalar(keys %calls), 'each works or refuses with 55000 and the hint');
ok((grep { $_ eq 'outbox_append' } @refuses) && (grep { $_ eq 'outbox_publish' } @refuses),
	'append and publish refuse: their tables are not the ones the library writes');
is(sql('a', q{SELECT pid || ' ' || state FROM outbox.stat_workers WHERE database = 'a'}), "$relay needs_update",
	'the relay is still waiting, unharmed');
unlike(slurp_file($node->logfile), qr/terminated by signal|server process .* was terminated/, 'nothing crashed');

# ======== ALTER EXTENSION outbox UPDATE ========
my $rows_before = sql('a', $rows_sql);
my $rows_after = sql('a', "BEGIN;\nALTER EXTENSION outbox UPDATE;\n$rows_sql\nCOMMIT;");
my $updated_at = time;
ok(wait_until(10, sub { sql('a', q{SELECT state FROM outbox.stat_workers WHERE database = 'a' AND worker = 'relay'}) eq 'running' }),
	'the update wakes the waiting relay');
note(sprintf('running %.2f s after the update committed (polled)', time - $updated_at));
is(sql('a', q{SELECT pid FROM outbox.stat_workers WHERE database = 'a' AND worker = 'relay'}), $relay, 'the same process, not a restart');
is(sql('a', q{SELECT extversion FROM pg_extension WHERE extname = 'outbox'}), '0.2.0', 'database a is at 0.2.0');
is($rows_after, $rows_before, 'every row is still there, unchanged (counts and checksums of every table)');
like($rows_before, qr/^outbox\._deliveries\|12\|/m, '(the checksums cover the 0.1.0 rows)');

# the catalog of the updated database, before b's CREATE EXTENSION can add roles
my $updated = catalog_dump('a');
sql('postgres', 'CREATE DATABASE b');
sql('b', 'CREATE EXTENSION outbox');
my $fresh = catalog_dump('b');
like($fresh, qr/^function outbox\.append\(text,jsonb,text\)$/m, '(the catalog dump lists functions)');
is($updated, $fresh, 'the updated catalog equals a fresh install\'s')
  or diag("diff updated fresh:\n" . unified_diff($updated, $fresh));

# ======== the relay carries on by itself ========

# a retry keeps its attempt count: message 21 had 4 failed attempts
my $attempts = sub {
	sql('a', q{SELECT attempts FROM outbox._deliveries WHERE endpoint_id = 2 AND message_id = 21});
};
my $lowest = 4;
ok( wait_until(20, sub {
		my $n = $attempts->();
		$lowest = $n if $n < $lowest;
		return $n >= 5; }),
	'the failing retry of message 21 (4 attempts in 0.1.0) is tried again');
is($lowest, 4, 'its count went on from 4, never back to 0');
is(sql('a', q{SELECT count(*) FROM outbox.dead_letters}), '3', 'the dead letters are there');

sub arrived
{
	my ($rx, $topic) = @_;
	return [ grep { $_->{topic} eq $topic } @{ $rx->deliveries } ];
}

sub distinct { my %s = map { $_->{id} => 1 } @{ $_[0] }; return scalar keys %s; }

# the failing endpoint is fixed: its pending and waiting messages go, in key order
$rx_bad->control('fail_rate=0');
my $t0 = time;
ok(wait_until(20, sub { distinct(arrived($rx_bad, 'billing.charged')) == 9 }),
	'the retried and the waiting messages of the fixed endpoint arrive')
  or diag(explain(arrived($rx_bad, 'billing.charged')));
note(sprintf('delivered %.1f s after the receiver recovered', time - $t0));
ok(in_key_order(arrived($rx_bad, 'billing.charged')), 'in order per key');
is(scalar(grep { $_->{sig} ne 'valid' } @{ arrived($rx_bad, 'billing.charged') }), 0,
	'signed with the endpoint\'s 0.1.0 secret');
ok(wait_until(10, sub { sql('a', q{SELECT count(*) FROM outbox._deliveries WHERE state = 'retry'}) eq '0' }),
	'no retry row is left');

# dead letters are redeliverable
is(sql('a', q{SELECT sum(outbox.redeliver(message_id)) FROM outbox.dead_letters}), '3', 'redeliver the dead letters');
ok(wait_until(20, sub { distinct(arrived($rx_bad, 'audit.logged')) == 3 }), 'and they arrive');

# the paused endpoint: everything published since it was created, in key order
sql('a', q{SELECT outbox.resume_endpoint('later')});
ok( wait_until(20, sub {
		distinct(arrived($rx_ok, 'orders.created')) == 20 && distinct(arrived($rx_ok, 'billing.charged')) == 9 }),
	'a paused endpoint, resumed, gets its 29 pending messages');
ok(in_key_order([ @{ arrived($rx_ok, 'orders.created') }, @{ arrived($rx_ok, 'billing.charged') } ]),
	'in order per key');
is(scalar(grep { $_->{sig} ne 'valid' } @{ $rx_ok->deliveries }), 0, 'validly signed');

# new messages go to every matching endpoint at once
sql('a', q{SELECT outbox.publish('orders.created', '{"seq": 100}', 'k1')});
ok(wait_until(10, sub { scalar(grep { $_->{seq} eq '100' } @{ $rx_ok->deliveries }) == 2 }),
	'a message published after the update reaches main and later');

# ---- projections carry on from their checkpoints ----
ok( wait_until(20, sub {
		sql('a', q{SELECT count(*) FROM public.async_seen}) eq '15'
		  && sql('a', q{SELECT state FROM outbox.stat_projections WHERE name = 'async_typed'}) eq 'running'
		  && sql('a', q{SELECT position FROM outbox._projections WHERE name = 'async_typed'}) eq '17' }),
	'the async projection applies the 5 events after its checkpoint, each once')
  or diag(sql('a', q{SELECT * FROM outbox.stat_projections}));
is( sql('a', q{SELECT string_agg(position::text, ',' ORDER BY position) FROM public.async_seen WHERE position > 11}),
	'13,14,15,16,17', 'exactly the events after the checkpoint');
sql('a', q{SELECT outbox.append('order-10', '[{"type": "created"}, {"type": "shipped"}]')});
is(sql('a', q{SELECT count(*) FROM public.inline_seen WHERE stream = 'order-10'}), '2',
	'the inline projection applies new appends');
ok(wait_until(20, sub { sql('a', q{SELECT count(*) FROM public.async_seen WHERE stream = 'order-10'}) eq '1' }),
	'the async projection applies new appends');
is(sql('a', q{SELECT count(*) FROM outbox.read_all(0, 100)}), '18', 'read_all sees the whole log');

$node->stop;
$rx_ok->stop;
$rx_bad->stop;
done_testing();
