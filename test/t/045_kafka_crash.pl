# SIGKILL of the relay, and then of the postmaster (the node restarted
# after), while the relay delivers 20,000 keyed messages (200 keys) to a Kafka
# endpoint on the mock cluster (test/kafka) with the default max_in_flight
# (2048): every message arrives, per key in id order (judged on first
# arrivals), and the repeats stay within the documented bound (README,
# "Delivery semantics", at-least-once: at most max_in_flight per endpoint per
# crash, the records in flight and the results not saved yet).  Afterwards
# the endpoint's cursor and outbox.stat_endpoints settle.
#
# The brokers answer 150 ms late (mockcluster's rtt) during the crashes, so
# that delivering 20,000 messages takes seconds and the kill lands in the
# middle with a full window in flight; the mock keeps the records of a request
# it received, whatever becomes of its response, as a real broker would.
use strict;
use warnings;
use lib 'test/t';
use OutboxTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $N = 20_000;
my $KEYS = 200;
my $MAX_IN_FLIGHT = 2048;	# a Kafka endpoint's default (README, "Kafka endpoints")

my $tmp = $PostgreSQL::Test::Utils::tmp_check;
my $kafka = start_kafka(log => "$tmp/mockcluster.log");
my $bootstrap = $kafka->bootstrap;

my $node = PostgreSQL::Test::Cluster->new('kafka_crash');
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

sub ep_stat
{
	my ($what) = @_;
	return sql(qq{SELECT $what FROM outbox.stat_endpoints WHERE name = 'k'});
}

# everything published so far is delivered or dead (passed the cursor, not waiting to be retried)
sub settled
{
	return sql(q{SELECT cursor_id = (SELECT max(id) FROM outbox.messages) AND done_ahead = '{}'
	                    AND NOT EXISTS (SELECT FROM outbox._deliveries d WHERE d.endpoint_id = e.id AND d.state = 'retry')
	               FROM outbox._endpoints e WHERE name = 'k'}) eq 't';
}

sql(qq{SELECT outbox.create_endpoint('k', 'kafka://$bootstrap/crash.{topic}', '{orders.*}',
       options => '{"backoff_base_ms": 50, "backoff_max_ms": 500, "max_attempts": 100}')});
is(sql(q{SELECT options->>'max_in_flight' FROM outbox.endpoints WHERE name = 'k'}), $MAX_IN_FLIGHT,
	"the endpoint has the default max_in_flight ($MAX_IN_FLIGHT)");

sub crash_test
{
	my ($topic, $kill) = @_;
	my $kafka_topic = "crash.$topic";
	$kafka->cmd("create $kafka_topic 4");
	$kafka->cmd("rtt $_ 150") for 1 .. 3;

	my $base = ep_stat('delivered');
	sql(qq{SELECT count(outbox.publish('$topic', jsonb_build_object('seq', g), 'key-' || (g % $KEYS)))
	         FROM generate_series(1, $N) g});
	# one transaction: consecutive ids (a crash before may have skipped some)
	my ($first, $last) = split /\|/, sql(qq{SELECT min(id), max(id) FROM outbox.messages WHERE topic = '$topic'});
	is($last - $first + 1, $N, "$topic: $N messages published");

	# kill once a fifth is acknowledged: the relay is in the middle of it
	my $started = wait_until(120, sub { ep_stat('delivered') - $base >= $N / 5 });
	my ($delivered, $in_flight) = split /\|/, ep_stat('delivered, in_flight');
	$kill->();
	ok($started, "$topic: killed while delivering");
	cmp_ok($delivered - $base, '<', $N, "$topic: ... before the last message was acknowledged");
	diag("$topic: killed after " . ($delivered - $base) . " acknowledgements, $in_flight in flight");

	$kafka->cmd("rtt $_ 0") for 1 .. 3;
	ok(wait_until(180, \&settled), "$topic: after the crash, the cursor reaches the last message")
	  or diag(ep_stat('*'));
	# pending counts unread ids: the crash skipped up to 32 (the sequence logs
	# that many ahead), which it counts until the next message is read
	ok( wait_until(30, sub {
				ep_stat(q{state = 'active' AND pending <= 32 AND in_flight = 0 AND dead_lettered = 0
				          AND failed_attempts = 0}) eq 't' }),
		"$topic: stat_endpoints settles: active, nothing in flight, no failure")
	  or diag(ep_stat('*'));
	# and the figures are those of the relay's latest turn, not of the one
	# before (published before it sleeps, not when it wakes again)
	my $ping = sql(q{SELECT outbox.publish('other.ping', '{}')});
	ok(wait_until(30, sub { sql(q{SELECT cursor_id FROM outbox._endpoints WHERE name = 'k'}) >= $ping }),
		"$topic: the cursor passes the next message");
	ok(wait_until(2, sub { ep_stat('pending') eq '0' }), "$topic: ... and then nothing is pending")
	  or diag(ep_stat('*'));
	is(sql(qq{SELECT count(*) FROM outbox._deliveries WHERE message_id BETWEEN $first AND $last}), '0',
		"$topic: no delivery row left (no retry, no dead letter)");

	my $v = kafka_consume($kafka, topics => [$kafka_topic], ids => [ $first, $last ], timeout => 60);
	is_deeply([ @$v{qw(complete distinct missing stray noid)} ], [ 1, $N, 0, 0, 0 ],
		"$topic: all $N messages in Kafka") or diag explain $v;
	is_deeply([ @$v{qw(violations split_keys)} ], [ 0, 0 ],
		"$topic: per key in id order (first arrivals), each key in one partition")
	  or diag explain $v;
	cmp_ok($v->{repeats}, '<=', $MAX_IN_FLIGHT,
		"$topic: repeats ($v->{repeats}) within the bound (max_in_flight, $MAX_IN_FLIGHT)");
	diag("$topic: $v->{repeats} repeats out of $v->{records} records");
}

crash_test('orders.kill_relay', sub {
	my $pid = relay_pid();
	kill 'KILL', $pid;
	# the postmaster restarts every process, the relay among them
	$node->poll_query_until('postgres', "SELECT pid <> $pid FROM pg_stat_activity WHERE backend_type = 'outbox relay'");
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

$node->stop;
$kafka->stop;
done_testing();
