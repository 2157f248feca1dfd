# Finding 7: outbox.blocked_networks is checked against the address the relay
# connects to, after resolution, so numeric and named spellings meet the same
# check; a refusal is dead-lettered at once and names the address and the
# setting; a reused connection is checked too; no proxy from the environment;
# readers see neither the URL's secrets nor response bodies.
#
# Network rule: traffic only ever goes to 127.0.0.1.  The default list is
# tested with 169.254.169.254 and 0.0.0.0, which the relay refuses in curl's
# socket-open callback (no socket, so no packet); that part runs only once
# the setting is known to exist with its default, so this test never sends
# anything elsewhere, even against code without the setting.
use strict;
use warnings;
use lib 'test/t';
use OutboxTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $tmp = $PostgreSQL::Test::Utils::tmp_check;
my $rx = start_receiver(log => "$tmp/receiver_ssrf.log");
my $port = $rx->port;

my $node = PostgreSQL::Test::Cluster->new('ssrf');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'outbox'\n");
{
	# a proxy in the environment would take the requests to the receiver
	local $ENV{http_proxy} = "http://127.0.0.1:$port";
	local $ENV{HTTP_PROXY} = "http://127.0.0.1:$port";
	local $ENV{no_proxy};
	local $ENV{NO_PROXY};
	delete $ENV{no_proxy};
	delete $ENV{NO_PROXY};
	$node->start;
}
$node->safe_psql('postgres', 'CREATE EXTENSION outbox');
$node->safe_psql('postgres', 'CREATE ROLE ssrf_reader LOGIN IN ROLE outbox_reader');

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub arrived
{
	my ($topic) = @_;
	return scalar(grep { $_->{topic} eq $topic } @{ $rx->deliveries });
}

# wait for a reload to reach backends (false after 10 s, if it never does)
sub setting_is
{
	my ($cond) = @_;
	return wait_until(10, sub {
		sql(qq{SELECT coalesce(current_setting('outbox.blocked_networks', true), '') $cond}) eq 't' });
}

# the dead letter of a topic's message: "attempts|last_error", as an admin
sub dead_letter
{
	my ($topic) = @_;
	return sql(qq{SELECT attempts || '|' || last_error FROM outbox.dead_letters WHERE topic = '$topic'});
}

my $fast = '{"backoff_base_ms": 20, "backoff_max_ms": 100, "max_attempts": 50}';

# ---- the default list: link-local and unspecified, refused before any socket ----
my $default = $node->safe_psql('postgres',
	q{SELECT coalesce(current_setting('outbox.blocked_networks', true), '(not defined)')});
like($default, qr{169\.254\.0\.0/16.*fe80::/10.*0\.0\.0\.0/8.*::/128},
	'outbox.blocked_networks defaults to link-local and unspecified networks');
SKIP:
{
	skip 'no outbox.blocked_networks: not sending anything to 169.254.x or 0.0.0.0', 4
	  unless $default =~ m{169\.254\.0\.0/16} && $default =~ m{0\.0\.0\.0/8};
	my %cases = (
		'meta.v4' => [ 'http://169.254.169.254/latest/meta-data/', '169.254.169.254' ],
		'meta.zero' => [ 'http://0/', '0.0.0.0' ],
		'meta.mapped' => [ 'http://[::ffff:169.254.169.254]/', '::ffff:169.254.169.254' ],
		'meta.decimal' => [ 'http://2852039166/', '169.254.169.254' ],
	);
	for my $topic (sort keys %cases)
	{
		my ($url, $addr) = @{ $cases{$topic} };
		sql(qq{SELECT outbox.create_endpoint('$topic', '$url', '{$topic}', NULL, '{}', '$fast')});
		sql(qq{SELECT outbox.publish('$topic', '{}')});
		ok( wait_until(20, sub { dead_letter($topic) ne '' })
			  && dead_letter($topic) eq "1|address $addr is blocked by outbox.blocked_networks",
			"$url: refused in the socket-open callback, dead-lettered after one attempt, naming $addr")
		  or diag(dead_letter($topic));
	}
}
# Dropping every endpoint freed the relay's endpoint list but kept a pointer
# to it: the next endpoint crashed the relay (SIGSEGV, all backends reset).
my $relay = sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'outbox relay'});
sql(q{SELECT outbox.drop_endpoint(name) FROM outbox.endpoints});

# ---- loopback blocked by the operator: every spelling is refused ----
$node->append_conf('postgresql.conf', "outbox.blocked_networks = '169.254.0.0/16, 127.0.0.0/8, ::1/128'\n");
$node->reload;
ok(setting_is(q{LIKE '%127.0.0.0/8%'}), 'the setting is reloaded on SIGHUP');
sleep 1;	# the relay processes its SIGHUP at its next wakeup

