#!/usr/bin/env bash
# One GPU session of bench/train_throughput.py --table gpu (GPT-2 124M 16x1024, BERT-base 32x512, T5-base
# 32x512 -> 114, bf16, each as its recipe has it and with every lever (the 'fast' rows, with a jax.profiler
# summary of the top ops), ours vs HF PyTorch eager and torch.compile, with MFU), made to run in one go on a
# machine that has the GPU stack (jax with its CUDA plugin, flax, optax, orbax, torch, transformers) but lacks
# some of our dependencies, and can fetch nothing.
#
#   bash bench/gpu_session.sh            # from the repo root; results go to $OUT (default /tmp/gpu_session)
#
# Steps:
#  1. If .whl/ holds wheels (built for Python 3.12 beforehand; .whl/ is git-ignored), installs them into
#     /tmp/site and puts it on PYTHONPATH: the modules the benchmark's import chain needs and the machine
#     lacks (grain, array_record, portpicker, ml_collections, tensorflow_datasets, tensorflow_metadata,
#     immutabledict, promise, toml). .whl/extra/protobuf-*.whl only where the machine's protobuf is older
#     than 6.31 (tensorflow_metadata's generated code needs a runtime at least that new).
#  2. Prints nvidia-smi, Python and package versions, and imports the benchmark's chain once (fails fast).
#  3. Runs the table's cases, each in its own process with a time limit (a failing or hanging case does not
#     stop the others), inside an overall limit, teeing the log to $OUT/gpu_log.txt; the figures go to
#     $OUT/gpu_throughput.json, rewritten after every case.
#
# Tunables (environment): STEPS (20), WARMUP (3), CASE_TIMEOUT (150 s), BENCH_BUDGET (480 s, all cases),
# GPU_CASES (e.g. 't5_base,t5_base fast', to rerun some), BENCH_ARGS (more flags, e.g. "--dropout 0"),
# PYTHON (python3).
set -u
cd "$(dirname "$0")/.."

# Here (a machine that reaches the package registry), once: `bash bench/gpu_session.sh --fetch-wheels` fills
# .whl/ (about 10 MiB) with the wheels for the GPU machine's Python 3.12; the device call then carries .whl.
if [ "${1:-}" = --fetch-wheels ]; then
  mkdir -p .whl/extra
  platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
             --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
  get() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            "${platforms[@]}" -d "$@"; }
  # The versions of requirements.txt; their other Requires-Dist are on the GPU machine or never imported here.
  get .whl grain==0.2.18 array-record==0.8.6 portpicker==1.6.0 ml-collections==1.1.0 tensorflow-datasets==4.9.10 \
    tensorflow-metadata==1.21.0 immutabledict==4.3.1 toml==0.10.2 || exit
  get .whl/extra protobuf==7.36.2 || exit
  python3 -m pip wheel -q --no-deps -w .whl promise==2.3 || exit  # an sdist only: a pure-Python wheel built here
  ls -l .whl .whl/extra; du -sh .whl
  exit 0
fi
OUT=${OUT:-/tmp/gpu_session}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
t0=$SECONDS
stamp() { echo "=== [$((SECONDS - t0)) s] $*"; }

# --- 1. wheels ---------------------------------------------------------------------------------------------
if compgen -G '.whl/*.whl' >/dev/null; then
  wheels=(.whl/*.whl)
  if ! "$PY" -c 'import sys, google.protobuf as p; sys.exit(tuple(map(int, p.__version__.split(".")[:2])) < (6, 31))' 2>/dev/null; then
    echo "protobuf here: $("$PY" -c 'import google.protobuf as p; print(p.__version__)' 2>&1 | tail -1); adding the carried one"
    wheels+=(.whl/extra/protobuf-*.whl)
  fi
  stamp "installing ${#wheels[@]} wheels into /tmp/site"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "${wheels[@]}" \
    || { echo 'wheel install failed'; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

# --- 2. the machine and the versions -----------------------------------------------------------------------
stamp 'machine'
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 | head -3
nproc; "$PY" --version
"$PY" -m pip list 2>/dev/null | grep -iE '^(jax|jaxlib|jax-cuda[0-9]*-(plugin|pjrt)|flax|optax|orbax-checkpoint|numpy|ml.dtypes|torch|transformers|protobuf|grain|tensorflow.datasets|ml.collections|etils) '
stamp 'import check'
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
"$PY" - <<'EOF' || { echo 'the benchmark import chain fails: not running it'; exit 1; }
import sys
sys.path.insert(0, '.')
import jax
import configs.gpt2_small, configs.bert_base, configs.t5_base, model.hf, trainer.step, trainer.metrics, data.pipeline
print('jax', jax.__version__, jax.default_backend(), [d.device_kind for d in jax.devices()])
try:  # the HF side's (its child process imports them); reported, not required: --no_hf runs without them
  import torch, transformers
  print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__)
except ImportError as e:
  print('HF side unavailable:', e)
EOF

# --- 3. the benchmark --------------------------------------------------------------------------------------
stamp "benchmark: steps ${STEPS:-20}, warm-up ${WARMUP:-3}, case limit ${CASE_TIMEOUT:-150} s, all ${BENCH_BUDGET:-480} s"
set -o pipefail
# `timeout` signals its whole process group: the driver, the case running and its HF child.
timeout -k 10 "${BENCH_BUDGET:-480}" "$PY" bench/train_throughput.py --table gpu --steps "${STEPS:-20}" \
    --warmup "${WARMUP:-3}" --case_timeout "${CASE_TIMEOUT:-150}" ${GPU_CASES:+--cases "$GPU_CASES"} \
    --json "$OUT/gpu_throughput.json" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/gpu_log.txt"
rc=$?
[ "$rc" = 124 ] && echo "the overall limit of ${BENCH_BUDGET:-480} s was reached; $OUT/gpu_throughput.json holds the cases finished before it, if any"
stamp "done, exit status $rc"
exit "$rc"
