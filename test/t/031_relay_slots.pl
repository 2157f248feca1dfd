# Finding 9: outbox.max_databases counts only databases that have the
# extension.  A database without it is looked at and holds no slot; a
# database with the extension that finds no room is listed in
# outbox.stat_workers (state "no_slot") from every database, and gets its
# relay as soon as a place frees.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use lib 'test/t';
use OutboxTest;

my $node = PostgreSQL::Test::Cluster->new('slots');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'outbox'\noutbox.max_databases = 2\n");
$node->start;

sub relays
{
	return $node->safe_psql('postgres',
		q{SELECT coalesce(string_agg(datname, ',' ORDER BY datname), '') FROM pg_stat_activity
		   WHERE backend_type = 'outbox relay'});
}

# what stat_workers says, from database $db: "database:state,..."
sub workers
{
	my ($db) = @_;
	return $node->safe_psql($db,
		q{SELECT coalesce(string_agg(database || ':' || state, ',' ORDER BY database), '')
		    FROM outbox.stat_workers});
}

# postgres (no extension) was there first; then two databases with it.
$node->safe_psql('postgres', 'CREATE DATABASE plain');
for my $db (qw(app1 app2))
{
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, 'CREATE EXTENSION outbox');
}
ok(wait_until(20, sub { relays() eq 'app1,app2' }),
	'with max_databases = 2, both databases with the extension get a relay')
  or diag('relays: ' . relays() . '; workers: ' . workers('app1'));
ok(wait_until(10, sub { workers('app1') eq 'app1:running,app2:running' }),
	'databases without the extension (postgres, plain) hold no slot');

# a third database with the extension: no room, and every database can see it
$node->safe_psql('postgres', 'CREATE DATABASE app3');
$node->safe_psql('app3', 'CREATE EXTENSION outbox');
ok(wait_until(20, sub { workers('app1') eq 'app1:running,app2:running,app3:no_slot' }),
	'a third database with the extension shows up as no_slot in stat_workers')
  or diag(workers('app1'));
is(workers('app3'), 'app1:running,app2:running,app3:no_slot', 'seen from that database too');
is(workers('app2'), 'app1:running,app2:running,app3:no_slot', 'and from the others');
is($node->safe_psql('app3', q{SELECT pid IS NULL FROM outbox.stat_workers WHERE database = 'app3'}), 't',
	'with no pid');
is(relays(), 'app1,app2', 'it has no relay');
my $logged = () = slurp_file($node->logfile) =~ /database \d+ has no relay/g;
is($logged, 1, 'the log says so once');

# a place frees: the waiting database gets it
$node->safe_psql('app2', 'DROP EXTENSION outbox');
ok(wait_until(20, sub { relays() eq 'app1,app3' }), 'DROP EXTENSION elsewhere lets it run')
  or diag('relays: ' . relays() . '; workers: ' . workers('app1'));
ok(wait_until(10, sub { workers('app1') eq 'app1:running,app3:running' }),
	'and stat_workers no longer lists it as waiting');

# the database that dropped it can have it back once there is room again
$node->safe_psql('postgres', 'DROP DATABASE app1');
$node->safe_psql('app2', 'CREATE EXTENSION outbox');
ok(wait_until(20, sub { relays() eq 'app2,app3' }), 'CREATE EXTENSION again gets a relay when there is room')
  or diag('relays: ' . relays() . '; workers: ' . workers('app3'));

$node->stop;
done_testing();
