# Webhook delivery against a real HTTP receiver (test/receiver): signatures,
# retries with backoff, dead letters and redelivery, 410, per-key order under
# random failures, a receiver that goes down, and SIGKILL of the relay and of
# the postmaster in the middle of delivering 10,000 messages.
use strict;
use warnings;
use lib 'test/t';
use OutboxTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $secret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
my $old_secret = 'a-raw-secret-being-rotated-out';
my $tmp = $PostgreSQL::Test::Utils::tmp_check;
my $rx = start_receiver(log => "$tmp/receiver.log", secrets => [$secret]);

my $node = PostgreSQL::Test::Cluster->new('delivery');
$node->init;
# restart_after_crash: the test framework turns it off; a relay's SIGKILL must
# not end the server (PostgreSQL restarts all processes, as in production)
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'outbox'\nrestart_after_crash = on\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION outbox');

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub relay_pid
{
	return sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'outbox relay'});
}

# deliveries of a topic, as seen by the receiver
sub arrived
{
	my ($topic) = @_;
	return [ grep { $_->{topic} eq $topic } @{ $rx->deliveries } ];
}

# how many distinct messages of a topic arrived (cheap enough to poll)
sub distinct_arrived
{
	my ($topic) = @_;
	my %seen = map { $_->{id} => 1 } @{ arrived($topic) };
	return scalar keys %seen;
}

my $fast = '{"backoff_base_ms": 20, "backoff_max_ms": 200, "max_attempts": 50}';
sql(qq{SELECT outbox.create_endpoint('main', '@{[$rx->url]}', '{orders.*}',
       '$secret $old_secret', '{"x-env": "test"}', '$fast')});

# ---- the happy path, signed ----
sql(q{SELECT count(outbox.publish('orders.created', jsonb_build_object('seq', g), 'k' || (g % 5)))
        FROM generate_series(1, 100) g});
sql(q{SELECT outbox.publish('billing.paid', '{"seq": 1}')});
ok(wait_until(20, sub { @{ arrived('orders.created') } >= 100 }), 'published messages arrive');
my $rows = arrived('orders.created');
is(scalar(@$rows), 100, 'each exactly once');
is(scalar(grep { $_->{sig} eq 'valid' } @$rows), 100,
	'every request carries a valid Standard Webhooks signature (one per active secret)');
ok(in_key_order($rows), 'in order per key');
like($rows->[0]{id}, qr/^msg_\d+$/, 'webhook-id is msg_<id>');
is(scalar(@{ arrived('billing.paid') }), 0, 'topics that do not match are not sent');
ok( wait_until(10, sub {
		sql(q{SELECT cursor_id = (SELECT max(id) FROM outbox.messages) FROM outbox._endpoints}) eq 't' }),
	'the cursor passes delivered and non-matching messages alike')
  or diag(sql(q{SELECT cursor_id, done_ahead, (SELECT max(id) FROM outbox.messages) FROM outbox._endpoints}));
is(sql(q{SELECT count(*) FROM outbox._deliveries}), '0',
	'successful deliveries leave no per-message rows');

# ---- monitoring ----
is( sql(q{SELECT state, delivered >= 100, failed_attempts, latency_p50_ms IS NOT NULL, latency_p99_ms >= latency_p50_ms
            FROM outbox.stat_endpoints WHERE name = 'main'}),
	'active|t|0|t|t',
	'outbox.stat_endpoints: state, counters and latency percentiles');
like(sql('SELECT outbox.metrics()'), qr/^outbox_delivered_total\{endpoint="main"\} \d+$/m,
	'outbox.metrics() speaks the Prometheus text format');
is(sql(q{SELECT state, pid IS NOT NULL, loops > 0 FROM outbox.stat_workers WHERE database = 'postgres'}),
	'running|t|t', 'outbox.stat_workers shows the relay');

# A transaction that took its id before a message was published holds the
# gap-free reader back (it could still commit an earlier id); stat_workers
# names it, and the message goes as soon as it ends.
my $bg = $node->background_psql('postgres');
$bg->query_safe('BEGIN');
$bg->query_safe('SELECT pg_current_xact_id()');
my $blocker = $bg->query_safe('SELECT pg_backend_pid()');
sql(q{SELECT outbox.publish('orders.held', '{"seq": 1}')});
ok( wait_until(10, sub {
		sql(q{SELECT horizon_blocking_pid FROM outbox.stat_workers WHERE database = 'postgres'}) eq $blocker }),
	'stat_workers names the transaction holding delivery back');
is(scalar(@{ arrived('orders.held') }), 0, 'the message waits for it');
$bg->query_safe('COMMIT');
$bg->quit;
ok(wait_until(10, sub { @{ arrived('orders.held') } == 1 }), 'and goes as soon as it ends');

