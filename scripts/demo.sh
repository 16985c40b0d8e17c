#!/usr/bin/env bash
# The acceptance script (the one tests/acceptance runs), as written (as root, nothing started
# by hand), then the storage proof: a 100 GiB file in /home/ohm of a computer
# whose root disk is 10 GiB. Each command is printed before it runs.
set -euo pipefail
cd "$(dirname "$0")/.."

# `ohm` is the binary just built.
bindir=$(mktemp -d)
trap 'rm -rf "$bindir"' EXIT
ln -s "${OHM_BIN:-$PWD/bin/ohm}" "$bindir/ohm"
export PATH="$bindir:$PATH"

PROOF_GIB=${PROOF_GIB:-100}

show() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { show "$@"; "$@"; }

echo "== the acceptance script"
show ohm computer create --template coding-agent --disk-size-mb 10240
name=$(ohm computer create --template coding-agent --disk-size-mb 10240)
echo "$name"
run ohm computer run "$name" "df -h / /home/ohm"
run ohm computer run "$name" "echo saved > /home/ohm/state.txt"
run ohm computer stop "$name"
run ohm computer start "$name"
run ohm computer run "$name" "cat /home/ohm/state.txt"
show ohm computer run "$name" "python3 -c 'import sys; sys.exit(3)'" "; echo \$?"
set +e
ohm computer run "$name" "python3 -c 'import sys; sys.exit(3)'"; code=$?
set -e
echo "$code"
run ohm computer delete "$name"
[ "$code" = 3 ] || { echo "demo: the exit code came back as $code, not 3" >&2; exit 1; }

echo
echo "== the storage proof: a ${PROOF_GIB} GiB file on a computer with a 10 GiB root disk"
show ohm computer create --template coding-agent --disk-size-mb 10240
name=$(ohm computer create --template coding-agent --disk-size-mb 10240)
echo "$name"
trap 'ohm computer delete "$name" >/dev/null 2>&1 || true; rm -rf "$bindir"' EXIT
fill=$(cat <<'PY'
import hashlib, os, sys, time
gib, path = int(sys.argv[1]), sys.argv[2]
blocks = gib * 1024
start = time.time()
with open(path, "wb") as f:
    for i in range(blocks):
        f.write(hashlib.sha256(str(i).encode()).digest() * 32768)  # 1 MiB: a SHA-256 digest repeated
        if i % 10240 == 10239:
            print("  %3d GiB written, %.0f MiB/s" % ((i + 1) // 1024, (i + 1) / (time.time() - start)), flush=True)
    f.flush()
    os.fsync(f.fileno())
print("wrote %d GiB in 1 MiB blocks and fsynced it in %.0f s" % (gib, time.time() - start))
PY
)
run ohm computer run "$name" "df -h /"
run ohm computer run "$name" "python3 -c '$fill' $PROOF_GIB /home/ohm/big"
run ohm computer run "$name" "du -h /home/ohm/big"
run ohm computer run "$name" "ls -l /home/ohm/big"
run ohm computer run "$name" "df -h / /home/ohm"
run ohm computer delete "$name"
trap 'rm -rf "$bindir"' EXIT
echo
echo "demo: done"
