# Kafka endpoints under cluster faults, against the mock cluster (test/kafka):
# a partition leader's broker down for 3 s during delivery (shorter than
# timeout_ms: no attempt fails), partition leaders moved again and again
# during delivery, pause_endpoint / resume_endpoint, Java-compatible
# partitioning (murmur2, computed here as Kafka's Utils.murmur2 does) and
# NULL keys, and stat_endpoints / metrics() with commit-to-acknowledgement
# latency.  30 % retriable Produce errors are 041's.
use strict;
use warnings;
use lib 'test/t';
use OutboxTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

my $tmp = $PostgreSQL::Test::Utils::tmp_check;
my $kafka = start_kafka(log => "$tmp/042_mockcluster.log", seed => 42);
my $bootstrap = $kafka->bootstrap;

my $node = PostgreSQL::Test::Cluster->new('kafka_faults');
$node->init(extra => [ '--encoding=UTF8', '--locale=C' ]);
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'outbox'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION outbox');

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub ep_stat
{
	my ($what) = @_;
	return sql(qq{SELECT $what FROM outbox.stat_endpoints WHERE name = 'k'});
}

sub settled { return endpoint_settled($node, 'k'); }

sub max_id { return sql(q{SELECT coalesce(max(id), 0) FROM outbox.messages}); }

sub dead { return sql(qq{SELECT count(*) FROM outbox.dead_letters WHERE topic = '$_[0]'}); }

# publish messages FROM..TO of a topic over KEYS keys, in one transaction
sub publish
{
	my ($topic, $from, $to, $keys) = @_;
	sql(qq{SELECT count(outbox.publish('$topic', jsonb_build_object('seq', g), 'key-' || (g % $keys)))
	         FROM generate_series($from, $to) g});
}

# consume's verdict on ids FIRST..LAST of one Kafka topic
sub judge
{
	my ($topic, $first, $last, %opt) = @_;
	return kafka_consume($kafka, topics => [$topic], ids => [ $first, $last ], timeout => 30, %opt);
}

