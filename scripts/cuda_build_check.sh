#!/usr/bin/env bash
# Builds the complete CUDA extension (kernels and torch bindings) on a machine without a GPU, imports it and
# prints build_info() and the dispatch keys of every op.  Fails on any error, on with_cuda false, or on an op
# without a CPU, CUDA or Meta kernel.
#
# torch 2.11.0 from PyPI is the CUDA 13.0 build, matching nvcc 13.0 here and the torch 2.11.0+cu130 of the lent
# GPU machines.  It lives in its own virtual environment outside the clone (EDLM_CUDA_VENV, default
# ~/.cache/edlm-engine/cuda-venv), made on the first run and reused after; the build runs in a temporary copy of
# the source, so neither the README's Python environment nor the clone's own build is touched.
#   bash scripts/cuda_build_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION=2.11.0
VENV="${EDLM_CUDA_VENV:-$HOME/.cache/edlm-engine/cuda-venv}"
PY="$VENV/bin/python"

command -v nvcc >/dev/null || { echo "cuda_build_check: nvcc not found" >&2; exit 1; }
# nvcc may be a wrapper script outside the toolkit (here /usr/local/bin/nvcc), from whose folder torch would
# guess a wrong CUDA_HOME; nvcc itself tells where its toolkit is.
TOP="$(nvcc --dryrun -x cu -c /dev/null -o /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -n 1)"
export CUDA_HOME="$(realpath "${TOP:?cuda_build_check: nvcc did not report its toolkit root}")"
echo "== CUDA_HOME=$CUDA_HOME ($(nvcc --version | tail -n 1))"

if ! "$PY" -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  echo "== making $VENV with torch==$TORCH_VERSION (CUDA 13.0 build)"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$PY" -m pip install -q "torch==$TORCH_VERSION" "setuptools>=77" wheel ninja numpy
fi
"$PY" -c "import torch; print('== torch', torch.__version__, 'CUDA', torch.version.cuda)"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$WORK" 2>/dev/null || true
cp --parents -t "$WORK" setup.py pyproject.toml
echo "== building the wheel (FORCE_CUDA=1, TORCH_CUDA_ARCH_LIST=9.0)"
t0=$SECONDS
(cd "$WORK" && FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS="${MAX_JOBS:-2}" \
  "$PY" -m pip wheel -q --no-build-isolation --no-deps -w "$WORK/dist" .)
"$PY" -m pip install -q --no-deps --force-reinstall "$WORK"/dist/edlm_engine-*.whl
echo "== built in $((SECONDS - t0)) s"

cd "$WORK/dist"  # away from any source tree, so the import takes the installed wheel
"$PY" - <<'EOF'
import torch
import edlm_engine

info = edlm_engine.build_info()
print("build_info:", info)
assert info["with_cuda"], "with_cuda is false: the CUDA kernels were not built"
ops = sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith("edlm_engine::"))
assert ops, "no edlm_engine op is registered"
missing = []
for op in ops:
    keys = [k for k in ("CPU", "CUDA", "Meta") if torch._C._dispatch_has_kernel_for_dispatch_key(op, k)]
    print(f"  {op:35s} {' '.join(keys)}")
    missing += [f"{op}:{k}" for k in ("CPU", "CUDA", "Meta") if k not in keys]
assert not missing, f"ops without a kernel: {missing}"
print("cuda_build_check: every op has CPU, CUDA and Meta kernels")
EOF
