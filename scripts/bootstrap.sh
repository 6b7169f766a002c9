#!/usr/bin/env bash
# Create the virtualenv if missing and install the locked dependencies plus deepflow (editable).
# Idempotent: a stamp holds the hash of the lock and pyproject; if unchanged, nothing is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3

stamp="$venv/.deepflow-installed"
want=$(cat requirements/lock.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
[[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
echo "bootstrap: installing locked dependencies into $venv (first run takes a few minutes)"
quiet() { grep -v -e 'is ignored: it is neither' -e '^$' || true; }
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r requirements/lock.txt 2>&1 | quiet
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e . 2>&1 | quiet
"$venv/bin/python" -c "import torch, lightning, mlflow, prefect, great_expectations, dvc" \
  || { echo "bootstrap: import check failed" >&2; exit 1; }
echo "$want" > "$stamp"
echo "bootstrap: done"
