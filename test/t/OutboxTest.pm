# Helpers for outbox's TAP tests: the webhook receiver (test/receiver) as a
# child process, its control API, and its log of accepted deliveries; the
# Kafka mock cluster (test/kafka), its fault commands, the judging consumer
# and the bare producer.
package OutboxTest;
use strict;
use warnings;
use Exporter 'import';
use File::Temp;
use HTTP::Tiny;
use IPC::Run;
use JSON::PP;
use Time::HiRes qw(time usleep);

our @EXPORT = qw(start_receiver wait_until cpu_ticks in_key_order endpoint_settled
  start_kafka kafka_consume kafka_produce);

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

# endpoint_settled($node, NAME): everything published so far has passed the
# endpoint's cursor, delivered or dead-lettered (none waiting for a retry)
sub endpoint_settled
{
	my ($node, $name) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT cursor_id = (SELECT max(id) FROM outbox.messages) AND done_ahead = '{}'
		       AND NOT EXISTS (SELECT FROM outbox._deliveries d WHERE d.endpoint_id = e.id AND d.state = 'retry')
		  FROM outbox._endpoints e WHERE name = '$name'}) eq 't';
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

# start_kafka(brokers => 3, seed => N, nagle => 0, log => FILE): a running
# mock Kafka cluster (test/kafka/mockcluster); ->bootstrap, ->cmd("down 1"),
# ->stop.  Its commands are in test/kafka/README.md.
sub start_kafka
{
	my (%opt) = @_;
	my @cmd = ('test/kafka/mockcluster', '--brokers', $opt{brokers} // 3);
	push @cmd, '--seed', $opt{seed} if defined $opt{seed};
	push @cmd, '--nagle' if $opt{nagle};
	# stderr to a file: a full pipe would stall the brokers' thread
	my $self = bless { in => '', out => '', log => $opt{log} // '/dev/null' },
	  'OutboxTest::Kafka';
	$self->{h} = IPC::Run::start(\@cmd, '<', \$self->{in}, '>', \$self->{out},
		'2>>', $self->{log});
	$self->{bootstrap} = $self->_line(10)
	  or die "mock Kafka cluster did not start (log: $self->{log})";
	return $self;
}

# kafka_consume($kafka or BOOTSTRAP, topics => [...] | regex => RE,
#   expect => N | ids => [FIRST, LAST], timeout => SECONDS, dump => FILE):
# test/kafka/consume's verdict as a hash (complete, records, distinct,
# repeats, violations, split_keys, noid, missing, stray, topics, partitions),
# plus exit (its status), stderr (violation details) and, with dump, records:
# [{topic, partition, offset, key, id, timestamp, tstype, headers => [[name,
# value], ...], value}, ...] in the order read
sub kafka_consume
{
	my ($kafka, %opt) = @_;
	my @cmd = ('test/kafka/consume', '-b', ref $kafka ? $kafka->bootstrap : $kafka,
		'--timeout', $opt{timeout} // 30);
	push @cmd, map { ('-t', $_) } @{ $opt{topics} || [] };
	push @cmd, '-r', $opt{regex} if defined $opt{regex};
	push @cmd, '--expect', $opt{expect} if defined $opt{expect};
	push @cmd, '--ids', "$opt{ids}[0]-$opt{ids}[1]" if $opt{ids};
	push @cmd, '--dump', $opt{dump} if $opt{dump};
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(\@cmd, '>', \$out, '2>', \$err);
	$h->finish;
	my %v = (exit => $h->result(0), stderr => $err);
	my ($line) = $out =~ /^verdict (.*)$/m
	  or die "consume gave no verdict (exit $v{exit}): $err";
	%v = (%v, $line =~ /(\w+)=(\S+)/g);
	if ($opt{dump})
	{
		open(my $fh, '<', $opt{dump}) or die "$opt{dump}: $!";
		$v{records_list} = [ map { JSON::PP->new->utf8->decode($_) } <$fh> ];
		close $fh;
	}
	return \%v;
}

# kafka_produce($kafka or BOOTSTRAP, topic => T, n => N, keys => K,
#   size => BYTES, first_id => ID, rate => MSGS_PER_SEC, conf => {prop => value},
#   wait => SECONDS, stats => 1, purge_after => MS, purge_inflight => 1,
#   background => 1): runs test/kafka/bare_producer (the relay's producer
# configuration) and returns its summary as a hash (produced, delivered,
# failed, unreported, seconds, msgs_per_sec, lat_p50_ms, lat_p99_ms,
# dr_reorders, gap_keys, err.NAME, exit; with stats, requests and resent);
# with background, a handle whose ->finish returns that hash
sub kafka_produce
{
	my ($kafka, %opt) = @_;
	my @cmd = ('test/kafka/bare_producer', '-b', ref $kafka ? $kafka->bootstrap : $kafka,
		'-t', $opt{topic}, '-n', $opt{n} // 1000, '-k', $opt{keys} // 100);
	push @cmd, '-s', $opt{size} if defined $opt{size};
	push @cmd, '--first-id', $opt{first_id} if defined $opt{first_id};
	push @cmd, '--rate', $opt{rate} if defined $opt{rate};
	push @cmd, '--wait', $opt{wait} if defined $opt{wait};
	push @cmd, '--stats' if $opt{stats};
	push @cmd, '--purge-after', $opt{purge_after} if defined $opt{purge_after};
	push @cmd, '--purge-inflight' if $opt{purge_inflight};
	push @cmd, map { ('-X', "$_=$opt{conf}{$_}") } sort keys %{ $opt{conf} || {} };
	# stderr (librdkafka's log) to a file: nobody reads a background pipe
	my $p = bless { out => '', err => File::Temp->new }, 'OutboxTest::KafkaProducer';
	$p->{h} = IPC::Run::start(\@cmd, '>', \$p->{out}, '2>', $p->{err}->filename);
	return $opt{background} ? $p : $p->finish;
}

package OutboxTest::Kafka;
use Time::HiRes qw(time usleep);

sub bootstrap { $_[0]{bootstrap} }
sub pid       { $_[0]{h}{KIDS}[0]{PID} }

# the next line the cluster prints, waiting up to SECONDS
sub _line
{
	my ($self, $secs) = @_;
	my $deadline = time + $secs;
	while (1)
	{
		return $1 if $self->{out} =~ s/^(.*)\n//;
		return undef if time > $deadline || !$self->{h}->pumpable;
		$self->{h}->pump_nb;
		usleep(2_000);
	}
}

# cmd("down 1"): send a fault command, die unless the cluster answers ok
sub cmd
{
	my ($self, $command) = @_;
	$self->{in} .= "$command\n";
	my $answer = $self->_line(10) // 'no answer';
	die "mock Kafka cluster: $command: $answer" unless $answer eq 'ok';
	return 1;
}

sub stop
{
	my ($self) = @_;
	return unless $self->{h};
	$self->{in} .= "quit\n";
	eval { $self->{h}->finish; 1 } or $self->{h}->kill_kill;
	delete $self->{h};
}

package OutboxTest::KafkaProducer;

sub pid { $_[0]{h}{KIDS}[0]{PID} }

# wait for the producer; its summary line as a hash
sub finish
{
	my ($self) = @_;
	$self->{h}->finish;
	my %r = (exit => $self->{h}->result(0),
		stderr => do { local (@ARGV, $/) = ($self->{err}->filename); <> // '' });
	my ($line) = $self->{out} =~ /^(produced=.*)$/m
	  or die "bare_producer failed (exit $r{exit}): $r{stderr}";
	return { %r, $line =~ /([\w.]+)=(\S+)/g };
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
