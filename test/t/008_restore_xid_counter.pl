# Dump and restore into a cluster whose transaction-id counter is far behind
# the source's (finding 3 of issue 8), and pg_upgrade.
#
# Rows carry their xmark, an absolute xid8 (src/gapless.c).  The source here
# is pushed 100 epochs ahead with pg_resetwal (as a production cluster that
# has wrapped around, or simply burned billions of xids, is); the target is a
# fresh cluster.  The restored database must read, project and deliver
# everything at once, and what is appended or published after the restore
# must be visible at once.
#
# pg_upgrade carries the old cluster's counter (epoch included) into the new
# one, so xmarks keep their meaning; the test checks it with a 15 -> 15
# upgrade of the same source, then promotes a standby of the upgraded
# cluster.  A standby replays the primary's WAL, whose checkpoints carry the
# next xid: its counter is at least that of any commit it has, up to xids
# that wrote nothing, and rows beyond it are taken as restored ones
# (committed, which they are), so it is covered by the same rule.
use strict;
use warnings;
use lib 'test/t';
use OutboxTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $tmp = $PostgreSQL::Test::Utils::tmp_check;
my $rx = start_receiver(log => "$tmp/receiver_008.log");
my $conf = "shared_preload_libraries = 'outbox'\n";
my ($events, $messages) = (300, 50);

# ---- the source: 100 epochs ahead ----
my $src = PostgreSQL::Test::Cluster->new('source');
$src->init;
$src->append_conf('postgresql.conf', $conf);
command_ok([ 'pg_resetwal', '-e', '100', $src->data_dir ], 'pg_resetwal moves the source 100 epochs ahead');
$src->start;
cmp_ok($src->safe_psql('postgres', 'SELECT pg_current_xact_id()::text::numeric'),
	'>', 100 * 2**32, 'the source counter is beyond 100 epochs');
$src->safe_psql(
	'postgres', qq{
	CREATE EXTENSION outbox;
	CREATE TABLE applied (position bigint PRIMARY KEY);
	CREATE FUNCTION apply_event(e outbox.events) RETURNS void LANGUAGE sql
	    AS \$\$ INSERT INTO public.applied VALUES (e.position) \$\$;
	SELECT outbox.create_projection('log', 'apply_event(outbox.events)', mode => 'async');
	SELECT outbox.pause_projection('log');
	SELECT outbox.create_endpoint('main', '@{[$rx->url]}', '{t.*}');
	SELECT outbox.pause_endpoint('main');
	SELECT count(outbox.append('s-' || (g % 10), jsonb_build_object('type', 'E', 'data', g)))
	  FROM generate_series(1, $events) g;
	SELECT count(outbox.publish('t.created', jsonb_build_object('n', g), 'k' || (g % 3)))
	  FROM generate_series(1, $messages) g;});
is($src->safe_psql('postgres', 'SELECT count(*) FROM outbox.read_all(0, 100000)'),
	$events, 'the source reads its own events');
my $dump = "$tmp/source.dump";
$src->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-h', $src->host, '-p', $src->port, 'postgres' ],
	'pg_dump of the source');
$src->stop;

# ---- the target: a fresh cluster, its counter far lower ----
my $dst = PostgreSQL::Test::Cluster->new('target');
$dst->init;
$dst->append_conf('postgresql.conf', $conf);
$dst->start;
$dst->safe_psql('postgres', 'CREATE DATABASE restored');
$dst->command_ok(
	[ 'pg_restore', '--exit-on-error', '-d', 'restored', '-h', $dst->host, '-p', $dst->port, $dump ],
	'pg_restore into the fresh cluster');
sub dsql { return $dst->safe_psql('restored', $_[0]); }

cmp_ok(dsql('SELECT pg_current_xact_id()::text::numeric'), '<', 2**32,
	'the target counter is far behind the restored xmarks');
is(dsql('SELECT count(*) FROM outbox.read_all(0, 100000)'), $events,
	'read_all returns every restored event');
is(dsql('SELECT count(*) FROM outbox.read_messages(0, 100000)'), $messages,
	'read_messages returns every restored message');

