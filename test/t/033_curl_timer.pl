# #18: curl's timer callback gives a timeout relative to the moment it is
# called; the relay keeps it as an absolute deadline.  This test guards that
# bookkeeping: a 2 s request timeout must fire at 2 s while the relay is
# woken for other work.  (0.1.0, which took the value as relative to each
# later wait, passes it too: curl's own intermediate timers bounded the
# drift.  An earlier fix that cleared the deadline after firing it wiped the
# timer curl set during that very call: the timeout then fired only when the
# receiver answered, 8 s here, and 003_delivery's timeout-then-reset test
# broke the same way.)
use strict;
use warnings;
use lib 'test/t';
use OutboxTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

my $tmp = $PostgreSQL::Test::Utils::tmp_check;
my $rx = start_receiver(log => "$tmp/receiver_timer.log");

my $node = PostgreSQL::Test::Cluster->new('timer');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'outbox'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION outbox');
$node->safe_psql('postgres',
	qq{SELECT outbox.create_endpoint('slow', '@{[$rx->url]}', '{slow}', NULL, '{}',
	   '{"timeout_ms": 2000, "max_attempts": 1}')});
$rx->control('delay_ms=8000');
sleep 1;

# one request that will time out after 2 s; meanwhile the relay is woken
# every 1.9 s by a commit that publishes a message no endpoint matches
my $bg = $node->background_psql('postgres');
my $t0 = time;
$bg->query_safe(q{SELECT outbox.publish('slow', '{}')});
my $dead = '';
while (time - $t0 < 8 && $dead eq '')
{
	sleep 0.1;
	$bg->query_safe(q{SELECT outbox.publish('noise', '{}')})
	  if int((time - $t0) / 1.9) > int((time - $t0 - 0.1) / 1.9);
	$dead = $bg->query_safe(
		q{SELECT extract(epoch FROM d.updated_at - m.created_at) FROM outbox._deliveries d
		    JOIN outbox._messages m ON m.id = d.message_id WHERE m.topic = 'slow'});
}
like($dead, qr/^\d/, 'the request timed out and was dead-lettered');
cmp_ok($dead, '<', 3.0, sprintf('its 2 s timeout fired on time despite the wakeups (%.2f s)', $dead || 0));
like($node->safe_psql('postgres', q{SELECT last_error FROM outbox._deliveries}), qr/timed out|Timeout/i,
	'the error says timeout');

$bg->quit;
$node->stop;
$rx->stop;
done_testing();
