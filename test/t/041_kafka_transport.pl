# The Kafka transport (src/kafka.c) behind the delivery core, against the
# mock cluster (test/kafka): the record (key, value, timestamp, headers), a
# topic template, an expanded topic that is not a legal Kafka topic, a
# permanent error dead-lettered and redelivered, retriable request errors,
# a broker outage longer than timeout_ms (records time out: the order fence
# withdraws their successors), settings changed while delivering (a new
# producer starts once the old one has reported its records), and an idle
# relay that stays asleep.
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

my $node = PostgreSQL::Test::Cluster->new('kafka');
$node->init;
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

my $fast = '"backoff_base_ms": 50, "backoff_max_ms": 500, "max_attempts": 100';
sql(qq{SELECT outbox.create_endpoint('k', 'kafka://$bootstrap/out.{topic}', '{orders.*, bad*}',
       headers => '{"X-Env": "test"}',
       options => '{$fast, "timeout_ms": 2000, "kafka": {"linger.ms": 1, "client.id": "outbox-tap",
                    "sasl.username": "u", "sasl.password": "not-used-on-plaintext"}}')});
is(sql(q{SELECT kafka_secret_names FROM outbox.endpoints WHERE name = 'k'}), '{sasl.password}',
	'the password is kept apart');

# ---- the record ----
sql(q{SELECT count(outbox.publish('orders.created', jsonb_build_object('seq', g), 'key-' || (g % 10),
                                  '{"X-Trace": "t-1", "x-env": "from-message"}'))
        FROM generate_series(1, 200) g});
sql(q{SELECT outbox.publish('orders.created', '{"seq": 0}')});
ok(wait_until(30, \&settled), '201 messages delivered') or diag(ep_stat('*'));
my $first = sql(q{SELECT min(id) FROM outbox.messages});
my $v = kafka_consume($kafka, topics => ['out.orders.created'], ids => [ $first, $first + 200 ],
	dump => "$tmp/records.json", timeout => 30);
is_deeply([ @$v{qw(complete distinct violations split_keys missing)} ], [ 1, 201, 0, 0, 0 ],
	'every record in Kafka, per key in id order') or diag explain $v;
my ($r) = grep { $_->{id} == $first } @{ $v->{records_list} };
is($r->{key}, 'key-1', 'key: the message key');
is($r->{value}, '{"seq": 1}', 'value: the payload as JSON text');
is_deeply($r->{headers},
	[ [ 'outbox-id', "msg_$first" ], [ 'outbox-topic', 'orders.created' ], [ 'X-Env', 'test' ],
	  [ 'X-Trace', 't-1' ] ],
	"headers: outbox's, the endpoint's, the message's (never overriding the endpoint's)");
my $created_ms = sql(qq{SELECT (extract(epoch FROM created_at) * 1000)::bigint FROM outbox.messages WHERE id = $first});
is($r->{tstype}, 'create', 'timestamp: create time');
ok(abs($r->{timestamp} - $created_ms) <= 1, "timestamp: the message's created_at")
  or diag("$r->{timestamp} vs $created_ms");
my ($nokey) = grep { !defined $_->{key} } @{ $v->{records_list} };
ok($nokey, 'a message without a key makes a record without one');
is(ep_stat('delivered'), '201', 'stat_endpoints counts them');

# ---- a topic that is not a legal Kafka topic: dead at once ----
sql(q{SELECT outbox.publish('bad/topic', '{}')});
ok(wait_until(20, \&settled), 'an illegal expanded topic settles');
like(sql(q{SELECT last_error FROM outbox.dead_letters WHERE topic = 'bad/topic'}),
	qr/^kafka: a Kafka topic name may have letters, digits.*"out\.bad\/topic"/,
	'... dead-lettered with the reason');

# ---- a permanent error: dead at once; redelivered ----
$kafka->cmd('errors Produce 1 TOPIC_AUTHORIZATION_FAILED');
sql(q{SELECT outbox.publish('orders.denied', '{"n": 1}', 'd')});
ok(wait_until(20, \&settled), 'a record refused for good settles');
my $denied = sql(q{SELECT message_id FROM outbox.dead_letters WHERE topic = 'orders.denied'});
like(sql(qq{SELECT last_error FROM outbox.dead_letters WHERE message_id = $denied}),
	qr/^kafka: Broker: Topic authorization failed/, '... dead-lettered with librdkafka\'s error');
$kafka->cmd('clear Produce');
sleep 1;	# librdkafka keeps the topic's error until its metadata is refreshed
is(sql(qq{SELECT outbox.redeliver($denied)}), '1', 'redeliver it');
ok(wait_until(30, sub { sql(q{SELECT count(*) FROM outbox.dead_letters WHERE topic = 'orders.denied'}) eq '0' }),
	'... and it is delivered') or diag(ep_stat('last_error'));
$v = kafka_consume($kafka, topics => ['out.orders.denied'], timeout => 20);
is($v->{distinct}, 1, '... once in Kafka');

# ---- 30 % of Produce requests fail with retriable errors ----
my $before = sql(q{SELECT max(id) FROM outbox.messages});
$kafka->cmd('create out.orders.flaky 4');
$kafka->cmd('flaky 30 400 NOT_ENOUGH_REPLICAS NOT_LEADER_FOR_PARTITION');
sql(q{SELECT count(outbox.publish('orders.flaky', jsonb_build_object('seq', g), 'key-' || (g % 20)))
        FROM generate_series(1, 2000) g});
ok(wait_until(60, \&settled), 'retriable errors: 2000 messages settle') or diag(ep_stat('*'));
$kafka->cmd('clear Produce');
is(sql(q{SELECT count(*) FROM outbox.dead_letters WHERE topic = 'orders.flaky'}), '0', '... none dead');
$v = kafka_consume($kafka, topics => ['out.orders.flaky'], ids => [ $before + 1, $before + 2000 ], timeout => 30);
is_deeply([ @$v{qw(complete violations missing)} ], [ 1, 0, 0 ], '... all in Kafka, per key in order')
  or diag explain $v;

# ---- the cluster down longer than timeout_ms: records time out, the fence holds order ----
sub publish_outage
{
	my ($from, $to) = @_;
	sql(qq{SELECT count(outbox.publish('orders.outage', jsonb_build_object('seq', g), 'key-' || (g % 20)))
	         FROM generate_series($from, $to) g});
}
$before = sql(q{SELECT max(id) FROM outbox.messages});
$kafka->cmd('create out.orders.outage 4');
publish_outage(1, 200);
$kafka->cmd("down $_") for 1 .. 3;
for my $chunk (0 .. 9)
{
	publish_outage(201 + 100 * $chunk, 300 + 100 * $chunk);
	select(undef, undef, undef, 0.4);
}
ok(wait_until(20, sub { ep_stat('failed_attempts') > 0 }), 'the cluster down: attempts fail');
like(ep_stat('last_error'), qr/^kafka: Local: Message timed out/, '... with librdkafka\'s text');
$kafka->cmd("up $_") for 1 .. 3;
publish_outage(1201, 1400);
# (the breaker may have opened for up to a minute)
ok(wait_until(150, \&settled), 'the cluster back: every message settles') or diag(ep_stat('*'));
is(sql(q{SELECT count(*) FROM outbox.dead_letters WHERE topic = 'orders.outage'}), '0', '... none dead');
$v = kafka_consume($kafka, topics => ['out.orders.outage'], ids => [ $before + 1, $before + 1400 ], timeout => 30);
is_deeply([ @$v{qw(complete violations missing)} ], [ 1, 0, 0 ],
	'... all in Kafka, and per key no earlier message after a later one') or diag explain $v;
note("repeats after the outage: $v->{repeats}");

# ---- settings changed while delivering: a new producer, after the old one's records ----
$before = sql(q{SELECT max(id) FROM outbox.messages});
$kafka->cmd('create out.orders.reconf 4');
for my $round (1 .. 4)
{
	sql(qq{SELECT count(outbox.publish('orders.reconf', jsonb_build_object('seq', g), 'key-' || (g % 20)))
	         FROM generate_series(1, 500) g});
	sql(qq{SELECT outbox.alter_endpoint('k', '{"options": {"kafka": {"linger.ms": $round}}}')});
}
ok(wait_until(60, \&settled), 'settings changed four times while delivering: all settle') or diag(ep_stat('*'));
$v = kafka_consume($kafka, topics => ['out.orders.reconf'], ids => [ $before + 1, $before + 2000 ], timeout => 30);
is_deeply([ @$v{qw(complete violations missing)} ], [ 1, 0, 0 ], '... all in Kafka, per key in order')
  or diag explain $v;

# ---- an idle relay sleeps ----
my $relay = sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'outbox relay'});
my $ticks = cpu_ticks($relay);
sleep 3;
cmp_ok(cpu_ticks($relay) - $ticks, '<=', 5, 'an idle relay with a Kafka endpoint uses no CPU to speak of');

$node->stop;
$kafka->stop;
done_testing();
