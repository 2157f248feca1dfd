# Finding 14: configuration changes while delivering never repeat a message.
# 4,000 messages over 11 keys are published while one endpoint is altered,
# paused and resumed, and unrelated endpoints are created, 12 changes in all;
# each reloads the relay's endpoints.  Without a crash every message must
# arrive exactly once, in order per key.
use strict;
use warnings;
use lib 'test/t';
use OutboxTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $tmp = $PostgreSQL::Test::Utils::tmp_check;
my $rx = start_receiver(log => "$tmp/reload.log");
my $other = start_receiver(log => "$tmp/other.log");

my $node = PostgreSQL::Test::Cluster->new('reload');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'outbox'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION outbox');

sub sql { return $node->safe_psql('postgres', $_[0]); }

my $total = 4000;
my $url = $rx->url;
sql(qq{SELECT outbox.create_endpoint('main', '$url', '{load}', NULL, '{}',
        '{"max_in_flight": 8, "backoff_base_ms": 20, "backoff_max_ms": 200}')});
# requests stay in flight for a while, so that reloads find some out
$rx->control('delay_ms=15');

my @changes = (
	q{SELECT outbox.alter_endpoint('main', '{"options": {"timeout_ms": 4000}}')},
	qq{SELECT outbox.create_endpoint('other1', '@{[$other->url]}', '{elsewhere}')},
	q{SELECT outbox.pause_endpoint('main')},
	q{SELECT outbox.resume_endpoint('main')},
	q{SELECT outbox.alter_endpoint('main', '{"options": {"max_in_flight": 4}}')},
	qq{SELECT outbox.alter_endpoint('main', '{"headers": {"X-Env": "test"}, "url": "@{[$rx->url('/v2')]}",
	    "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}')},
	qq{SELECT outbox.create_endpoint('other2', '@{[$other->url]}', '{elsewhere}')},
	q{SELECT outbox.alter_endpoint('main', '{"options": {"batch_size": 10}}')},
	q{SELECT outbox.pause_endpoint('main')},
	q{SELECT outbox.resume_endpoint('main')},
	q{SELECT outbox.alter_endpoint('main', '{"options": {"batch_size": 1, "max_in_flight": 16}}')},
	q{SELECT outbox.drop_endpoint('other1')},
);

# 20 rounds of 200 messages, a change after rounds 0, 10 and every odd one
my $per_round = $total / 20;
for my $round (0 .. 19)
{
	my $from = $round * $per_round + 1;
	my $to = $from + $per_round - 1;
	sql(qq{SELECT count(outbox.publish('load', jsonb_build_object('seq', g), 'k' || (g % 11)))
            FROM generate_series($from, $to) g});
	usleep(150_000);
	sql(shift @changes) if $round % 2 == 1 || $round == 0 || $round == 10;
	usleep(150_000);
}
is(scalar(@changes), 0, '12 configuration changes made while delivering');

my %seen;
ok( wait_until(180, sub {
		%seen = map { $_->{seq} => 1 } grep { $_->{topic} eq 'load' } @{ $rx->deliveries };
		scalar(keys %seen) >= $total }),
	"all $total messages arrive")
  or diag(scalar(keys %seen) . ' arrived');
sleep 2;    # anything repeated late would show now

my $rows = [ grep { $_->{topic} eq 'load' } @{ $rx->deliveries } ];
my %count;
$count{ $_->{seq} }++ for @$rows;
my @twice = grep { $count{$_} > 1 } sort { $a <=> $b } keys %count;
is(scalar(@twice), 0, 'no message arrives twice') or diag('repeated: ' . join(' ', @twice[0 .. ($#twice < 20 ? $#twice : 19)]));
is(scalar(@$rows), $total, 'exactly one delivery per message');

my (%last, $disorder);
for my $r (@$rows)
{
	$disorder++ if exists $last{ $r->{key} } && $r->{seq} <= $last{ $r->{key} };
	$last{ $r->{key} } = $r->{seq};
}
ok(!$disorder, 'in order per key') or diag("$disorder deliveries out of order");
is(scalar(keys %last), 11, 'over 11 keys');

$node->stop;
$rx->stop;
$other->stop;
done_testing();
