#!/bin/sh
# Builds fusechat and runs the whole test suite. With --sanitize (what CI uses) the build is
# instrumented with AddressSanitizer and UndefinedBehaviorSanitizer, in build-asan/.
set -eu
cd "$(dirname "$0")/.."
dir=build
opts=""
if [ "${1:-}" = "--sanitize" ]; then
  dir=build-asan
  opts="-Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debugoptimized"
fi
if [ ! -d "$dir" ]; then
  # shellcheck disable=SC2086
  meson setup "$dir" $opts
fi
ninja -C "$dir"
meson test -C "$dir" --print-errorlogs --num-processes 2