# A rare topic behind thousands of messages of other topics arrives promptly
# (the relay keeps reading the log without waiting for another wakeup).
sql(q{SELECT count(outbox.publish('billing.noise', '{}')) FROM generate_series(1, 2500)});
sql(q{SELECT outbox.publish('orders.rare', '{"seq": 1}')});
ok(wait_until(10, sub { @{ arrived('orders.rare') } == 1 }),
	'a matching message behind 2,500 others arrives promptly');

# ---- 500s are retried with backoff until they succeed ----
$rx->control('fail_rate=1');
sql(q{SELECT outbox.publish('orders.retry', '{"seq": 1}', 'r')});
ok( wait_until(20, sub { sql(q{SELECT coalesce(max(attempts), 0) >= 3 FROM outbox._deliveries}) eq 't' }),
	'a failing delivery is parked and retried');
is(sql(q{SELECT last_status FROM outbox._deliveries}), '500', 'with its last status');
$rx->control('fail_rate=0');
ok(wait_until(20, sub { @{ arrived('orders.retry') } == 1 }), 'and arrives once the receiver recovers');
ok(wait_until(10, sub { sql(q{SELECT count(*) FROM outbox._deliveries}) eq '0' }),
	'its retry row is gone');

# ---- timeouts and connection resets are retried too ----
sql(q{SELECT outbox.alter_endpoint('main', '{"options": {"timeout_ms": 200}}')});
$rx->control('delay_ms=600');
sql(q{SELECT outbox.publish('orders.slow', '{"seq": 1}', 's')});
ok(wait_until(20, sub { sql(q{SELECT coalesce(max(attempts), 0) >= 2 FROM outbox._deliveries}) eq 't' }),
	'a timed-out request is retried');
like(sql(q{SELECT last_error FROM outbox._deliveries}), qr/timed out|Timeout/i, 'the error says timeout');
$rx->control('delay_ms=0&reset_rate=1');
ok(wait_until(20, sub { sql(q{SELECT last_error FROM outbox._deliveries}) !~ /timed out/i }),
	'a reset connection is retried');
$rx->control('reset_rate=0');
ok(wait_until(20, sub { @{ arrived('orders.slow') } >= 1 }), 'and the message arrives after both');

# ---- other 4xx dead-letter at once; redeliver brings them back ----
$rx->control('status=400');
my $dead_id = sql(q{SELECT outbox.publish('orders.bad', '{"seq": 1}', 'b')});
ok( wait_until(20, sub { sql(q{SELECT count(*) FROM outbox.dead_letters}) eq '1' }),
	'a 400 dead-letters the delivery at once');
is( sql(q{SELECT message_id, endpoint, attempts, last_status, topic, key FROM outbox.dead_letters}),
	"$dead_id|main|1|400|orders.bad|b",
	'outbox.dead_letters shows message, endpoint, attempts, status, topic and key');
$rx->control('status=0');
is(sql(qq{SELECT outbox.redeliver($dead_id)}), '1', 'redeliver re-queues it');
ok(wait_until(20, sub { @{ arrived('orders.bad') } == 1 }), 'and it arrives');
is(sql(q{SELECT count(*) FROM outbox.dead_letters}), '0', 'no dead letter is left');

# ---- per-key order under 30 % random failures ----
$rx->control('fail_rate=0.3&seed=7');
sql(q{SELECT count(outbox.publish('orders.chaos', jsonb_build_object('seq', g / 10), 'key-' || (g % 10)))
        FROM generate_series(10, 1009) g});
ok(wait_until(60, sub { @{ arrived('orders.chaos') } >= 1000 }), '1000 messages arrive despite 30 % failures');
$rx->control('fail_rate=0');
$rows = arrived('orders.chaos');
is(scalar(@$rows), 1000, 'each exactly once');
ok(in_key_order($rows), 'every key in order');

# ---- 410 Gone dead-letters and pauses the endpoint ----
$rx->control('status=410');
sql(q{SELECT outbox.publish('orders.gone', '{"seq": 1}')});
ok(wait_until(20, sub { sql(q{SELECT paused FROM outbox.endpoints WHERE name = 'main'}) eq 't' }),
	'410 pauses the endpoint');
$rx->control('status=0');
sql(q{SELECT outbox.publish('orders.after410', '{"seq": 1}')});
sleep 1;
is(scalar(@{ arrived('orders.after410') }), 0, 'a paused endpoint sends nothing');
sql(q{SELECT outbox.resume_endpoint('main')});
ok(wait_until(20, sub { @{ arrived('orders.after410') } == 1 }), 'resume_endpoint sends what waited');

