# The bulkhead: a Kafka endpoint whose cluster is entirely down, next to a
# webhook endpoint (test/receiver) and a Kafka endpoint on a healthy mock
# cluster, all three taking the same messages for ~15 s.  The webhook and the
# healthy cluster keep receiving within seconds of each commit while the dead
# cluster's endpoint has its breaker open with librdkafka's error; the relay
# uses no CPU to speak of while that cluster stays down; once it is back,
# everything arrives in per-key order and the breaker closes a few seconds
# after its current cool-down (each trip doubles it; failures of the records
# already out when it opened must not lengthen it, or it would reach 60 s).
use strict;
use warnings;
use lib 'test/t';
use OutboxTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

my $tmp = $PostgreSQL::Test::Utils::tmp_check;
my $kdead = start_kafka(log => "$tmp/043_dead_cluster.log");
my $kok = start_kafka(log => "$tmp/043_healthy_cluster.log");
my $rx = start_receiver(log => "$tmp/043_receiver.log");

my $node = PostgreSQL::Test::Cluster->new('kafka_bulkhead');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'outbox'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION outbox');

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub ep_stat
{
	my ($ep, $what) = @_;
	return sql(qq{SELECT $what FROM outbox.stat_endpoints WHERE name = '$ep'});
}

# The dead cluster's breaker as seen every turn: [time, state] at each change
my @states;

sub watch
{
	my $state = ep_stat('kdead', 'state');
	push @states, [ time, $state ] if !@states || $states[-1][1] ne $state;
	return $state;
}

my $opts = '"backoff_base_ms": 50, "backoff_max_ms": 500, "max_attempts": 1000, "timeout_ms": 2000';
sql(qq{SELECT outbox.create_endpoint('hook', '@{[$rx->url]}', '{bh.*}', options => '{$opts}')});
for ([ 'kdead', $kdead ], [ 'kok', $kok ])
{
	my ($name, $k) = @$_;
	$k->cmd('create out.bh.load 4');
	sql(qq{SELECT outbox.create_endpoint('$name', 'kafka://@{[$k->bootstrap]}/out.{topic}', '{bh.*}',
	       options => '{$opts, "kafka": {"linger.ms": 1}}')});
}
$kdead->cmd("down $_") for 1 .. 3;

# ---- 15 s of messages: 20 every 250 ms, over 10 keys ----
my $first = sql(q{SELECT coalesce(max(id), 0) + 1 FROM outbox.messages});
my ($seq, $checks, @late_kok) = (0, 0);
my $t0 = time;
my $next_check = $t0 + 3;
while (time - $t0 < 15)
{
	sql(qq{SELECT count(outbox.publish('bh.load', jsonb_build_object('seq', g), 'key-' || (g % 10)))
	         FROM generate_series($seq + 1, $seq + 20) g});
	$seq += 20;
	watch();
	# every 3 s: the healthy cluster has everything published so far within 5 s
	if (time >= $next_check)
	{
		my $last = $first + $seq - 1;
		my $t = time;
		my $v = kafka_consume($kok, topics => ['out.bh.load'], ids => [ $first, $last ], timeout => 5);
		push @late_kok, sprintf('ids %d-%d: %s after %.1f s', $first, $last,
			$v->{complete} ? 'complete' : "missing $v->{missing}", time - $t)
		  unless $v->{complete};
		$checks++;
		$next_check = time + 3;
	}
	sleep 0.25;
}
my $last = $first + $seq - 1;
diag(sprintf('published %d messages in %.1f s', $seq, time - $t0));

cmp_ok($checks, '>=', 3, "the healthy Kafka cluster was checked $checks times");
is(scalar(@late_kok), 0, '... and had every message published so far within 5 s each time')
  or diag(join("\n", @late_kok));
cmp_ok(ep_stat('kok', 'latency_p99_ms'), '<', 2000, '... its commit-to-acknowledgement p99 below 2 s')
  or diag(ep_stat('kok', '*'));

# the webhook: each message arrives within 2 s of its commit
ok(wait_until(20, sub { scalar(grep { $_->{topic} eq 'bh.load' } @{ $rx->deliveries }) >= $seq }),
	"the webhook endpoint received all $seq messages");
