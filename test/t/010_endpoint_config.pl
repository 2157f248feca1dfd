# Endpoint and projection configuration in the relay, with the real receiver:
# a stored configuration the relay cannot use stops only its own endpoint or
# projection (finding 4); the request's headers follow the rules of
# src/validate.c whatever a message's stored headers say (finding 11); a 410
# pause survives a reload that runs before it could be saved (#21).
use strict;
use warnings;
use lib 'test/t';
use OutboxTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $tmp = $PostgreSQL::Test::Utils::tmp_check;
my $rx = start_receiver(log => "$tmp/config.log", headers => "$tmp/config.heads");
my $gone = start_receiver(log => "$tmp/gone.log");

my $node = PostgreSQL::Test::Cluster->new('config');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'outbox'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION outbox');

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub relay_pid
{
	return sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'outbox relay'});
}

# distinct messages of a topic a receiver accepted
sub arrived
{
	my ($r, $topic) = @_;
	my %seen = map { $_->{id} => 1 } grep { $_->{topic} eq $topic } @{ $r->deliveries };
	return scalar keys %seen;
}

# deliveries of a topic, repeats included
sub lines
{
	my ($r, $topic) = @_;
	return scalar(grep { $_->{topic} eq $topic } @{ $r->deliveries });
}

# ---- a stored configuration the relay cannot use stops only its endpoint ----
my $url = $rx->url;
sql(qq{SELECT outbox.create_endpoint('good', '$url', '{cfg}')});
sql(qq{SELECT outbox.create_endpoint('legacy', '$url/legacy', '{cfg}')});
sql(qq{SELECT outbox.create_endpoint('bad_option', '$url/bad', '{cfg}')});
sql(qq{SELECT outbox.create_endpoint('bad_secret', '$url/bad', '{cfg}')});
sql(qq{SELECT outbox.create_endpoint('bad_topics', '$url/bad', '{cfg}')});
ok(wait_until(10, sub { relay_pid() ne '' }), 'the relay runs');
my $pid = relay_pid();
# rows as 0.1.0 stored them (5000.0 passed its check) or as a hand-made change
# leaves them; the relay reloads them at commit
sql(q{BEGIN;
      UPDATE outbox._endpoints SET options = options || '{"timeout_ms": 5000.0}' WHERE name = 'legacy';
      UPDATE outbox._endpoints SET options = options || '{"timeout_ms": 5000.5}' WHERE name = 'bad_option';
      UPDATE outbox._endpoints SET secret = 'whsec_!!notbase64!!' WHERE name = 'bad_secret';
      UPDATE outbox._endpoints SET topics = '{cfg, NULL}' WHERE name = 'bad_topics';
      SELECT outbox._notify_relay();
      COMMIT});
sql(q{SELECT count(outbox.publish('cfg', jsonb_build_object('seq', g))) FROM generate_series(1, 20) g});
ok(wait_until(30, sub { lines($rx, 'cfg') >= 40 }), 'the other endpoints are delivered to');
sleep 1;
is(lines($rx, 'cfg'), 40, 'good and legacy (5000.0, as 0.1.0 accepted it) get every message, once');
is(arrived($rx, 'cfg'), 20, 'all 20 of them');
is(relay_pid(), $pid, 'the relay did not stop');
is( sql(q{SELECT name, state, last_error FROM outbox.stat_endpoints WHERE name LIKE 'bad%' ORDER BY name}),
	qq{bad_option|invalid|invalid configuration: option "timeout_ms" must be an integer from 100 to 300000, not 5000.5\n}
	  . qq{bad_secret|invalid|invalid configuration: a secret is not valid base64\n}
	  . q{bad_topics|invalid|invalid configuration: a topic pattern is null},
	'stat_endpoints reports the endpoints it cannot use, and why');
ok($node->log_contains('endpoint "bad_option" has an invalid configuration'), 'and so does the log');

# fixing it delivers what waited, from where it stopped
sql(q{SELECT outbox.alter_endpoint('bad_option', '{"options": {"timeout_ms": 5000}}')});
ok(wait_until(30, sub { lines($rx, 'cfg') >= 60 }), 'a repaired endpoint gets what waited');
is(sql(q{SELECT state, last_error IS NULL FROM outbox.stat_endpoints WHERE name = 'bad_option'}),
	'active|t', 'and is active again');
sql(q{SELECT outbox.drop_endpoint(name) FROM outbox.endpoints});

# ---- a projection's options that cannot be used stop only that projection ----
sql(q{CREATE TABLE applied (projection text, position bigint)});
sql(q{CREATE FUNCTION apply_a(e outbox.events) RETURNS void LANGUAGE sql
        AS $$ INSERT INTO applied VALUES ('a', e.position) $$});
sql(q{CREATE FUNCTION apply_b(e outbox.events) RETURNS void LANGUAGE sql
        AS $$ INSERT INTO applied VALUES ('b', e.position) $$});
sql(q{SELECT outbox.create_projection('pa', 'apply_a(outbox.events)', mode => 'async')});
sql(q{SELECT outbox.create_projection('pb', 'apply_b(outbox.events)', mode => 'async')});
sql(q{UPDATE outbox._projections SET options = options || '{"max_attempts": "3"}' WHERE name = 'pb'});
sql(q{SELECT count(outbox.append('s-' || g, '{"type": "t", "data": {}}')) FROM generate_series(1, 10) g});
ok(wait_until(30, sub { sql(q{SELECT count(*) FROM applied WHERE projection = 'a'}) eq '10' }),
	'another async projection applies every event');
