#!/usr/bin/env bash
# The outbox demo, end to end on a throwaway cluster:
#   sudo test/demo.sh
# Installs missing Debian packages, builds and installs outbox, starts
# PostgreSQL 15 (outbox preloaded) as the postgres OS user on a free port in a
# temporary data directory, runs test/demo.sql (event store and outbox),
# test/demo_projections.sql (CQRS read models), then test/demo_delivery.sh
# (webhooks to a local receiver), and removes it all.
source "$(dirname "$0")/lib/common.sh"

ensure_packages
make_workdir
trap 'stop_cluster "$WORKDIR/data"; rm -rf "$WORKDIR"' EXIT
build_and_install

port=$(free_port)
log "starting a throwaway PostgreSQL 15 on port $port"
start_cluster "$WORKDIR/data" "$port"
as_pg psql -X -q -h "$WORKDIR/data" -p "$port" -d postgres -f "$WORKDIR/test/demo.sql"
as_pg psql -X -q -h "$WORKDIR/data" -p "$port" -d postgres -f "$WORKDIR/test/demo_projections.sql"
source "$WORKDIR/test/demo_delivery.sh"
log "demo finished; the cluster, the receiver and the data directory are removed"
