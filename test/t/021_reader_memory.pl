# Readers do not hold max_count rows in memory: read_messages, poll and
# read_all over 1 MB rows keep a backend's peak memory (VmHWM) flat, since
# each row is detoasted, copied into the result (which spills to disk past
# work_mem) and freed.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('reader_memory');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'outbox'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION outbox');
$node->safe_psql('postgres', 'SELECT outbox.create_subscription(\'mem\')');

# 100 payloads of 1 MB each (compressible: the table stays small, each
# detoasted value is 1 MB)
$node->safe_psql('postgres',
	q{SELECT count(outbox.publish('big', jsonb_build_object('d', repeat(chr(65 + g % 26), 1000000))))
	    FROM generate_series(1, 100) g});
$node->safe_psql('postgres',
	q{SELECT count(outbox.append('big-' || g, jsonb_build_object('type', 'Big', 'data', repeat('y', 1000000))))
	    FROM generate_series(1, 100) g});

# peak resident memory of the backend, in kB, before and after a query
sub peak_growth
{
	my ($query) = @_;
	my $out = $node->safe_psql('postgres', qq{
		SELECT substring(pg_read_file('/proc/self/status') FROM 'VmHWM:\\s*(\\d+)');
		$query;
		SELECT substring(pg_read_file('/proc/self/status') FROM 'VmHWM:\\s*(\\d+)');});
	my ($before, $n, $after) = split /\n/, $out;
	note("$query: $n rows, peak +" . ($after - $before) . " kB");
	return ($n, $after - $before);
}

for my $q ('SELECT count(*) FROM outbox.read_messages(0, 1000)',
	"SELECT count(*) FROM outbox.poll('mem', 1000)",
	'SELECT count(*) FROM outbox.read_all(0, 1000)')
{
	my ($n, $grew) = peak_growth($q);
	is($n, '100', "$q returns the 100 rows of 1 MB");
	cmp_ok($grew, '<', 30_000, "$q: the backend's peak memory grows by less than 30 MB");
}

$node->stop;
done_testing();