# ---- the receiver goes down: the circuit opens, the relay idles, all arrives later ----
sql(q{SELECT outbox.alter_endpoint('main', '{"options": {"timeout_ms": 2000, "backoff_max_ms": 1000}}')});
$rx->down;
my $down_at = time;
sql(q{SELECT count(outbox.publish('orders.outage', jsonb_build_object('seq', g), 'o' || (g % 3)))
        FROM generate_series(1, 50) g});
ok(wait_until(20, sub { sql(q{SELECT state FROM outbox.stat_endpoints WHERE name = 'main'}) eq 'open' }),
	'the circuit opens while the receiver is down');
my $pid = relay_pid();
my $ticks = cpu_ticks($pid);
my $t0 = time;
# the receiver stays down for 30 s in all
sleep(30 - (time - $down_at)) if time - $down_at < 30;
my $cpu = (cpu_ticks($pid) - $ticks) / 100 / (time - $t0);
cmp_ok($cpu, '<', 0.02, sprintf('with the receiver down for 30 s the relay stays near 0 %% CPU (%.2f %%)', 100 * $cpu));
$rx->up;
ok(wait_until(90, sub { @{ arrived('orders.outage') } >= 50 }), 'everything arrives after the receiver returns');
ok(wait_until(10, sub { sql(q{SELECT state FROM outbox.stat_endpoints WHERE name = 'main'}) eq 'active' }),
	'and the circuit closes again');
ok(in_key_order(arrived('orders.outage')), 'still in key order');

# ---- SIGKILL of the relay, then of the postmaster, while delivering 10,000 ----
sub crash_test
{
	my ($topic, $kill) = @_;
	sql(qq{SELECT count(outbox.publish('$topic', jsonb_build_object('seq', g), 'c' || (g % 20)))
	         FROM generate_series(1, 10000) g});
	wait_until(30, sub { @{ arrived($topic) } >= 1000 });
	$kill->();
	ok(wait_until(120, sub { sleep 1; distinct_arrived($topic) >= 10000 }),
		"$topic: all 10,000 messages arrive");
	my $got = arrived($topic);
	my %n;
	$n{ $_->{id} }++ for @$got;
	my $repeats = scalar(@$got) - scalar(keys %n);
	# the repeats can only be requests that were in flight: max_in_flight (16) per endpoint
	cmp_ok($repeats, '<=', 16, "$topic: repeats ($repeats) only from the in-flight window");
}
crash_test('orders.kill_relay', sub {
	my $p = relay_pid();
	kill 'KILL', $p;
	$node->poll_query_until('postgres', 'SELECT true');
});
crash_test('orders.kill_postmaster', sub {
	$node->kill9;
	for (1 .. 50)
	{
		undef $node->{_pid};
		last if $node->start(fail_ok => 1);
		sleep 0.2;
	}
});

# ---- dropping an endpoint with requests in flight: no spinning relay ----
sql(qq{SELECT outbox.create_endpoint('slow', '@{[$rx->url]}', '{slow.*}')});
$rx->control('delay_ms=3000');
sql(q{SELECT count(outbox.publish('slow.x', jsonb_build_object('seq', g))) FROM generate_series(1, 20) g});
sleep 0.5;
sql(q{SELECT outbox.drop_endpoint('slow')});
$pid = relay_pid();
$ticks = cpu_ticks($pid);
sleep 2;
cmp_ok(cpu_ticks($pid) - $ticks, '<=', 20, 'a relay whose dropped endpoint still has requests out does not spin');
$rx->control('delay_ms=0');

# ---- retention: delivered messages go, dead letters stay; SIGHUP reloads it ----
my $dead_kept = sql(q{SELECT count(*) FROM outbox.dead_letters WHERE payload IS NOT NULL});
cmp_ok($dead_kept, '>=', 1, 'there are dead letters to keep');
$node->append_conf('postgresql.conf', "outbox.retention = '2s'\n");
$node->reload;
ok( wait_until(60, sub { sql(q{SELECT count(*) FROM outbox.messages WHERE topic = 'orders.kill_postmaster'}) eq '0' }),
	'delivered messages are deleted after outbox.retention (reloaded on SIGHUP)');
is(sql(q{SELECT count(*) FROM outbox.dead_letters WHERE payload IS NOT NULL}), $dead_kept,
	'dead-lettered messages keep their payload');
sql(q{SELECT outbox.publish('orders.late', '{"seq": 1}')});
ok(wait_until(20, sub { @{ arrived('orders.late') } == 1 }), 'delivery carries on after the clean-up');

$node->stop;
$rx->stop;
done_testing();
