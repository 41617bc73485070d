#!/usr/bin/env bash
# Build the native helpers into dist/native/. Called from `npm run build`.
# Skips (exit 0, one line on stderr) when there is no C compiler; rebuilds only when the
# source is newer than the binary (or this script is). CC and CFLAGS may be overridden.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out_dir="$root/dist/native"
cc="${CC:-cc}"
cflags="${CFLAGS:--O2 -Wall -Wextra}"
# source → binary name
helpers=(
  "adapters/tracking/proc-connector.c proc-connector"
  "adapters/agent/unit-init.c ckpt-unit-init"
  "adapters/checkpointers/criu-probe-target.c ckpt-criu-probe-target"
  "adapters/checkpointers/criu-swrk.c ckpt-criu-swrk"
  "adapters/agent/peer-credentials.c ckpt-peer-credentials"
  "adapters/agent/freeze-guard.c ckpt-freeze-guard"
)

if [ "$(uname -s)" != Linux ]; then
  echo "build-native: not Linux, skipping the native helpers (process tracking needs Linux)" >&2
  exit 0
fi
if ! command -v "$cc" >/dev/null 2>&1; then
  echo "build-native: no C compiler ('$cc'), skipping the native helpers (install gcc or set CC)" >&2
  exit 0
fi

mkdir -p "$out_dir"
for helper in "${helpers[@]}"; do
  read -r src name <<<"$helper"
  src="$root/$src"
  out="$out_dir/$name"
  if [ -x "$out" ] && [ "$out" -nt "$src" ] && [ "$out" -nt "${BASH_SOURCE[0]}" ]; then
    continue
  fi
  tmp="$out.tmp.$$"
  trap 'rm -f "$tmp"' EXIT
  # shellcheck disable=SC2086 # CFLAGS is a list of words
  "$cc" $cflags -o "$tmp" "$src"
  mv -f "$tmp" "$out"
  trap - EXIT
  echo "build-native: built $out" >&2
done
