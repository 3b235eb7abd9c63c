#!/bin/sh
# A three-node PostgreSQL 15 cluster managed by Patroni, with one etcd as its store, in a temporary
# folder on this machine: for trying failover, not for production (README, "High availability").
#
# Needs (Debian 12): apt-get install -y patroni etcd-server postgresql-15 python3-etcd
# Runs as root (the nodes run as the `postgres` user) or as the user owning the folder.
#
#   deploy/cluster/cluster.sh start [DIR]     # DIR defaults to a new /tmp/canbao-cluster.XXXX
#   deploy/cluster/cluster.sh stop DIR        # stops every process it started and deletes DIR
#   deploy/cluster/cluster.sh cut DIR NODE    # (netns only) NODE loses its link to etcd
#   deploy/cluster/cluster.sh heal DIR NODE   # … and gets it back
#
# Ports: etcd 2379/2380; PostgreSQL 5441, 5442, 5443; Patroni REST 8011, 8012, 8013; every one
# shifted by CANBAO_CLUSTER_PORT_OFFSET (e.g. 100: PostgreSQL 5541–5543, REST 8111–8113, etcd
# 2479/2480), so that two clusters can run side by side.
#
# CANBAO_CLUSTER_NETNS=1 (root only): each node (Patroni and its PostgreSQL) runs in a network
# namespace of its own, joined to the others by a bridge, so that `cut` can sever one node's link to
# etcd (a blackhole route in its namespace) while it still reaches the other nodes and the app does
# it. Addresses 10.254.X.0/24, X = offset mod 250: the bridge (the app's side) .1, etcd .2, nodes
# .11–.13. Without it every process listens on 127.0.0.1.
#
# Synchronous replication (`synchronous_mode: true`): a commit is answered once a standby has it.
# DIR/nodes lists each node (name, host, PostgreSQL port, REST port, namespace or -); the app
# reaches the primary with a multi-host DSN, printed at the end:
#   postgresql://…@HOST1:5441,HOST2:5442,HOST3:5443/postgres?target_session_attrs=read-write
set -eu
PG_BIN=/usr/lib/postgresql/15/bin
RUN_AS=postgres
cmd=${1:-}
dir=${2:-}
off=${CANBAO_CLUSTER_PORT_OFFSET:-0}
etcd_client=$((2379 + off))
etcd_peer=$((2380 + off))
net=10.254.$((off % 250))

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u "$RUN_AS" -- "$@"; else "$@"; fi; }
# Reads DIR/cluster.env (written at start): the mode and offset the cluster was started with.
settings() { [ -f "$dir/cluster.env" ] && . "$dir/cluster.env"; etcd_client=$((2379 + off)); net=10.254.$((off % 250)); }
ns() { echo "cb${off}n$1"; }

case "$cmd" in
start)
    for tool in patroni etcd "$PG_BIN/postgres"; do
        command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y patroni etcd-server postgresql-15" >&2; exit 1; }
    done
    netns=${CANBAO_CLUSTER_NETNS:-0}
    if [ "$netns" = 1 ] && [ "$(id -u)" != 0 ]; then echo "CANBAO_CLUSTER_NETNS=1 needs root" >&2; exit 1; fi
    [ -n "$dir" ] || dir=$(mktemp -d /tmp/canbao-cluster.XXXX)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown "$RUN_AS" "$dir"
    printf 'off=%s\nnetns=%s\n' "$off" "$netns" > "$dir/cluster.env"
    : > "$dir/nodes"
    etcd_host=127.0.0.1
    if [ "$netns" = 1 ]; then
        etcd_host=$net.2
        ip link add "cb${off}br" type bridge
        ip addr add "$net.1/24" dev "cb${off}br"
        ip addr add "$net.2/24" dev "cb${off}br"
        ip link set "cb${off}br" up
        for n in 1 2 3; do
            ip netns add "$(ns $n)"
            ip link add "cb${off}v$n" type veth peer name eth0 netns "$(ns $n)"
            ip link set "cb${off}v$n" master "cb${off}br" up
            ip -n "$(ns $n)" addr add "$net.1$n/24" dev eth0
            ip -n "$(ns $n)" link set eth0 up
            ip -n "$(ns $n)" link set lo up
        done
    fi
    as_pg sh -c "etcd --name e1 --data-dir '$dir/etcd' --listen-client-urls http://$etcd_host:$etcd_client \
        --advertise-client-urls http://$etcd_host:$etcd_client --listen-peer-urls http://$etcd_host:$etcd_peer \
        --initial-advertise-peer-urls http://$etcd_host:$etcd_peer --initial-cluster e1=http://$etcd_host:$etcd_peer \
        > '$dir/etcd.log' 2>&1 & echo \$! > '$dir/etcd.pid'"
    hosts=""
    for n in 1 2 3; do
        pg=$((5440 + off + n)); rest=$((8010 + off + n)); host=127.0.0.1; space=-
        [ "$netns" = 1 ] && { host=$net.1$n; space=$(ns $n); }
        echo "node$n $host $pg $rest $space" >> "$dir/nodes"
        hosts="$hosts${hosts:+,}$host:$pg"
        cat > "$dir/node$n.yml" <<YML
