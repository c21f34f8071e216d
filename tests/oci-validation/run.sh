#!/usr/bin/env bash
# Run the OCI runtime validation programs (opencontainers/runtime-tools
# validation/ and cmd/runtimetest) against runc and strata, side by side.
#
# Usage (as root):
#   RT_SRC=/path/to/gopath tests/oci-validation/run.sh [STRATA_BIN]
#
# RT_SRC is a GOPATH-style tree holding
#   src/github.com/opencontainers/runtime-tools/validation/<test>/<test>.go
#   src/github.com/opencontainers/runtime-tools/validation/util/*.go
#   src/github.com/opencontainers/runtime-tools/cmd/runtimetest/...
#   src/github.com/mndrix/tap-go/
# Debian's golang-github-opencontainers-runtime-tools-dev ships the
# libraries (generate, specerror, validate) but not validation/ or
# runtimetest, so those come from a runtime-tools checkout (see README.md).
# Everything else is installed from Debian here.
#
# Env: TESTS="create kill ..." to run a subset; CACHE (default
# /var/cache/strata-oci-validation) for the built binaries and logs.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
CACHE=${CACHE:-/var/cache/strata-oci-validation}
RT_SRC=${RT_SRC:-$CACHE/gopath}
STRATA=${1:-${STRATA:-$repo/target/debug/strata}}
RUNC=${RUNC:-$(command -v runc || true)}

[ "$(id -u)" = 0 ] || { echo "run.sh: run as root (containers need namespaces and cgroups)" >&2; exit 2; }
rtdir=$RT_SRC/src/github.com/opencontainers/runtime-tools
[ -d "$rtdir/validation/util" ] && [ -d "$rtdir/cmd/runtimetest" ] || {
	echo "run.sh: no validation sources under $rtdir; put a runtime-tools checkout's validation/ and cmd/runtimetest/ there (see tests/oci-validation/README.md)" >&2
	exit 2
}
[ -x "$STRATA" ] || { echo "run.sh: strata binary $STRATA missing: cargo build -p launcher first" >&2; exit 2; }

need=()
command -v go >/dev/null || need+=(golang-go)
[ -d /usr/share/gocode/src/github.com/opencontainers/runtime-tools/generate ] || need+=(golang-github-opencontainers-runtime-tools-dev)
[ -d /usr/share/gocode/src/github.com/google/uuid ] || need+=(golang-github-google-uuid-dev)
[ -d /usr/share/gocode/src/golang.org/x/sys ] || need+=(golang-golang-x-sys-dev)
[ -d /usr/share/gocode/src/github.com/hashicorp/go-multierror ] || need+=(golang-github-hashicorp-go-multierror-dev)
[ -d /usr/share/gocode/src/github.com/syndtr/gocapability ] || need+=(golang-github-syndtr-gocapability-dev)
[ -d /usr/share/gocode/src/github.com/mrunalp/fileutils ] || need+=(golang-github-mrunalp-fileutils-dev)
[ -x /bin/busybox ] || need+=(busybox-static)
[ -n "$RUNC" ] || need+=(runc)
if [ ${#need[@]} -gt 0 ]; then
	apt-get install -y "${need[@]}" >/dev/null
	RUNC=${RUNC:-$(command -v runc)}
fi

bin=$CACHE/bin
mkdir -p "$bin"
export GOPATH=$RT_SRC:/usr/share/gocode GO111MODULE=off GOFLAGS= CGO_ENABLED=0 GOCACHE=$CACHE/gocache

# The rootfs every test unpacks: static busybox and its applets.
if [ ! -f "$bin/rootfs-amd64.tar.gz" ]; then
	rf=$(mktemp -d)
	mkdir -p "$rf"/{bin,dev,proc,sys,tmp,etc,root}; chmod 755 "$rf"
	cp /bin/busybox "$rf/bin/busybox"
	for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$rf/bin/$a"; done
	echo "root:x:0:0:root:/root:/bin/sh" >"$rf/etc/passwd"
	echo "root:x:0:" >"$rf/etc/group"
	tar -C "$rf" -czf "$bin/rootfs-amd64.tar.gz" .
	rm -rf "$rf"
fi

go build -o "$bin/runtimetest" github.com/opencontainers/runtime-tools/cmd/runtimetest
all=()
for d in "$rtdir"/validation/*/; do
	t=$(basename "$d")
	[ "$t" = util ] && continue
	all+=("$t")
done
read -r -a tests <<<"${TESTS:-${all[*]}}"
for t in "${tests[@]}"; do
	go build -o "$bin/$t.t" "github.com/opencontainers/runtime-tools/validation/$t"
done

# strata's runc-compatible CLI is `strata oci ...`; the suite wants one
# executable taking runc's subcommands.
wrap=$bin/strata-oci
printf '#!/bin/sh\nexec %q oci "$@"\n' "$STRATA" >"$wrap"
chmod +x "$wrap"

logs=$CACHE/logs
mkdir -p "$logs"
# run one runtime over every test; writes logs/<rt>/<test>.tap and .rc
run_all() {
	local name=$1 rt=$2
	mkdir -p "$logs/$name"
	for t in "${tests[@]}"; do
		(cd "$bin" && RUNTIME=$rt timeout 300 "./$t.t" >"$logs/$name/$t.tap" 2>"$logs/$name/$t.err"; echo $? >"$logs/$name/$t.rc") || true
	done
}
run_all runc "$RUNC"
run_all strata "$wrap"

# Per TAP point: "test: description" with ok/not ok for each runtime. A
# program that printed no point (it died, or hid its error in YAML) counts
# as one point named "(program)" that passes only with exit code 0 and no
# "error" in its output.
points() {
	local f=$1 rc
	rc=$(cat "${f%.tap}.rc")
	if grep -qE '^(not )?ok ' "$f"; then
		grep -E '^(not )?ok ' "$f" | sed -E 's/^(not ok|ok) [0-9]+ (- )?(.*)$/\1\t\3/'
		if [ "$rc" != 0 ]; then printf 'not ok\t(exit %s)\n' "$rc"; fi
	elif [ "$rc" = 0 ] && ! grep -q '"error"' "$f"; then
		printf 'ok\t(program)\n'
	else
		printf 'not ok\t(program)\n'
	fi
}
table=$CACHE/table.tsv
: >"$table"
for t in "${tests[@]}"; do
	awk -F'\t' -v t="$t" '
		{ k = $2 " #" (++n[FILENAME, $2]); if (!(k in seen)) { seen[k] = 1; ord[++m] = k } }
		FNR == NR { r[k] = $1; next }
		{ s[k] = $1 }
		END { for (i = 1; i <= m; i++) { k = ord[i]; sub(/ #1$/, "", k); print t "\t" k "\t" (ord[i] in r ? r[ord[i]] : "-") "\t" (ord[i] in s ? s[ord[i]] : "-") } }
	' <(points "$logs/runc/$t.tap") <(points "$logs/strata/$t.tap") >>"$table"
done
printf '%-28s %-7s %-7s %s\n' TEST RUNC STRATA POINT
awk -F'\t' '{printf "%-28s %-7s %-7s %s\n", $1, $3, $4, $2}' "$table"
awk -F'\t' '{r+=($3=="ok"); s+=($4=="ok"); b+=($3=="ok"&&$4!="ok"); n++}
	END {printf "\nrunc: %d passed, %d failed\nstrata: %d passed, %d failed\nrunc passes, strata fails: %d\n", r, n-r, s, n-s, b}' "$table"
