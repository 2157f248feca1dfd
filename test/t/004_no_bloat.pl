# Delivered messages are deleted after outbox.retention without bloat: under a
# steady publish-and-deliver load, the on-disk size of the outbox stops growing.
use strict;
use warnings;
use lib 'test/t';
use OutboxTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time);

my $tmp = $PostgreSQL::Test::Utils::tmp_check;
my $rx = start_receiver(log => "$tmp/soak_receiver.log");
my $node = PostgreSQL::Test::Cluster->new('soak');
$node->init;
$node->append_conf('postgresql.conf', <<'CONF');
shared_preload_libraries = 'outbox'
outbox.retention = '1s'
autovacuum_naptime = '1s'
CONF
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION outbox');
my $url = $rx->url;
$node->safe_psql('postgres', qq{SELECT outbox.create_endpoint('soak', '$url', '{soak}', NULL, '{}', '{"ordered": false}')});

my $script = "$tmp/soak.sql";
open(my $fh, '>', $script) or die $!;
print $fh "SELECT outbox.publish('soak', '{\"order\": 1234, \"items\": [1, 2, 3], \"note\": \"steady load\"}');\n";
close $fh;

# 400 messages/s for 40 s, one per transaction
my $bench = IPC::Run::start(
	[ 'pgbench', '-n', '-R', '400', '-T', '40', '-c', '2', '-j', '2', '-f', $script,
	  '-h', $node->host, '-p', $node->port, 'postgres' ],
	'>', \my $out, '2>', \my $err);
my $t0 = time;
my %size;
for my $at (15, 25, 40)
{
	sleep($at - (time - $t0)) if time - $t0 < $at;
	$size{$at} = $node->safe_psql('postgres', q{SELECT pg_total_relation_size('outbox._messages')});
	note("after $at s: outbox._messages takes $size{$at} bytes");
}
$bench->finish;
my ($published) = $out =~ /number of transactions actually processed: (\d+)/;
cmp_ok($published, '>', 12000, "a steady load was published ($published messages)");

cmp_ok($size{40}, '<=', $size{15} * 1.5 + 262144,
	"the outbox stops growing: $size{15} bytes after 15 s, $size{40} after 40 s");
ok(wait_until(30, sub { scalar(@{ $rx->deliveries }) >= $published }), 'every message was delivered');
ok( wait_until(30, sub { $node->safe_psql('postgres', 'SELECT count(*) FROM outbox.messages') < 2000 }),
	'delivered messages are deleted soon after outbox.retention');

$node->stop;
$rx->stop;
done_testing();
