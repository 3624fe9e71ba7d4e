#!/usr/bin/env bash
# Amber under older releases of numpy, scipy and scikit-learn than the development ones: for
# each release set below, a side environment (.venv-compat/<set>) runs this checkout
# (PYTHONPATH, with the C extensions `make venv` built) and checks that
#   1. the committed allowlist file of that release is what tools/make_allowlist.py --release
#      makes there (what its pickles name), and
#   2. the scikit-learn round trips pass there (save, load, mmap, compression, probe, verify),
#      every estimator of the release round-trips (from 1.6, whose test instance generator it
#      uses), and so do the hostile-file tests of the validators and of the pickle/joblib
#      readers.
# `make test` runs it; `make compat` alone. Add a release: a line below, then run
# `PYTHONPATH=$PWD .venv-compat/<set>/bin/python tools/make_allowlist.py --release`.
# A set with a third field runs under that Python (newer than the development one, with the
# numpy it gets there): its C extensions are built in place for it, the committed allowlists
# must cover what its models name (make_allowlist.py --covered), and the tests of the core run
# (the API, the artifact, golden files, the security suite, the probe); a machine without that
# Python skips the set, saying so.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
COMMON="joblib==1.6.0 xxhash blake3 zstandard lz4 orjson zlib-ng pytest==9.2.0 hypothesis==6.170.15"
# longest first (setup and tests: about 150, 115, 110, 85, 75 and 65 s on the 2-core reference
# machine), so that the two slots finish together
SETS=(
  "python-3.13-numpy-2.5.5|numpy==2.5.5 scipy==1.17.1 scikit-learn==1.9.1 pandas==3.1.1 pyarrow==26.0.1 sqlalchemy==2.1.9 fsspec==2026.9.0 cryptography==50.0.2 setuptools|3.13"
  "sklearn-1.7.2-numpy-2.2.6|numpy==2.2.6 scipy==1.15.3 scikit-learn==1.7.2 pandas==2.3.3 pyarrow==19.0.1"
  "sklearn-1.6.1-numpy-2.1.3|numpy==2.1.3 scipy==1.15.3 scikit-learn==1.6.1 pandas==2.2.3 pyarrow==17.0.0"
  "sklearn-1.8.0-numpy-2.3.5|numpy==2.3.5 scipy==1.16.3 scikit-learn==1.8.0 pandas==2.3.3 pyarrow==21.0.0"
  "sklearn-1.5.2-numpy-1.26.4|numpy==1.26.4 scipy==1.13.1 scikit-learn==1.5.2 pandas==2.2.3 pyarrow==17.0.0"
  "sklearn-1.4.2-numpy-1.26.4|numpy==1.26.4 scipy==1.12.0 scikit-learn==1.4.2 pandas==2.2.3 pyarrow==17.0.0"
)
CORE_TESTS="tests/test_api.py tests/test_artifact.py tests/test_golden.py tests/test_env.py
  tests/test_probe_frames.py tests/test_probe_precision.py tests/test_roundtrip_sklearn.py
  tests/test_all_estimators.py tests/security"

find_python() {  # $1: a version such as 3.13; prints the interpreter's path
  local p
  if p=$(command -v "python$1") && "$p" -c "" 2>/dev/null; then
    echo "$p"
    return
  fi
  for p in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$1".*/bin/"python$1"; do
    if [[ -x "$p" ]]; then
      echo "$p"
      return
    fi
  done
  return 1
}

setup() {  # $1: set name, $2: its packages, $3: its interpreter
  local venv=".venv-compat/$1" want="$2 $COMMON"
  if [[ -f "$venv/.installed" && "$(cat "$venv/.installed")" == "$want" ]]; then
    return
  fi
  rm -rf "$venv"
  # (each step checked here: a caller's `||` turns set -e off, and a half-built environment
  # must never be stamped installed)
  "$3" -m venv "$venv" || return 1
  # shellcheck disable=SC2086  # the package list is words
  "$venv/bin/python" -m pip install -q --disable-pip-version-check $want || return 1
  echo "$want" > "$venv/.installed"
}

