# Helpers for outbox's TAP tests: the webhook receiver (test/receiver) as a
# child process, its control API, and its log of accepted deliveries.
package OutboxTest;
use strict;
use warnings;
use Exporter 'import';
use HTTP::Tiny;
use IPC::Run;
use JSON::PP;
use Time::HiRes qw(time usleep);

our @EXPORT = qw(start_receiver wait_until cpu_ticks in_key_order);

# start_receiver(log => FILE, secrets => [...], headers => FILE): a running
# receiver on a free port
sub start_receiver
{
	my (%opt) = @_;
	my @cmd = ('test/receiver/receiver', '--port', 0, '--log', $opt{log},
		map { ('--secret', $_) } @{ $opt{secrets} || [] });
	push @cmd, '--headers', $opt{headers} if $opt{headers};
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(\@cmd, '>', \$out, '2>', \$err);
	my $deadline = time + 10;
	until ($out =~ /listening on (\d+)/)
	{
		die "receiver did not start: $err" if time > $deadline;
		$h->pump_nb;
		usleep(10_000);
	}
	my ($port) = $out =~ /listening on (\d+)/;
	return bless { h => $h, port => $port, log => $opt{log}, headers => $opt{headers} },
	  'OutboxTest::Receiver';
}

# wait_until(SECONDS, CODE): poll CODE every 50 ms until it is true
sub wait_until
{
	my ($secs, $code) = @_;
	my $deadline = time + $secs;
	while (time < $deadline)
	{
		return 1 if $code->();
		usleep(50_000);
	}
	return $code->();
}

# true if, per key, the accepted seq values only ever increase
sub in_key_order
{
	my ($rows) = @_;
	my %last;
	for my $r (@$rows)
	{
		return 0 if exists $last{ $r->{key} } && $r->{seq} <= $last{ $r->{key} };
		$last{ $r->{key} } = $r->{seq};
	}
	return 1;
}

# user + system CPU ticks a process has used
sub cpu_ticks
{
	my ($pid) = @_;
	open(my $fh, '<', "/proc/$pid/stat") or return -1;
	my @f = split / /, <$fh>;
	close $fh;
	return $f[13] + $f[14];
}

package OutboxTest::Receiver;
use HTTP::Tiny;
use JSON::PP;

sub url  { my ($self, $path) = @_; return "http://127.0.0.1:$self->{port}" . ($path // '/hook'); }
sub port { $_[0]{port} }

sub control
{
	my ($self, $query) = @_;
	my $r = HTTP::Tiny->new(timeout => 5)->get($self->url("/_control?$query"));
	die "receiver control $query failed: $r->{status}" unless $r->{success};
	return decode_json($r->{content});
}

sub stats
{
	my ($self) = @_;
	my $r = HTTP::Tiny->new(timeout => 5)->get($self->url('/_stats'));
	die "receiver stats failed" unless $r->{success};
	return decode_json($r->{content});
}

sub reset { HTTP::Tiny->new(timeout => 5)->get($_[0]->url('/_reset')); }

# The accepted deliveries so far: [{t, id, key, topic, sig, len, seq}, ...]
sub deliveries
{
	my ($self) = @_;
	my @rows;
	open(my $fh, '<', $self->{log}) or return [];
	while (my $line = <$fh>)
	{
		chomp $line;
		my @f = split /\t/, $line;
		next unless @f >= 7;
		push @rows, { t => $f[0], id => $f[1], key => $f[2], topic => $f[3],
			sig => $f[4], len => $f[5], seq => $f[6] };
	}
	close $fh;
	return \@rows;
}

# The heads of the webhook requests so far (needs headers => FILE): one
# {lowercased name => [values in order]} per request
sub request_headers
{
	my ($self) = @_;
	my @reqs;
	open(my $fh, '<', $self->{headers}) or return [];
	local $/ = "\r\n\r\n";
	while (my $head = <$fh>)
	{
		my (undef, @lines) = split /\r\n/, $head;
		my %h;
		for (@lines)
		{
			my ($name, $value) = /^([^:]+):[ \t]*(.*?)[ \t]*$/ or next;
			push @{ $h{ lc $name } }, $value;
		}
		push @reqs, \%h;
	}
	close $fh;
	return \@reqs;
}

sub down { kill 'USR1', $_[0]{h}{KIDS}[0]{PID}; }
sub up   { kill 'USR2', $_[0]{h}{KIDS}[0]{PID}; }
sub pid  { $_[0]{h}{KIDS}[0]{PID} }

sub stop
{
	my ($self) = @_;
	$self->{h}->signal('TERM');
	$self->{h}->finish;
}

1;
