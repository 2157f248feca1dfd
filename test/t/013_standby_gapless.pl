# Gap-free reading on a hot standby: a message committed on the primary above
# one whose transaction is still open must not be returned by the standby's
# readers.  A standby's next xid lags the primary's (a transaction that
# writes nothing logs no xid), so the rule that lets rows restored from
# another cluster pass (xmark beyond the next xid) must not apply there:
# before, read_messages on the standby returned the later message and the
# earlier one then appeared below a cursor that had moved past it.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $primary = PostgreSQL::Test::Cluster->new('gap_primary');
$primary->init(allows_streaming => 1);
$primary->start;
$primary->safe_psql('postgres', 'CREATE EXTENSION outbox');
$primary->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('gap_standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
$standby->start;

my $last = $primary->safe_psql('postgres', q{SELECT outbox.publish('gap', '{"n": 0}')});
$primary->wait_for_catchup($standby);

# T1 takes the next id and stays open.
my $t1 = $primary->background_psql('postgres');
$t1->query_safe('BEGIN');
my $first = $t1->query_safe(q{SELECT outbox.publish('gap', '{"n": 1}')});
# T2 takes an xid; T3 takes a later one and writes nothing (no WAL).
my $t2 = $primary->background_psql('postgres');
$t2->query_safe('BEGIN');
$t2->query_safe('SELECT pg_current_xact_id()');
my $t3 = $primary->background_psql('postgres');
$t3->query_safe('BEGIN');
$t3->query_safe('SELECT pg_current_xact_id()');
# T2 publishes (its xmark is beyond anything the standby has seen) and commits.
my $second = $t2->query_safe(q{SELECT outbox.publish('gap', '{"n": 2}')});
$t2->query_safe('COMMIT');
$primary->wait_for_catchup($standby);

is($primary->safe_psql('postgres', "SELECT string_agg(id::text, ',') FROM outbox.read_messages($last)"),
	'', 'the primary returns nothing while the earlier id is open');
is($standby->safe_psql('postgres', "SELECT string_agg(id::text, ',') FROM outbox.read_messages($last)"),
	'', 'neither does the standby');
is($standby->safe_psql('postgres', "SELECT count(*) FROM outbox.read_all(0)"), '0',
	'read_all on the standby is not confused either');

$t1->query_safe('COMMIT');
$t3->query_safe('COMMIT');
# T3 wrote nothing, so its commit record is flushed asynchronously: wait for
# the insert position, not the write position wait_for_catchup uses by default
$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));
is($standby->safe_psql('postgres', "SELECT string_agg(id::text, ',' ORDER BY id) FROM outbox.read_messages($last)"),
	"$first,$second", 'once it commits, the standby returns both, in order');

$_->quit for ($t1, $t2, $t3);
$standby->stop;
$primary->stop;
done_testing();
