# Order experiments: does a bare idempotent librdkafka producer (the relay's
# configuration, src/kafka_conf.h) keep per-key order on the mock
# cluster when requests fail, a broker goes down, leaders move?  Prints one
# line per scenario: the producer's summary and the consumer's verdict.
# Not a test (it asserts nothing); run from the top of a built tree:
#   make -C test/kafka && perl -Itest/t test/kafka/ordercheck.pl [N] [KEYS] [SCENARIO...]
# Scenarios: flaky (30 % of Produce requests fail; flaky=ERR,ERR... with
# those errors), down (broker 1, leader of partitions 0 and 3, down for 3 s),
# leaders (a partition leader moves every 100 ms), each with max.in.flight 1
# and 5; bench (throughput; N records of 100 bytes).
use strict;
use warnings;
use OutboxTest;
use Time::HiRes qw(time usleep);

my $n    = shift // 20_000;
my $keys = shift // 200;
my @scenarios = @ARGV ? @ARGV : qw(flaky down leaders);
my $partitions = 4;
my $rate = $n / 4;	# a steady stream over about 4 s: many small requests

sub verdict
{
	my ($kafka, $topic) = @_;
	my $v = kafka_consume($kafka, topics => [$topic], ids => [ 1, $n ], timeout => 15);
	return join ' ', map { "$_=$v->{$_}" }
	  qw(complete records distinct repeats violations split_keys missing);
}

sub summary
{
	my ($p) = @_;
	return join ' ', map { "$_=$p->{$_}" } grep { exists $p->{$_} }
	  qw(delivered failed seconds msgs_per_sec lat_p50_ms lat_p99_ms dr_reorders requests resent),
	  grep { /^err\./ } sort keys %$p;
}

for my $scenario (@scenarios)
{
	for my $inflight ($scenario eq 'bench' ? () : (1, 5))
	{
		my $kafka = start_kafka();
		my $topic = 'order';
		$kafka->cmd("create $topic $partitions");
		$kafka->cmd("leader $topic $_ " . (1 + $_ % 3)) for 0 .. $partitions - 1;
		my %conf = ('max.in.flight.requests.per.connection' => $inflight);
		my $p;
		if ($scenario =~ /^flaky(?:=(.*))?$/)
		{
			$kafka->cmd(join ' ', 'flaky 30 1000000', split /,/, $1 // '');
			$p = kafka_produce($kafka, topic => $topic, n => $n, keys => $keys,
				rate => $rate, conf => \%conf, wait => 120, stats => 1);
			$kafka->cmd('clear Produce');
		}
		else
		{
			# the faults in the middle of the stream
			my $bg = kafka_produce($kafka, topic => $topic, n => $n, keys => $keys,
				rate => $rate, conf => \%conf, wait => 120, stats => 1, background => 1);
			usleep(500_000);
			if ($scenario eq 'down')
			{
				$kafka->cmd('down 1');
				sleep 3;
				$kafka->cmd('up 1');
			}
			elsif ($scenario eq 'leaders')
			{
				my $end = time + 3;
				while (time < $end)
				{
					$kafka->cmd(sprintf('leader %s %d %d', $topic,
						int(rand($partitions)), 1 + int(rand(3))));
					usleep(100_000);
				}
			}
			$p = $bg->finish;
		}
		printf "%-8s in.flight=%d  %s | %s\n", $scenario, $inflight, summary($p),
		  verdict($kafka, $topic);
		$kafka->stop;
	}
}

if (grep { $_ eq 'bench' } @scenarios)
{
	for my $inflight (1, 5)
	{
		for my $linger (0, 5)
		{
			my $kafka = start_kafka();
			$kafka->cmd("create bench $partitions");
			my $p = kafka_produce($kafka, topic => 'bench', n => $n, keys => $keys,
				size => 100, wait => 300,
				conf => { 'max.in.flight.requests.per.connection' => $inflight,
					'linger.ms' => $linger });
			printf "bench    in.flight=%d linger.ms=%d  %s\n", $inflight, $linger, summary($p);
			$kafka->stop;
		}
	}
}
