# The Debian package, installed the way users install it: build the .deb,
# `apt-get install ./file.deb`, a cluster made with pg_createcluster and
# started with pg_ctlcluster, CREATE EXTENSION, and a message delivered to the
# test receiver.  Then the package and the cluster are removed.
# Run as root from the top of a built tree (test/check.sh does):
#   prove -I test/t test/package/001_deb.pl
use strict;
use warnings;
use Test::More;
use lib 'test/t';
use OutboxTest;
use IO::Socket::INET;

plan skip_all => 'needs root (apt-get, pg_createcluster)' if $> != 0;

my $cluster = "outbox_pkgtest_$$";
my $tmp = `mktemp -d /tmp/outbox-pkgtest.XXXXXX`;
chomp $tmp;
system('chmod', '755', $tmp);

sub run_ok
{
	my ($what, @cmd) = @_;
	my $out = `@cmd 2>&1`;
	ok($? == 0, $what) or diag($out);
	return $out;
}

sub psql
{
	my ($port, $sql) = @_;
	my $out = `runuser -u postgres -- psql -X -A -t -q -v ON_ERROR_STOP=1 -h /var/run/postgresql -p $port -d postgres -c "$sql" 2>&1`;
	die "psql failed: $out" if $?;
	chomp $out;
	return $out;
}

# OUTBOX_DEB names an already built package (saves a rebuild while developing).
# OUTBOX_SOURCE: the checkout to package (default: here).
my $src = $ENV{OUTBOX_SOURCE} // '.';
my $built = $ENV{OUTBOX_DEB} // `bash $src/test/package/build.sh $tmp 2>$tmp/build.err`;
ok($? == 0, 'the package builds and lintian reports no error')
  or BAIL_OUT('no package: ' . `tail -n 40 $tmp/build.err`);
my ($deb) = $built =~ m{(\S+\.deb)\s*$};
like($deb, qr{/postgresql-15-outbox_[0-9.]+-1_amd64\.deb$}, "named $deb");

my $info = `dpkg-deb -f $deb Depends`;
like($info, qr/postgresql-15/, 'depends on the server');
like($info, qr/libcurl4/, 'depends on libcurl');
like($info, qr/librdkafka1/, 'depends on librdkafka');

END
{
	# Whatever happened: no cluster, no package left behind.
	system("pg_dropcluster --stop 15 $cluster >/dev/null 2>&1");
	system("DEBIAN_FRONTEND=noninteractive apt-get remove -y -q postgresql-15-outbox >/dev/null 2>&1");
	system('rm', '-rf', $tmp) if $tmp;
}

my ($debdir, $debfile) = $deb =~ m{^(.*)/([^/]+)$};
run_ok("apt-get install ./$debfile",
	"cd $debdir && DEBIAN_FRONTEND=noninteractive apt-get install -y -q ./$debfile");
my $status = `dpkg-query -W -f '\${Status}' postgresql-15-outbox 2>&1`;
is($status, 'install ok installed', 'dpkg knows the package');
my $owner = `dpkg -S /usr/lib/postgresql/15/lib/outbox.so 2>&1`;
like($owner, qr/^postgresql-15-outbox:/, 'outbox.so comes from the package');

my $port = 20000 + int(rand(20000));
$port++ while IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port");
run_ok('pg_createcluster', "pg_createcluster 15 $cluster --port $port"
	  . ' -o shared_preload_libraries=outbox');
run_ok('pg_ctlcluster start', "pg_ctlcluster 15 $cluster start");

my $recv = start_receiver(log => "$tmp/receiver.log");
is(psql($port, 'CREATE EXTENSION outbox; SELECT extversion FROM pg_extension WHERE extname = \'outbox\''),
	`sed -n 's/^EXTVERSION *= *//p' Makefile` =~ s/\s+//gr, 'CREATE EXTENSION from the package');
psql($port, "SELECT outbox.create_endpoint('pkg', '" . $recv->url . "', '{pkg.*}')");
psql($port, "SELECT outbox.publish('pkg.test', '{\\\"seq\\\": 1}', 'k1')");
ok(wait_until(30, sub { scalar(@{ $recv->deliveries }) >= 1 }),
	'the relay of the packaged extension delivers to the receiver');
is($recv->deliveries->[0]{topic}, 'pkg.test', 'the right message');
$recv->stop;

run_ok('pg_dropcluster', "pg_dropcluster --stop 15 $cluster");
run_ok('apt-get remove', 'DEBIAN_FRONTEND=noninteractive apt-get remove -y -q postgresql-15-outbox');
ok(!-e '/usr/lib/postgresql/15/lib/outbox.so', 'the package took its files with it');

done_testing();
