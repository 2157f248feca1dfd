# No wait anywhere can lose a wake-up, and async projections never hold
# webhook delivery up: messages published at random moments arrive within a
# second of their commit while an async handler sleeps (pg_sleep) or waits
# for a lock held by another session, and while the relay's own commits wait
# for a synchronous standby (SyncRepWaitForLSN consumes the latch too).  The
# blocked projection then applies every event exactly once, and an idle
# projector uses no CPU.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use lib 'test/t';
use OutboxTest;

my $seed = $ENV{OUTBOX_TEST_SEED} // time;
srand($seed);
note "random seed $seed";

my $node = PostgreSQL::Test::Cluster->new('wakeups');
$node->init(allows_streaming => 1);
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'outbox'\n");
$node->start;

sub sql { return $node->safe_psql('postgres', $_[0]); }

my $rx = start_receiver(log => "$PostgreSQL::Test::Utils::tmp_check/receiver_007.log");
sql(q{
	CREATE EXTENSION outbox;
	CREATE TABLE applied (position bigint PRIMARY KEY, times int NOT NULL);
	CREATE TABLE guarded (x int);
	CREATE FUNCTION count_it(e outbox.events) RETURNS void LANGUAGE sql AS $$
		INSERT INTO public.applied VALUES (e.position, 1)
		ON CONFLICT (position) DO UPDATE SET times = applied.times + 1 $$;
	-- a handler that sleeps 2 s per event
	CREATE FUNCTION apply_sleepy(e outbox.events) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
		PERFORM pg_sleep(2);
		PERFORM public.count_it(e);
	END $$;
	-- a handler that waits for any session holding guarded IN SHARE MODE
	CREATE FUNCTION apply_locked(e outbox.events) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO public.guarded VALUES (1);
		PERFORM public.count_it(e);
	END $$;
	SELECT outbox.create_projection('sleepy', 'apply_sleepy(outbox.events)', NULL, 'sleep-', 'async');
	SELECT outbox.create_projection('locked', 'apply_locked(outbox.events)', NULL, 'lock-', 'async');
});
sql(qq{SELECT outbox.create_endpoint('hooks', '@{[$rx->url]}', '{ping}')});

sub relay_pid
{
	return sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'outbox relay'});
}

sub relay_loops
{
	return sql(qq{SELECT loops FROM outbox.stat_workers WHERE pid = @{[relay_pid()]}});
}

# When the receiver accepted message msg_ID (Unix seconds), or undef.
sub arrival
{
	my ($id) = @_;
	my ($row) = grep { $_->{id} eq "msg_$id" } @{ $rx->deliveries };
	return $row ? $row->{t} / 1e6 : undef;
}

# Publish one message (with extra SQL before it in the same session) and
# return seconds from just before the publishing session started to the
# message's arrival (10 s: not delivered within 5 s).
sub publish_latency
{
	my ($label, $before) = @_;
	$before //= '';
	my $t0 = time;
	my $id = $node->safe_psql('postgres', qq{$before SELECT outbox.publish('ping', '{"label": "$label"}')});
	wait_until(5, sub { defined arrival($id) });
	my $t = arrival($id);
	return defined $t ? $t - $t0 : 10;
}

# Several publishes at random moments over about $secs seconds; the worst latency.
sub random_publishes
{
	my ($label, $n, $secs) = @_;
	my $worst = 0;
	for my $i (1 .. $n)
	{
		usleep(int(rand($secs / $n) * 1e6));
		my $l = publish_latency("$label-$i");
		$worst = $l if $l > $worst;
	}
	return $worst;
}

# ---- a handler that sleeps ----
my $loops0 = relay_loops();
my $worst = 0;
for my $round (1 .. 3)
{
	sql(qq{SELECT outbox.append('sleep-$round', '{"type": "x"}')});
	usleep(300_000);	# the projector is in pg_sleep now
	my $w = random_publishes("sleep$round", 3, 1.5);
	$worst = $w if $w > $worst;
}
cmp_ok($worst, '<', 1, sprintf('while a handler sleeps, messages arrive within %.0f ms of commit', $worst * 1000));
cmp_ok(relay_loops(), '>', $loops0, 'the relay loop keeps turning (stat_workers.loops)');

