# Retention (outbox.retention, outbox.inbox_retention) runs on a timer in
# every database with the extension, endpoints or not, and never deletes a
# message that a subscription has not acknowledged or an endpoint still has
# to deliver (waiting behind a paused endpoint, retrying, dead-lettered).
use strict;
use warnings;
use lib 'test/t';
use OutboxTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $tmp = $PostgreSQL::Test::Utils::tmp_check;
my $node = PostgreSQL::Test::Cluster->new('retention');
$node->init;
$node->append_conf('postgresql.conf', <<'CONF');
shared_preload_libraries = 'outbox'
outbox.retention = '1s'
outbox.inbox_retention = '2s'
CONF
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION outbox');

sub sql { return $node->safe_psql('postgres', $_[0]); }
sub count_topic { return sql(qq{SELECT count(*) FROM outbox.messages WHERE topic LIKE '$_[0]'}); }

ok( wait_until(30, sub { sql(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'outbox relay'}) eq '1' }),
	'the relay runs');

# ---- no endpoints, no reload: retention still runs ----
sql(q{SELECT outbox.publish('free', '{}') FROM generate_series(1, 5)});
ok(wait_until(30, sub { count_topic('free') eq '0' }),
	'retention deletes old messages in a database with no endpoints (no SIGHUP needed)');

# ---- subscriptions: unacknowledged matching messages stay ----
sql(q{SELECT outbox.create_subscription('keep', '{kept.*}')});
my @kept = split /\n/, sql(q{SELECT outbox.publish('kept.' || g, '{}') FROM generate_series(1, 3) g});
sql(q{SELECT outbox.publish('other', '{}') FROM generate_series(1, 2)});
ok(wait_until(30, sub { count_topic('other') eq '0' }), 'messages no subscription matches go');
sleep 3;
is(count_topic('kept.%'), '3', 'unacknowledged messages stay well past outbox.retention');
is(sql(q{SELECT string_agg(id::text, ',' ORDER BY id) FROM outbox.poll('keep')}), join(',', @kept),
	'poll still returns all of them');
is(sql(q{SELECT count(*) FROM outbox.read_messages(0)}), '3', 'read_messages sees only what retention kept');
sql(qq{SELECT outbox.ack('keep', $kept[1])});
ok(wait_until(30, sub { count_topic('kept.%') eq '1' }), 'acknowledged messages go after outbox.retention');
is(sql(q{SELECT string_agg(id::text, ',') FROM outbox.poll('keep')}), $kept[2], 'poll returns the rest');
is(sql(q{SELECT lag_messages FROM outbox.stat_subscriptions WHERE name = 'keep'}), '1', 'stat_subscriptions agrees');
sql(q{SELECT outbox.drop_subscription('keep')});
ok(wait_until(30, sub { count_topic('kept.%') eq '0' }), 'a dropped subscription keeps nothing');

# ---- endpoints: dead letters, retries and a paused endpoint's backlog stay ----
my $rx = start_receiver(log => "$tmp/retention_receiver.log");
my $url = $rx->url;
sql(qq{SELECT outbox.create_endpoint('ep', '$url', '{ep.*}', NULL, '{}',
       '{"backoff_base_ms": 500, "backoff_max_ms": 2000, "max_attempts": 1000}')});
$rx->control('status=400');
my $dead = sql(q{SELECT outbox.publish('ep.dead', '{}')});
ok(wait_until(30, sub { sql(q{SELECT count(*) FROM outbox.dead_letters}) eq '1' }), 'a dead letter');
$rx->control('status=503');
my $retry = sql(q{SELECT outbox.publish('ep.retry', '{}')});
ok( wait_until(30, sub { sql(qq{SELECT count(*) FROM outbox._deliveries WHERE message_id = $retry AND state = 'retry'}) eq '1' }),
	'a retry');
# the circuit opens after 5 failures; waiting out its cool-down or a retry's
# backoff is a timed sleep, not a busy loop
ok(wait_until(30, sub { sql(q{SELECT state FROM outbox.stat_endpoints}) =~ /open/ }), 'the circuit opens');
my $pid = sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'outbox relay'});
my $ticks = cpu_ticks($pid);
sleep 3;
cmp_ok(cpu_ticks($pid) - $ticks, '<=', 10, 'a relay waiting for a retry behind an open circuit does not spin');
is(count_topic('ep.dead'), '1', 'a dead-lettered message stays');
is(count_topic('ep.retry'), '1', 'a message waiting for a retry stays');
$rx->control('status=0');
ok(wait_until(30, sub { count_topic('ep.retry') eq '0' }), 'once delivered, it goes');

sql(q{SELECT outbox.pause_endpoint('ep')});
sql(q{SELECT outbox.publish('ep.paused', '{}')});
sleep 3;
is(count_topic('ep.paused'), '1', 'a paused endpoint\'s messages stay');
sql(q{SELECT outbox.resume_endpoint('ep')});
ok(wait_until(30, sub { count_topic('ep.paused') eq '0' }), 'resumed and delivered, they go');
is(count_topic('ep.dead'), '1', 'the dead letter is still there');
sql(q{SELECT outbox.drop_endpoint('ep')});
ok(wait_until(30, sub { count_topic('ep.%') eq '0' }), 'with its endpoint dropped, the dead letter goes too');

