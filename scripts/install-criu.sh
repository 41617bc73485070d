#!/usr/bin/env bash
# install-criu.sh - make a CRIU that really works on this kernel available to ckpt.
#
# Usage: bash scripts/install-criu.sh [--prefix DIR] [--suite S] [--force] [--quiet]
#        bash scripts/install-criu.sh --check PATH
#
# A criu is accepted when it reports version >= 4.1, passes `criu check` AND passes a
# functional probe: a small process (adapters/checkpointers/criu-probe-target.c, compiled
# with cc into a temp dir) holding a listening TCP socket, a UDP socket, a unix socket
# pair, a pipe and a flock is dumped (--file-locks) and restored in its own PID namespace,
# and the restored process must answer on its TCP port with each of those still working.
# (`criu check` alone is not enough: Debian 13's criu 4.1.1 passes it but cannot dump any
# TCP or UDP socket on kernels >= 6.16.) Candidates, first accepted wins:
#   1. a system criu (PATH, /usr/sbin, ...), 2. an existing install in PREFIX,
#   3. Debian's criu of each suite in CKPT_CRIU_SUITES (default "forky trixie",
#      newest first) with its whole dependency closure (its own glibc), fetched with a
#      private apt configuration (the machine's apt state is not touched), unpacked into
#      PREFIX (default: <repo>/.criu) and run through its own dynamic loader by the
#      wrapper PREFIX/bin/criu.
#
# The LAST line of stdout is the path of a working criu executable:
#   CRIU=$(bash scripts/install-criu.sh | tail -1)
# Progress goes to stderr. --force skips the system criu and an existing install.
# --suite S installs Debian suite S's criu (ignores the system criu), e.g. trixie's 4.1
# into another prefix for tests; it must pass `criu check`, the functional probe is only
# reported. --check PATH only probes the criu at PATH (check + functional probe): exit 0
# and its path on stdout when it works, exit 1 saying why. --quiet only prints errors.
# Needs root, unshare (util-linux), cc, apt-get, dpkg-deb and network access to the
# Debian mirror the machine's own apt sources use (override: CKPT_DEBIAN_MIRROR).
set -euo pipefail

MIN_MAJOR=4
MIN_MINOR=1
SUITES=${CKPT_CRIU_SUITES:-forky trixie}
FORCED_SUITE=
CHECK_ONLY=
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROBE_SOURCE=$REPO_ROOT/adapters/checkpointers/criu-probe-target.c
PREFIX="$REPO_ROOT/.criu"
FORCE=0
QUIET=0
MARKER=.ckpt-criu-prefix
STARTED=${EPOCHREALTIME/./}

usage() { sed -n '2,29s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; }
log() { [ "$QUIET" = 1 ] || printf 'install-criu: %s\n' "$*" >&2; }
die() {
  printf 'install-criu: ERROR: %s\n' "$1" >&2
  shift
  for line in "$@"; do printf 'install-criu:   %s\n' "$line" >&2; done
  exit 1
}
elapsed() { local us=$(( ${EPOCHREALTIME/./} - STARTED )); printf '%d.%02d s' $((us / 1000000)) $((us % 1000000 / 10000)); }

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; PREFIX=$2; shift 2 ;;
    --prefix=*) PREFIX=${1#--prefix=}; shift ;;
    --suite) [ $# -ge 2 ] || die "--suite needs a Debian suite name (e.g. forky, trixie)"; FORCED_SUITE=$2; shift 2 ;;
    --suite=*) FORCED_SUITE=${1#--suite=}; shift ;;
    --check) [ $# -ge 2 ] || die "--check needs the path of a criu executable"; CHECK_ONLY=$2; shift 2 ;;
    --check=*) CHECK_ONLY=${1#--check=}; shift ;;
    --force) FORCE=1; shift ;;
    --quiet|-q) QUIET=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage; die "unknown argument: $1" ;;
  esac