my %created = split /[|\n]/,
  sql(qq{SELECT 'msg_' || id, (extract(epoch FROM created_at) * 1e6)::bigint FROM outbox.messages WHERE topic = 'bh.load'});
my @lat = sort { $a <=> $b } map { ($_->{t} - $created{ $_->{id} }) / 1e6 }
  grep { $_->{topic} eq 'bh.load' } @{ $rx->deliveries };
cmp_ok($lat[-1], '<', 2, sprintf('... each within 2 s of its commit (p50 %.3f s, max %.3f s)', $lat[ $#lat / 2 ], $lat[-1]));

is(watch(), 'open', "the dead cluster's endpoint: breaker open") or diag(ep_stat('kdead', '*'));
like(ep_stat('kdead', 'last_error'), qr/^kafka: Local: Message timed out/, "... last_error is librdkafka's");
diag('kdead last_error: ' . ep_stat('kdead', 'last_error'));
cmp_ok(ep_stat('kdead', 'delivered'), '==', 0, '... nothing delivered');

# ---- the cluster stays down, nothing is published: the relay sleeps ----
my $relay = sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'outbox relay'});
my $ticks = cpu_ticks($relay);
my $t1 = time;
while (time - $t1 < 10)
{
	watch();
	sleep 0.2;
}
my $cpu = (cpu_ticks($relay) - $ticks) / 100 / (time - $t1);
cmp_ok($cpu, '<', 0.02,
	sprintf('cluster down, nothing published: the relay uses %.2f %% CPU over 10 s (< 2 %%)', 100 * $cpu));

# ---- the cluster back: the breaker closes a few seconds after its cool-down ----
$kdead->cmd("up $_") for 1 .. 3;
my $up_at = time;
my $closed_at;
while (time - $up_at < 120)
{
	if (watch() eq 'active')
	{
		$closed_at = time;
		last;
	}
	sleep 0.2;
}
# the trips seen (a trip is a move to open), the last one's cool-down
my @trips = grep { $_->[1] eq 'open' } @states;
my $cool = 2**(@trips - 1);
$cool = 60 if $cool > 60;
my $bound = (@trips ? $trips[-1][0] + $cool : $up_at);
$bound = $up_at if $bound < $up_at;
$bound += 4;	# the probe's retry due (backoff_max_ms), reconnecting (1 s), this loop
diag(sprintf('breaker: %s; cluster back at %.1f s, closed at %s s, bound %.1f s',
	join(', ', map { sprintf('%s at %.1f s', $_->[1], $_->[0] - $t0) } @states),
	$up_at - $t0, defined $closed_at ? sprintf('%.1f', $closed_at - $t0) : 'never', $bound - $t0));
cmp_ok(scalar(@trips), '>=', 2, 'the breaker tripped again after a failed probe (half-open, then open)');
ok(defined $closed_at && $closed_at <= $bound,
	sprintf('the breaker closes within 4 s after its last cool-down (%d s, trip %d) ends', $cool, scalar(@trips)));

ok(wait_until(60, sub { endpoint_settled($node, 'kdead') }), "the dead cluster back: the endpoint's messages settle")
  or diag(ep_stat('kdead', '*'));
is(sql(q{SELECT count(*) FROM outbox.dead_letters}), '0', 'no dead letters');
for ([ 'kdead', $kdead ], [ 'kok', $kok ])
{
	my ($name, $k) = @$_;
	my $v = kafka_consume($k, topics => ['out.bh.load'], ids => [ $first, $last ], timeout => 30);
	is_deeply([ @$v{qw(complete distinct violations split_keys missing)} ], [ 1, $seq, 0, 0, 0 ],
		"$name: all $seq messages in Kafka, per key in id order") or diag explain $v;
	diag("$name: $v->{repeats} repeats");
}
my $rows = [ grep { $_->{topic} eq 'bh.load' } @{ $rx->deliveries } ];
my %ids = map { $_->{id} => 1 } @$rows;
is_deeply([ scalar(keys %ids), scalar(@$rows) ], [ $seq, $seq ], "hook: all $seq messages, once each");
ok(in_key_order($rows), '... in order per key');

$node->stop;
$kdead->stop;
$kok->stop;
$rx->stop;
done_testing();
