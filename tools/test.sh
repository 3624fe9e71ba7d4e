#!/usr/bin/env bash
# `make test` after lint and type checks: the main suite in .venv and, beside it, the runs under
# older releases (tools/compat.sh), which take the other core while the main suite runs and both
# once it is done. The main suite's output comes first, then the compat sets'; the status is
# non-zero when either failed.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p .venv-compat
out=.venv-compat/compat.out
trap 'kill $(jobs -p) 2>/dev/null' EXIT

.venv/bin/python -m pytest -q &
main=$!
COMPAT_BESIDE=$main bash tools/compat.sh > "$out" 2>&1 &
compat=$!

wait "$main"
main_status=$?
echo "== main suite: exit $main_status; waiting for the compat sets (tools/compat.sh)"
wait "$compat"
compat_status=$?
cat "$out"
trap - EXIT
if (( main_status != 0 )); then
  echo "== the main suite FAILED (exit $main_status)" >&2
fi
(( main_status == 0 && compat_status == 0 ))
