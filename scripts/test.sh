#!/usr/bin/env bash
# The checks `make test` runs, each timed, with a summary at the end. Every
# step runs even if an earlier one failed, so one run shows everything wrong.
set -uo pipefail
cd "$(dirname "$0")/.."

: "${OHM_BIN:=$PWD/bin/ohm}"
: "${TEST_TIMEOUT:=25m}"
: "${STATICCHECK:=honnef.co/go/tools/cmd/staticcheck@v0.8.2}"
export OHM_BIN

declare -a results
failed=0
start_all=$SECONDS

step() {
	local name=$1; shift
	echo
	echo "==> $name"
	local t0=$SECONDS
	if "$@"; then
		results+=("ok    $name ($((SECONDS - t0))s)")
	else
		results+=("FAIL  $name ($((SECONDS - t0))s)")
		failed=$((failed + 1))
	fi
}

gofmt_check() {
	local out
	out=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.git/*'))
	if [ -n "$out" ]; then
		echo "gofmt: these files need formatting:"
		echo "$out"
		return 1
	fi
}

step "gofmt" gofmt_check
step "go vet" go vet ./...
step "staticcheck" go run "$STATICCHECK" ./...
step "go test" go test -count=1 -timeout "$TEST_TIMEOUT" ./...

echo
echo "==> summary ($((SECONDS - start_all))s)"
printf '%s\n' "${results[@]}"
passed=$(( ${#results[@]} - failed ))
echo "checks: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