scope: canbao
name: node$n
restapi: {listen: $host:$rest, connect_address: $host:$rest}
etcd3: {hosts: $etcd_host:$etcd_client}
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
    - host replication replicator $net.0/24 scram-sha-256
    - host all all 127.0.0.1/32 scram-sha-256
    - host all all $net.0/24 scram-sha-256
postgresql:
  listen: $host:$pg
  connect_address: $host:$pg
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
        launch="patroni '$dir/node$n.yml' > '$dir/node$n.log' 2>&1 & echo \$! > '$dir/node$n.pid'"
        if [ "$netns" = 1 ]; then
            ip netns exec "$space" runuser -u "$RUN_AS" -- sh -c "$launch"
        else
            as_pg sh -c "$launch"
        fi
        [ "$n" = 1 ] && sleep 5  # the first node bootstraps; the others clone it
    done
    # Wait for a leader and two streaming standbys, one of them synchronous.
    first_rest=$(awk 'NR==1 {print $2 ":" $4}' "$dir/nodes")
    i=0
    until view=$(curl -s "http://$first_rest/cluster") && [ "$(echo "$view" | grep -o '"state": *"\(running\|streaming\)"' | wc -l)" -ge 3 ] \
        && echo "$view" | grep -q '"sync_standby"'; do
        i=$((i + 1)); [ $i -lt 120 ] || { echo "cluster did not come up; see $dir/*.log" >&2; exit 1; }
        sleep 1
    done
    echo "cluster up in $dir"
    echo "DATABASE_URL=postgresql://postgres:cluster-superuser@$hosts/postgres?target_session_attrs=read-write"
    ;;
cut|heal)
    node=${3:-}
    [ -n "$dir" ] && [ -f "$dir/nodes" ] && [ -n "$node" ] || { echo "usage: $0 $cmd DIR NODE" >&2; exit 2; }
    settings
    [ "${netns:-0}" = 1 ] || { echo "$cmd needs a cluster started with CANBAO_CLUSTER_NETNS=1" >&2; exit 2; }
    host=$(awk -v n="$node" '$1 == n {print $2}' "$dir/nodes")
    space=$(awk -v n="$node" '$1 == n {print $5}' "$dir/nodes")
    [ -n "$space" ] || { echo "no node $node in $dir/nodes" >&2; exit 2; }
    # Silent, both ways, as a pulled cable: the node sends etcd's frames to a MAC nobody has (its
    # connections hang, new ones time out), and what etcd sends the node is dropped here. The node
    # still reaches the other nodes and the app reaches it.
    if [ "$cmd" = cut ]; then
        ip -n "$space" neigh replace "$net.2" lladdr 02:00:00:00:de:ad dev eth0 nud permanent
        ip rule add from "$net.2" to "$host" blackhole
    else
        ip -n "$space" neigh del "$net.2" dev eth0 2>/dev/null || true
        ip rule del from "$net.2" to "$host" blackhole 2>/dev/null || true
    fi
    echo "$node: link to etcd ${cmd}"
    ;;
stop)
    [ -n "$dir" ] && [ -d "$dir" ] || { echo "usage: $0 stop DIR" >&2; exit 2; }
    settings
    pids=""
    for n in 1 2 3; do
        [ -f "$dir/node$n.pid" ] && pids="$pids $(cat "$dir/node$n.pid")"
    done
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    for _ in $(seq 30); do  # Patroni stops its PostgreSQL first: up to 15 s on a loaded machine
        alive=""
        for p in $pids; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
        [ -z "$alive" ] && break
        sleep 0.5
    done
    for n in 1 2 3; do  # a node whose Patroni died: its postmaster is stopped here
        [ -f "$dir/node$n/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$dir/node$n" -m immediate stop 2>/dev/null || true
    done
    [ -f "$dir/etcd.pid" ] && kill "$(cat "$dir/etcd.pid")" 2>/dev/null || true
    sleep 1
    # Whatever of this cluster still runs (a Patroni that outlived its wait): killed, so nothing is left.
    case "$dir" in /tmp/*) pkill -KILL -f -- "$dir/" 2>/dev/null || true ;; esac
    sleep 0.5
    if [ "${netns:-0}" = 1 ]; then
        for n in 1 2 3; do
            ip rule del from "$net.2" to "$net.1$n" blackhole 2>/dev/null || true
            ip link del "cb${off}v$n" 2>/dev/null || true
            ip netns del "$(ns $n)" 2>/dev/null || true
        done
        ip link del "cb${off}br" 2>/dev/null || true
    fi
    rm -rf "$dir"
    echo "stopped and removed $dir"
    ;;
*)
    echo "usage: $0 start [DIR] | stop DIR | cut DIR NODE | heal DIR NODE" >&2; exit 2 ;;
esac
