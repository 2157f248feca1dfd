# The relay's statements keep a good plan when the message log grows by
# orders of magnitude: the payloads of a send pass (WHERE id = ANY ($1)) were
# read with a generic plan cached while the log was small, a sequential scan
# that then read the whole log for each chunk of ids (2,600 msg/s on the
# Kafka benchmark, 290 µs of relay CPU per message) until autovacuum
# analysed the table.  Autovacuum is off here, so that nothing replans for
# the relay.  Measured in CPU time, not wall time, with a wide margin.
use strict;
use warnings;
use lib 'test/t';
use OutboxTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $N = 50_000;

my $tmp = $PostgreSQL::Test::Utils::tmp_check;
my $kafka = start_kafka(log => "$tmp/mockcluster.log");

my $node = PostgreSQL::Test::Cluster->new('plans');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'outbox'\nautovacuum = off\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION outbox');

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub settled
{
	return sql(q{SELECT cursor_id = (SELECT max(id) FROM outbox.messages) AND done_ahead = '{}'
	               FROM outbox._endpoints WHERE name = 'k'}) eq 't';
}

$kafka->cmd('create plans 4');
sql(qq{SELECT outbox.create_endpoint('k', 'kafka://@{[$kafka->bootstrap]}/plans', '{plans}')});

# a small log: more than five send passes (the plan cache's custom plans), one message each
for my $i (1 .. 10)
{
	sql(qq{SELECT outbox.publish('plans', '{"seq": $i}', 'k')});
	ok(wait_until(30, \&settled), "small log: message $i delivered") or last;
}

my $relay = sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'outbox relay'});
my $ticks = cpu_ticks($relay);
sql(qq{SELECT count(outbox.publish('plans', jsonb_build_object('seq', g), 'key-' || (g % 100)))
         FROM generate_series(1, $N) g});
ok(wait_until(300, \&settled), "then $N messages at once: delivered");
my $ms = (cpu_ticks($relay) - $ticks) * 10;
# about 1 s here (librdkafka's threads included); with the cached sequential scan, 7.6 s
cmp_ok($ms, '<', 3000, "... with the relay's CPU time ($ms ms) linear in the messages, not in the log's size");

$node->stop;
$kafka->stop;
done_testing();
