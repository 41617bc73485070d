#!/usr/bin/env bash
# Build the native helpers into dist/native/. Called from `npm run build`.
# Skips (exit 0, one line on stderr) when there is no C compiler; rebuilds only when the
# source is newer than the binary (or this script is). CC and CFLAGS may be overridden.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$root/adapters/tracking/proc-connector.c"
out_dir="$root/dist/native"
out="$out_dir/proc-connector"
cc="${CC:-cc}"
cflags="${CFLAGS:--O2 -Wall -Wextra}"

if [ "$(uname -s)" != Linux ]; then
  echo "build-native: not Linux, skipping proc-connector (process tracking needs Linux)" >&2
  exit 0
fi
if ! command -v "$cc" >/dev/null 2>&1; then
  echo "build-native: no C compiler ('$cc'), skipping proc-connector (install gcc or set CC)" >&2
  exit 0
fi
if [ -x "$out" ] && [ "$out" -nt "$src" ] && [ "$out" -nt "${BASH_SOURCE[0]}" ]; then
  exit 0
fi

mkdir -p "$out_dir"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
# shellcheck disable=SC2086 # CFLAGS is a list of words
"$cc" $cflags -o "$tmp" "$src"
mv -f "$tmp" "$out"
trap - EXIT
echo "build-native: built $out" >&2