done
case "$FORCED_SUITE" in
  '') ;;
  *[!a-z0-9-]*) die "--suite must be a Debian suite name such as forky or trixie, not '$FORCED_SUITE'" ;;
  *) SUITES=$FORCED_SUITE ;;
esac
for s in $SUITES; do
  case "$s" in *[!a-z0-9-]*) die "CKPT_CRIU_SUITES must list Debian suite names (e.g. 'forky trixie'), not '$s'" ;; esac
done

# Absolute, normalised prefix (its parent is created if needed).
[ -n "$PREFIX" ] || die "--prefix must not be empty"
PREFIX=${PREFIX%/}
[ -n "$PREFIX" ] || die "--prefix / is not allowed"
mkdir -p "$(dirname "$PREFIX")"
PREFIX="$(cd "$(dirname "$PREFIX")" && pwd)/$(basename "$PREFIX")"
case "$PREFIX" in *:*) die "prefix must not contain ':' (it goes into a library path): $PREFIX" ;; esac

# criu_ok EXE: true if EXE reports version >= 4.1 and `EXE check` exits 0.
# Sets CRIU_VERSION and CRIU_FAIL (a description of what failed).
CRIU_VERSION=
CRIU_FAIL=
criu_ok() {
  local exe=$1 out ver major minor
  CRIU_VERSION=
  CRIU_FAIL=
  if ! out=$(timeout 60 "$exe" --version 2>&1); then
    CRIU_FAIL="'$exe --version' failed: $(printf '%s' "$out" | tail -3 | tr '\n' ' ')"
    return 1
  fi
  ver=$(printf '%s\n' "$out" | sed -n 's/^Version: *\([0-9][0-9.]*\).*/\1/p' | head -1)
  if [ -z "$ver" ]; then
    CRIU_FAIL="cannot parse '$exe --version' output: $(printf '%s' "$out" | head -2 | tr '\n' ' ')"
    return 1
  fi
  CRIU_VERSION=$ver
  major=${ver%%.*}
  minor=${ver#*.}; minor=${minor%%.*}
  [ "$minor" = "$ver" ] && minor=0
  if [ "$major" -lt "$MIN_MAJOR" ] || { [ "$major" -eq "$MIN_MAJOR" ] && [ "$minor" -lt "$MIN_MINOR" ]; }; then
    CRIU_FAIL="$exe is version $ver, need >= $MIN_MAJOR.$MIN_MINOR"
    return 1
  fi
  # Every run here logs a harmless "rlimit: Can't setup RLIMIT_NOFILE" line:
  # only the exit code counts.
  if ! out=$(timeout 120 "$exe" check 2>&1); then
    CRIU_FAIL="'$exe check' failed (criu $ver): $(printf '%s' "$out" | grep -v RLIMIT_NOFILE | tail -5 | tr '\n' ' ')"
    return 1
  fi
  return 0
}

# Scratch space for the probe (and for nothing else): removed on exit, with any probe
# process still alive. WORK (the install's temp dir) is set later.
SCRATCH=
PROBE_TARGET=
PROBE_LIVE=   # the probe process alive right now (killed on exit)
WORK=
OLD=
cleanup() {
  [ -z "$PROBE_LIVE" ] || kill -9 "$PROBE_LIVE" 2>/dev/null || true
  [ -z "$SCRATCH" ] || rm -rf "$SCRATCH"
  [ -z "$WORK" ] || rm -rf "$WORK"
  [ -z "$OLD" ] || rm -rf "$OLD"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The probe target, compiled once from source (dist/ may not exist on a fresh machine).
probe_target() {
  [ -z "$PROBE_TARGET" ] || return 0
  command -v unshare >/dev/null 2>&1 || { CRIU_FAIL="unshare not found (apt-get install util-linux): the functional probe runs its target in a new PID namespace"; return 1; }
  [ -n "$SCRATCH" ] || SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/ckpt-criu-probe.XXXXXX")
  if ! command -v cc >/dev/null 2>&1; then
    # No compiler: the one npm run build made, if there is one.
    PROBE_TARGET=$REPO_ROOT/dist/native/ckpt-criu-probe-target
    [ -x "$PROBE_TARGET" ] && return 0
    PROBE_TARGET=
    CRIU_FAIL="no C compiler (apt-get install gcc libc6-dev): the functional probe compiles its target"
    return 1
  fi
  [ -r "$PROBE_SOURCE" ] || { CRIU_FAIL="$PROBE_SOURCE is missing: run this script from a ckpt checkout"; return 1; }
  if ! cc -O2 -o "$SCRATCH/probe-target" "$PROBE_SOURCE" 2>"$SCRATCH/cc.log"; then
    CRIU_FAIL="compiling the probe target failed: $(tail -3 "$SCRATCH/cc.log" | tr '\n' ' ')"
    return 1
  fi
  PROBE_TARGET=$SCRATCH/probe-target
}

# The error lines of a criu log, without the harmless RLIMIT_NOFILE one.
criu_errors() {
  grep -E "Error|Can't" "$1" 2>/dev/null | grep -v -e RLIMIT_NOFILE -e 'FAILED\.' |
    sed -e 's/^([0-9. ]*)[ 0-9:]*//' -e 's/^Error ([^)]*): //' | head -2 | paste -sd';' | sed 's/;/; /g'
}

# What a user can do about a failed dump: the kernel >= 6.16 socket option change is the common one.
dump_hint() {
  if grep -q "Can't get 1:16 opt\|Can't get 1:34 opt" "$1" 2>/dev/null; then
    printf '%s' " (kernels >= 6.16 answer getsockopt(SO_PASSCRED/SO_PASSSEC) on TCP/UDP sockets with EOPNOTSUPP, which CRIU < 4.2 treats as fatal: CRIU >= 4.2 is needed)"
  fi
}

# functional_ok EXE: dump + restore of the probe target (TCP listen, UDP, socketpair, pipe,
# flock) in its own PID namespace; the restored target must answer on its TCP port with
# everything working. Sets CRIU_FAIL.
PROBE_WANT="probe udp=ok socketpair=ok pipe=ok flock=held"
functional_ok() {
  local exe=$1 dir unshare_pid port hostpid line restored i
  CRIU_FAIL=
  probe_target || return 1
  dir=$(mktemp -d "$SCRATCH/run.XXXXXX")
  mkdir "$dir/img"
  # In its own dir: CRIU's parasite may mount a proc in the dumped process's cwd.
  (cd "$dir" && exec unshare --pid --fork "$PROBE_TARGET" --tcp --udp --socketpair --pipe --flock "$dir/lock") \
    </dev/null >"$dir/ready" 2>"$dir/target.err" &
  unshare_pid=$!
  for i in $(seq 50); do grep -q '^ready' "$dir/ready" 2>/dev/null && break; sleep 0.1; done
  read -r _ port hostpid _ <"$dir/ready" 2>/dev/null || true
  if [ -z "${hostpid:-}" ]; then
    kill -9 "$unshare_pid" 2>/dev/null || true
    CRIU_FAIL="the probe target did not start: $(tr '\n' ' ' <"$dir/target.err")"
    return 1
  fi
  PROBE_LIVE=$hostpid
  if ! timeout 60 "$exe" dump -t "$hostpid" -D "$dir/img" -o dump.log -v4 --file-locks >/dev/null 2>&1; then
    kill -9 "$hostpid" 2>/dev/null || true
    PROBE_LIVE=
    CRIU_FAIL="criu dump of a process holding TCP/UDP sockets, a socket pair, a pipe and a flock failed: $(criu_errors "$dir/img/dump.log")$(dump_hint "$dir/img/dump.log")"
    return 1
  fi
  wait "$unshare_pid" 2>/dev/null || true   # the dump killed the target, and so its namespace
  PROBE_LIVE=
  if ! timeout 60 "$exe" restore -D "$dir/img" -d --pidfile "$dir/restored.pid" -o restore.log -v4 --file-locks >/dev/null 2>&1; then
    CRIU_FAIL="criu restore of the probe process failed: $(criu_errors "$dir/img/restore.log")"
    return 1
  fi
  restored=$(cat "$dir/restored.pid")
  PROBE_LIVE=$restored
  line=$("$PROBE_TARGET" --connect "$port" 2>&1) || true
  kill -9 "$restored" 2>/dev/null || true
  PROBE_LIVE=
  if [ "$line" != "$PROBE_WANT" ]; then
    CRIU_FAIL="the restored probe process did not answer as it should on 127.0.0.1:$port: got '$line', expected '$PROBE_WANT'"
    return 1
  fi
  rm -rf "$dir"
}

# accept EXE: criu_ok and the functional probe; CRIU_FAIL says why not.
accept() { criu_ok "$1" && functional_ok "$1"; }

[ "$(id -u)" = 0 ] || log "warning: not root; criu needs root, the checks below will most likely fail"

# --check PATH: only the probe.
if [ -n "$CHECK_ONLY" ]; then
  if accept "$CHECK_ONLY"; then
    log "criu $CRIU_VERSION at $CHECK_ONLY works: 'criu check' and the functional probe (dump + restore of TCP, UDP, socket pair, pipe, flock) passed in $(elapsed)"
    printf '%s\n' "$CHECK_ONLY"
    exit 0
  fi
  printf 'install-criu: %s does not work here: %s\n' "$CHECK_ONLY" "$CRIU_FAIL" >&2
  exit 1
fi

# The suite an existing PREFIX was installed from (empty when not ours or unknown).
installed_suite() { sed -n 's/^suite: //p' "$PREFIX/$MARKER" 2>/dev/null | head -1; }

if [ "$FORCE" = 0 ] && [ -z "$FORCED_SUITE" ]; then
  # 1. A system criu that passes the probe wins.
  seen=" "
  for c in "$(command -v criu 2>/dev/null || true)" /usr/sbin/criu /usr/local/sbin/criu /sbin/criu /usr/bin/criu /usr/local/bin/criu; do
    [ -n "$c" ] && [ -x "$c" ] || continue
    real=$(readlink -f "$c")
    case "$seen" in *" $real "*) continue ;; esac
    seen="$seen$real "
    case "$real" in "$PREFIX"/*) continue ;; esac   # our own install: step 2
    if accept "$c"; then
      log "using system criu $CRIU_VERSION at $c (functional probe passed, $(elapsed))"
      printf '%s\n' "$c"
      exit 0
    fi
    log "ignoring system criu $c: $CRIU_FAIL"
  done
fi

# 2. An existing private install that works (of the forced suite, with --suite): nothing to do.
if [ "$FORCE" = 0 ] && [ -x "$PREFIX/bin/criu" ]; then
  if [ -n "$FORCED_SUITE" ]; then
    if [ "$(installed_suite)" = "$FORCED_SUITE" ] && criu_ok "$PREFIX/bin/criu"; then
      log "criu $CRIU_VERSION from $FORCED_SUITE already installed in $PREFIX"
      printf '%s\n' "$PREFIX/bin/criu"
      exit 0
    fi
  elif accept "$PREFIX/bin/criu"; then
    log "criu $CRIU_VERSION already installed in $PREFIX (functional probe passed, $(elapsed))"
    printf '%s\n' "$PREFIX/bin/criu"
    exit 0
  else
    log "existing install in $PREFIX is not usable ($CRIU_FAIL); reinstalling"
  fi
fi

# 3. Install Debian's criu, trying each suite in turn.
for tool in apt-get apt-cache apt-config dpkg dpkg-deb timeout; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found" "This script needs a Debian-based system (apt + dpkg)."
done
if [ -e "$PREFIX" ] && [ ! -e "$PREFIX/$MARKER" ] && [ -n "$(ls -A "$PREFIX" 2>/dev/null)" ]; then
  die "$PREFIX exists, is not empty and was not made by this script" "Refusing to replace it; pass another --prefix or remove it."
fi
if [ -z "$FORCED_SUITE" ]; then
  probe_target || die "cannot run the functional probe: $CRIU_FAIL"
fi

ARCH=$(dpkg --print-architecture)
case "$ARCH" in
  amd64) TRIPLET=x86_64-linux-gnu; LOADER=ld-linux-x86-64.so.2 ;;
  arm64) TRIPLET=aarch64-linux-gnu; LOADER=ld-linux-aarch64.so.1 ;;
  *) die "unsupported architecture: $ARCH" "Install criu >= 4.2 by other means and set CKPT_CRIU to its path." ;;
esac
LIBDIR=usr/lib/$TRIPLET
# The Debian mirror: same URI as the machine's own sources for its release.
find_mirror() {
  local codename files f
  codename=$(. /etc/os-release 2>/dev/null && printf '%s' "${VERSION_CODENAME:-}")
  files=()
  [ -f /etc/apt/sources.list ] && files+=(/etc/apt/sources.list)
  for f in /etc/apt/sources.list.d/*.list; do [ -f "$f" ] && files+=("$f"); done
  {
    if [ ${#files[@]} -gt 0 ]; then
      # one-line format: deb [options] URI SUITE COMPONENTS...
      sed -e 's/#.*//' -e 's/\[[^]]*\]//' "${files[@]}" |
        awk '$1 == "deb" && NF >= 3 { print $2, $3 }'
    fi
    for f in /etc/apt/sources.list.d/*.sources; do
      [ -f "$f" ] || continue
      # deb822 format: print "URI SUITE" for each URI x suite of enabled deb stanzas
      awk '
        function flush(  i, j, nu, ns, u, s) {
          if (types ~ /(^| )deb( |$)/ && tolower(enabled) != "no") {
            nu = split(uris, u, " "); ns = split(suites, s, " ")
            for (i = 1; i <= nu; i++) for (j = 1; j <= ns; j++) print u[i], s[j]
          }
          types = ""; uris = ""; suites = ""; enabled = ""
        }
        /^[ \t]*#/ { next }
        /^[ \t]*$/ { flush(); next }
        { line = $0; key = tolower(line); sub(/:.*/, "", key); sub(/^[^:]*:[ \t]*/, "", line) }
        key == "types" { types = line } key == "uris" { uris = line }
        key == "suites" { suites = line } key == "enabled" { enabled = line }
        END { flush() }' "$f"
    done
  } | awk -v cn="$codename" '
      $1 !~ /^(https?|ftp):\/\// { next }
      cn != "" && $2 == cn { if (!exact) exact = $1 }
      $2 !~ /security/ && $1 ~ /\/debian\/?$/ { if (!any) any = $1 }
      END { if (exact) print exact; else if (any) print any }'
}