# ---- a handler that waits for a lock held by another session ----
my $holder = $node->background_psql('postgres');
$holder->query_safe('BEGIN; LOCK guarded IN SHARE MODE;');
sql(q{SELECT outbox.append('lock-' || g, '{"type": "x"}') FROM generate_series(1, 3) g});
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'outbox projector'
		   AND wait_event_type = 'Lock'}),
	'the projector waits for the lock in its handler');
$loops0 = relay_loops();
$worst = random_publishes('locked', 6, 3);
cmp_ok($worst, '<', 1, sprintf('while a handler waits for a lock, messages arrive within %.0f ms of commit', $worst * 1000));
cmp_ok(relay_loops(), '>', $loops0, 'the relay loop keeps turning');
is( sql(q{SELECT state, horizon_blocked_since IS NULL FROM outbox.stat_workers WHERE worker = 'relay'}),
	'running|t', 'stat_workers: the relay is not held back by the blocked batch');
is( sql(q{SELECT state, pid = (SELECT pid FROM pg_stat_activity WHERE backend_type = 'outbox projector'),
		  requests IS NULL FROM outbox.stat_workers WHERE worker = 'projector'}),
	'running|t|t', 'stat_workers: the projector has a row of its own');
is(sql(q{SELECT count(*) FROM outbox.read_messages(0, 1000)}), sql(q{SELECT count(*) FROM outbox.messages}),
	'read_messages returns every message while the batch is blocked');

$holder->query_safe('COMMIT');
$holder->quit;
ok( wait_until(30, sub { sql(q{SELECT count(*) FROM applied a JOIN outbox.events e USING (position)
	                         WHERE e.stream LIKE 'lock-%'}) == 3 }),
	'after the lock is released, the projection applies its events');
ok( wait_until(30, sub { sql(q{SELECT count(*) FROM applied a JOIN outbox.events e USING (position)
	                         WHERE e.stream LIKE 'sleep-%'}) == 3 }),
	'and the sleepy one too');
is(sql(q{SELECT count(*) FILTER (WHERE times <> 1) FROM applied}), '0', 'each event exactly once');
is( sql(q{SELECT string_agg(name || ':' || lag_events || ':' || events_applied, ',' ORDER BY name)
	       FROM outbox.stat_projections}),
	'locked:0:3,sleepy:0:3', 'stat_projections: no lag, 3 applied each');

# ---- a handler that publishes is an ordinary writer again (gapless.c, step 6) ----
sql(q{
	CREATE FUNCTION apply_publishing(e outbox.events) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
		PERFORM outbox.publish('inner', jsonb_build_object('position', e.position));
		PERFORM pg_sleep(2);
		PERFORM public.count_it(e);
	END $$;
	SELECT outbox.create_projection('publishing', 'apply_publishing(outbox.events)', NULL, 'pub-', 'async');
	SELECT outbox.append('pub-1', '{"type": "x"}');
});
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'outbox projector' AND wait_event = 'PgSleep'}),
	'the publishing handler sleeps after its publish');
my $outer = sql(q{SELECT outbox.publish('outer', '{}')});
is(sql(qq{SELECT count(*) FROM outbox.read_messages(0, 1000) WHERE id >= $outer}), '0',
	'a message published after the handler\'s is held back until the batch commits');
ok( wait_until(10, sub { sql(qq{SELECT count(*) FROM outbox.read_messages(0, 1000) WHERE topic = 'inner' OR id = $outer}) == 2 }),
	'then both are read');
is(sql(q{SELECT count(*) FILTER (WHERE times <> 1) FROM applied}), '0', 'still each event exactly once');

# ---- an idle projector sleeps ----
my $projector = sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'outbox projector'});
ok($projector, 'the projector stays while async projections exist');
usleep(300_000);
my $t0 = cpu_ticks($projector);
sleep 2;
my $used = cpu_ticks($projector) - $t0;
cmp_ok($used, '<=', 2, "an idle projector used $used CPU ticks in 2 s");

# ---- the relay restarts a projector that exited with an error ----
sql(qq{SELECT pg_terminate_backend($projector)});
sql(q{SELECT outbox.append('lock-4', '{"type": "x"}')});
ok( wait_until(10, sub { sql(q{SELECT count(*) FROM applied a JOIN outbox.events e USING (position)
	                         WHERE e.stream = 'lock-4'}) == 1 }),
	'a terminated projector is restarted by the relay, and applies what came meanwhile');