# New appends and publishes are visible at once.
my $last = dsql('SELECT max(position) FROM outbox.events');
dsql(q{SELECT outbox.append('after', '{"type": "AfterRestore"}')});
is(dsql("SELECT string_agg(type, ',') FROM outbox.read_all($last, 1000)"), 'AfterRestore',
	'an append after the restore is read at once, after the restored events');
is(dsql('SELECT count(*) FROM outbox.read_all(0, 100000)'), $events + 1,
	'and a read from the start returns the restored events and the new one');
my $last_id = dsql('SELECT max(id) FROM outbox.messages');
dsql(q{SELECT outbox.publish('t.after', '{}')});
is(dsql("SELECT string_agg(topic, ',') FROM outbox.read_messages($last_id, 1000)"), 't.after',
	'a publish after the restore is read at once');

# The async projection applies the restored events (and the new one).
dsql(q{SELECT outbox.resume_projection('log')});
my $etag = dsql(q{SELECT outbox.stream_etag('after')});
is(dsql(qq{SELECT outbox.wait_for_projection('log', 'after', '$etag', '60 s')}), 't',
	'the async projection catches up with the restored events');
is(dsql('SELECT count(*) FROM applied'), $events + 1, 'every event applied once');

# The paused endpoint delivers every restored message, then the new one.
dsql(q{SELECT outbox.resume_endpoint('main')});
ok(wait_until(60, sub { scalar(@{ $rx->deliveries }) >= $messages + 1 }),
	'the relay delivers every restored message and the new one');
my %ids = map { $_->{id} => 1 } @{ $rx->deliveries };
is(scalar(keys %ids), $messages + 1, 'each message once');

# Appends interleaved with reads keep working (gap-free, nothing held back).
dsql(q{SELECT outbox.append('after', '{"type": "Again"}')});
is(dsql("SELECT count(*) FROM outbox.read_all($last, 1000)"), 2, 'later appends are read at once too');
$dst->stop;

# ---- pg_upgrade of the source, 15 -> 15: the counter moves with it ----
my $new = PostgreSQL::Test::Cluster->new('upgraded');
$new->init(allows_streaming => 1);
$new->append_conf('postgresql.conf', $conf);
my $bindir = $new->config_data('--bindir');
{
	# pg_upgrade writes its logs into the current directory
	chdir $tmp or die $!;
	command_ok(
		[
			'pg_upgrade', '--no-sync', '-b', $bindir, '-B', $bindir,
			'-d', $src->data_dir, '-D', $new->data_dir,
			'-p', $src->port, '-P', $new->port, '-s', $new->host
		],
		'pg_upgrade of the source');
}
$new->start;
cmp_ok($new->safe_psql('postgres', 'SELECT pg_current_xact_id()::text::numeric'),
	'>', 100 * 2**32, 'pg_upgrade kept the counter');
is($new->safe_psql('postgres', 'SELECT count(*) FROM outbox.read_all(0, 100000)'), $events,
	'the upgraded cluster reads every event');
$new->safe_psql('postgres', q{SELECT outbox.append('upgraded', '{"type": "AfterUpgrade"}')});
is($new->safe_psql('postgres', 'SELECT count(*) FROM outbox.read_all(0, 100000)'), $events + 1,
	'and what is appended after the upgrade');

# ---- a promoted standby of the upgraded cluster: it replayed the counter ----
$new->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($new, 'b', has_streaming => 1);
$standby->start;
$new->safe_psql('postgres', q{SELECT outbox.append('upgraded', '{"type": "BeforePromotion"}')});
$new->wait_for_catchup($standby);
$new->stop;
$standby->promote;
cmp_ok($standby->safe_psql('postgres', 'SELECT pg_current_xact_id()::text::numeric'),
	'>', 100 * 2**32, 'the promoted standby has the counter');
$standby->safe_psql('postgres', q{SELECT outbox.append('promoted', '{"type": "AfterPromotion"}')});
is($standby->safe_psql('postgres', 'SELECT count(*) FROM outbox.read_all(0, 100000)'), $events + 3,
	'the promoted standby reads every event, and what is appended after the promotion');
$standby->stop;
$rx->stop;
done_testing();
