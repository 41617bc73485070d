#!/usr/bin/env bash
# A testbed of several hosts on one machine (as root), for multi-node jobs:
#   - host K is a network namespace ckpt-hostK with the address 10.77.0.K/24 on eth0, a veth whose
#     other end (ckpt-vK) is a port of the bridge ckpt-br0 (10.77.0.254) in the initial namespace;
#   - each host has its own private CKPT_HOME ($CKPT_TESTBED_DIR/hostK, mode 0700): no
#     filesystem is shared on purpose (the machine's /run/ckpt, where agents listen, still is);
#   - one PostgreSQL listens on the bridge address; every host reaches it over TCP.
#
#   scripts/testbed.sh up [N]          make a testbed of N hosts (default 3), or repair a half-made one
#   scripts/testbed.sh down            stop what runs in it and remove everything `up` made
#   scripts/testbed.sh status          what exists; exit 1 when something is missing
#   scripts/testbed.sh run K -- CMD…   run CMD in host K's network namespace with its environment:
#                                      CKPT_HOME, CKPT_STORE (the PostgreSQL URL), CKPT_NODE=hostK,
#                                      CKPT_INITIAL_NETNS (see below)
#   scripts/testbed.sh cut K           take host K's link down: it reaches nobody (the store neither)
#   scripts/testbed.sh mend K          bring host K's link back up
#
# Commands run in a host through nsenter --net, not `ip netns exec`: the latter gives each command
# a mount namespace of its own with a fresh /sys, which hides the cgroup hierarchies the agent
# needs. So only the network differs between hosts; cgroups and the process tree are the machine's.
#
# The kernel's proc connector works only in the initial network namespace, while an agent and its
# jobs live in their host's. The agent's proc connector helper opens its socket in the initial
# namespace (adapters/tracking/proc-connector.c): /proc/1/ns/net, or where /proc/1 is closed even to
# root (some sandboxes), the name `up` gives it: /run/netns/ckpt-initial, passed as CKPT_INITIAL_NETNS.
#
# Settings (environment): CKPT_TESTBED_DIR (default /var/lib/ckpt-testbed), CKPT_TESTBED_PG_PORT
# (default 55432). PostgreSQL trusts the bridge's subnet (no password): a testbed, not a deployment.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cli="$root/dist/adapters/cli/main.js"
dir="${CKPT_TESTBED_DIR:-/var/lib/ckpt-testbed}"
pg_port="${CKPT_TESTBED_PG_PORT:-55432}"
bridge=ckpt-br0
subnet=10.77.0
initial_ns=ckpt-initial
max_hosts=50
store="postgres://postgres@$subnet.254:$pg_port/ckpt"

die() {
  echo "testbed: $*" >&2
  exit 1
}
say() { echo "testbed: $*" >&2; }

