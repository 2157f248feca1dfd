# The in-place upgrade of a running server, as a package upgrade does it:
# the 0.1.0 release (built from this repository's history) runs with work in
# flight (retries, dead letters, an async projection stopped mid-way, inbox
# rows); the current build's files replace its files; the server restarts;
# until ALTER EXTENSION outbox UPDATE the relay waits quietly; after it,
# everything carries on as if nothing had happened.
#
# Needs the 0.1.0 source tree in test/release-0.1.0 (test/check.sh extracts it
# from the repository's history with test/lib/release_tree.sh).  Builds into a
# private copy of the PostgreSQL installation, so the system one is untouched.
use strict;
use warnings;
use lib 'test/t';
use OutboxTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use File::Path qw(make_path);
use Time::HiRes qw(usleep);

my $old_src = 'test/release-0.1.0';
plan skip_all => "no $old_src (test/check.sh extracts it from the git history)"
  unless -f "$old_src/outbox.control";

my $tmp = $PostgreSQL::Test::Utils::tmp_check;

# A private copy of the PostgreSQL installation (PostgreSQL finds its files
# relative to its binaries), so both versions install without root.
my %dir = map { my $v = `pg_config --$_`; chomp $v; ($_ => $v) } qw(bindir sharedir pkglibdir includedir);
my $priv = "$tmp/pginst";
for my $d ("$dir{bindir}/..", $dir{sharedir}, $dir{includedir})
{
	my $real = `realpath $d`;
	chomp $real;
	make_path("$priv$real");
	system("cp -a $real/. $priv$real/") == 0 or die "copy $real failed";
}
my $pg_config = "$priv$dir{bindir}/pg_config";
my $install_path = `realpath $priv$dir{bindir}/..`;
chomp $install_path;

sub make_install
{
	my ($src, $what) = @_;
	my $out = `make -s -C $src PG_CONFIG=$pg_config install 2>&1`;
	is($?, 0, "$what installs into the private installation") or diag($out);
}

make_install($old_src, 'outbox 0.1.0');
like(`cat $priv$dir{sharedir}/extension/outbox.control`, qr/default_version = '0.1.0'/,
	'the installed control file is 0.1.0');

my $rx = start_receiver(log => "$tmp/inplace_upgrade.receiver.log");
$rx->control('status=500');

my $node = PostgreSQL::Test::Cluster->new('inplace', install_path => $install_path);
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'outbox'\nlog_error_verbosity = default\n");
$node->start;
sub sql { return $node->safe_psql('postgres', $_[0]); }

# ---- 0.1.0 with work in flight ----
is(sql(q{CREATE EXTENSION outbox; SELECT extversion FROM pg_extension WHERE extname = 'outbox'}),
	'0.1.0', 'the extension is created at 0.1.0');
my $url = $rx->url;
sql(qq{
	SELECT outbox.create_endpoint('retrying', '$url', '{orders.*}', NULL, '{}',
		'{"backoff_base_ms": 300, "backoff_max_ms": 1000, "max_attempts": 1000}');
	SELECT outbox.create_endpoint('dying', '$url', '{audit.*}', NULL, '{}',
		'{"backoff_base_ms": 10, "backoff_max_ms": 10, "max_attempts": 2}');
	CREATE TABLE stop_at (n int);
	INSERT INTO stop_at VALUES (6);
	CREATE TABLE applied (position bigint PRIMARY KEY, n int NOT NULL, times int NOT NULL);
	CREATE FUNCTION apply_counted(e outbox.events) RETURNS void LANGUAGE plpgsql AS \$\$
	BEGIN
		IF (e.data->>'n')::int >= (SELECT n FROM public.stop_at) THEN
			RAISE EXCEPTION 'stopped at %', e.data->>'n';
		END IF;
		INSERT INTO public.applied VALUES (e.position, (e.data->>'n')::int, 1)
		ON CONFLICT (position) DO UPDATE SET times = applied.times + 1;
	END \$\$;
	SELECT outbox.create_projection('counted', 'apply_counted(outbox.events)', NULL, 'count-', 'async',
		options => '{"max_attempts": 1}');
});
sql(q{SELECT count(outbox.append('count-1', jsonb_build_object('type', 'counted', 'data', jsonb_build_object('n', g))))
        FROM generate_series(1, 10) g});
sql(q{SELECT count(outbox.publish('orders.created', jsonb_build_object('seq', g), 'k' || (g % 3)))
        FROM generate_series(1, 30) g});
sql(q{SELECT count(outbox.publish('audit.logged', jsonb_build_object('seq', g), 'a'))
        FROM generate_series(1, 3) g});
sql(q{SELECT outbox.consume_once('billing', 'evt-1'), outbox.consume_once('billing', 'evt-2')});

