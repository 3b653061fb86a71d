#!/usr/bin/env bash
# GPU check of the GenRM core, for a machine with CUDA and PyTorch but no network:
# the missing wheels travel in .whl/ (see docs/genrm.md). Writes the log to $OUT/gpu_check.log.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=$PWD/shared:$PWD:/tmp/site PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
  echo "== tests/genrm on cuda (fp32)"
  VLGENRM_TEST_DEVICE=cuda python3 -m pytest tests/genrm -q -p no:cacheprovider -x 2>&1 | tail -15
  echo "== benchmark: cpu baseline (this machine), cuda fp32, cuda bf16"
  python3 benchmarks/genrm_cpu.py --device cpu --pairs 64 --steps 10 2>&1 | grep -v "Loading\|Writing"
  python3 benchmarks/genrm_cpu.py --device cuda --pairs 256 --batch-size 32 --steps 20 2>&1 | grep -v "Loading\|Writing"
  python3 benchmarks/genrm_cpu.py --device cuda --dtype bfloat16 --pairs 256 --batch-size 32 --steps 20 2>&1 | grep -v "Loading\|Writing"
  echo "== Qwen2-VL-2B shapes (random weights, bf16): reference vs prefix-cache path, SFT step; vLLM backend where vllm imports"
  VLLM=$(python3 -c "import vllm" 2>/dev/null && echo --vllm)
  python3 benchmarks/genrm_gpu.py --shape tiny --device cuda --dtype float32 --pairs 16 --batch-size 8 --steps 2 $VLLM 2>&1 | grep -v "Loading\|Writing" | tail -30
  python3 benchmarks/genrm_gpu.py --shape 2b --device cuda --dtype bfloat16 --pairs 256 --batch-size 32 --steps 10 $VLLM 2>&1 | grep -v "Loading\|Writing" | tail -30
} 2>&1 | tee "$OUT/gpu_check.log"
