#!/bin/sh
# Builds the Debian package from the committed tree (dpkg-buildpackage -us -uc -b), installs
# it, and checks what an operator relies on: the programs run, every unit passes
# `systemd-analyze verify` and scores at most 2.5 in `systemd-analyze security`, the user and
# the man pages exist. Then purges it again (unless --keep). The .deb is left in $OUT (/tmp/fusechat-deb).
set -eu
cd "$(dirname "$0")/.."
keep=0
[ "${1:-}" = "--keep" ] && keep=1
out=${OUT:-/tmp/fusechat-deb}
ver=$(sed -n "s/^ *version : '\([^']*\)'.*/\1/p" meson.build | head -1)
rm -rf "$out" && mkdir -p "$out/fusechat-$ver"
# Only tracked files (as a clean clone has them), plus uncommitted edits of tracked files.
git ls-files -z | xargs -0 tar cf - | tar xf - -C "$out/fusechat-$ver"
(cd "$out/fusechat-$ver" && dpkg-buildpackage -us -uc -b > "$out/build.log" 2>&1) || {
  tail -40 "$out/build.log"; echo "package: dpkg-buildpackage failed (log: $out/build.log)" >&2; exit 1; }
deb=$(ls "$out"/fusechat_*.deb)
echo "package: built $deb ($(du -k "$deb" | cut -f1) KiB)"
export DEBIAN_FRONTEND=noninteractive
dpkg -i "$deb" > "$out/install.log" 2>&1 || { cat "$out/install.log"; apt-get -f install -y -qq >/dev/null; }
dpkg-query -W -f='${Status}\n' fusechat | grep -q "install ok installed" || { echo "package: not installed" >&2; exit 1; }
fail=0
for p in fusectl fusechat-coordinator fusechat-logits fusechat-align fusechat-train fusechat-merge fusechat-eval; do
  "/usr/bin/$p" --help > /dev/null || { echo "package: $p --help failed" >&2; fail=1; }
done
[ ! -e /usr/bin/fusechat-worker-test ] || { echo "package: the test daemon is installed" >&2; fail=1; }
getent passwd fusechat > /dev/null || { echo "package: no fusechat user" >&2; fail=1; }
man -w fusectl > /dev/null 2>&1 || [ -f /usr/share/man/man1/fusectl.1.gz ] || { echo "package: no man page" >&2; fail=1; }
for u in /lib/systemd/system/fusechat-*.service; do
  name=$(basename "$u")
  check=$u
  case $name in *@.service) check=/tmp/fusechat-logits@check.service; cp "$u" "$check" ;; esac
  if ! systemd-analyze verify "$check" > "$out/verify.log" 2>&1; then
    cat "$out/verify.log"; echo "package: $name fails systemd-analyze verify" >&2; fail=1
  fi
  score=$(systemd-analyze security --offline=true "$check" 2>/dev/null | sed -n 's/.*exposure level for .*: \([0-9.]*\) .*/\1/p')
  echo "package: $name security exposure $score"
  awk -v s="$score" 'BEGIN { exit !(s != "" && s <= 2.5) }' || { echo "package: $name scores $score (> 2.5)" >&2; fail=1; }
done
rm -f /tmp/fusechat-logits@check.service
if [ $keep = 0 ]; then dpkg --purge fusechat > /dev/null; fi
[ $fail = 0 ] && echo "package: ok"
exit $fail
