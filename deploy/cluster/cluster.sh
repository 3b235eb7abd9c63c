#!/bin/sh
# A three-node PostgreSQL 15 cluster managed by Patroni, with one etcd as its store, on loopback
# ports in a temporary folder: for trying failover on one machine, not for production (README,
# "High availability").
#
# Needs (Debian 12): apt-get install -y patroni etcd-server postgresql-15
# Runs as root (the nodes run as the `postgres` user) or as the user owning the folder.
#
#   deploy/cluster/cluster.sh start [DIR]   # DIR defaults to a new /tmp/canbao-cluster.XXXX
#   deploy/cluster/cluster.sh stop DIR      # stops every process it started and deletes DIR
#
# Ports: etcd 2379/2380; PostgreSQL 5441, 5442, 5443; Patroni REST 8011, 8012, 8013.
# Synchronous replication (`synchronous_mode: true`): a commit is answered once a standby has it.
# The app reaches the primary with a multi-host DSN, printed at the end:
#   postgresql://canbao:…@127.0.0.1:5441,127.0.0.1:5442,127.0.0.1:5443/canbao?target_session_attrs=read-write
set -eu
PG_BIN=/usr/lib/postgresql/15/bin
RUN_AS=postgres
cmd=${1:-}
dir=${2:-}

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u "$RUN_AS" -- "$@"; else "$@"; fi; }

case "$cmd" in
start)
    for tool in patroni etcd "$PG_BIN/postgres"; do
        command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y patroni etcd-server postgresql-15" >&2; exit 1; }
    done
    [ -n "$dir" ] || dir=$(mktemp -d /tmp/canbao-cluster.XXXX)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown "$RUN_AS" "$dir"
    as_pg sh -c "etcd --name e1 --data-dir '$dir/etcd' --listen-client-urls http://127.0.0.1:2379 \
        --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 \
        --initial-advertise-peer-urls http://127.0.0.1:2380 --initial-cluster e1=http://127.0.0.1:2380 \
        > '$dir/etcd.log' 2>&1 & echo \$! > '$dir/etcd.pid'"
    for n in 1 2 3; do
        cat > "$dir/node$n.yml" <<YML
scope: canbao
name: node$n
restapi: {listen: 127.0.0.1:801$n, connect_address: 127.0.0.1:801$n}
etcd3: {hosts: 127.0.0.1:2379}
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 2
    retry_timeout: 5
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    postgresql:
      use_pg_rewind: true
      parameters: {wal_level: replica, hot_standby: "on", max_wal_senders: 10, max_replication_slots: 10, wal_log_hints: "on"}
  initdb: [{encoding: UTF8}, {locale: C.UTF-8}, data-checksums]
  pg_hba:
    - local all all trust
    - host replication replicator 127.0.0.1/32 scram-sha-256
    - host all all 127.0.0.1/32 scram-sha-256
postgresql:
  listen: 127.0.0.1:544$n
  connect_address: 127.0.0.1:544$n
  data_dir: $dir/node$n
  bin_dir: $PG_BIN
  pgpass: $dir/pgpass$n
  parameters: {unix_socket_directories: '$dir', shared_buffers: 64MB}
  authentication:
    superuser: {username: postgres, password: cluster-superuser}
    replication: {username: replicator, password: cluster-replicator}
    rewind: {username: rewinder, password: cluster-rewinder}
tags: {nofailover: false, noloadbalance: false, clonefrom: false}
YML
        [ "$(id -u)" = 0 ] && chown "$RUN_AS" "$dir/node$n.yml"
        as_pg sh -c "patroni '$dir/node$n.yml' > '$dir/node$n.log' 2>&1 & echo \$! > '$dir/node$n.pid'"
        [ "$n" = 1 ] && sleep 5  # the first node bootstraps; the others clone it
    done
    # Wait for a leader and two streaming standbys (one of them synchronous).
    i=0
    until [ "$(curl -s http://127.0.0.1:8011/cluster | grep -o '"state": *"\(running\|streaming\)"' | wc -l)" -ge 3 ]; do
        i=$((i + 1)); [ $i -lt 120 ] || { echo "cluster did not come up; see $dir/*.log" >&2; exit 1; }
        sleep 1
    done
    echo "cluster up in $dir"
    echo "DATABASE_URL=postgresql://postgres:cluster-superuser@127.0.0.1:5441,127.0.0.1:5442,127.0.0.1:5443/postgres?target_session_attrs=read-write"
    ;;
stop)
    [ -n "$dir" ] && [ -d "$dir" ] || { echo "usage: $0 stop DIR" >&2; exit 2; }
    for n in 1 2 3; do
        [ -f "$dir/node$n.pid" ] && kill "$(cat "$dir/node$n.pid")" 2>/dev/null || true
    done
    sleep 3
    for n in 1 2 3; do  # a node whose Patroni died: its postmaster is stopped here
        [ -f "$dir/node$n/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$dir/node$n" -m immediate stop 2>/dev/null || true
    done
    [ -f "$dir/etcd.pid" ] && kill "$(cat "$dir/etcd.pid")" 2>/dev/null || true
    sleep 1
    rm -rf "$dir"
    echo "stopped and removed $dir"
    ;;
*)
    echo "usage: $0 start [DIR] | stop DIR" >&2; exit 2 ;;
esac