ok( wait_until(30, sub { sql(q{SELECT state FROM outbox.stat_projections WHERE name = 'pb'}) eq 'failed' }),
	'the one with unusable options fails at once');
like(sql(q{SELECT last_error FROM outbox.stat_projections WHERE name = 'pb'}),
	qr/invalid options: option "max_attempts" must be an integer/, 'saying why');
is(sql(q{SELECT count(*) FROM applied WHERE projection = 'b'}), '0', 'and applies nothing');
is(relay_pid(), $pid, 'the relay did not stop');

# ---- headers: the endpoint's win, a message never adds, doubles or removes one ----
$rx->reset;
sql(qq{SELECT outbox.create_endpoint('hdr', '$url', '{hdr}', NULL,
        '{"Authorization": "Bearer endpoint", "X-Env": "test"}')});
# a message stored with headers publish now refuses (as 0.1.0 accepted them)
sql(q{BEGIN;
      SELECT outbox.publish('hdr', '{"seq": 1}', 'k', '{"X-Trace": "t-1"}');
      UPDATE outbox._messages SET headers = '{"authorization": "Bearer evil", "x-env": "evil",
          "User-Agent": "", "Cookie": "session=stolen", "X-Forwarded-For": "10.1.2.3",
          "X-Trace": "t-1", "Content-Length": "0", "X-Bad\\r\\nX-Injected": "1"}'
       WHERE id = (SELECT max(id) FROM outbox._messages);
      COMMIT});
ok(wait_until(20, sub { arrived($rx, 'hdr') == 1 }), 'the message arrives');
my ($h) = grep { ($_->{'outbox-topic'} || [''])->[0] eq 'hdr' } @{ $rx->request_headers };
is_deeply($h->{authorization}, ['Bearer endpoint'], "one Authorization, the endpoint's");
is_deeply($h->{'x-env'}, ['test'], "the endpoint's other headers win too");
is_deeply($h->{'user-agent'}, ['outbox/0.2.0'], 'an empty User-Agent does not remove it');
ok(!exists $h->{cookie} && !exists $h->{'x-forwarded-for'}, 'no Cookie, no X-Forwarded-For');
ok(!exists $h->{'x-injected'}, 'no header smuggled in through a stored name');
is(scalar(@{ $h->{'content-length'} }), 1, 'one Content-Length');
is_deeply($h->{'x-trace'}, ['t-1'], "the message's own headers are sent");

# ---- a 410 pause survives a reload that comes before it is saved (#21) ----
# The 410 arrives while an admin transaction holds the endpoint's row, so the
# relay cannot save the pause yet; then another endpoint changes, and the
# relay reloads every endpoint.  (The row is locked only once the request is
# out: a transaction with an id holds the gap-free reader back.)
sql(qq{SELECT outbox.create_endpoint('gone', '@{[$gone->url]}', '{gone}')});
$gone->control('status=410&delay_ms=1000');
sql(q{SELECT outbox.publish('gone', '{"seq": 1}')});
ok(wait_until(20, sub { $gone->stats->{requests_total} == 1 }), 'a request is out');
my $bg = $node->background_psql('postgres');
$bg->query_safe('BEGIN');
$bg->query_safe(q{SELECT 1 FROM outbox._endpoints WHERE name = 'gone' FOR UPDATE});
ok(wait_until(20, sub { $gone->stats->{by_status}{410} }), 'the endpoint answers 410');
$gone->control('status=0&delay_ms=0');
sleep 1;
sql(qq{SELECT outbox.create_endpoint('unrelated', '$url', '{nothing}')});
sleep 2;
is($gone->stats->{requests_total}, 1, 'after a reload the paused endpoint sends nothing');
$bg->query_safe('COMMIT');
$bg->quit;
ok(wait_until(10, sub { sql(q{SELECT paused FROM outbox.endpoints WHERE name = 'gone'}) eq 't' }),
	'its pause is saved once the row is free');
sql(q{SELECT outbox.publish('gone', '{"seq": 2}')});
sleep 2;
is($gone->stats->{requests_total}, 1, 'and it stays paused');

# ---- last_error keeps the start of a response body, as README says ----
$gone->control('status=400&error_body=10000');
sql(q{SELECT outbox.resume_endpoint('gone')});
ok( wait_until(20, sub {
		sql(q{SELECT count(*) FROM outbox.dead_letters WHERE endpoint = 'gone' AND last_status = 400}) eq '1' }),
	'a 400 with a 10 kB body dead-letters the message');
is( sql(q{SELECT last_error FROM outbox.dead_letters WHERE endpoint = 'gone' AND last_status = 400}),
	'HTTP 400: ' . ('x' x 245), 'dead_letters.last_error: the first 255 bytes');
is( sql(q{SELECT last_error FROM outbox.stat_endpoints WHERE name = 'gone'}),
	'HTTP 400: ' . ('x' x 245), 'stat_endpoints.last_error: the same');

$node->stop;
$rx->stop;
$gone->stop;
done_testing();
