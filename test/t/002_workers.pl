# The launcher and the per-database relays: started by CREATE EXTENSION
# within 2 seconds, stopped by DROP EXTENSION, never in DROP DATABASE's way,
# restarted after being killed, absent on a standby until it is promoted,
# and the SQL API without shared_preload_libraries.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use lib 'test/t';
use OutboxTest;

my $node = PostgreSQL::Test::Cluster->new('workers');
$node->init(allows_streaming => 1);
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'outbox'\noutbox.max_databases = 8\n");
$node->start;
is($node->safe_psql('postgres', 'SHOW outbox.max_databases'), '8',
	'postmaster settings in postgresql.conf are honoured');

sub relays
{
	my ($n) = @_;
	return $n->safe_psql('postgres',
		q{SELECT coalesce(string_agg(datname, ',' ORDER BY datname), '') FROM pg_stat_activity
		   WHERE backend_type = 'outbox relay'});
}

ok( $node->poll_query_until(
		'postgres',
		q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'outbox launcher'}),
	'the launcher runs, with backend_type "outbox launcher"');
is(relays($node), '', 'no relay where the extension is not installed');

# CREATE EXTENSION in a running server: a relay within 2 seconds.
$node->safe_psql('postgres', 'CREATE DATABASE app1');
$node->safe_psql('postgres', 'CREATE DATABASE app2');
$node->safe_psql('postgres', 'CREATE DATABASE app3');
for my $db (qw(app1 app2 app3))
{
	my $t0 = time;
	$node->safe_psql($db, 'CREATE EXTENSION outbox');
	$node->poll_query_until('postgres',
		qq{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'outbox relay' AND datname = '$db'})
	  or die "no relay in $db";
	my $elapsed = time - $t0;
	cmp_ok($elapsed, '<', 2, sprintf('CREATE EXTENSION in %s got its relay in %.2f s', $db, $elapsed));
}
is(relays($node), 'app1,app2,app3', 'one relay per database with the extension');

# DROP EXTENSION stops the relay; CREATE EXTENSION brings it back.
$node->safe_psql('app2', 'DROP EXTENSION outbox');
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'outbox relay' AND datname = 'app2'}),
	'DROP EXTENSION stops the relay');
$node->safe_psql('app2', 'CREATE EXTENSION outbox');
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'outbox relay' AND datname = 'app2'}),
	'CREATE EXTENSION again starts it again');

# DROP DATABASE is not blocked by the relay connected to it.
my $t0 = time;
$node->safe_psql('postgres', 'DROP DATABASE app3');
my $elapsed = time - $t0;
cmp_ok($elapsed, '<', 3, sprintf('DROP DATABASE with a relay connected took %.2f s', $elapsed));
is(relays($node), 'app1,app2', 'its relay is gone, the others run on');

# ALTER DATABASE RENAME needs the database free too; the relay comes back after.
$node->safe_psql('postgres', 'ALTER DATABASE app2 RENAME TO app2b');
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'outbox relay' AND datname = 'app2b'}),
	'after ALTER DATABASE RENAME the relay runs again');

# A DROP DATABASE that will fail (not the owner) does not stop the relay.
$node->safe_psql('postgres', 'CREATE ROLE regress_intruder LOGIN');
my $app1_relay = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'outbox relay' AND datname = 'app1'});
my ($ret, $o, $e) = $node->psql('postgres', 'DROP DATABASE app1', extra_params => [ '-U', 'regress_intruder' ]);
like($e, qr/must be owner/, 'a non-owner cannot drop the database');
is( $node->safe_psql('postgres',
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'outbox relay' AND datname = 'app1'}),
	$app1_relay, 'and its failed DROP DATABASE did not stop the relay');

# A restarted launcher adopts the running relays instead of starting more.
$node->safe_psql('postgres',
	q{SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'outbox launcher'});
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'outbox launcher'}),
	'the launcher is restarted');
