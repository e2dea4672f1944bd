#!/usr/bin/env bash
# test_man.sh - the man pages render without warnings and document every
# option that `--help` lists; `make install PREFIX=DIR` installs the programs
# and the pages.
#
#   tests/test_man.sh SMTPSINK SMTPBENCH SOURCE_DIR BUILD_DIR
#
# Options are taken from --help at run time, so an option added later fails
# this test until its man page documents it.  Renders with man-db's `man -l`
# (as a user would), else groff, else mandoc; exits 77 (skipped) when none is
# installed (SINK_MAN_RENDERER=man|groff|mandoc picks one).  Prints
# "N passed, N failed".
set -euo pipefail

if [ $# -ne 4 ]; then
	echo "usage: $0 SMTPSINK SMTPBENCH SOURCE_DIR BUILD_DIR" >&2
	exit 2
fi
smtpsink=$1 smtpbench=$2 src=$3 build=$4
export LC_ALL=C.UTF-8
passed=0 failed=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

ok() { passed=$((passed + 1)); }
fail() {
	failed=$((failed + 1))
	echo "FAIL: $*"
}

if [ -n "${SINK_MAN_RENDERER:-}" ]; then # man, groff or mandoc, to test the others
	renderer=$SINK_MAN_RENDERER
elif command -v man >/dev/null && man --version 2>/dev/null | grep -q '^man '; then
	renderer="man"
elif command -v groff >/dev/null; then
	renderer=groff
elif command -v mandoc >/dev/null; then
	renderer=mandoc
else
	echo "SKIP: no man page renderer (install man-db, groff-base or mandoc)"
	exit 77
fi
echo "rendering with $renderer"

# render PAGE OUT: plain text, wide lines, no overstrike, ASCII hyphens;
# roff warnings (man/groff) go to OUT.warn.
render() {
	local page=$1 out=$2
	case $renderer in
	man) MANWIDTH=200 MAN_KEEP_FORMATTING='' man --warnings -E UTF-8 -l "$page" \
		>"$out.raw" 2>"$out.warn" ;;
	groff) groff -man -ww -Tutf8 -rLL=200n -P-cbou "$page" >"$out.raw" 2>"$out.warn" ;;
	mandoc) mandoc -Tutf8 -Owidth=200 "$page" >"$out.raw" 2>"$out.warn" ;;
	esac
	# strip backspace overstrike; U+2010 hyphen, U+2011, U+2212 minus -> '-'
	sed -e 's/.\x08//g' -e 's/\xe2\x80\x90/-/g' -e 's/\xe2\x80\x91/-/g' \
		-e 's/\xe2\x88\x92/-/g' "$out.raw" >"$out"
}

# section FILE NAME: the lines of one top-level section of a rendered page.
section() {
	awk -v name="$2" '/^[A-Z][A-Z ]*$/ { on = ($0 == name); next } on' "$1"
}

# has TEXTFILE STRING: STRING occurs as a whole token (not inside a longer
# option name or word).
has() {
	grep -qE -- "(^|[^A-Za-z0-9_-])$(printf '%s' "$2" | sed 's/[][\.*^$+?(){}|/]/\\&/g')([^A-Za-z0-9_-]|\$)" "$1"
}