check() {  # $1: set name, $2: its packages, $3: its Python's version (empty: the default)
  local python=".venv-compat/$1/bin/python"
  if [[ -n "$3" ]]; then
    local interpreter
    if ! interpreter=$(find_python "$3"); then
      echo "skipped: no Python $3 on this machine"
      return
    fi
    setup "$1" "$2" "$interpreter"
    # the C extensions for this Python, beside the development one's (*.so is ignored by git)
    "$python" setup.py -q build_ext --inplace || return 1
    PYTHONPATH="$PWD" "$python" tools/make_allowlist.py --covered 2>&1 | tail -n 3 || return 1
    # shellcheck disable=SC2086  # the test list is words
    PYTHONPATH="$PWD" "$python" -m pytest -q -p no:cacheprovider -x $CORE_TESTS
    return
  fi
  setup "$1" "$2" "$PY"
  PYTHONPATH="$PWD" "$python" tools/make_allowlist.py --release --check 2>/dev/null || {
    echo "amber/security/allowlist-$1.json is stale: PYTHONPATH=\$PWD $python tools/make_allowlist.py --release"
    return 1
  }
  # deselected: two tests that assert what numpy 2.4 itself does with a hostile file (its
  # message naming numpy.add; a crash older numpy does not have), not what Amber does
  PYTHONPATH="$PWD" "$python" -m pytest -q -p no:cacheprovider -x tests/test_roundtrip_sklearn.py \
    tests/test_all_estimators.py \
    tests/security/test_scipy_stats.py tests/security/test_validators.py tests/security/test_foreign.py \
    tests/security/test_fitted.py \
    --deselect tests/security/test_validators.py::test_a_datetime_dtype_state_without_its_unit_is_refused \
    --deselect tests/security/test_foreign.py::test_the_joblib_reader_calls_only_what_pickles_call_and_never_refills_an_array
}

interpreter_for() {  # $1: a set's Python version (empty: the default); prints its interpreter
  if [[ -n "$1" ]]; then
    find_python "$1"
  else
    echo "$PY"
  fi
}

if [[ "${1:-}" == "--setup" ]]; then
  # only build the side environments, one after another (tools/test.sh runs this while .venv is
  # built, on the core pip leaves idle); a set that fails here is set up again, and reported,
  # by the run proper
  mkdir -p .venv-compat
  for entry in "${SETS[@]}"; do
    IFS='|' read -r name packages python <<< "$entry"
    if interpreter=$(interpreter_for "$python"); then
      setup "$name" "$packages" "$interpreter" || echo "setup of $name failed"
    fi
  done
  exit 0
fi

slots() {  # sets run at once: one per core, less the one the main suite takes while it runs
  if [[ -n "${COMPAT_BESIDE:-}" && -e "$COMPAT_BESIDE" ]]; then
    echo 1
  else
    echo 2
  fi
}

# each set into its log, shown when all are done; two at a time (each runs on one core), one
# while the file COMPAT_BESIDE names exists (tools/test.sh: while the main suite runs)
mkdir -p .venv-compat
pids=()
for entry in "${SETS[@]}"; do
  while (( $(jobs -rp | wc -l) >= $(slots) )); do
    sleep 1  # (not wait -n: the main suite ending frees a slot too)
  done
  IFS='|' read -r name packages python <<< "$entry"
  check "$name" "$packages" "$python" > ".venv-compat/$name.log" 2>&1 &
  pids+=("$!")
done
failed=0
for i in "${!SETS[@]}"; do
  name=${SETS[$i]%%|*}
  status=0
  wait "${pids[$i]}" || status=$?
  echo "== compat: $name"
  { grep -v "^WARNING: Location" ".venv-compat/$name.log" || true; } | tail -n 25
  if (( status != 0 )); then
    echo "== compat: $name FAILED (exit $status; log: .venv-compat/$name.log)" >&2
    failed=1
  fi
done
exit "$failed"