sleep 2;
is( $node->safe_psql('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'outbox relay' AND datname = 'app1'}),
	'1', 'still one relay per database');

# A relay terminated by an administrator is restarted by the launcher.
my $pid = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'outbox relay' AND datname = 'app1'});
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
ok( $node->poll_query_until('postgres',
		qq{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'outbox relay'
		    AND datname = 'app1' AND pid <> $pid}),
	'a terminated relay is restarted');

# SIGHUP reloads settings; launcher and relays survive it (a reload once
# crashed the launcher through memory freed by a committed transaction).
my $launcher = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'outbox launcher'});
my $relay_before = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'outbox relay' AND datname = 'app1'});
$node->append_conf('postgresql.conf', "outbox.retention = '30min'\n");
$node->reload;
$node->reload;
ok( $node->poll_query_until('postgres', q{SELECT current_setting('outbox.retention') = '30min'}),
	'SIGHUP reloads outbox settings');
sleep 1;
is( $node->safe_psql('postgres',
		q{SELECT string_agg(pid::text, ',' ORDER BY backend_type) FROM pg_stat_activity
		   WHERE backend_type = 'outbox launcher' OR (backend_type = 'outbox relay' AND datname = 'app1')}),
	"$launcher,$relay_before",
	'the launcher and the relay keep running through reloads');

# An idle relay sleeps: its CPU time does not grow over 2 seconds.
$pid = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'outbox relay' AND datname = 'app1'});
my $before = cpu_ticks($pid);
sleep 2;
cmp_ok(cpu_ticks($pid) - $before, '<=', 1, 'an idle relay uses no CPU');

# A standby runs no relay and sends nothing; after promotion its relays
# deliver what the old primary had not.
my $rx = start_receiver(log => "$PostgreSQL::Test::Utils::tmp_check/standby_receiver.log");
my $url = $rx->url;
$node->safe_psql('app1', qq{SELECT outbox.create_endpoint('r', '$url', '{*}', NULL, '{}',
                                  '{"backoff_base_ms": 50, "backoff_max_ms": 200}')});
$node->safe_psql('app1', q{SELECT outbox.publish('before.failover', jsonb_build_object('seq', 0))});
ok(wait_until(20, sub { scalar(@{ $rx->deliveries }) == 1 }), 'the primary delivers');
$rx->down;
$node->safe_psql('app1',
	q{SELECT count(outbox.publish('failover', jsonb_build_object('seq', g), 'k')) FROM generate_series(1, 20) g});
$node->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($node, 'b', has_streaming => 1);
$standby->start;
$node->wait_for_catchup($standby);
ok( $standby->poll_query_until('postgres',
		q{SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type LIKE 'outbox%'}),
	'a standby runs no launcher and no relay');
$node->stop;
$rx->up;
sleep 1;
is(scalar(@{ $rx->deliveries }), 1, 'nothing is sent while only the standby runs');
$standby->promote;
ok( $standby->poll_query_until('postgres',
		q{SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'outbox relay'}),
	'after promotion the relays run');
ok(wait_until(30, sub { scalar(grep { $_->{topic} eq 'failover' } @{ $rx->deliveries }) == 20 }),
	'the promoted standby delivers what the old primary had not, once each');
my @seqs = map { $_->{seq} } grep { $_->{topic} eq 'failover' } @{ $rx->deliveries };
is("@seqs", join(' ', 1 .. 20), 'in order');
$standby->stop;
$rx->stop;
$node->start;

# Without shared_preload_libraries the SQL API works, with no workers.
my $plain = PostgreSQL::Test::Cluster->new('plain');
$plain->init;
$plain->start;
$plain->safe_psql('postgres', 'CREATE EXTENSION outbox');
is( $plain->safe_psql(
		'postgres', q{
		SELECT outbox.publish('t', '{}') IS NOT NULL
		   AND outbox.append('s', '{"type": "A"}') IS NOT NULL
		   AND (SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'outbox%') = 0}),
	't',
	'without shared_preload_libraries the SQL API works and no worker runs');
$plain->stop;

$node->stop;
done_testing();
