#!/usr/bin/env bash
# `make test`: lint, type checks and the main suite in .venv and, beside them, the runs under
# older releases (tools/compat.sh). Their side environments are built while pip builds .venv;
# their tests take the other core while the main suite runs, and both cores once it is done.
# The main suite's output comes first, then the compat sets'; the status is non-zero when
# anything failed. The main suite runs in the foreground, so that Ctrl-C stops it.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p .venv-compat
running=.venv-compat/.main-running  # exists while the main suite runs
rm -f "$running" .venv-compat/.main-started

# in a process group of its own (setsid), so that this script's exit stops all of it, and
# giving up if this script is gone before the main suite starts
TEST_PID=$$ setsid bash -c '
  bash tools/compat.sh --setup > .venv-compat/setup.out 2>&1  # (a set it fails to build is
  # built again, and its failure reported, by the run below)
  until [[ -e .venv-compat/.main-started ]]; do
    kill -0 "$TEST_PID" 2>/dev/null || exit 1
    sleep 1
  done
  COMPAT_BESIDE=.venv-compat/.main-running exec bash tools/compat.sh
' > .venv-compat/compat.out 2>&1 &
compat=$!
trap 'kill -- -$compat 2>/dev/null; kill $compat 2>/dev/null' EXIT
trap 'exit 130' INT TERM  # (Ctrl-C: once the main suite has stopped, stop the rest too)

${MAKE:-make} venv check services || exit
touch "$running" .venv-compat/.main-started
.venv/bin/python -m pytest -q
main_status=$?
rm -f "$running"
echo "== main suite: exit $main_status; waiting for the compat sets (tools/compat.sh)"
wait "$compat"
compat_status=$?
trap - EXIT
cat .venv-compat/compat.out
if (( main_status != 0 )); then
  echo "== the main suite FAILED (exit $main_status)" >&2
fi
(( main_status == 0 && compat_status == 0 ))
