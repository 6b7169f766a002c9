#!/usr/bin/env bash
# The one prepared device check (issue 16): every network member of every kind trains on the GPU.
# Run from the repository root on the device machine (python3 = the GPU image's torch 2.11; no MLflow,
# Prefect, Great Expectations, DVC, no network):
#
#     bash bench/device_check.sh                 # writes under $OUT (default reports/device_check/)
#
# 1. data: the nlp_prepare DVC stage's own command where its output is missing (the SMS file is
#    tracked); the fraud, traffic and table data are made in-process (tests/device_members.py);
# 2. the GPU test layer (tests/test_gpu.py) and the CPU device guards (tests/test_device_guard.py)
#    with pytest, or, where pytest is missing, their plain-python twin `bench/gpu_fit.py --check`;
# 3. bench/gpu_fit.py: GPU (32-true, bf16-mixed) vs this machine's CPU, fit seconds and test metric
#    per member, as a markdown table ($OUT/gpu_fit.md). GPU_FIT_ARGS adds/overrides its options.
# Files in $OUT: env.txt, data.log, tests.log, gpu_fit.md, gpu_fit.json, gpu_fit.log. Exit 1 if a step failed.
set -u
OUT=${OUT:-reports/device_check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" DEEPFLOW_ROOT="$PWD" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
status=0

{ date -u; nvidia-smi -L 2>&1 || true
  $PY -c "import sys, torch, lightning as L; print(sys.version.split()[0], torch.__version__, L.__version__)"
  $PY -c "import torch; print('cuda', torch.cuda.is_available())"; } >"$OUT/env.txt" 2>&1

if [ -f data/prepared/nlp/test.parquet ]; then  # already `dvc repro`-ed (a developer's checkout): kept
  echo "data/prepared/nlp: present, kept" >"$OUT/data.log"
else
  $PY -m deepflow.kinds.text.prepare --src data/external/sms_spam/SMSSpamCollection --out data/prepared/nlp \
      >"$OUT/data.log" 2>&1 || { echo "data: nlp_prepare failed (see data.log)"; status=1; }
fi

if $PY -c "import pytest" 2>/dev/null; then
  timeout 300 $PY -m pytest -q -p no:cacheprovider -rs tests/test_gpu.py tests/test_device_guard.py \
      >"$OUT/tests.log" 2>&1 || { echo "tests: failed (see tests.log)"; status=1; }
else
  echo "no pytest here: bench/gpu_fit.py --check on the GPU instead" >"$OUT/tests.log"
  timeout 300 $PY bench/gpu_fit.py --devices gpu --scale 1 --epochs 2 --check >>"$OUT/tests.log" 2>&1 \
      || { echo "tests: gpu_fit --check failed (see tests.log)"; status=1; }
fi
tail -n 3 "$OUT/tests.log"

# shellcheck disable=SC2086  # GPU_FIT_ARGS is a list of options
timeout 360 $PY bench/gpu_fit.py --check --out "$OUT/gpu_fit.md" --json "$OUT/gpu_fit.json" ${GPU_FIT_ARGS:-} \
    2>"$OUT/gpu_fit.log" || { echo "gpu_fit: failed (see gpu_fit.log)"; status=1; }
exit $status
