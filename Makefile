# outbox: PGXS build.  `make && make install`, then `make installcheck`
# (run as a non-root user: it starts temporary clusters).  test/check.sh
# does all of it on a fresh Debian 12 machine.

EXTENSION   = outbox
# The one version string: the install script's name, the User-Agent, the
# version the relay expects its database to be at (outbox.control must agree).
EXTVERSION  = 0.2.0
MODULE_big  = outbox
OBJS        = src/outbox.o src/catalog.o src/spi.o src/validate.o src/etag.o \
              src/gapless.o src/rows.o src/eventparse.o src/eventstore.o src/publish.o src/subscription.o \
              src/http.o src/netblock.o src/redact.o src/webhook.o src/delivery.o src/endpoint.o src/progress.o src/report.o src/transport.o src/backoff.o src/retention.o src/shmem.o \
              src/launcher.o src/relay.o src/stats.o src/projection.o src/projector.o src/options.o \
              src/kafka.o src/kafkaurl.o
# Released scripts are never edited: sql/outbox.sql is the current version's,
# copied to outbox--$(EXTVERSION).sql; every release adds an upgrade script.
DATA        = sql/outbox--0.1.0.sql sql/outbox--0.1.0--0.2.0.sql
DATA_built  = sql/outbox--$(EXTVERSION).sql
PG_CPPFLAGS = -I$(srcdir)/src -DOUTBOX_VERSION='"$(EXTVERSION)"'
SHLIB_LINK  = -lcurl -lrdkafka
PG_CFLAGS   = -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare \
              -Wno-missing-field-initializers $(OUTBOX_WERROR)

REGRESS      = setup eventstore bad_input publish readers immutability roles search_path bulk endpoints projections options subscriptions ssrf message_size squat kafka_config
REGRESS_OPTS = --temp-instance=tmp_check --temp-config=$(srcdir)/test/outbox.conf

ISOLATION      = append_race append_repeatable_read create_race lock_stream delete_race read_all_gapless \
                 read_messages_gapless consume_once_race consumer_claim_race projection_async_gapless \
                 subscription_ack
ISOLATION_OPTS = --inputdir=$(srcdir)/test/isolation \
                 --temp-instance=tmp_check_iso --temp-config=$(srcdir)/test/outbox.conf

TAP_TESTS   = 1

# The webhook receiver the TAP tests and benchmarks deliver to (needs
# libssl-dev): built for the tests, not by `all`, so packaging needs no libssl.
RECEIVER    = test/receiver/receiver
# The Kafka test tools (test/kafka: mock cluster, judging consumer, bare
# producer; need librdkafka-dev), built for the tests the same way.
KAFKA_TOOLS = test/kafka/mockcluster test/kafka/consume test/kafka/bare_producer
EXTRA_CLEAN = $(RECEIVER) $(KAFKA_TOOLS)

sql/outbox--$(EXTVERSION).sql: sql/outbox.sql
	cp $< $@


$(RECEIVER): test/receiver/receiver.c
	$(MAKE) -C test/receiver

$(KAFKA_TOOLS): test/kafka/%: test/kafka/%.c src/kafka_conf.h
	$(MAKE) -C test/kafka $*
PROVE_TESTS = test/t/*.pl

# PGXS tracks no header dependencies: every object depends on ours.
$(OBJS): $(wildcard src/*.h)

# No LLVM bitcode: it needs clang, which a fresh machine does not have.
override with_llvm = no

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# outbox.control must name the same version.
ifneq ($(shell sed -n "s/^default_version = '\(.*\)'/\1/p" $(srcdir)/outbox.control),$(EXTVERSION))
$(error outbox.control default_version differs from EXTVERSION $(EXTVERSION))
endif

installcheck: $(RECEIVER) $(KAFKA_TOOLS)

# The PGXN distribution: outbox-$(EXTVERSION).zip of the committed tree.
dist:
	git -C $(srcdir) archive --format zip --prefix=$(EXTENSION)-$(EXTVERSION)/ \
		-o $(CURDIR)/$(EXTENSION)-$(EXTVERSION).zip HEAD
.PHONY: dist
