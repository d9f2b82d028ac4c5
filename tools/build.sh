#!/bin/sh
# Configures (once) and builds fusechat in build/ (optimised, -Wall -Wextra).
set -eu
cd "$(dirname "$0")/.."
[ -d build ] || meson setup build
ninja -C build
