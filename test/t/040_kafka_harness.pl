# The Kafka test harness (test/kafka) that the relay's Kafka tests stand on:
# the mock cluster and its fault commands, the bare producer, and the
# consumer's verdict (count, repeats, per-key order on first arrivals,
# record format), including that the judge does see repeats, order
# violations and missing records.  No PostgreSQL here.
use strict;
use warnings;
use lib 'test/t';
use OutboxTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $tmp = $PostgreSQL::Test::Utils::tmp_check;
my $kafka = start_kafka(log => "$tmp/mockcluster.log");
like($kafka->bootstrap, qr/^127\.0\.0\.1:\d+,127\.0\.0\.1:\d+,127\.0\.0\.1:\d+$/,
	'three mock brokers on 127.0.0.1');

# the brokers' accept() is the harness's, which sets TCP_NODELAY
my $bindings = `LD_DEBUG=bindings test/kafka/mockcluster < /dev/null 2>&1`;
like($bindings, qr/librdkafka\.so\S* \[0\] to \S*mockcluster \[0\]: normal symbol `accept'/,
	"librdkafka's accept() resolves to the harness's");

ok($kafka->cmd('create plain 4'), 'create a topic');
ok(!eval { $kafka->cmd('create plain 0') }, 'a bad command is refused');
like($@, qr/error bad partition count/, '... with the reason');
ok(!eval { $kafka->cmd('errors Produce 1 NO_SUCH_ERROR') }, 'an unknown error name is refused');

# 200 keyed records read back whole, in order, with their headers
my $p = kafka_produce($kafka, topic => 'plain', n => 200, keys => 20);
is($p->{delivered}, 200, 'bare producer: 200 records delivered');
my $v = kafka_consume($kafka, topics => ['plain'], ids => [ 1, 200 ],
	dump => "$tmp/plain.json", timeout => 30);
is_deeply([ @$v{qw(exit complete records distinct repeats violations split_keys missing)} ],
	[ 0, 1, 200, 200, 0, 0, 0, 0 ], 'verdict: 200 distinct, no repeat, in order')
  or diag explain $v;
is($v->{partitions}, 4, 'all four partitions read');
my ($r) = grep { $_->{id} == 7 } @{ $v->{records_list} };
is($r->{key}, 'key-6', 'dump: key');
is_deeply($r->{headers}, [ [ 'outbox-id', 'msg_7' ], [ 'outbox-topic', 'plain' ] ],
	'dump: headers in order');
like($r->{value}, qr/^msg_7x+$/, 'dump: value');
is($r->{tstype}, 'create', 'dump: create-time timestamp');
my %part;
$part{ $_->{key} }{ $_->{partition} } = 1 for @{ $v->{records_list} };
ok(!grep({ keys %$_ != 1 } values %part), 'each key in one partition');

# the judge: repeats, violations on first arrivals, missing ids
kafka_produce($kafka, topic => 'judge', n => 10, keys => 10, first_id => 300);
kafka_produce($kafka, topic => 'judge', n => 10, keys => 10, first_id => 300);
kafka_produce($kafka, topic => 'judge', n => 10, keys => 10, first_id => 250);
$v = kafka_consume($kafka, topics => ['judge'], ids => [ 250, 309 ], timeout => 3);
is_deeply([ @$v{qw(exit complete records distinct repeats violations missing)} ],
	[ 1, 0, 30, 20, 10, 10, 40 ],
	'judge: a second copy is 10 repeats, earlier ids after later ones 10 violations, 40 missing')
  or diag explain $v;
like($v->{stderr}, qr/violation: topic judge partition \d+ key key-0: id 250 after 300/,
	'judge: violations detailed');
$v = kafka_consume($kafka, regex => '^jud', timeout => 10);
is_deeply([ @$v{qw(exit complete records topics)} ], [ 0, 1, 30, 1 ],
	'a regular expression names the topics; without ids, read to the end');

# faults: injected request errors, a broker down and back, a leader moved
$kafka->cmd('create faults 3');
$kafka->cmd("leader faults $_ " . ($_ + 1)) for 0 .. 2;
$kafka->cmd('errors Produce 4 NOT_LEADER_FOR_PARTITION 0 REQUEST_TIMED_OUT');
$kafka->cmd('flaky 30 50');
$p = kafka_produce($kafka, topic => 'faults', n => 300, keys => 30, rate => 500,
	stats => 1);
is($p->{delivered}, 300, 'retriable Produce errors: all delivered');
cmp_ok($p->{resent}, '>', 0, '... some of them sent again');
$kafka->cmd('clear Produce');
$kafka->cmd('down 2');
my $bg = kafka_produce($kafka, topic => 'faults', n => 300, keys => 30, rate => 300,
	first_id => 301, background => 1);
sleep 1;
$kafka->cmd('up 2');
$kafka->cmd('leader faults 0 3');
$p = $bg->finish;
is($p->{delivered}, 300, 'a broker down for 1 s and a leader moved: all delivered');
cmp_ok($p->{lat_p99_ms}, '>', 500, '... some of them held while the broker was down');
$v = kafka_consume($kafka, topics => ['faults'], ids => [ 1, 600 ], timeout => 30);
is_deeply([ @$v{qw(complete violations split_keys missing)} ], [ 1, 0, 0, 0 ],
	'after the faults: all there, in order') or diag explain $v;

$kafka->stop;
done_testing();
