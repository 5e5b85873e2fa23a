#!/usr/bin/env bash
# raftkv vs pysyncobj from Python, side by side in one run (issue 20). Makes its own venv with
# pysyncobj from PyPI under target/ (never a dependency of raftkv or of CI), then runs
# bench.py (its docstring says what is measured) with raftkv's Python.
#
#   benchmarks/pysyncobj/run.sh                         3 repeats x 5 cases, 5 s + 1 s warm-up
#   benchmarks/pysyncobj/run.sh --repeats 1 --seconds 2   quick
#
# Knobs (environment): RAFTKV_PY [target/test-venv/bin/python] a Python with raftkv installed;
# PYSYNCOBJ_VERSION [0.3.17]; TMP_BASE [/var/tmp] where raftkv's data dirs go (not tmpfs).
# Arguments are passed to bench.py (--repeats, --seconds, --warmup, --threads, --tasks,
# --cases, --out).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
RAFTKV_PY="${RAFTKV_PY:-$ROOT/target/test-venv/bin/python}"
PYSYNCOBJ_VERSION="${PYSYNCOBJ_VERSION:-0.3.17}"
VENV="$ROOT/target/pysyncobj-venv"
TMP_BASE="${TMP_BASE:-/var/tmp}"

[[ -x "$RAFTKV_PY" ]] || { echo "error: no Python at $RAFTKV_PY (pip install . into a venv, set RAFTKV_PY)" >&2; exit 1; }
"$RAFTKV_PY" -c 'import raftkv.aio' || { echo "error: $RAFTKV_PY has no raftkv (pip install .)" >&2; exit 1; }
if [[ "$(stat -f -c %T "$TMP_BASE")" == tmpfs ]]; then
  echo "error: TMP_BASE=$TMP_BASE is tmpfs: raftkv's fsyncs would cost nothing" >&2; exit 1
fi
if ! "$VENV/bin/python" -c "import sys; from importlib.metadata import version; sys.exit(version('pysyncobj') != '$PYSYNCOBJ_VERSION')" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q "pysyncobj==$PYSYNCOBJ_VERSION"
fi
echo "# pysyncobj $("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("pysyncobj"))'), raftkv $("$RAFTKV_PY" -c 'import raftkv; print(raftkv.__version__)'), $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
PYSYNCOBJ_PY="$VENV/bin/python" exec "$RAFTKV_PY" "$HERE/bench.py" --tmp "$TMP_BASE" "$@"
