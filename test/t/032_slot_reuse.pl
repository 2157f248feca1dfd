# #20: a slot reassigned before its relay attaches.  The launcher registers a
# relay for a database; before the postmaster starts it, the database is
# dropped (and another one appears).  The relay must not start for a
# database that is gone, its slot must not pass to another database while
# it may still attach, and a relay must never serve a database other than
# the one it was started for.  The postmaster is stopped (SIGSTOP) to hold
# the registered relay back; sessions opened before keep working.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use lib 'test/t';
use OutboxTest;

my $node = PostgreSQL::Test::Cluster->new('reuse');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'outbox'\noutbox.max_databases = 4\n");
$node->start;

sub relay_of
{
	my ($db) = @_;
	return $node->safe_psql('postgres',
		qq{SELECT pid FROM pg_stat_activity WHERE backend_type = 'outbox relay' AND datname = '$db'});
}

# hub: a database with the extension, to watch stat_workers from;
# tmpl: a template with the extension (templates get no relay)
$node->safe_psql('postgres', 'CREATE DATABASE hub');
$node->safe_psql('hub', 'CREATE EXTENSION outbox');
$node->safe_psql('postgres', 'CREATE DATABASE tmpl IS_TEMPLATE true');
$node->safe_psql('tmpl', 'CREATE EXTENSION outbox');
$node->safe_psql('postgres', 'CREATE DATABASE x');
$node->safe_psql('postgres', 'CREATE DATABASE z');
# wake the launcher so that it looks at x and z (no extension yet)
$node->safe_psql('hub', q{SELECT outbox.create_endpoint('e', 'http://127.0.0.1:9/', '{none}')});
ok(wait_until(20, sub { relay_of('hub') ne '' }), 'hub has its relay');
sleep 2;

my $hub = $node->background_psql('hub');
my $pg = $node->background_psql('postgres');
my $rename = 0;

sub state_of
{
	my ($db) = @_;
	return $hub->query_safe(qq{SELECT coalesce(max(state), '') FROM outbox.stat_workers WHERE database = '$db'});
}

# wake the launcher once the last command has committed (its utility hook
# does, for a database rename)
sub wake_launcher
{
	my $from = $rename++ ? "tmpl$rename" : 'tmpl';
	$pg->query_safe("ALTER DATABASE $from RENAME TO tmpl" . ($rename + 1));
	return 'tmpl' . ($rename + 1);
}

# the relay's errors in the server log since $offset
sub relay_errors
{
	my ($offset) = @_;
	my $log = slurp_file($node->logfile, $offset);
	return join('', grep { /FATAL|ERROR|PANIC/ && !/administrator command/ } split /^/, $log);
}

# Hold the postmaster, have the launcher register a relay for $db (CREATE
# EXTENSION there), then drop $db.  Returns the template's new name.
sub register_then_drop
{
	my ($db) = @_;
	my $session = $node->background_psql($db);
	kill 'STOP', $node->{_pid};
	$session->query_safe('CREATE EXTENSION outbox');
	ok(wait_until(20, sub { state_of($db) eq 'starting' }), "the launcher registered a relay for $db");
	$session->quit;
	$pg->query_safe("DROP DATABASE $db");
	return wake_launcher();
}

# ---- a database dropped before its relay starts ----
register_then_drop('x');
sleep 1;
my $offset = -s $node->logfile;
kill 'CONT', $node->{_pid};
sleep 3;
is(relay_errors($offset), '', 'its relay does not start for a database that is gone (no error)');
is(state_of('x'), '', 'and stat_workers does not show it');

# ---- the slot could pass to a new database before the relay attaches ----
my $tmpl = register_then_drop('z');
$pg->query_safe("CREATE DATABASE y TEMPLATE $tmpl");
my $yoid = $pg->query_safe(q{SELECT oid FROM pg_database WHERE datname = 'y'});
wake_launcher();
ok(wait_until(20, sub { state_of('y') eq 'starting' }), 'and one for y, a new database with the extension');
$offset = -s $node->logfile;
kill 'CONT', $node->{_pid};

ok(wait_until(20, sub { relay_of('y') ne '' }), 'y gets its relay');
sleep 2;
my $pid = relay_of('y');
like($pid, qr/^\d+$/, 'exactly one relay serves y');
open(my $fh, '<', "/proc/$pid/cmdline") or die "no process $pid";
my $title = do { local $/; <$fh> };
close $fh;
like($title, qr/outbox relay for database $yoid\b/, 'the relay serving y was started for y');
is(state_of('y'), 'running', 'stat_workers says running');
is(relay_errors($offset), '', 'no relay failed');
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'outbox relay'}),
	'2', 'relays: hub and y');

$hub->quit;
$pg->quit;
$node->stop;
done_testing();