MIRROR=${CKPT_DEBIAN_MIRROR:-}
[ -n "$MIRROR" ] || MIRROR=$(find_mirror || true)
[ -n "$MIRROR" ] || die "no Debian mirror found in /etc/apt/sources.list or /etc/apt/sources.list.d/" \
  "Set CKPT_DEBIAN_MIRROR to a Debian archive URI (the one your apt sources use) and rerun."
MIRROR=${MIRROR%/}

WORK=$(mktemp -d "$PREFIX.tmp.XXXXXX")
LOG=$WORK/apt.log
SIGNED=
[ -r /usr/share/keyrings/debian-archive-keyring.gpg ] && SIGNED="[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
# Only the machine's network-related Acquire settings (proxies...) are kept.
NET_CONF=$(apt-config dump 2>/dev/null |
  grep -E '^Acquire::(http|https|ftp|socks|Retries|ForceIPv4|ForceIPv6|Check-Valid-Until|Check-Date|Max-ValidTime)' || true)

run_logged() {  # run a command, output to stderr (or to the log with --quiet)
  if [ "$QUIET" = 1 ]; then "$@" >>"$LOG" 2>&1; else "$@" >&2; fi
}
log_tail() { [ "$QUIET" = 1 ] && [ -s "$LOG" ] && tail -20 "$LOG" | sed 's/^/install-criu: | /' >&2; : >"$LOG"; }

