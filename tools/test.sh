#!/usr/bin/env bash
# `make test`: lint, type checks and the main suite in .venv and, beside them, the runs under
# older releases (tools/compat.sh). Their side environments are built while pip builds .venv;
# their tests take the other core while the main suite runs, and both cores once it is done.
# The main suite's output comes first, then the compat sets'; the status is non-zero when
# anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
MAKE=${MAKE:-make}
mkdir -p .venv-compat
rm -f .venv-compat/.main-pid

# in a process group of its own (setsid), so that an early exit stops all of it
# (and that gives up if this script is gone before the main suite starts)
TEST_PID=$$ setsid bash -c '
  bash tools/compat.sh --setup > .venv-compat/setup.out 2>&1
  until [[ -s .venv-compat/.main-pid ]]; do
    kill -0 "$TEST_PID" 2>/dev/null || exit 1
    sleep 1
  done
  COMPAT_BESIDE=$(cat .venv-compat/.main-pid) exec bash tools/compat.sh
' > .venv-compat/compat.out 2>&1 &
compat=$!
trap 'kill -- -$compat 2>/dev/null; kill $compat 2>/dev/null' EXIT

$MAKE venv check services || exit
.venv/bin/python -m pytest -q &
main=$!
echo "$main" > .venv-compat/.main-pid
wait "$main"
main_status=$?
echo "== main suite: exit $main_status; waiting for the compat sets (tools/compat.sh)"
wait "$compat"
compat_status=$?
trap - EXIT
cat .venv-compat/compat.out
if (( main_status != 0 )); then
  echo "== the main suite FAILED (exit $main_status)" >&2
fi
(( main_status == 0 && compat_status == 0 ))