usage() {
  sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# Refuse what could steer a root script: a state directory with odd characters or `..`, a bad port.
[[ "$dir" =~ ^/[A-Za-z0-9._/-]+$ && ! "$dir" =~ (^|/)\.\.(/|$) && "$dir" != / ]] ||
  die "CKPT_TESTBED_DIR must be an absolute path of letters, digits and . _ - / (no ..), got '$dir'"
[[ "$pg_port" =~ ^[1-9][0-9]{3,4}$ && "$pg_port" -le 65535 ]] || die "CKPT_TESTBED_PG_PORT must be a port number 1000..65535, got '$pg_port'"

need_root() { [ "$(id -u)" = 0 ] || die "needs root (network namespaces, a bridge, cgroups)"; }

host_number() {
  [[ "$1" =~ ^[1-9][0-9]*$ && "$1" -le $max_hosts ]] || die "a host is a number 1..$max_hosts, got '$1'"
}

ns_exists() { [ -e "/run/netns/$1" ]; }
link_exists() { ip link show "$1" >/dev/null 2>&1; }

# The hosts that exist now (by their namespaces), in order.
existing_hosts() {
  local name
  for name in /run/netns/ckpt-host*; do
    [ -e "$name" ] || continue
    name="${name#/run/netns/ckpt-host}"
    [[ "$name" =~ ^[1-9][0-9]*$ ]] && echo "$name"
  done | sort -n
}

# The newest PostgreSQL server binaries (as test/support/postgres.ts finds them).
pg_bin() {
  local best="" v
  for v in /usr/lib/postgresql/*/bin/initdb; do
    [ -x "$v" ] || continue
    v="${v#/usr/lib/postgresql/}"
    v="${v%%/*}"
    if [ -z "$best" ] || [ "$v" -gt "$best" ]; then best="$v"; fi
  done
  [ -n "$best" ] || die "needs the PostgreSQL server (install: apt-get install -y postgresql)"
  echo "/usr/lib/postgresql/$best/bin"
}

as_postgres() { runuser -u postgres -- "$@"; }

# `ip netns` makes /run/netns a mount point when it is not one: note that we did, to undo it.
note_run_netns() {
  [ -e "$dir/run-netns" ] && return 0
  if [ ! -d /run/netns ]; then
    echo dir >"$dir/run-netns"
  elif ! mountpoint -q /run/netns; then
    echo mount >"$dir/run-netns"
  else
    echo none >"$dir/run-netns"
  fi
}

# `up` names this shell's namespace the initial one: refuse to run from inside a host (or any other).
in_initial_netns() {
  local self f
  self="$(stat -L -c %i /proc/$$/ns/net)"
  if [ -r /proc/1/ns/net ] && [ "$(stat -L -c %i /proc/1/ns/net)" != "$self" ]; then
    die "run up in the initial network namespace (PID 1's), not in net:[$self]"
  fi
  for f in /run/netns/ckpt-host*; do
    [ ! -e "$f" ] || [ "$(stat -L -c %i "$f")" != "$self" ] || die "run up in the initial network namespace, not inside ${f#/run/netns/}"
  done
}

host_up() {
  local k="$1" ns="ckpt-host$1" veth="ckpt-v$1"
  ns_exists "$ns" || ip netns add "$ns"
  if ! ip -n "$ns" link show eth0 >/dev/null 2>&1; then
    # A veth without its namespace end (an interrupted up) is made again.
    ! link_exists "$veth" || ip link del "$veth"
    ip link add "$veth" type veth peer name eth0 netns "$ns"
  fi
  ip link set "$veth" master "$bridge" up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr replace "$subnet.$k/24" dev eth0
  ip -n "$ns" link set eth0 up
  install -d -m 0700 -o root -g root "$dir/host$k"
}

pg_up() {
  local bin pg="$dir/pg" data="$dir/pg/data"
  bin="$(pg_bin)"
  install -d -m 0700 -o postgres -g postgres "$pg"
  if [ ! -f "$data/PG_VERSION" ]; then
    rm -rf -- "$data" # an interrupted initdb
    as_postgres "$bin/initdb" -D "$data" -U postgres -A trust --no-sync >"$pg/initdb.log" 2>&1 ||
      die "initdb failed; see $pg/initdb.log"
    # A throwaway cluster (down removes it): fsync off, as the tests' clusters.
    printf '%s\n' "listen_addresses = '$subnet.254'" "port = $pg_port" "unix_socket_directories = '$pg'" \
      "max_connections = 200" "fsync = off" >>"$data/postgresql.conf"
    printf 'host all postgres %s.0/24 trust\n' "$subnet" >>"$data/pg_hba.conf"
  fi
  if ! as_postgres "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    as_postgres "$bin/pg_ctl" -D "$data" -w -l "$pg/log" start >/dev/null || die "PostgreSQL did not start; see $pg/log"
  fi
  if [ "$(as_postgres "$bin/psql" -h "$pg" -p "$pg_port" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'ckpt'")" != 1 ]; then
    as_postgres "$bin/createdb" -h "$pg" -p "$pg_port" ckpt
  fi
}

up() {
  local n="${1:-3}" k
  host_number "$n"
  need_root
  command -v nsenter >/dev/null || die "needs nsenter (install: apt-get install -y util-linux)"
  command -v ip >/dev/null || die "needs ip (install: apt-get install -y iproute2)"
  id -u postgres >/dev/null 2>&1 || die "needs the postgres user (install: apt-get install -y postgresql)"
  # Others may traverse the state directory (PostgreSQL runs as postgres), not list or write it.
  in_initial_netns
  install -d -m 0711 -o root -g root "$dir"
  note_run_netns
  # Hosts of a larger testbed made before go first.
  for k in $(existing_hosts); do [ "$k" -le "$n" ] || host_down "$k"; done
  link_exists "$bridge" || ip link add "$bridge" type bridge
  ip addr replace "$subnet.254/24" dev "$bridge"
  ip link set "$bridge" up
  # The initial network namespace by name, for a proc connector helper that cannot read /proc/1.
  ns_exists "$initial_ns" || ip netns attach "$initial_ns" $$
  for k in $(seq 1 "$n"); do host_up "$k"; done
  echo "$n" >"$dir/hosts"
  pg_up
  say "up: $n hosts (10.77.0.1..$n, bridge $bridge at $subnet.254), store $store, state in $dir"
}

# SIGKILL one process by its pid (the kill(2) of bash's builtin; never the kill program).
sigkill() {
  [[ "$1" =~ ^[0-9]+$ && "$1" -gt 1 ]] || return 0
  builtin kill -s KILL -- "$1" 2>/dev/null || true
}

# The testbed's unit cgroups (its store's, in every hierarchy): ckpt/STOREID of the agents.
store_cgroups() {
  local id hierarchy
  [ -f "$cli" ] || return 0
  id="$(node --input-type=module -e 'const { storeId } = await import(process.argv[1]); console.log(storeId(process.argv[2]));' \
    "$root/dist/adapters/agent/daemon.js" "$store")" || return 0
  [[ "$id" =~ ^[0-9a-f]{8}$ ]] || return 0
  for hierarchy in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do # v1 hierarchies and cgroup2's; or cgroup2 alone
    [ ! -d "${hierarchy}ckpt/$id" ] || echo "${hierarchy}ckpt/$id"
  done
  return 0
}

# Thaws the ckpt unit cgroup a process is in (a frozen process does not die of SIGKILL).
thaw_unit_of() {
  local line path v2
  while IFS= read -r line; do
    path="${line#*:*:}"
    [[ "$path" == /ckpt/* && "$path" != *..* ]] || continue
    case "$line" in
      *:freezer:*) [ ! -f "/sys/fs/cgroup/freezer$path/freezer.state" ] || echo THAWED >"/sys/fs/cgroup/freezer$path/freezer.state" 2>/dev/null || true ;;
      0::*)
        for v2 in /sys/fs/cgroup/unified /sys/fs/cgroup; do
          [ ! -f "$v2$path/cgroup.freeze" ] || echo 0 >"$v2$path/cgroup.freeze" 2>/dev/null || true
        done
        ;;
    esac
  done <"/proc/$1/cgroup" 2>/dev/null || true
}

# Thaw (a frozen process does not die), kill what is left, remove the cgroups bottom-up.
clear_cgroups() {
  local top cg pid i
  for top in $(store_cgroups); do
    while IFS= read -r -d '' cg; do
      [ ! -f "$cg/freezer.state" ] || echo THAWED >"$cg/freezer.state" 2>/dev/null || true
      [ ! -f "$cg/cgroup.freeze" ] || echo 0 >"$cg/cgroup.freeze" 2>/dev/null || true
      for pid in $(cat "$cg/cgroup.procs" 2>/dev/null); do sigkill "$pid"; done
    done < <(find "$top" -type d -print0)
    for i in $(seq 1 50); do
      while IFS= read -r -d '' cg; do rmdir -- "$cg" 2>/dev/null || true; done < <(find "$top" -depth -type d -print0)
      [ -d "$top" ] || break
      sleep 0.1
    done
    [ ! -d "$top" ] || say "could not remove the cgroup $top (processes still in it?)"
  done
}

# Stops host K's agent, kills every process left in its namespace, removes the namespace (its
# veth end goes with it, and so does the bridge's), and its CKPT_HOME.
host_down() {
  local k="$1" ns="ckpt-host$1" pid pids i
  if ns_exists "$ns"; then
    if [ -f "$cli" ]; then
      timeout 30 nsenter --net="/run/netns/$ns" -- env CKPT_HOME="$dir/host$k" CKPT_STORE="$store" CKPT_NODE="host$k" \
        node "$cli" agent stop >/dev/null 2>&1 || true
    fi
    for i in $(seq 1 100); do
      pids="$(ip netns pids "$ns")"
      [ -n "$pids" ] || break
      for pid in $pids; do
        thaw_unit_of "$pid"
        sigkill "$pid"
      done
      sleep 0.1
    done
    [ -z "$(ip netns pids "$ns")" ] || say "processes still in $ns: $(ip netns pids "$ns" | tr '\n' ' ')"
    ip netns del "$ns"
  fi
  # The namespace's end of the veth takes ours with it, a moment later: gone either way is fine.
  ip link del "ckpt-v$k" 2>/dev/null || ! link_exists "ckpt-v$k" || die "could not remove the link ckpt-v$k"
  rm -rf -- "${dir:?}/host$k"
}

down() {
  local k bin
  need_root
  for k in $(existing_hosts); do host_down "$k"; done
  clear_cgroups
  ! ns_exists "$initial_ns" || ip netns del "$initial_ns"
  ! link_exists "$bridge" || ip link del "$bridge"
  if [ -f "$dir/pg/data/PG_VERSION" ]; then
    bin="$(pg_bin)"
    if as_postgres "$bin/pg_ctl" -D "$dir/pg/data" status >/dev/null 2>&1; then
      as_postgres "$bin/pg_ctl" -D "$dir/pg/data" -m fast -w stop >/dev/null
    fi
  fi
  # /run/netns: unmounted (and removed) only when `up` made it so and no namespace is left in it.
  if [ -f "$dir/run-netns" ] && [ -d /run/netns ] && [ -z "$(ls -A /run/netns)" ]; then
    case "$(cat "$dir/run-netns")" in
      dir) ! mountpoint -q /run/netns || umount /run/netns; rmdir /run/netns ;;
      mount) ! mountpoint -q /run/netns || umount /run/netns ;;
    esac
  fi
  [ ! -d "$dir" ] || rm -rf -- "${dir:?}"
  say "down: nothing of the testbed is left"
}

status() {
  local n=0 k ok=0 bin addr port
  [ ! -f "$dir/hosts" ] || n="$(cat "$dir/hosts")"
  [[ "$n" =~ ^[0-9]+$ ]] || n=0
  if link_exists "$bridge"; then echo "bridge $bridge: $(ip -br addr show "$bridge" | awk '{print $3}')"; else echo "bridge $bridge: missing"; ok=1; fi
  ns_exists "$initial_ns" || { echo "initial namespace name /run/netns/$initial_ns: missing"; ok=1; }
  [ "$n" -gt 0 ] || { echo "no testbed in $dir (scripts/testbed.sh up)"; ok=1; }
  for k in $(seq 1 "$n"); do
    if ! ns_exists "ckpt-host$k"; then echo "host$k: missing"; ok=1; continue; fi
    addr="$(ip -n "ckpt-host$k" -br addr show eth0 2>/dev/null | awk '{print $3}' || true)"
    port=bridged
    ip link show "ckpt-v$k" 2>/dev/null | grep -q " master $bridge " || { port='not on the bridge'; ok=1; }
    [ "$addr" = "$subnet.$k/24" ] && [ -d "$dir/host$k" ] || ok=1
    echo "host$k: namespace ckpt-host$k, eth0 ${addr:-missing}, veth ckpt-v$k $port, CKPT_HOME $dir/host$k$([ -d "$dir/host$k" ] || echo ' (missing)'), $(ip netns pids "ckpt-host$k" | wc -l) processes"
  done
  bin="$(pg_bin)"
  if [ -f "$dir/pg/data/PG_VERSION" ] && as_postgres "$bin/pg_ctl" -D "$dir/pg/data" status >/dev/null 2>&1; then
    echo "store: $store (PostgreSQL running)"
  else
    echo "store: $store (PostgreSQL not running)"
    ok=1
  fi
  return "$ok"
}

run() {
  local k="${1:-}"
  [ -n "$k" ] || usage
  host_number "$k"
  shift
  [ "${1:-}" = -- ] && shift
  [ $# -gt 0 ] || die "say what to run: scripts/testbed.sh run $k -- CMD…"
  ns_exists "ckpt-host$k" || die "host $k does not exist (scripts/testbed.sh up)"
  exec nsenter --net="/run/netns/ckpt-host$k" -- env CKPT_HOME="$dir/host$k" CKPT_STORE="$store" CKPT_NODE="host$k" \
    CKPT_INITIAL_NETNS="/run/netns/$initial_ns" "$@"
}

# A host cut off: its bridge port goes down, so packets to and from it are dropped (no reset):
# its connections stall as across a failed switch, and resume when the link comes back.
link() {
  local k="${1:-}" state="$2"
  [ -n "$k" ] || usage
  host_number "$k"
  link_exists "ckpt-v$k" || die "host $k does not exist (scripts/testbed.sh up)"
  ip link set "ckpt-v$k" "$state"
}

case "${1:-}" in
  cut) [ $# -eq 2 ] || usage; link "$2" down ;;
  mend) [ $# -eq 2 ] || usage; link "$2" up ;;
  up) [ $# -le 2 ] || usage; up "${2:-3}" ;;
  down) [ $# -eq 1 ] || usage; down ;;
  status) [ $# -eq 1 ] || usage; status ;;
  run) shift; run "$@" ;;
  *) usage ;;
esac
