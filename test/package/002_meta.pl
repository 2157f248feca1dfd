# PGXN: META.json is valid against the PGXN Meta Spec 1.0 (checked here rule
# by rule, from the spec's text), agrees with the Makefile, outbox.control and
# debian/changelog, and `make dist` makes the zip PGXN takes.
#   prove test/package/002_meta.pl      (from the top of a git checkout)
use strict;
use warnings;
use Test::More;
use JSON::PP;
use IO::Uncompress::Unzip qw($UnzipError);

my $src = $ENV{OUTBOX_SOURCE} // '.';
open(my $fh, '<', "$src/META.json") or die "META.json: $!";
my $meta = eval { JSON::PP->new->decode(do { local $/; <$fh> }) };
ok($meta, 'META.json is JSON') or BAIL_OUT($@);

# Spec terms: at least two characters, no white space, control characters,
# slash, backslash or colon... (name), tags up to 255 characters, no slashes.
my $term = qr{^[^\s/\\:[:cntrl:]]{2,}$};
my $tag = qr{^[^/\\[:cntrl:]]{1,255}$};
my $semver = qr{^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z-]+)?$};
my $range = qr{^\s*((==|!=|>=|<=|>|<)\s*)?\d+(\.\d+){0,2}(-[0-9A-Za-z-]+)?\s*$};
my %licenses = map { $_ => 1 } qw(agpl_3 apache_1_1 apache_2_0 artistic_1
	artistic_2 bsd freebsd gfdl_1_2 gfdl_1_3 gpl_1 gpl_2 gpl_3 lgpl_2_1 lgpl_3_0
	mit mozilla_1_0 mozilla_1_1 openssl perl_5 postgresql qpl_1_0 ssleay sun zlib
	open_source restricted unrestricted unknown);

# Required keys.
like($meta->{name}, $term, 'name is a term');
ok(defined $meta->{abstract} && !ref $meta->{abstract} && length $meta->{abstract}, 'abstract is a string');
like($meta->{version}, $semver, 'version is a semantic version');
my @maint = ref $meta->{maintainer} ? @{ $meta->{maintainer} } : ($meta->{maintainer});
ok(@maint && !grep({ !defined || ref || !length } @maint), 'maintainer: strings');
ok($licenses{ $meta->{license} // '' }, "license '$meta->{license}' is one the spec names");
is($meta->{'meta-spec'}{version}, '1.0.0', 'meta-spec version 1.0.0');
is(ref $meta->{provides}, 'HASH', 'provides is an object');
for my $ext (sort keys %{ $meta->{provides} })
{
	my $p = $meta->{provides}{$ext};
	like($ext, $term, "provides $ext: a term");
	ok(defined $p->{file} && -f "$src/$p->{file}", "provides $ext: file $p->{file} exists");
	like($p->{version}, $semver, "provides $ext: version");
	ok(!defined $p->{docfile} || -f "$src/$p->{docfile}", "provides $ext: docfile exists");
	my @extra = grep { !/^(file|version|abstract|docfile)$/ && !/^[xX]_/ } keys %$p;
	is("@extra", '', "provides $ext: no unknown keys");
}

# Optional keys, when present.
my %known = map { $_ => 1 } qw(name abstract description version maintainer license
	provides meta-spec prereqs resources generated_by release_status tags no_index);
my @unknown = grep { !$known{$_} && !/^[xX]_/ } keys %$meta;
is("@unknown", '', 'no unknown top-level keys');
like($meta->{release_status}, qr/^(stable|testing|unstable)$/, 'release_status')
  if exists $meta->{release_status};
ok(!grep({ $_ !~ $tag } @{ $meta->{tags} }), 'tags are tags') if exists $meta->{tags};
for my $phase (keys %{ $meta->{prereqs} // {} })
{
	like($phase, qr/^(configure|build|test|runtime|develop)$/, "prereqs phase $phase");
	for my $rel (keys %{ $meta->{prereqs}{$phase} })
	{
		like($rel, qr/^(requires|recommends|suggests|conflicts)$/, "prereqs $phase relation $rel");
		while (my ($name, $v) = each %{ $meta->{prereqs}{$phase}{$rel} })
		{
			ok(!grep({ $_ !~ $range } split(/,/, $v)), "prereqs $phase $rel $name: version range '$v'");
		}
	}
}
for my $r (keys %{ $meta->{resources} // {} })
{
	like($r, qr/^(homepage|bugtracker|repository|[xX]_.*)$/, "resources key $r");
}
like($meta->{resources}{bugtracker}{mailto}, qr/^[^@\s]+@[^@\s]+$/, 'bugtracker mailto is an address')
  if exists $meta->{resources}{bugtracker}{mailto};
is($meta->{prereqs}{runtime}{requires}{PostgreSQL}, '>= 15.0.0, < 16.0.0', 'requires PostgreSQL 15');

# One version everywhere.
my ($makever) = `cat $src/Makefile` =~ /^EXTVERSION\s*=\s*(\S+)/m;
my ($ctlver) = `cat $src/outbox.control` =~ /^default_version = '([^']+)'/m;
my ($debver) = `head -1 $src/debian/changelog` =~ /^outbox \(([^-)]+)/;
is($meta->{version}, $makever, 'META.json version = Makefile EXTVERSION');
is($meta->{provides}{outbox}{version}, $makever, 'provides version = EXTVERSION');
is($ctlver, $makever, 'outbox.control default_version = EXTVERSION');
is($debver, $makever, 'debian/changelog upstream version = EXTVERSION');

# make dist: a zip of the committed tree under outbox-VERSION/.
SKIP:
{
	skip 'not a git checkout', 3 unless -d "$src/.git" || -f "$src/.git";
	my $tmp = `mktemp -d`;
	chomp $tmp;
	my $pgc = $ENV{PG_CONFIG} // 'pg_config';
	my $out = `make -s -C $tmp -f \$(realpath $src/Makefile) srcdir=\$(realpath $src) PG_CONFIG=$pgc dist 2>&1`;
	my $zip = "$tmp/outbox-$makever.zip";
	ok(-s $zip, "make dist makes outbox-$makever.zip") or diag($out);
	my %files;
	if (my $z = IO::Uncompress::Unzip->new($zip))
	{
		my $status = 1;
		while ($status > 0)
		{
			$files{ $z->getHeaderInfo->{Name} } = 1;
			$status = $z->nextStream;
		}
	}
	ok($files{"outbox-$makever/META.json"} && $files{"outbox-$makever/outbox.control"}
		  && $files{"outbox-$makever/sql/outbox.sql"}, 'the zip holds META.json, the control file and the install script');
	ok(!grep({ !m{^outbox-\Q$makever\E/} } keys %files), 'everything under outbox-VERSION/');
	system('rm', '-rf', $tmp);
}

done_testing();
