#!/usr/bin/env bash
# The GPU verification run, shaped for one lease (15 device-minutes in all, 1-2 of them to start a machine, at most
# 10 per command): it must end in about 7 minutes on an H100 or H200 (16 cores) so that a failed first try leaves
# time for a second.  Steps run in the order of the value of their evidence, each under `timeout`, each capped by
# what is left of the run's budget; a step that needs a GPU reports "skipped" where there is none (a dry run on
# the CPU).  At most 8 files go to OUTDIR; the summary table is printed last.
#   bash scripts/gpu_run.sh OUTDIR            EDLM_GPU_BUDGET_S (default 420) sets the run's budget
#
# Per-step estimates on 16 cores (caps in brackets):
#   environment 5 s [30]; build 90 s [240] (one arch, 9.0, offline); identity 30 s [120] (CPU-CUDA token identity);
#   cuda_tests 60 s [180]; sanitizer 60 s [150] (compute-sanitizer memcheck, one small call per op);
#   roofline 40 s [120] (copy bandwidth first, then the logits-reading ops); bench 60 s [150] (CUDA op
#   benchmarks); e2e [what is left] (GPT-2-small-shaped end to end, ours against the reference).
#   Sum of estimates without e2e: about 345 s.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: bash scripts/gpu_run.sh OUTDIR}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
DEADLINE=$((SECONDS + ${EDLM_GPU_BUDGET_S:-420}))
rows=()
HAVE_GPU=0
"$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null && HAVE_GPU=1

# step NAME CAP_S NEEDS_GPU(0|1) COMMAND...: output to OUT/NAME.log, a row for the summary table.
step() {
  local name="$1" cap="$2" gpu="$3"; shift 3
  local left=$((DEADLINE - SECONDS)) t0=$SECONDS rc state
  local limit=$((cap < left ? cap : left))
  if [ "$gpu" = 1 ] && [ "$HAVE_GPU" = 0 ]; then
    state="skipped (no GPU)"; rc="-"
  elif [ "$limit" -lt 15 ]; then
    state="skipped (budget)"; rc="-"
  else
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    case $rc in 0) state=ok ;; 124|137) state="TIMEOUT after ${limit}s" ;; *) state=FAILED ;; esac
  fi
  rows+=("$(printf '%-11s %-5s %5ss  cap %4ss  %s' "$name" "$rc" "$((SECONDS - t0))" "$cap" "$state")")
}

ENV_INFO="$(timeout 30 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; \
  $PY -c 'import torch, setuptools; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"setuptools\", setuptools.__version__)'; \
  nvcc --version | tail -n 1; git rev-parse HEAD" 2>&1)"
step build 240 1 env FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 \
  "$PY" -m pip install --no-build-isolation --no-deps --no-index -e .
step identity 120 1 "$PY" -m pytest -x -q -p no:cacheprovider tests/test_ops.py tests/test_verify.py -k "cpu_and_cuda" -rs
step cuda_tests 180 1 "$PY" -m pytest -q -p no:cacheprovider tests -k "cuda" -rs
step sanitizer 150 1 compute-sanitizer --tool memcheck --error-exitcode 9 "$PY" scripts/sanitize_ops.py
step roofline 120 1 "$PY" benchmarks/roofline.py --device cuda --json "$OUT/roofline.json"
step bench 150 1 "$PY" -m pytest -q -p no:cacheprovider benchmarks/test_bench_ops.py benchmarks/test_bench_logprob.py \
  benchmarks/test_bench_instruct.py \
  -k "cuda" -s
step e2e 600 1 "$PY" benchmarks/e2e_gpu.py

echo "== summary (logs in $OUT; budget ${EDLM_GPU_BUDGET_S:-420} s, used $SECONDS s)"
echo "$ENV_INFO"
printf '%s\n' "${rows[@]}"
for name in identity cuda_tests; do
  [ -s "$OUT/$name.log" ] && echo "$name: $(tail -n 1 "$OUT/$name.log")"
done
[ -s "$OUT/sanitizer.log" ] && grep -E "ERROR SUMMARY" "$OUT/sanitizer.log"
[ -s "$OUT/roofline.log" ] && cat "$OUT/roofline.log"
[ -s "$OUT/bench.log" ] && sed -n '/edlm-engine benchmark figures/,$p' "$OUT/bench.log" | head -n 30
[ -s "$OUT/e2e.log" ] && tail -n 15 "$OUT/e2e.log"
exit 0