check_page() {
	local prog=$1 bin=$2 page=$src/docs/man/$1.1 txt=$tmp/$1.txt
	local help=$tmp/$1.help opts=$tmp/$1.opts

	if [ ! -f "$page" ]; then
		fail "$page missing"
		return
	fi
	render "$page" "$txt"
	if [ -s "$txt.warn" ]; then
		fail "$prog.1: renderer warnings:"
		sed 's/^/    /' "$txt.warn"
	else ok; fi
	if grep -q "^NAME" "$txt" && grep -qE "^ +$prog - " "$txt"; then ok; else
		fail "$prog.1: no NAME line '$prog - ...'"
	fi
	for s in NAME SYNOPSIS DESCRIPTION OPTIONS "EXIT STATUS" ENVIRONMENT EXAMPLES "SEE ALSO"; do
		if grep -qx "$s" "$txt"; then ok; else fail "$prog.1: no $s section"; fi
	done
	section "$txt" OPTIONS >"$opts"

	"$bin" --help >"$help"
	local longs subs
	mapfile -t longs < <(grep -oE -- '--[a-z][a-z0-9-]+' "$help" | sort -u)
	mapfile -t subs < <(grep -oE "^ *(Usage: +)?$prog [a-z]+" "$help" | awk '{print $NF}' | sort -u)
	# every long option, wherever --help mentions it
	local n=0
	for o in "${longs[@]}"; do
		n=$((n + 1))
		if has "$opts" "$o"; then ok; else fail "$prog.1: OPTIONS does not document $o"; fi
	done
	[ "$n" -gt 5 ] || fail "$prog --help: only $n options found; parsing broken?"
	# every short form next to its long one, as --help pairs them
	while read -r pair; do
		if grep -qF -- "$pair" "$opts"; then ok; else fail "$prog.1: OPTIONS lacks '$pair'"; fi
	done < <(grep -oE -- '-[A-Za-z], --[a-z][a-z0-9-]+' "$help" | sort -u)
	# subcommands (smtpsink check, smtpbench merge) in the SYNOPSIS
	for sub in "${subs[@]}"; do
		if section "$txt" SYNOPSIS | grep -qE "^ +$prog $sub( |$)"; then ok; else
			fail "$prog.1: SYNOPSIS lacks '$prog $sub'"
		fi
	done
	# every exit status --help names has its entry in EXIT STATUS
	local codes
	codes=$(awk '/^Exit status:/ { on = 1 } on && /^$/ { on = 0 } on' "$help" |
		grep -oE '(^|[ ,:])[0-9]( |,|$)' | tr -dc '0-9\n' | sort -u)
	[ -n "$codes" ] || fail "$prog --help: no 'Exit status:' found"
	for c in $codes; do
		if section "$txt" "EXIT STATUS" | grep -qE "^ +$c( |$)"; then ok; else
			fail "$prog.1: EXIT STATUS lacks $c"
		fi
	done
	# smtpsink: every option's SMTPSINK_* variable in ENVIRONMENT
	if [ "$prog" = smtpsink ]; then
		section "$txt" ENVIRONMENT >"$tmp/env"
		for o in "${longs[@]}"; do
			case $o in --help | --version) continue ;; esac
			v=SMTPSINK_$(printf '%s' "${o#--}" | tr 'a-z-' 'A-Z_')
			if has "$tmp/env" "$v" || grep -qE "(^|[^A-Z_])$v=" "$tmp/env"; then ok; else
				fail "$prog.1: ENVIRONMENT lacks $v"
			fi
		done
	fi
}

check_page smtpsink "$smtpsink"
check_page smtpbench "$smtpbench"

# make install PREFIX=DIR: the two programs and the two pages, nothing else.
if command -v make >/dev/null; then
	prefix=$tmp/prefix
	if env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL \
		make -s --no-print-directory -C "$src" install BUILD="$build" PREFIX="$prefix" \
		>"$tmp/install.log" 2>&1; then
		ok
		want=$(printf '%s\n' bin/smtpbench bin/smtpsink share/man/man1/smtpbench.1 \
			share/man/man1/smtpsink.1)
		got=$(cd "$prefix" && find . -type f | sed 's|^\./||' | sort)
		if [ "$got" = "$want" ]; then ok; else
			fail "make install: expected files:"$'\n'"$want"$'\n'"got:"$'\n'"$got"
		fi
		for p in smtpsink smtpbench; do
			if [ -x "$prefix/bin/$p" ] && "$prefix/bin/$p" --version | grep -q "^$p "; then ok; else
				fail "make install: $prefix/bin/$p does not run"
			fi
			if cmp -s "$prefix/share/man/man1/$p.1" "$src/docs/man/$p.1"; then ok; else
				fail "make install: $p.1 differs from docs/man/$p.1"
			fi
		done
	else
		fail "make install PREFIX=$prefix failed:"
		sed 's/^/    /' "$tmp/install.log"
	fi
else
	fail "make not found: cannot test make install"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
