#!/bin/sh
# Writes a man page from a program's --help text: mkman.sh NAME SECTION PROGRAM OUTPUT.
# The usage text is the manual (one definition); this only adds the man(7) framing.
set -eu
name=$1 section=$2 prog=$3 out=$4
help=$("$prog" --help 2>&1) || true
[ -n "$help" ] || { echo "mkman: $prog --help printed nothing" >&2; exit 1; }
# NAME line: the first sentence of the first paragraph after the usage line.
summary=$(printf '%s\n' "$help" | awk '/^Usage:/ {next} NF {p = p (p ? " " : "") $0; next} p {exit} END {print p}' \
  | sed -e 's/\([.:]\) .*/\1/' -e 's/[.:]$//' -e 's/\\/\\\\/g')
{
  printf '.TH %s %s "" "fusechat %s" "fusechat manual"\n' "$(echo "$name" | tr a-z A-Z)" "$section" "${FC_VERSION:-}"
  printf '.SH NAME\n%s \\- %s\n' "$name" "$summary"
  printf '.SH DESCRIPTION\n.nf\n'
  # Escape backslashes, and lines starting with . or ' that roff would read as requests.
  printf '%s\n' "$help" | sed -e 's/\\/\\e/g' -e "s/^\\([.']\\)/\\\\\\&\\1/"
  printf '.fi\n.SH SEE ALSO\nfusectl(1), and the README in /usr/share/doc/fusechat.\n'
} > "$out"
