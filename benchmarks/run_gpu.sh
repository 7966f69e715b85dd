#!/usr/bin/env bash
# The GPU-only measurements, on the shipped checkpoint and the data dir ($DATA_DIR, default
# ../shared/data): HyDE on every query at the 48-token cap, HyDE writing whole answers (512 tokens)
# on the first 200 of each set, and batch-1 query latency on the device. Minutes on one H100.
# Results: benchmarks/results/harmful_retrieval_cuda*.{json,md}, query_latency_cuda.{json,md}.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'run_gpu.sh needs a CUDA device')"
python benchmarks/harmful_retrieval.py --slow-n 0 --hyde-batch-size 256 --name harmful_retrieval_cuda \
  --embedders teacher,gen_asym,gen_hybrid,hyde,hyde_policy ${DATA_DIR:+--data-dir "$DATA_DIR"}
python benchmarks/harmful_retrieval.py --slow-n 200 --hyde-batch-size 256 --hyde-max-new-tokens 512 \
  --name harmful_retrieval_cuda_hyde512 --embedders teacher,hyde ${DATA_DIR:+--data-dir "$DATA_DIR"}
python benchmarks/query_latency.py ${DATA_DIR:+--data-dir "$DATA_DIR"}