# the outage is shorter than timeout_ms: librdkafka holds and retries the records
sql(qq{SELECT outbox.create_endpoint('k', 'kafka://$bootstrap/f.{topic}', '{t.*}',
       options => '{"backoff_base_ms": 50, "backoff_max_ms": 500, "max_attempts": 100,
                    "timeout_ms": 15000, "kafka": {"linger.ms": 1}}')});

# ---- a partitions' leader down for 3 s during delivery, then back ----
# six partitions, two led by each broker; broker 2 goes down
$kafka->cmd('create f.t.down 6');
$kafka->cmd("leader f.t.down $_ " . ($_ % 3 + 1)) for 0 .. 5;
my $first = max_id() + 1;
my ($down_at, $held);
for my $chunk (0 .. 49)
{
	publish('t.down', 100 * $chunk + 1, 100 * $chunk + 100, 50);
	if ($chunk == 10)
	{
		$kafka->cmd('down 2');
		$down_at = time;
	}
	if ($down_at && time - $down_at >= 3)
	{
		$held = !settled();
		$kafka->cmd('up 2');
		undef $down_at;
	}
	sleep 0.1;
}
ok(!defined $down_at, 'a broker was down for 3 s while 5,000 messages were published');
ok($held, "... and held its partitions' records");
ok(wait_until(90, \&settled), 'the broker back: every message settles') or diag(ep_stat('*'));
is(dead('t.down'), '0', '... none dead');
is(ep_stat('failed_attempts'), '0', '... no attempt failed (the outage was shorter than timeout_ms)');
my $v = judge('f.t.down', $first, $first + 4999);
is_deeply([ @$v{qw(complete distinct violations split_keys missing)} ], [ 1, 5000, 0, 0, 0 ],
	'... all 5,000 in Kafka, per key in id order, each key in one partition') or diag explain $v;
diag("broker down: $v->{repeats} repeats");

# ---- partition leaders moved again and again during delivery ----
$kafka->cmd('create f.t.lead 6');
srand(42);
$first = max_id() + 1;
my $moves = 0;
for my $chunk (0 .. 59)
{
	publish('t.lead', 50 * $chunk + 1, 50 * $chunk + 50, 40);
	for (1 .. 2)
	{
		$kafka->cmd(sprintf('leader f.t.lead %d %d', int(rand(6)), 1 + int(rand(3))));
		$moves++;
	}
	sleep 0.05;
}
ok(wait_until(90, \&settled), "$moves leader moves during delivery: every message settles") or diag(ep_stat('*'));
is(dead('t.lead'), '0', '... none dead');
$v = judge('f.t.lead', $first, $first + 2999);
is_deeply([ @$v{qw(complete distinct violations split_keys missing)} ], [ 1, 3000, 0, 0, 0 ],
	'... all 3,000 in Kafka, per key in id order, each key in one partition') or diag explain $v;
diag("leaders moved: $v->{repeats} repeats, " . ep_stat('failed_attempts') . ' failed attempts');

# ---- pause_endpoint / resume_endpoint ----
$kafka->cmd('create f.t.pause 4');
sql(q{SELECT outbox.pause_endpoint('k')});
ok(wait_until(10, sub { ep_stat('state') eq 'paused' }), 'pause_endpoint: the endpoint is paused');
$first = max_id() + 1;
publish('t.pause', 1, 1000, 20);
sleep 3;
$v = kafka_consume($kafka, topics => ['f.t.pause'], timeout => 5);
is_deeply([ @$v{qw(complete records)} ], [ 1, 0 ], '... and sends nothing for 3 s') or diag explain $v;
is(ep_stat('in_flight'), '0', '... nothing in flight');
cmp_ok(ep_stat('pending'), '>=', 1000, '... 1,000 messages wait');
sql(q{SELECT outbox.resume_endpoint('k')});
ok(wait_until(60, \&settled), 'resume_endpoint: what waited settles') or diag(ep_stat('*'));
$v = judge('f.t.pause', $first, $first + 999);
is_deeply([ @$v{qw(complete distinct violations missing)} ], [ 1, 1000, 0, 0 ],
	'... all 1,000 in Kafka, per key in id order') or diag explain $v;

# ---- Java-compatible partitioning ----
# Kafka's Utils.murmur2 (seed 0x9747b28c) in 32-bit arithmetic
sub mul32
{
	my ($a, $b) = @_;
	return ($a * ($b & 0xffff) + ((($a * ($b >> 16)) & 0xffff) << 16)) & 0xffffffff;
}

sub murmur2
{
	my ($data) = @_;
	my $m = 0x5bd1e995;
	my $len = length $data;
	my $h = (0x9747b28c ^ $len) & 0xffffffff;
	my @b = unpack('C*', $data);
	my $i = 0;
	for (; $i + 4 <= $len; $i += 4)
	{
		my $k = $b[$i] | ($b[ $i + 1 ] << 8) | ($b[ $i + 2 ] << 16) | ($b[ $i + 3 ] << 24);
		$k = mul32($k, $m);
		$k ^= $k >> 24;
		$h = mul32($h, $m) ^ mul32($k, $m);
	}
	my $rest = $len & 3;
	$h ^= $b[ $i + 2 ] << 16 if $rest >= 3;
	$h ^= $b[ $i + 1 ] << 8 if $rest >= 2;
	$h = mul32($h ^ $b[$i], $m) if $rest >= 1;
	$h ^= $h >> 13;
	$h = mul32($h, $m);
	$h ^= $h >> 15;
	return $h;
}

# the Java producer's partition: toPositive(murmur2(key)) % numPartitions
sub java_partition { return (murmur2($_[0]) & 0x7fffffff) % $_[1]; }

# the reference itself, against Kafka's own test vectors (UtilsTest.testMurmur2)
my %vectors = ('21' => -973932308, 'foobar' => -790332482, 'a-little-bit-long-string' => -985981536,
	'a-little-bit-longer-string' => -1486304829,
	'lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8' => -58897971, 'abc' => 479470107);
is_deeply({ map { my $h = murmur2($_); ($_ => $h >= 2**31 ? $h - 2**32 : $h) } keys %vectors },
	\%vectors, "the test's murmur2 gives Kafka's test vectors");

# 50 keys of 1 to 40 bytes (every tail length) and multi-byte UTF-8, two messages each
my $partitions = 7;
$kafka->cmd("create f.t.part $partitions");
$first = max_id() + 1;
sql(q{SELECT count(outbox.publish('t.part', jsonb_build_object('n', n), k))
        FROM (SELECT left(md5(g::text) || md5((g * 7)::text), g) FROM generate_series(1, 40) g
              UNION ALL SELECT 'clé-' || g FROM generate_series(1, 5) g
              UNION ALL SELECT repeat('ключ', g) || '鍵' FROM generate_series(1, 5) g) kk(k),
             generate_series(1, 2) n});
ok(wait_until(30, \&settled), '100 keyed messages settle');
$v = judge('f.t.part', $first, $first + 99, dump => "$tmp/042_partitions.json");
is_deeply([ @$v{qw(complete distinct split_keys)} ], [ 1, 100, 0 ], '... all in Kafka') or diag explain $v;
my %keyhex = split /[|\n]/,
  sql(qq{SELECT id, encode(convert_to(key, 'UTF8'), 'hex') FROM outbox.messages WHERE id >= $first AND topic = 't.part'});
my (@wrong, %used);
for my $r (@{ $v->{records_list} })
{
	my $key = pack('H*', $keyhex{ $r->{id} });
	my $want = java_partition($key, $partitions);
	$used{$want} = 1;
	push @wrong, "id $r->{id} key $keyhex{$r->{id}}: partition $r->{partition}, Java $want"
	  if $r->{partition} != $want;
}
is(scalar(@wrong), 0, "each of the 50 keys in the partition Java's producer would choose")
  or diag(join("\n", @wrong[ 0 .. ($#wrong < 9 ? $#wrong : 9) ]));
cmp_ok(scalar(keys %used), '>=', 5, '... the keys spread over the partitions');

# messages without a key: spread by librdkafka, each arrives (one statement each)
$first = max_id() + 1;
sql(qq{SELECT outbox.publish('t.part', jsonb_build_object('nokey', $_))}) for 1 .. 40;
ok(wait_until(30, \&settled), '40 messages without a key settle');
$v = judge('f.t.part', $first, $first + 39, dump => "$tmp/042_nokey.json");
my @nokey = grep { $_->{id} >= $first } @{ $v->{records_list} };
is_deeply([ @$v{qw(complete missing repeats)}, scalar(@nokey) ], [ 1, 0, 0, 40 ], '... all in Kafka')
  or diag explain $v;
is(scalar(grep { defined $_->{key} } @nokey), 0, '... without a key');
my %nokey_parts = map { $_->{partition} => 1 } @nokey;
diag('messages without a key: in ' . scalar(keys %nokey_parts) . " of $partitions partitions");

# ---- stat_endpoints and metrics(): counts, commit-to-acknowledgement latency ----
my $total = sql(q{SELECT count(*) FROM outbox.messages});
is(ep_stat('delivered'), $total, "stat_endpoints: delivered counts every message ($total)");

# 300 messages, each in a transaction of its own, 10 ms apart (the latencies
# kept are the last 256)
sub publish_paced
{
	sql(q{DO $$ BEGIN
	        FOR i IN 1..300 LOOP
	          PERFORM outbox.publish('t.lat', jsonb_build_object('i', i), 'key-' || (i % 10));
	          COMMIT;
	          PERFORM pg_sleep(0.01);
	        END LOOP;
	      END $$});
}
$kafka->cmd('create f.t.lat 4');
sql(q{SELECT outbox.publish('t.lat', '{}')});	# the producer learns of the topic
ok(wait_until(30, \&settled), 'a first message to the topic settles');
publish_paced();
ok(wait_until(60, \&settled), '300 messages, one per transaction: settled');
my ($p50, $p99) = split /\|/, ep_stat('latency_p50_ms, latency_p99_ms');
cmp_ok($p99, '<', 500, "latency_p99_ms ($p99) on the idle mock: milliseconds");
cmp_ok($p50, '<=', $p99, "latency_p50_ms ($p50) <= p99");
# every broker answers after 300 ms: the latency runs to the acknowledgement
$kafka->cmd("rtt $_ 300") for 1 .. 3;
publish_paced();
ok(wait_until(60, \&settled), 'the same with 300 ms broker round trips: settled');
($p50, $p99) = split /\|/, ep_stat('latency_p50_ms, latency_p99_ms');
cmp_ok($p50, '>=', 300, "latency_p50_ms ($p50) is commit to acknowledgement (>= the broker's 300 ms)");
cmp_ok($p99, '>=', $p50, "latency_p99_ms ($p99) >= p50");
is(ep_stat('delivered'), $total + 601, 'delivered counts them');

# a record out for 3 s: stat_endpoints shows it while the relay waits (its
# only wake-up is the delivery report: what it publishes before waiting is
# what a reader sees)
$kafka->cmd("rtt $_ 3000") for 1 .. 3;
sql(q{SELECT outbox.publish('t.lat', '{"slow": 1}', 'slow')});
sleep 1;
is(ep_stat('in_flight'), '1', 'a record out for 3 s: stat_endpoints shows it in flight')
  or diag(ep_stat('*'));
ok(wait_until(60, \&settled), '... until it is acknowledged');
$kafka->cmd("rtt $_ 0") for 1 .. 3;
is(ep_stat('in_flight'), '0', '... then no longer');
$p50 = ep_stat('latency_p50_ms');
my $metrics = sql('SELECT outbox.metrics()');
like($metrics, qr/^outbox_delivered_total\{endpoint="k"\} @{[$total + 602]}$/m,
	'outbox.metrics(): outbox_delivered_total for the Kafka endpoint');
my ($p50_s) = $metrics =~ /^outbox_delivery_latency_p50_seconds\{endpoint="k"\} (\S+)$/m;
ok(defined $p50_s && abs($p50_s * 1000 - $p50) < 1, "... its p50 latency in seconds (@{[$p50_s // 'none']})");
like($metrics, qr/^outbox_delivery_latency_p99_seconds\{endpoint="k"\} \d+(\.\d+)?$/m, '... its p99');
like($metrics, qr/^outbox_endpoint_up\{endpoint="k"\} 1$/m, '... and that it is up');

$node->stop;
$kafka->stop;
done_testing();
