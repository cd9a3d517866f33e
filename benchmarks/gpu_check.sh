#!/usr/bin/env bash
# The GPU figures of benchmarks/RESULTS.md and a GPU smoke test of the CLI, in one go (~10 min on an H200):
#
#   bash benchmarks/gpu_check.sh runs/gpu       # needs data/bible12 (make data) and a CUDA torch
#
# 1. `lslo_speed.py` on the M2M-100 418M shape (fp32 weights + bf16 autocast, as `lslo train` runs on a GPU),
#    the 1.2B shape, the 418M shape with bf16 weights, and both shapes at 16k-token batches (256 x 64):
#    JSON in benchmarks/results/ and copies in OUT.
# 2. `lslo train` (300 LSLo steps on bible12 from the shipped base, precision auto = bf16) and `lslo eval`
#    (bf16, greedy, 4 directions): the GPU paths of training and generation, end to end.
# 3. The test suite on that machine (tests/conftest.py hides the GPU: the suite's claims are CPU claims).
# Each step runs even if an earlier one failed; the log says which failed.
#
#   bash benchmarks/gpu_check.sh runs/gpu compile   # instead: eager vs compiled (~10 min on an H100/H200)
#
# `compile`: `compile_speed.py` on the 418M shape: eager, compiled (`compile: true`) and CUDA graphs
# (reduce-overhead, static shapes) for LSLo, shared LoRA and full fine-tuning at 4k tokens (128 x 32), then
# eager and compiled LSLo and full fine-tuning at 16k (256 x 64; dynamic shapes reuse the 4k run's kernels).
# Target: a compiled LSLo step at or below full fine-tuning's at 4k tokens. Not run yet: no GPU was lent.
set -u
out=${1:-runs/gpu}
mkdir -p "$out"
log="$out/gpu.log"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
step() { echo "== $* ($(date -u +%H:%M:%S))" | tee -a "$log"; "$@" >>"$log" 2>&1; echo "== exit $? ($(date -u +%H:%M:%S))" | tee -a "$log"; }
if [ "${2:-}" = compile ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >>"$log" 2>&1
  step timeout 330 python3 benchmarks/compile_speed.py --shape 418m --batch 128 --seq 32 --rounds 4
  cp benchmarks/results/compile_speed_cuda_128x32.json "$out/" 2>/dev/null
  step timeout 200 python3 benchmarks/compile_speed.py --shape 418m --batch 256 --seq 64 --rounds 3 --methods lslo full --no-cudagraphs
  cp benchmarks/results/compile_speed_cuda_256x64.json "$out/" 2>/dev/null
  exit 0
fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >>"$log" 2>&1
step python3 -c "import torch, transformers, peft, accelerate, sacrebleu; print(torch.__version__, transformers.__version__, peft.__version__, accelerate.__version__, sacrebleu.__version__)"
step python3 benchmarks/lslo_speed.py --shape 418m --rounds 10
cp benchmarks/results/lslo_speed_cuda_418m.json "$out/" 2>/dev/null
step python3 -m lslo.cli train configs/bible12-lslo.yaml --no-progress --set out_dir="$out/run" data=data/bible12 \
  max_epochs=null max_steps=300 precision=auto save_every=100 eval_every=100 valid_max_per_direction=10
cp "$out/run/metrics.jsonl" "$out/" 2>/dev/null
step python3 -m lslo.cli eval "$out/run" --data data/bible12 --directions en-fr fr-en en-sw sw-en --max-sentences 100 \
  --beams 1 --precision auto --no-progress --out "$out/eval"
cp "$out/eval/results.json" "$out/" 2>/dev/null
step python3 benchmarks/lslo_speed.py --shape 1.2b --rounds 6
cp benchmarks/results/lslo_speed_cuda_1.2b.json "$out/" 2>/dev/null
step python3 benchmarks/lslo_speed.py --shape 418m --weights bf16 --rounds 6
cp benchmarks/results/lslo_speed_cuda_418m_bf16.json "$out/" 2>/dev/null
step python3 benchmarks/lslo_speed.py --shape 418m --batch 256 --seq 64 --rounds 6
cp benchmarks/results/lslo_speed_cuda_418m_256x64.json "$out/" 2>/dev/null
step python3 benchmarks/lslo_speed.py --shape 1.2b --batch 256 --seq 64 --rounds 4
cp benchmarks/results/lslo_speed_cuda_1.2b_256x64.json "$out/" 2>/dev/null
step python3 -m pytest tests -q -p no:cacheprovider
