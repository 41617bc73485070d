#!/usr/bin/env bash
# install-criu.sh - make a working CRIU (>= 4.1) available to ckpt.
#
# Usage: bash scripts/install-criu.sh [--prefix DIR] [--force] [--quiet]
#
# Debian 12's criu 3.17 fails `criu check` on kernels >= 6.13 (vDSO/vvar split,
# fixed in CRIU 4.1). If a system criu >= 4.1 passes `criu check`, its path is
# printed and nothing else happens. Otherwise Debian 13 (trixie)'s criu and its
# whole dependency closure (including trixie's glibc) are fetched with a private
# apt configuration (the machine's apt state is not touched), unpacked into
# PREFIX (default: <repo>/.criu) and run through trixie's own dynamic loader by
# the wrapper PREFIX/bin/criu.
#
# The LAST line of stdout is the path of a working criu executable:
#   CRIU=$(bash scripts/install-criu.sh | tail -1)
# Progress goes to stderr. --force skips both the system criu and an existing
# install and reinstalls into PREFIX. --quiet only prints errors.
# Needs root (criu check needs it), apt-get, dpkg-deb and network access to the
# Debian mirror the machine's own apt sources use (override: CKPT_DEBIAN_MIRROR).
set -euo pipefail

MIN_MAJOR=4
MIN_MINOR=1
SUITE=trixie
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX="$REPO_ROOT/.criu"
FORCE=0
QUIET=0
MARKER=.ckpt-criu-prefix

usage() { sed -n '2,19s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; }
log() { [ "$QUIET" = 1 ] || printf 'install-criu: %s\n' "$*" >&2; }
die() {
  printf 'install-criu: ERROR: %s\n' "$1" >&2
  shift
  for line in "$@"; do printf 'install-criu:   %s\n' "$line" >&2; done
  exit 1
}

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; PREFIX=$2; shift 2 ;;
    --prefix=*) PREFIX=${1#--prefix=}; shift ;;
    --force) FORCE=1; shift ;;
    --quiet|-q) QUIET=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage; die "unknown argument: $1" ;;
  esac
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

