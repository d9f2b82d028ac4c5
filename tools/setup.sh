#!/bin/sh
# Installs everything fusechat needs to build, test and run on a fresh Debian 12 machine.
# Idempotent: apt-get skips what is already there. Run as root (or with sudo available).
# FUSECHAT_SETUP_SLURM=1 also installs Slurm and munge for tests/slurm/ (a one-node Slurm started
# without systemd) and deploy/slurm/.
# FUSECHAT_SETUP_REF=1 also installs the PyTorch reference environment used by tests/ref/ and bench/.
set -eu
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
PKGS="build-essential meson ninja-build pkgconf \
  libzmq3-dev libmsgpack-dev libuv1-dev libsqlite3-dev libcmocka-dev \
  libopenblas-dev libpcre2-dev libjansson-dev libyaml-dev libsystemd-dev libicu-dev \
  libopenmpi-dev openmpi-bin \
  gnuplot-nox dpkg-dev debhelper clang"
if [ "${FUSECHAT_SETUP_REF:-0}" = "1" ]; then
  PKGS="$PKGS python3 python3-numpy python3-torch"
fi
if [ "${FUSECHAT_SETUP_SLURM:-0}" = "1" ]; then
  PKGS="$PKGS slurmctld slurmd slurm-client munge bc"
fi
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -qq --no-install-recommends $missing
fi
echo "setup: all dependencies present"
