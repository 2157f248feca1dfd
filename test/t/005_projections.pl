# Async projections against crashes, and read-your-writes: SIGKILL of the
# projector and of the postmaster in the middle of a batch leaves no event applied
# twice and none lost; wait_for_projection returns as soon as the projector has
# applied the event, and sleeps without using CPU while it waits.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use lib 'test/t';
use OutboxTest;

my $node = PostgreSQL::Test::Cluster->new('projections');
$node->init;
# restart_after_crash: the test framework turns it off; the projector's SIGKILL
# must bring the cluster back as it would in production
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'outbox'\nrestart_after_crash = on\n");
$node->start;

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
	CREATE EXTENSION outbox;
	CREATE TABLE applied (position bigint PRIMARY KEY, times int NOT NULL);
	-- slow enough that a batch of 1,000 events takes about a second
	CREATE FUNCTION apply_slowly(e outbox.events) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
		PERFORM pg_sleep(0.001);
		INSERT INTO applied VALUES (e.position, 1)
		ON CONFLICT (position) DO UPDATE SET times = applied.times + 1;
	END $$;
	SELECT outbox.create_projection('slow', 'apply_slowly(outbox.events)', NULL, 'crash-', 'async');
});

sub projector_pid
{
	return sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'outbox projector'});
}

# ---- SIGKILL in the middle of a batch ----
sub crash_test
{
	my ($prefix, $kill) = @_;
	# 5,000 events in 50 streams, in one transaction
	my $etag = sql(qq{SELECT max(outbox.append('$prefix-' || s,
		(SELECT jsonb_agg(jsonb_build_object('type', 'counted', 'data', jsonb_build_object('n', g)))
		   FROM generate_series(1, 100) g))) FROM generate_series(1, 50) s});
	ok( wait_until(60, sub { sql(qq{SELECT count(*) FROM applied a JOIN outbox.events e USING (position)
	                                 WHERE e.stream LIKE '$prefix-%'}) >= 1000 }),
		"$prefix: the first batch is committed");
	# now inside a later batch: the projector is applying events
	ok( wait_until(10, sub { sql(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'outbox projector'
	                                  AND state = 'active' AND query = 'outbox: applying events to a projection'}) eq '1' }),
		"$prefix: the projector is in the middle of a batch");
	usleep(300_000);
	$kill->();
	ok( wait_until(120, sub {
			sql(qq{SELECT count(*) FROM applied a JOIN outbox.events e USING (position)
			        WHERE e.stream LIKE '$prefix-%'}) == 5000 }),
		"$prefix: all 5,000 events are applied after the crash");
	is( sql(qq{SELECT count(*) FILTER (WHERE times <> 1) FROM applied a JOIN outbox.events e USING (position)
	            WHERE e.stream LIKE '$prefix-%'}),
		'0', "$prefix: none of them twice");
}

crash_test('crash-projector', sub {
	kill 'KILL', projector_pid();
	$node->poll_query_until('postgres', 'SELECT true');
});
crash_test('crash-postmaster', sub {
	$node->kill9;
	for (1 .. 50)
	{
		undef $node->{_pid};
		last if $node->start(fail_ok => 1);
		usleep(200_000);
	}
});
is(sql(q{SELECT state, lag_events, events_applied FROM outbox.stat_projections WHERE name = 'slow'}),
	'running|0|10000', 'stat_projections: running, no lag, 10,000 applied');

# ---- read-your-writes: wait_for_projection returns promptly ----
sql(q{
	CREATE TABLE seen (position bigint PRIMARY KEY);
	CREATE FUNCTION apply_fast(e outbox.events) RETURNS void LANGUAGE sql
		AS $$ INSERT INTO public.seen VALUES (e.position) $$;
	SELECT outbox.create_projection('fast', 'apply_fast(outbox.events)', NULL, 'ryw-', 'async');
});
my $script = '';
for my $i (1 .. 20)
{
	$script .= qq{SELECT outbox.append('ryw-$i', '{"type": "x"}') AS etag \\gset
SELECT clock_timestamp() AS t0 \\gset
SELECT outbox.wait_for_projection('fast', 'ryw-$i', :'etag', '5 s') AS ok,
       round(extract(epoch FROM clock_timestamp() - :'t0') * 1000) AS ms \\gset
SELECT count(*) AS visible FROM seen s JOIN outbox.events e USING (position) WHERE e.stream = 'ryw-$i' \\gset
\\echo :ok :visible :ms
};
}
my ($ret, $out, $err) = $node->psql('postgres', $script);
my @rows = map { [split / /] } grep { /\S/ } split /\n/, $out;
is(scalar(@rows), 20, '20 appends, each followed by a wait');
is(scalar(grep { $_->[0] eq 't' && $_->[1] eq '1' } @rows), 20,
	'each wait returns true, and the event is then in the read model');
