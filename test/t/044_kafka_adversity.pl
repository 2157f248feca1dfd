# What a Kafka endpoint costs the relay (threads, descriptors), and that it
# is given back: a producer is a few librdkafka threads and sockets, so an
# endpoint dropped while its records are out, or changed again and again
# while its cluster does not answer, must not leave producers behind; and a
# cluster that fails every producer must not make the relay spin making
# new ones.  And outbox.blocked_networks, tightened, reaches producers that
# are connected already.
use strict;
use warnings;
use lib 'test/t';
use OutboxTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $tmp = $PostgreSQL::Test::Utils::tmp_check;
my $kafka = start_kafka(log => "$tmp/mockcluster.log");
my $bootstrap = $kafka->bootstrap;

my $node = PostgreSQL::Test::Cluster->new('kafka_resources');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'outbox'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION outbox');

sub sql { return $node->safe_psql('postgres', $_[0]); }

my $relay;
ok(wait_until(30, sub { $relay = sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'outbox relay'}) }),
	'the relay runs');

sub threads
{
	open(my $fh, '<', "/proc/$relay/status") or return -1;
	my ($n) = join('', <$fh>) =~ /^Threads:\s+(\d+)/m;
	return $n;
}

sub publish
{
	my ($n) = @_;
	sql(qq{SELECT count(outbox.publish('orders', jsonb_build_object('seq', g), 'key-' || (g % 10)))
	         FROM generate_series(1, $n) g});
}

sub ep_stat
{
	my ($name, $what) = @_;
	return sql(qq{SELECT $what FROM outbox.stat_endpoints WHERE name = '$name'});
}

# a Kafka endpoint on its own topic, delivering 10 messages
sub delivering
{
	my ($name, $options) = @_;
	sql(qq{SELECT outbox.create_endpoint('$name', 'kafka://$bootstrap/$name', '{orders}', options => '$options')});
	$kafka->cmd("create $name 4");
	publish(10);
	ok(wait_until(30, sub { ep_stat($name, 'delivered') == 10 }), "Kafka endpoint $name delivers");
}

my $base = threads();
note("relay threads without a Kafka endpoint: $base");

# ---- dropped while its records wait for a cluster that is down ----
delivering('gone', '{"timeout_ms": 300000}');
cmp_ok(threads(), '>', $base, '... with librdkafka threads in the relay');
$kafka->cmd("down $_") for 1 .. 3;
publish(100);
ok(wait_until(30, sub { ep_stat('gone', 'in_flight') > 0 }), 'the cluster down: records wait in the producer');
sql(q{SELECT outbox.drop_endpoint('gone')});
ok(wait_until(20, sub { threads() <= $base }), 'dropped: its producer goes, with its threads')
  or diag('threads: ' . threads() . ", before: $base");
$kafka->cmd("up $_") for 1 .. 3;

# ---- changed again and again while its cluster does not answer ----
delivering('busy', '{"timeout_ms": 300000}');
my $one = threads() - $base;
note("threads of one producer: $one");
$kafka->cmd("rtt $_ 1000000") for 1 .. 3;
publish(100);
ok(wait_until(30, sub { ep_stat('busy', 'in_flight') > 0 }), 'the cluster stops answering: records in flight');
sql(qq{SELECT outbox.alter_endpoint('busy', '{"options": {"kafka": {"linger.ms": $_}}}')}) for 1 .. 20;
# the old producer keeps its records in flight (their deadline is 300 s); the
# new one waits for them: two producers, not twenty
ok(wait_until(20, sub { threads() <= $base + 3 * $one }), 'changed 20 times: no producer piles up')
  or diag('threads: ' . threads() . ", one producer: $one, before: $base");

# ---- a cluster that fails every producer for good ----
# Without the IdempotentWrite permission, InitProducerId fails and librdkafka
# fails the producer (a fatal error) at once: its records must count as
# failed attempts (backoff, breaker, last_error), not come back unsent to a
# new producer, and another, and another.
$kafka->cmd("rtt $_ 0") for 1 .. 3;
sql(q{SELECT outbox.drop_endpoint('busy')});
$kafka->cmd('errors InitProducerId 1000000 CLUSTER_AUTHORIZATION_FAILED');
my $log_from = -s $node->logfile;
sql(qq{SELECT outbox.create_endpoint('denied', 'kafka://$bootstrap/denied', '{orders}',
       options => '{"backoff_base_ms": 100, "backoff_max_ms": 1000}')});
publish(20);
ok(wait_until(30, sub { ep_stat('denied', 'failed_attempts') > 0 }),
	'a producer failed for good: its records are failed attempts');
like(ep_stat('denied', 'last_error'),
	qr/Cluster authorization failed/, '... with the reason in last_error');
my $ticks = cpu_ticks($relay);
sleep 5;
cmp_ok(cpu_ticks($relay) - $ticks, '<=', 50, '... and the relay does not spin making producers');
my $failed = () = slurp_file($node->logfile, $log_from) =~ /Kafka producer of endpoint "denied" failed/g;
cmp_ok($failed, '<=', 30, "... nor floods the log ($failed producers failed)");
$kafka->cmd('clear InitProducerId');

# ---- outbox.blocked_networks tightened while a producer is connected ----
sql(q{SELECT outbox.drop_endpoint('denied')});
delivering('fenced', '{"timeout_ms": 1000, "backoff_base_ms": 100, "backoff_max_ms": 500}');
sql(q{ALTER SYSTEM SET outbox.blocked_networks = '127.0.0.0/8'});
sql(q{SELECT pg_reload_conf()});
sleep 1;
publish(10);
ok(wait_until(30, sub { ep_stat('fenced', 'last_error') =~ /address 127\.0\.0\.1 is blocked by outbox\.blocked_networks/ }),
	'127.0.0.0/8 blocked and reloaded: the connected producer gives way to one that may not connect')
  or diag(ep_stat('fenced', 'last_error'));
is(ep_stat('fenced', 'delivered'), '10', '... and nothing more is delivered');
sql(q{ALTER SYSTEM RESET outbox.blocked_networks});
sql(q{SELECT pg_reload_conf()});

$node->stop('immediate');
$kafka->stop;
done_testing();
