# Crash safety and dump/restore of the event store and the outbox.
#
# Concurrent clients append three events at a time and publish messages while
# the postmaster is killed with SIGKILL.  After restart: no append is half
# written, versions are 1..n in every stream, the stream heads agree with
# the events, and a paging read_all returns every event once, in order.  Then a
# pg_dump / pg_restore round trip keeps events, ETags and message ids, and new
# appends and publishes carry on from where the original left off.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $node = PostgreSQL::Test::Cluster->new('crash');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'outbox'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION outbox');

my $script = "$PostgreSQL::Test::Utils::tmp_check/append.sql";
open(my $fh, '>', $script) or die $!;
print $fh <<'EOS';
\set s random(1, 40)
SELECT outbox.append('s-' || :s, '[{"type": "A"}, {"type": "B"}, {"type": "C"}]', outbox.lock_stream('s-' || :s));
SELECT outbox.publish('t', '{"n": 1}', 'k-' || :s);
EOS
close $fh;

# Load for 30 s at most; the postmaster dies after 3 s.
my ($out, $err) = ('', '');
my $bench = IPC::Run::start(
	[
		'pgbench', '-n', '-c', '4', '-T', '30', '-f', $script,
		'-h', $node->host, '-p', $node->port, 'postgres'
	],
	'>', \$out, '2>', \$err);
sleep 3;
my $before = $node->safe_psql('postgres', 'SELECT count(*) FROM outbox.events');
cmp_ok($before, '>', 0, "appends were running before the crash ($before events)");
$node->kill9;
$bench->finish;
like($err, qr/server closed the connection|terminat|connection/i,
	'pgbench lost its connections to the crash');

# kill9 leaves the backends to notice the postmaster's death; wait for them.
my $started = 0;
for (1 .. 50)
{
	# a failed start re-reads the stale postmaster.pid: forget it before retrying
	undef $node->{_pid};
	last if ($started = $node->start(fail_ok => 1));
	sleep 0.2;
}
ok($started, 'the cluster restarts after SIGKILL');

is( $node->safe_psql(
		'postgres',
		q{SELECT count(*) FROM (SELECT stream FROM outbox.events GROUP BY stream
		   HAVING count(*) % 3 <> 0 OR max(version) <> count(*) OR min(version) <> 1) s}),
	'0',
	'no half-written append, and versions are 1..n in every stream');
is( $node->safe_psql(
		'postgres',
		q{SELECT count(*) FROM outbox._streams h
		   FULL JOIN (SELECT stream, max(version) AS v FROM outbox.events GROUP BY stream) e
		   USING (stream) WHERE h.version IS DISTINCT FROM e.v}),
	'0',
	'stream heads agree with the events');

my $total = $node->safe_psql('postgres', 'SELECT count(*) FROM outbox.events');
cmp_ok($total, '>=', $before, "committed events survived ($total)");
is( $node->safe_psql(
		'postgres', q{
		CREATE TEMP TABLE seen (n serial, position bigint);
		DO $$
		DECLARE last bigint := 0; got int;
		BEGIN
			LOOP
				INSERT INTO seen (position) SELECT position FROM outbox.read_all(last, 500);
				GET DIAGNOSTICS got = ROW_COUNT;
				EXIT WHEN got = 0;
				SELECT max(position) INTO last FROM seen;
			END LOOP;
		END $$;
		SELECT count(*) = (SELECT count(*) FROM outbox.events)
		   AND count(DISTINCT position) = count(*)
		   AND bool_and(position > coalesce(prev, 0))
		  FROM (SELECT position, lag(position) OVER (ORDER BY n) AS prev FROM seen) s}),
	't',
	'paging read_all after the crash returns every event once, in order');

# Appends go on where the stream heads say.
my $etag = $node->safe_psql('postgres', q{SELECT outbox.stream_etag('s-1')});
my $v = $node->safe_psql('postgres', q{SELECT count(*) FROM outbox.events WHERE stream = 's-1'});
is( $node->safe_psql(
		'postgres',
		qq{SELECT split_part(outbox.append('s-1', '{"type": "AfterCrash"}', '$etag'), '-', 1)}),
	'"' . ($v + 1),
	'an append with the pre-crash ETag continues the stream');

# pg_dump / pg_restore into a new database of the same cluster.
my $dump = "$PostgreSQL::Test::Utils::tmp_check/outbox.dump";
$node->command_ok(
	[ 'pg_dump', '-Fc', '-f', $dump, '-h', $node->host, '-p', $node->port, 'postgres' ],
	'pg_dump of a database with outbox');
$node->safe_psql('postgres', 'CREATE DATABASE restored');
$node->command_ok(
	[
		'pg_restore', '--exit-on-error', '-d', 'restored',
		'-h', $node->host, '-p', $node->port, $dump
	],
	'pg_restore into a new database');

my $summary = q{SELECT count(*), max(position), string_agg(md5(e::text), '' ORDER BY position) FROM outbox.events e};
is( $node->safe_psql('restored', $summary),
	$node->safe_psql('postgres', $summary),
	'restored events are identical');
is( $node->safe_psql('restored', q{SELECT count(*), max(id) FROM outbox.messages}),
	$node->safe_psql('postgres', q{SELECT count(*), max(id) FROM outbox.messages}),
	'restored messages are identical');
is( $node->safe_psql('restored', q{SELECT outbox.stream_etag('s-1')}),
	$node->safe_psql('postgres', q{SELECT outbox.stream_etag('s-1')}),
	'ETags survive the restore');
my $max_restored = $node->safe_psql('restored', q{SELECT max(position) FROM outbox.events});
my $max_id = $node->safe_psql('restored', q{SELECT max(id) FROM outbox.messages});
$node->safe_psql('restored',
	q{SELECT outbox.append('s-1', '{"type": "AfterRestore"}', outbox.stream_etag('s-1'))});
cmp_ok(
	$node->safe_psql('restored', q{SELECT position FROM outbox.events WHERE type = 'AfterRestore'}),
	'>', $max_restored, 'after the restore, positions carry on past the restored ones');
cmp_ok($node->safe_psql('restored', q{SELECT outbox.publish('t', '{}')}),
	'>', $max_id, 'after the restore, message ids carry on past the restored ones');
is( $node->safe_psql(
		'restored', q{SELECT count(*) FROM pg_trigger WHERE tgrelid = 'outbox._events'::regclass}),
	'2',
	'the append-only guard is restored with the extension');

$node->stop;
done_testing();