# 1. A system criu >= 4.1 that passes `criu check` wins.
if [ "$FORCE" = 0 ]; then
  seen=" "
  for c in "$(command -v criu 2>/dev/null || true)" /usr/sbin/criu /usr/local/sbin/criu /sbin/criu /usr/bin/criu /usr/local/bin/criu; do
    [ -n "$c" ] && [ -x "$c" ] || continue
    real=$(readlink -f "$c")
    case "$seen" in *" $real "*) continue ;; esac
    seen="$seen$real "
    case "$real" in "$PREFIX"/*) continue ;; esac   # our own install: step 2
    if criu_ok "$c"; then
      log "using system criu $CRIU_VERSION at $c"
      printf '%s\n' "$c"
      exit 0
    fi
    log "ignoring system criu: $CRIU_FAIL"
  done

  # 2. An existing private install that works: nothing to do.
  if [ -x "$PREFIX/bin/criu" ]; then
    if criu_ok "$PREFIX/bin/criu"; then
      log "criu $CRIU_VERSION already installed in $PREFIX"
      printf '%s\n' "$PREFIX/bin/criu"
      exit 0
    fi
    log "existing install is not usable ($CRIU_FAIL); reinstalling"
  fi
fi

# 3. Install trixie's criu into PREFIX.
[ "$(id -u)" = 0 ] || log "warning: not root; 'criu check' will most likely fail"
for tool in apt-get apt-cache apt-config dpkg dpkg-deb timeout; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found" "This script needs a Debian-based system (apt + dpkg)."
done
if [ -e "$PREFIX" ] && [ ! -e "$PREFIX/$MARKER" ] && [ -n "$(ls -A "$PREFIX" 2>/dev/null)" ]; then
  die "$PREFIX exists, is not empty and was not made by this script" "Refusing to replace it; pass another --prefix or remove it."
fi

ARCH=$(dpkg --print-architecture)
case "$ARCH" in
  amd64) TRIPLET=x86_64-linux-gnu; LOADER=ld-linux-x86-64.so.2 ;;
  arm64) TRIPLET=aarch64-linux-gnu; LOADER=ld-linux-aarch64.so.1 ;;
  *) die "unsupported architecture: $ARCH" "Install criu >= $MIN_MAJOR.$MIN_MINOR by other means and set CKPT_CRIU to its path." ;;
esac

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
log "fetching criu from $MIRROR $SUITE/main ($ARCH) into $PREFIX"

WORK=$(mktemp -d "$PREFIX.tmp.XXXXXX")
cleanup() { rm -rf "$WORK"; [ -z "${OLD:-}" ] || rm -rf "$OLD"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
APTDIR=$WORK/apt
ROOT=$WORK/root
LOG=$WORK/apt.log
mkdir -p "$APTDIR"/lists/partial "$APTDIR"/cache/archives/partial "$APTDIR"/etc/sources.list.d \
  "$APTDIR"/etc/preferences.d "$APTDIR"/etc/apt.conf.d "$APTDIR"/debs "$ROOT"
: > "$APTDIR/etc/apt.conf"
: > "$APTDIR/etc/preferences"
SIGNED=
[ -r /usr/share/keyrings/debian-archive-keyring.gpg ] && SIGNED="[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
printf 'deb %s%s %s main\n' "$SIGNED" "$MIRROR" "$SUITE" > "$APTDIR/etc/sources.list"

# A private configuration read via APT_CONFIG, which also points apt away from
# /etc/apt/apt.conf{,.d} (no hooks, pins or extra index targets of the machine
# apply); only the machine's network-related Acquire settings (proxies...) are kept.
{
  apt-config dump 2>/dev/null |
    grep -E '^Acquire::(http|https|ftp|socks|Retries|ForceIPv4|ForceIPv6|Check-Valid-Until|Check-Date|Max-ValidTime)' || true
  cat <<EOF
Dir::Etc::main "$APTDIR/etc/apt.conf";
Dir::Etc::parts "$APTDIR/etc/apt.conf.d";
Dir::Etc::sourcelist "$APTDIR/etc/sources.list";
Dir::Etc::sourceparts "$APTDIR/etc/sources.list.d";
Dir::Etc::preferences "$APTDIR/etc/preferences";
Dir::Etc::preferencesparts "$APTDIR/etc/preferences.d";
Dir::State::Lists "$APTDIR/lists";
Dir::State::status "/dev/null";
Dir::State::extended_states "$APTDIR/extended_states";
Dir::Cache "$APTDIR/cache";
Dir::Cache::archives "$APTDIR/cache/archives";
Dir::Cache::pkgcache "$APTDIR/cache/pkgcache.bin";
Dir::Cache::srcpkgcache "$APTDIR/cache/srcpkgcache.bin";
APT::Architecture "$ARCH";
APT::Architectures { "$ARCH"; };
APT::Sandbox::User "$(id -un)";
Acquire::Languages "none";
Acquire::IndexTargets::deb::DEP-11::DefaultEnabled "false";
EOF
} > "$APTDIR/apt.conf"
export APT_CONFIG=$APTDIR/apt.conf

run_logged() {  # run a command, output to stderr (or to the log with --quiet)
  if [ "$QUIET" = 1 ]; then "$@" >>"$LOG" 2>&1; else "$@" >&2; fi
}
apt_fail() {
  [ "$QUIET" = 1 ] && [ -s "$LOG" ] && tail -20 "$LOG" | sed 's/^/install-criu: | /' >&2
  die "$1" "${@:2}"
}

log "apt-get update (private lists, $SUITE)"
run_logged timeout 300 apt-get -q update ||
  apt_fail "apt-get update of $MIRROR $SUITE failed" \
    "Check network access to $MIRROR (or set CKPT_DEBIAN_MIRROR)." \
    "On NO_PUBKEY errors: apt-get install debian-archive-keyring (needs the trixie keys)."

PKGS=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
         --no-breaks --no-replaces --no-enhances criu 2>>"$LOG" | grep -v -e '^ ' -e '^<' | sort -u) ||
  apt_fail "apt-cache depends criu failed (is criu in $SUITE/main?)"
[ -n "$PKGS" ] || apt_fail "apt-cache found no packages for criu in $SUITE"
# shellcheck disable=SC2086
log "downloading $(printf '%s\n' $PKGS | wc -l) packages: $(printf '%s ' $PKGS)"
# shellcheck disable=SC2086
(cd "$APTDIR/debs" && run_logged timeout 600 apt-get -q download $PKGS) ||
  apt_fail "apt-get download failed" "Check network access to $MIRROR and rerun."

log "unpacking into $ROOT"
for deb in "$APTDIR"/debs/*.deb; do
  dpkg-deb -x "$deb" "$ROOT" || die "dpkg-deb -x $deb failed" "Check free disk space in $(dirname "$PREFIX") and rerun."
done
[ -x "$ROOT/usr/sbin/criu" ] || die "criu binary missing after unpacking (expected usr/sbin/criu)"
LIBDIR=usr/lib/$TRIPLET
[ -e "$ROOT/$LIBDIR/$LOADER" ] || die "dynamic loader missing after unpacking (expected $LIBDIR/$LOADER)"

mkdir -p "$ROOT/bin"
cat > "$ROOT/bin/criu" <<EOF
#!/bin/sh
# Generated by scripts/install-criu.sh: Debian $SUITE criu run with its own
# glibc and libraries (no LD_LIBRARY_PATH, so restored processes inherit nothing).
d=\$(dirname "\$(readlink -f "\$0")")/..
d=\$(cd "\$d" && pwd) || exit 127
exec "\$d/$LIBDIR/$LOADER" --library-path "\$d/$LIBDIR:\$d/lib/$TRIPLET" "\$d/usr/sbin/criu" "\$@"
EOF
chmod 755 "$ROOT/bin/criu"
{ echo "criu from $MIRROR $SUITE/main ($ARCH), installed $(date -u +%FT%TZ)"; printf '%s\n' $PKGS; } > "$ROOT/$MARKER"

log "verifying the new install"
criu_ok "$ROOT/bin/criu" || die "the installed criu does not work: $CRIU_FAIL" \
  "Run '$ROOT/bin/criu check -v4' as root to see why; kernel $(uname -r)." \
  "criu needs root (or CAP_CHECKPOINT_RESTORE+CAP_SYS_ADMIN) and a kernel with CONFIG_CHECKPOINT_RESTORE."

# Swap into place: the prefix is either the old one, absent, or the new verified one.
rm -rf "$APTDIR"
OLD=
if [ -e "$PREFIX" ]; then
  OLD="$WORK/old"
  mv "$PREFIX" "$OLD"
fi
mv "$ROOT" "$PREFIX"

criu_ok "$PREFIX/bin/criu" || die "criu stopped working after moving it to $PREFIX: $CRIU_FAIL" \
  "Rerun with --force; if it persists run '$PREFIX/bin/criu check -v4' as root."
log "criu $CRIU_VERSION installed: $PREFIX/bin/criu ($(du -sh "$PREFIX" | cut -f1))"
printf '%s\n' "$PREFIX/bin/criu"