ok(wait_until(30, sub { sql(q{SELECT count(*) FROM outbox.dead_letters}) == 3 }),
	'0.1.0: the dying endpoint dead-letters its messages');
ok(wait_until(30, sub { sql(q{SELECT state FROM outbox.stat_projections WHERE name = 'counted'}) eq 'failed' }),
	'0.1.0: the projection stops mid-way');
is(sql(q{SELECT count(*) FROM applied}), 5, '0.1.0: five events applied before the stop');
ok(wait_until(30, sub { sql(q{SELECT count(*) FROM outbox._deliveries WHERE state = 'retry' AND attempts >= 2}) > 0 }),
	'0.1.0: messages are being retried');
my $attempts_before = sql(q{SELECT max(attempts) FROM outbox._deliveries WHERE state = 'retry'});

# ---- the package upgrade: new files over the old ones, restart ----
make_install('.', 'the current build');
my $log_from = -s $node->logfile;
$node->restart;
my $new_version = `sed -n 's/^EXTVERSION *= *//p' Makefile`;
chomp $new_version;

# ---- between the restart and ALTER EXTENSION UPDATE ----
is(sql(q{SELECT extversion FROM pg_extension WHERE extname = 'outbox'}), '0.1.0',
	'after the restart the database is still at 0.1.0');
ok(wait_until(20, sub { sql(q{SELECT count(*) FROM outbox.stat_workers WHERE state = 'needs_update'}) == 1 }),
	'stat_workers shows the relay waiting for the update');
my $relay_pid = sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'outbox relay'});
sleep 5;
is(sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'outbox relay'}), $relay_pid,
	'the relay does not crash-loop (same pid after 5 s)');
my $log = slurp_file($node->logfile, $log_from);
my $waits = () = $log =~ /WARNING: .*nothing is delivered until ALTER EXTENSION outbox UPDATE/g;
is($waits, 1, 'one log line says the database waits for ALTER EXTENSION outbox UPDATE');
# (the old server's shutdown terminates its workers: FATAL lines of its own)
my @errors = grep { /ERROR|FATAL|PANIC|terminated by signal/ && !/due to administrator command/ }
  split /\n/, $log;
is("@errors", '', 'no errors in the log after the restart');
my ($rc, $out, $err) = $node->psql('postgres', "\\set VERBOSITY verbose\nSELECT outbox.publish('orders.created', '{}')");
like($err, qr/55000/, 'the SQL API refuses with 55000 until the update');
like($err, qr/HINT:\s+Run ALTER EXTENSION outbox UPDATE/, 'with a hint naming the command');
is(scalar(grep { $_->{topic} eq 'orders.created' } @{ $rx->deliveries }), 0, 'nothing delivered while waiting');

# ---- ALTER EXTENSION outbox UPDATE ----
sql(q{ALTER EXTENSION outbox UPDATE});
is(sql(q{SELECT extversion FROM pg_extension WHERE extname = 'outbox'}), $new_version, "updated to $new_version");
ok(wait_until(20, sub { sql(q{SELECT count(*) FROM outbox.stat_workers WHERE state = 'running' AND worker = 'relay'}) == 1 }),
	'the relay runs again');
ok(wait_until(30, sub { sql(q{SELECT max(attempts) FROM outbox._deliveries WHERE state = 'retry'}) > $attempts_before }),
	'retries continue from their attempt counts');
$rx->control('status=0');
ok(wait_until(60, sub { scalar(grep { $_->{topic} eq 'orders.created' } @{ $rx->deliveries }) >= 30 }),
	'every pending message is delivered');
my @orders = grep { $_->{topic} eq 'orders.created' } @{ $rx->deliveries };
my %ids = map { $_->{id} => 1 } @orders;
is(scalar(keys %ids), 30, 'all 30, none lost');
my (%last, $ordered);
$ordered = 1;
for my $r (@orders)
{
	$ordered = 0 if exists $last{ $r->{key} } && $r->{seq} <= $last{ $r->{key} };
	$last{ $r->{key} } = $r->{seq};
}
ok($ordered, 'in order per key');
sql(q{SELECT outbox.redeliver(message_id, 'dying') FROM outbox.dead_letters});
ok(wait_until(30, sub { scalar(grep { $_->{topic} eq 'audit.logged' } @{ $rx->deliveries }) >= 3 }),
	'dead letters are redelivered');
sql(q{UPDATE stop_at SET n = 1000000; SELECT outbox.resume_projection('counted')});
ok(wait_until(30, sub { sql(q{SELECT count(*) FROM applied}) == 10 }), 'the projection carries on from its checkpoint');
is(sql(q{SELECT count(*) FROM applied WHERE times > 1}), 0, 'no event applied twice');
is(sql(q{SELECT outbox.consume_once('billing', 'evt-1')}), 'f', 'inbox rows survive');

$node->stop;
$rx->stop;
done_testing();