my @ms = sort { $a <=> $b } map { $_->[2] } @rows;
cmp_ok($ms[10], '<', 100, "the median wait is $ms[10] ms");
cmp_ok($ms[-1], '<', 1000, "the longest wait is $ms[-1] ms");

# ---- a wait that times out sleeps: no CPU ----
# (a paused projection is an error at once, below: hold the projection's row
# instead, so that the relay skips it while it stays running)
my $locker = $node->background_psql('postgres');
$locker->query_safe(q{BEGIN; SELECT 1 FROM outbox._projections WHERE name = 'fast' FOR UPDATE});
my $etag = sql(q{SELECT outbox.append('ryw-held', '{"type": "x"}')});
my $bg = $node->background_psql('postgres');
my $waiter = $bg->query_safe('SELECT pg_backend_pid()');
$bg->query_until(qr/start/, qq{\\echo start\nSELECT outbox.wait_for_projection('fast', 'ryw-held', '$etag', '3 s');\n});
usleep(300_000);
my $t0 = cpu_ticks($waiter);
sleep 2;
my $used = cpu_ticks($waiter) - $t0;
cmp_ok($used, '<=', 2, "a waiting backend used $used CPU ticks in 2 s");
my $res = $bg->query_safe('SELECT 1');
like($res, qr/^f\n1$|^f$|1$/, 'the wait ended with false');
$bg->quit;
$locker->query_safe('COMMIT');
$locker->quit;
is(sql(qq{SELECT outbox.wait_for_projection('fast', 'ryw-held', '$etag')}), 't',
	'once the row is released the wait succeeds');

# ---- a paused projection: an error at once, not a wait for the timeout ----
sql(q{SELECT outbox.pause_projection('fast')});
$etag = sql(q{SELECT outbox.append('ryw-paused', '{"type": "x"}')});
$t0 = time;
my (undef, undef, $wait_err) = $node->psql('postgres',
	qq{SELECT outbox.wait_for_projection('fast', 'ryw-paused', '$etag', '30 s')});
like($wait_err, qr/projection "fast" is paused/, 'waiting for a paused projection is an error (55000)');
cmp_ok(time - $t0, '<', 10, 'at once, not after the 30 s timeout');
sql(q{SELECT outbox.resume_projection('fast')});
is(sql(qq{SELECT outbox.wait_for_projection('fast', 'ryw-paused', '$etag')}), 't',
	'after resume_projection the wait succeeds');

# ---- a slow async handler does not hold webhook delivery up ----
my $rx = start_receiver(log => "$PostgreSQL::Test::Utils::tmp_check/receiver_005.log");
sql(qq{SELECT outbox.create_endpoint('hooks', '@{[$rx->url]}', '{ping}')});
sql(q{
	CREATE FUNCTION apply_very_slowly(e outbox.events) RETURNS void LANGUAGE sql
		AS $$ SELECT pg_sleep(0.02) $$;
	SELECT outbox.create_projection('sluggish', 'apply_very_slowly(outbox.events)', NULL, 'slug-', 'async');
	SELECT count(outbox.append('slug-' || g, '{"type": "x"}')) FROM generate_series(1, 500) g;
});
usleep(500_000);		# the projector is busy with the sluggish projection now
my $worst = 0;
for my $i (1 .. 5)
{
	my $t0 = time;
	sql(qq{SELECT outbox.publish('ping', '{"n": $i}')});
	wait_until(30, sub { (grep { $_->{topic} eq 'ping' } @{ $rx->deliveries }) == $i });
	my $took = time - $t0;

	$worst = $took if $took > $worst;
	usleep(100_000);
}
cmp_ok($worst, '<', 1, sprintf('messages still arrive within %.0f ms while a handler takes 20 ms per event', $worst * 1000));
cmp_ok(sql(q{SELECT lag_events FROM outbox.stat_projections WHERE name = 'sluggish'}), '>', 0,
	'(the sluggish projection was still catching up)');
$rx->stop;

done_testing();
