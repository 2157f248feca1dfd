# outbox: PGXS build.  `make && make install`, then `make installcheck`
# (run as a non-root user: it starts temporary clusters).  test/check.sh
# does all of it on a fresh Debian 12 machine.

EXTENSION   = outbox
MODULE_big  = outbox
OBJS        = src/outbox.o src/catalog.o src/spi.o src/validate.o src/etag.o \
              src/gapless.o src/rows.o src/eventparse.o src/eventstore.o src/publish.o \
              src/http.o src/webhook.o src/delivery.o src/shmem.o src/launcher.o src/relay.o src/stats.o \
              src/projection.o src/projector.o
DATA        = sql/outbox--0.1.0.sql
PG_CPPFLAGS = -I$(srcdir)/src
SHLIB_LINK  = -lcurl
PG_CFLAGS   = -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare \
              -Wno-missing-field-initializers $(OUTBOX_WERROR)

REGRESS      = setup eventstore bad_input publish readers immutability roles search_path bulk endpoints projections
REGRESS_OPTS = --temp-instance=tmp_check --temp-config=$(srcdir)/test/outbox.conf

ISOLATION      = append_race append_repeatable_read create_race lock_stream read_all_gapless \
                 read_messages_gapless consume_once_race projection_async_gapless
ISOLATION_OPTS = --inputdir=$(srcdir)/test/isolation \
                 --temp-instance=tmp_check_iso --temp-config=$(srcdir)/test/outbox.conf

TAP_TESTS   = 1

# The webhook receiver the TAP tests and benchmarks deliver to (needs libssl-dev).
RECEIVER    = test/receiver/receiver
EXTRA_CLEAN = $(RECEIVER)

all: $(RECEIVER)

$(RECEIVER): test/receiver/receiver.c
	$(MAKE) -C test/receiver
PROVE_TESTS = test/t/*.pl

# PGXS tracks no header dependencies: every object depends on ours.
$(OBJS): src/outbox.h src/compat.h

# No LLVM bitcode: it needs clang, which a fresh machine does not have.
override with_llvm = no

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)