isnt(sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'outbox projector'}), $projector,
	'(a new projector)');

# ---- DROP EXTENSION and DROP DATABASE are not held up by a blocked handler ----
# a database whose projector is blocked in its handler: waiting for a lock
# held by the returned session, or (without one) in a long pg_sleep
sub blocked_database
{
	my ($db, $lock) = @_;
	my $body = $lock ? 'INSERT INTO public.guarded VALUES (1)' : 'SELECT pg_sleep(60)';
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, qq{
		CREATE EXTENSION outbox;
		CREATE TABLE guarded (x int);
		CREATE FUNCTION apply_blocked(e outbox.events) RETURNS void LANGUAGE sql AS \$\$ $body \$\$;
		SELECT outbox.create_projection('blocked', 'apply_blocked(outbox.events)', NULL, NULL, 'async');
	});
	my $h;
	if ($lock)
	{
		$h = $node->background_psql($db);
		$h->query_safe('BEGIN; LOCK guarded IN SHARE MODE;');
	}
	$node->safe_psql($db, q{SELECT outbox.append('s', '{"type": "x"}')});
	ok( $node->poll_query_until('postgres',
			qq{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'outbox projector'
			   AND datname = '$db' AND wait_event IN ('transactionid', 'relation', 'PgSleep')}),
		"$db: the projector is blocked in its handler");
	return $h;
}
my $h = blocked_database('dropext', 1);
my $t = time;
$node->safe_psql('dropext', 'DROP EXTENSION outbox CASCADE');
cmp_ok(time - $t, '<', 5, 'DROP EXTENSION does not wait for the blocked handler');
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type LIKE 'outbox %' AND datname = 'dropext'}),
	'the relay and the projector of that database are gone');
$h->quit;
blocked_database('dropdb', 0);
$t = time;
$node->safe_psql('postgres', 'DROP DATABASE dropdb');
cmp_ok(time - $t, '<', 5, 'DROP DATABASE does not wait for the blocked handler');

# ---- a synchronous standby: the relay's commits wait in SyncRepWaitForLSN ----
$node->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($node, 'b', has_streaming => 1);
$standby->start;
$node->append_conf('postgresql.conf', "synchronous_standby_names = '*'\n");
$node->reload;
ok( $node->poll_query_until('postgres', q{SELECT sync_state = 'sync' FROM pg_stat_replication}),
	'the standby is synchronous');
$worst = random_publishes('sync', 8, 3);
cmp_ok($worst, '<', 1, sprintf('with a synchronous standby, messages arrive within %.0f ms of commit', $worst * 1000));

# Hold the standby's acknowledgements: the relay's next progress save waits in
# SyncRepWaitForLSN; a message published meanwhile (not waiting itself) sets
# the relay's latch, which that wait consumes.
my $receiver = $standby->safe_psql('postgres', 'SELECT pid FROM pg_stat_wal_receiver');
kill 'STOP', $receiver;
my $stopped = 1;
END { kill 'CONT', $receiver if $stopped; }
my $local = 'SET synchronous_commit = local;';
cmp_ok(publish_latency('before', $local), '<', 1, 'a message arrives while the standby is stalled');
ok( $node->poll_query_until('postgres',
		q{SELECT wait_event = 'SyncRep' FROM pg_stat_activity WHERE backend_type = 'outbox relay'}),
	'the relay waits for the standby to save its progress');
my $id = $node->safe_psql('postgres', qq{$local SELECT outbox.publish('ping', '{"label": "during"}')});
usleep(500_000);
kill 'CONT', $receiver;
$stopped = 0;
my $resumed = time;
wait_until(5, sub { defined arrival($id) });
my $after = defined arrival($id) ? arrival($id) - $resumed : 10;
cmp_ok($after, '<', 1,
	sprintf('the message published during the wait arrives %.0f ms after the standby resumes', $after * 1000));
$worst = random_publishes('sync-after', 5, 2);
cmp_ok($worst, '<', 1, sprintf('and later ones within %.0f ms', $worst * 1000));

$standby->stop;
$node->stop;
$rx->stop;
done_testing();