# fetch_suite SUITE: criu of Debian SUITE and its dependency closure unpacked into
# $WORK/root-SUITE, with the wrapper bin/criu. Sets CRIU_FAIL on failure.
fetch_suite() {
  local suite=$1 aptdir=$WORK/apt-$1 root=$WORK/root-$1 pkgs deb
  CRIU_FAIL=
  mkdir -p "$aptdir"/lists/partial "$aptdir"/cache/archives/partial "$aptdir"/etc/sources.list.d \
    "$aptdir"/etc/preferences.d "$aptdir"/etc/apt.conf.d "$aptdir"/debs "$root"
  : >"$aptdir/etc/apt.conf"
  : >"$aptdir/etc/preferences"
  printf 'deb %s%s %s main\n' "$SIGNED" "$MIRROR" "$suite" >"$aptdir/etc/sources.list"
  # A private configuration read via APT_CONFIG, which also points apt away from
  # /etc/apt/apt.conf{,.d}: no hooks, pins or extra index targets of the machine apply.
  {
    [ -z "$NET_CONF" ] || printf '%s\n' "$NET_CONF"
    cat <<EOF
Dir::Etc::main "$aptdir/etc/apt.conf";
Dir::Etc::parts "$aptdir/etc/apt.conf.d";
Dir::Etc::sourcelist "$aptdir/etc/sources.list";
Dir::Etc::sourceparts "$aptdir/etc/sources.list.d";
Dir::Etc::preferences "$aptdir/etc/preferences";
Dir::Etc::preferencesparts "$aptdir/etc/preferences.d";
Dir::State::Lists "$aptdir/lists";
Dir::State::status "/dev/null";
Dir::State::extended_states "$aptdir/extended_states";
Dir::Cache "$aptdir/cache";
Dir::Cache::archives "$aptdir/cache/archives";
Dir::Cache::pkgcache "$aptdir/cache/pkgcache.bin";
Dir::Cache::srcpkgcache "$aptdir/cache/srcpkgcache.bin";
APT::Architecture "$ARCH";
APT::Architectures { "$ARCH"; };
APT::Sandbox::User "$(id -un)";
Acquire::Languages "none";
Acquire::IndexTargets::deb::DEP-11::DefaultEnabled "false";
EOF
  } >"$aptdir/apt.conf"

  log "$suite: apt-get update (private lists, $MIRROR $suite/main, $ARCH)"
  if ! APT_CONFIG=$aptdir/apt.conf run_logged timeout 300 apt-get -q update; then
    log_tail
    CRIU_FAIL="apt-get update of $MIRROR $suite failed (network access to the mirror? set CKPT_DEBIAN_MIRROR; on NO_PUBKEY errors: apt-get install debian-archive-keyring)"
    return 1
  fi
  if ! pkgs=$(APT_CONFIG=$aptdir/apt.conf apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
      --no-breaks --no-replaces --no-enhances criu 2>>"$LOG" | grep -v -e '^ ' -e '^<' | sort -u) || [ -z "$pkgs" ]; then
    log_tail
    CRIU_FAIL="apt-cache found no criu in $suite/main"
    return 1
  fi
  # shellcheck disable=SC2086
  log "$suite: downloading $(printf '%s\n' $pkgs | wc -l) packages: $(printf '%s ' $pkgs)"
  # shellcheck disable=SC2086
  if ! (cd "$aptdir/debs" && APT_CONFIG=$aptdir/apt.conf run_logged timeout 600 apt-get -q download $pkgs); then
    log_tail
    CRIU_FAIL="apt-get download from $suite failed (network access to $MIRROR?)"
    return 1
  fi
  for deb in "$aptdir"/debs/*.deb; do
    dpkg-deb -x "$deb" "$root" || { CRIU_FAIL="dpkg-deb -x $deb failed (free disk space in $(dirname "$PREFIX")?)"; return 1; }
  done
  rm -rf "$aptdir"
  [ -x "$root/usr/sbin/criu" ] || { CRIU_FAIL="criu binary missing after unpacking $suite's packages (expected usr/sbin/criu)"; return 1; }
  [ -e "$root/$LIBDIR/$LOADER" ] || { CRIU_FAIL="dynamic loader missing after unpacking $suite's packages (expected $LIBDIR/$LOADER)"; return 1; }
  mkdir -p "$root/bin"
  cat >"$root/bin/criu" <<EOF
#!/bin/sh
# Generated by scripts/install-criu.sh: Debian $suite criu run with its own
# glibc and libraries (no LD_LIBRARY_PATH, so restored processes inherit nothing).
d=\$(dirname "\$(readlink -f "\$0")")/..
d=\$(cd "\$d" && pwd) || exit 127
exec "\$d/$LIBDIR/$LOADER" --library-path "\$d/$LIBDIR:\$d/lib/$TRIPLET" "\$d/usr/sbin/criu" "\$@"
EOF
  chmod 755 "$root/bin/criu"
  { echo "criu from $MIRROR $suite/main ($ARCH), installed $(date -u +%FT%TZ)"; echo "suite: $suite"; printf '%s\n' $pkgs; } >"$root/$MARKER"
}

CHOSEN=
REJECTED=()
for suite in $SUITES; do
  if ! fetch_suite "$suite"; then
    log "$suite: $CRIU_FAIL"
    REJECTED+=("$suite: $CRIU_FAIL")
    continue
  fi
  if ! criu_ok "$WORK/root-$suite/bin/criu"; then
    log "$suite: $CRIU_FAIL"
    REJECTED+=("$suite: $CRIU_FAIL")
    continue
  fi
  if functional_ok "$WORK/root-$suite/bin/criu"; then
    log "$suite: criu $CRIU_VERSION passed the functional probe"
    CHOSEN=$suite
    break
  fi
  if [ -n "$FORCED_SUITE" ]; then
    log "warning: $suite's criu $CRIU_VERSION passes 'criu check' but not the functional probe (installed anyway, as --suite asked): $CRIU_FAIL"
    CHOSEN=$suite
    break
  fi
  log "$suite: criu $CRIU_VERSION rejected: $CRIU_FAIL"
  REJECTED+=("$suite (criu $CRIU_VERSION): $CRIU_FAIL")
done
if [ -z "$CHOSEN" ]; then
  die "no criu of the suites tried ($SUITES) works on this kernel ($(uname -r)):" "${REJECTED[@]}" \
    "criu needs root (or CAP_CHECKPOINT_RESTORE+CAP_SYS_ADMIN) and a kernel with CONFIG_CHECKPOINT_RESTORE." \
    "To install one that passes only 'criu check' anyway: bash scripts/install-criu.sh --suite trixie"
fi

# Swap into place: the prefix is either the old one, absent, or the new verified one.
if [ -e "$PREFIX" ]; then
  OLD="$WORK/old"
  mv "$PREFIX" "$OLD"
fi
mv "$WORK/root-$CHOSEN" "$PREFIX"

criu_ok "$PREFIX/bin/criu" || die "criu stopped working after moving it to $PREFIX: $CRIU_FAIL" \
  "Rerun with --force; if it persists run '$PREFIX/bin/criu check -v4' as root."
log "criu $CRIU_VERSION from $CHOSEN installed in $(elapsed): $PREFIX/bin/criu ($(du -sh "$PREFIX" | cut -f1))"
printf '%s\n' "$PREFIX/bin/criu"