# ---- inbox ----
is(sql(q{SELECT outbox.consume_once('c', 'm1')}), 't', 'consume_once records a message id');
is(sql(q{SELECT outbox.consume_once('c', 'm1')}), 'f', 'and recognises a repeat');
ok(wait_until(30, sub { sql(q{SELECT count(*) FROM outbox._inbox}) eq '0' }),
	'inbox rows go after outbox.inbox_retention');

# ---- an idle relay barely wakes up ----
$pid = sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'outbox relay'});
$ticks = cpu_ticks($pid);
sleep 3;
cmp_ok(cpu_ticks($pid) - $ticks, '<=', 10, 'an idle relay uses almost no CPU');

# ---- a lagging subscription's backlog is not walked on every pass ----
# 100,000 old messages a subscription has not acknowledged, next to a live
# endpoint whose messages retention may delete: each pass walks the backlog
# before it reaches them (about 100 ms here).  Such slow passes back off to
# one every 10 s; before, the backlog was walked every second.
sql(q{SELECT outbox.create_subscription('lagging', '{bulk}')});
sql(q{SELECT outbox.create_endpoint('live', '} . $rx->url . q{', '{live}')});
sql(q{SELECT count(outbox.publish('bulk', '{}')) FROM generate_series(1, 100000)});
sleep 3;
my $reads = q{SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) FROM pg_stat_user_tables
               WHERE relid = 'outbox._messages'::regclass};
my $before = sql($reads);
my $t0 = Time::HiRes::time();
for (1 .. 60)
{
	sql(q{SELECT outbox.publish('live', '{}')});
	usleep(200_000);
}
my $walked = (sql($reads) - $before) / 100_000;
my $secs = Time::HiRes::time() - $t0;
# backing off 2, 4, 8, 10 s: about 5 walks in the first 25 s, 1 per 10 s after
cmp_ok($walked, '<=', 3 + $secs / 5,
	sprintf('the backlog was walked %.1f times in %.0f s (before: about once a second)', $walked, $secs));
is(count_topic('bulk'), '100000', 'and every unacknowledged message is still there');

# ---- no walk of the log while the oldest message is younger than outbox.retention ----
# Saving progress brought the next pass forward (5 s), and so did the
# inbox's own timer (every outbox.inbox_retention, 2 s here): each pass
# walked the 100,000 young messages to find none old enough.  Now the
# messages' pass waits for the oldest one to be old enough, whatever the
# inbox's timer does.
sql(q{ALTER SYSTEM SET outbox.retention = '1h'});
sql(q{SELECT pg_reload_conf()});
sleep 3;						# the reload's own pass, and its figures (flushed within 1 s)
$before = sql($reads);
$t0 = Time::HiRes::time();
for (1 .. 60)
{
	sql(q{SELECT outbox.publish('live', '{}')});
	usleep(200_000);
}
$walked = (sql($reads) - $before) / 100_000;
cmp_ok($walked, '<', 0.5,
	sprintf('young messages were walked %.1f times in %.0f s while delivering (before: 8 times, every 2 s)',
		$walked, Time::HiRes::time() - $t0));

# ---- an endpoint whose row another session holds: its save waits, the relay sleeps ----
# A request finishes while another session holds the endpoint's row (an
# administrator's BEGIN; pause_endpoint(...) left open, say): the relay's
# save skips the locked row (FOR UPDATE SKIP LOCKED) and tries again later.
# It tried every 20 ms, a turn and a commit each, for as long as the row
# stayed locked; now the retries back off to one a second.  (Nothing is
# published meanwhile: a new message would wait for the session's
# transaction anyway, the gap-free horizon, polled by its own timer.)
sub relay_loops
{
	return sql(q{SELECT loops FROM outbox.stat_workers WHERE database = 'postgres' AND worker = 'relay'});
}
$rx->control('delay_ms=1500');
my $held_id = sql(q{SELECT outbox.publish('live', '{}')});
usleep(500_000);				# sent, not answered yet
my $holder = $node->background_psql('postgres');
$holder->query_safe('BEGIN');
$holder->query_safe(q{SELECT FROM outbox._endpoints WHERE name = 'live' FOR UPDATE});
ok(wait_until(10, sub { grep { $_->{id} eq "msg_$held_id" } @{ $rx->deliveries } }),
	'a request finishes while the endpoint\'s row is locked');
$rx->control('delay_ms=0');
sleep 1;
my $loops = relay_loops();
sleep 5;
$loops = relay_loops() - $loops;
cmp_ok($loops, '<=', 20, "the relay turned $loops times in 5 s while its save waited for the row (before: about 250)");
$holder->query_safe('COMMIT');
$holder->quit;
ok( wait_until(10, sub { sql(qq{SELECT cursor_id >= $held_id FROM outbox._endpoints WHERE name = 'live'}) eq 't' }),
	'its progress is saved once the row is free');

$node->stop;
$rx->stop;
done_testing();