my %loop = (
	'loop.plain' => [ "http://127.0.0.1:$port/hook?token=abc", qr/^address 127\.0\.0\.1 is blocked/ ],
	'loop.decimal' => [ "http://2130706433:$port/hook", qr/^address 127\.0\.0\.1 is blocked/ ],
	'loop.name' => [ "http://localhost:$port/hook", qr/^address (127\.0\.0\.1|::1) is blocked/ ],
	'loop.v6' => [ "http://[::1]:$port/hook", qr/^address ::1 is blocked/ ],
);
for my $topic (sort keys %loop)
{
	sql(qq{SELECT outbox.create_endpoint('$topic', '$loop{$topic}[0]', '{$topic}', NULL, '{}', '$fast')});
	sql(qq{SELECT outbox.publish('$topic', '{}')});
}
for my $topic (sort keys %loop)
{
	ok(wait_until(20, sub { dead_letter($topic) ne '' }), "$topic: dead-lettered");
	my ($attempts, $error) = split /\|/, dead_letter($topic), 2;
	is($attempts, '1', "$topic: after one attempt, not retried");
	like($error, $loop{$topic}[1], "$topic: last_error names the address");
	like($error, qr/outbox\.blocked_networks$/, "$topic: and the setting");
}
sleep 1;
is(sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'outbox relay'}), $relay,
	'the relay survived dropping every endpoint and creating new ones');
is(scalar(@{ $rx->deliveries }), 0, 'nothing reached the receiver');
like(sql(q{SELECT last_error FROM outbox.stat_endpoints WHERE name = 'loop.v6'}),
	qr/^address ::1 is blocked by outbox\.blocked_networks$/,
	'stat_endpoints.last_error says so too')
  or diag(sql(q{SELECT * FROM outbox.stat_endpoints}));

# ---- unblocked: the same dead letter goes once redelivered ----
$node->append_conf('postgresql.conf', "outbox.blocked_networks = '169.254.0.0/16'\n");
$node->reload;
setting_is(q{NOT LIKE '%127.0.0.0/8%'});
sleep 1;
sql(q{SELECT outbox.redeliver(message_id) FROM outbox.dead_letters WHERE topic = 'loop.plain'});
ok(wait_until(20, sub { arrived('loop.plain') == 1 }), 'once the setting allows it, redeliver sends it');

# ---- a connection made before the address was blocked carries no more requests ----
sql(q{SELECT outbox.publish('loop.plain', '{"n": 2}')});
ok(wait_until(20, sub { arrived('loop.plain') == 2 }), 'delivery works (the connection stays open)');
$node->append_conf('postgresql.conf', "outbox.blocked_networks = '127.0.0.0/8'\n");
$node->reload;
setting_is(q{= '127.0.0.0/8'});
sleep 1;
sql(q{SELECT outbox.publish('loop.plain', '{"n": 3}')});
ok( wait_until(20, sub { sql(q{SELECT count(*) FROM outbox.dead_letters WHERE topic = 'loop.plain'}) eq '1' }),
	'blocking the address refuses the next request on the reused connection');
like(dead_letter('loop.plain'), qr/^1\|address 127\.0\.0\.1 is blocked by outbox\.blocked_networks$/,
	'after one attempt, naming the address and the setting');
is(arrived('loop.plain'), 2, 'and it never arrived');

# ---- no proxy from the environment ----
$node->append_conf('postgresql.conf', "outbox.blocked_networks = ''\n");
$node->reload;
setting_is(q{= ''});
sleep 1;
# port 1: nothing listens; only a proxy (the receiver) could take it
sql(qq{SELECT outbox.create_endpoint('proxy', 'http://127.0.0.1:1/via-proxy', '{proxy.*}', NULL, '{}', '$fast')});
sql(q{SELECT outbox.publish('proxy.check', '{}')});
ok( wait_until(20, sub { sql(q{SELECT coalesce(max(attempts), 0) >= 2 FROM outbox._deliveries d
	                             JOIN outbox._endpoints e ON e.id = d.endpoint_id WHERE e.name = 'proxy'}) eq 't' }),
	'a URL nothing listens on fails and is retried');
is(arrived('proxy.check'), 0, 'http_proxy in the server\'s environment is not used');
sql(q{SELECT outbox.drop_endpoint('proxy')});

# ---- readers: no URL secrets, no response bodies ----
$rx->control('status=500');
sql(q{SELECT outbox.alter_endpoint('loop.plain', '{"options": {"max_attempts": 1}}')});
sql(q{SELECT outbox.publish('loop.plain', '{"n": 4}')});
ok( wait_until(20, sub {
		sql(q{SELECT count(*) FROM outbox.dead_letters WHERE topic = 'loop.plain' AND last_status = 500}) eq '1' }),
	'a 500 is dead-lettered');
$rx->control('status=0');
like(sql(q{SELECT last_error FROM outbox.dead_letters WHERE last_status = 500}),
	qr/^HTTP 500: \{"ok":false/, 'an admin sees the response body in dead_letters');
like(sql(q{SELECT last_error FROM outbox.stat_endpoints WHERE name = 'loop.plain'}),
	qr/^HTTP 500: \{"ok":false/, 'and in stat_endpoints');
my $reader = sub {
	return $node->safe_psql('postgres', $_[0], extra_params => [ '-U', 'ssrf_reader' ]);
};
is($reader->(q{SELECT last_error FROM outbox.dead_letters WHERE last_status = 500}),
	'HTTP 500', 'a reader sees the status without the body in dead_letters');
is($reader->(q{SELECT url || ' ' || last_error FROM outbox.stat_endpoints WHERE name = 'loop.plain'}),
	"http://127.0.0.1:$port/ HTTP 500", 'and in stat_endpoints, with the URL\'s origin only');
is( $reader->(q{SELECT count(*) FROM outbox._stat_endpoints() WHERE last_error LIKE '%ok%'}),
	'0', 'calling the private function directly shows no body either');

$node->stop;
$rx->stop;
done_testing();
