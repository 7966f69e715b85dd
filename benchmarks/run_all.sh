#!/usr/bin/env bash
# Every benchmark, on the shipped checkpoint and the data dir ($DATA_DIR, default ../shared/data).
# Results: benchmarks/results/<name>.json and .md. Several hours on a 2-core CPU; minutes on a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
python benchmarks/encode_speed.py ${DATA_DIR:+--data-dir "$DATA_DIR"}
python benchmarks/query_latency.py ${DATA_DIR:+--data-dir "$DATA_DIR"}
python benchmarks/train_speed.py ${DATA_DIR:+--data-dir "$DATA_DIR"}
python benchmarks/response_policy.py ${DATA_DIR:+--data-dir "$DATA_DIR"}
# the embedders and HyDE sample of the committed table (llm_mean and symmetric gen add ~2.75 h on 2 cores)
python benchmarks/harmful_retrieval.py --slow-n 32 \
  --embedders bm25,teacher,gen_asym,gen_hybrid,gen_hybrid_ungated,gen_asym_untrained,gen_hybrid_untrained,hyde,hyde_policy \
  ${DATA_DIR:+--data-dir "$DATA_DIR"}
python benchmarks/harmful_retrieval.py --slow-n 32 --int8 --embedders teacher,gen_asym,gen_hybrid,hyde \
  ${DATA_DIR:+--data-dir "$DATA_DIR"}
# the teacher and gen_hybrid on the 200 goals the GPU's 512-token HyDE run answered (its comparison)
python benchmarks/harmful_retrieval.py --embedders teacher,gen_hybrid --advbench-n 200 \
  --name harmful_retrieval_first200 ${DATA_DIR:+--data-dir "$DATA_DIR"}
python benchmarks/safety_filter.py ${DATA_DIR:+--data-dir "$DATA_DIR"}
python benchmarks/probe_labels.py ${DATA_DIR:+--data-dir "$DATA_DIR"}
python benchmarks/probe_layers.py ${DATA_DIR:+--data-dir "$DATA_DIR"}
python benchmarks/dtype_drift.py ${DATA_DIR:+--data-dir "$DATA_DIR"}
python benchmarks/decode_fidelity.py ${DATA_DIR:+--data-dir "$DATA_DIR"}
python benchmarks/index_speed.py ${DATA_DIR:+--data-dir "$DATA_DIR"}
python benchmarks/bm25_growth.py ${DATA_DIR:+--data-dir "$DATA_DIR"}
python benchmarks/judge.py ${DATA_DIR:+--data-dir "$DATA_DIR"}
python benchmarks/audit_report.py ${DATA_DIR:+--data-dir "$DATA_DIR"}
python benchmarks/reasoning.py ${DATA_DIR:+--data-dir "$DATA_DIR"}
python benchmarks/general.py ${DATA_DIR:+--data-dir "$DATA_DIR"}
python benchmarks/general.py --int8 --embedders teacher,gen_asym,gen_hybrid ${DATA_DIR:+--data-dir "$DATA_DIR"}
python benchmarks/general.py --no-task-instructions --embedders teacher,gen,gen_asym,gen_hybrid ${DATA_DIR:+--data-dir "$DATA_DIR"}
python benchmarks/query_mix.py ${DATA_DIR:+--data-dir "$DATA_DIR"}
python benchmarks/hybrid_ceiling.py ${DATA_DIR:+--data-dir "$DATA_DIR"}
python benchmarks/mteb_local.py ${DATA_DIR:+--data-dir "$DATA_DIR"}
ragsafe train --restart --domain medical --out runs/medical --max-queries 400 --init-from default --steps 150 --batch-size 16 --lr 2e-4 --checkpoint-every 25 ${DATA_DIR:+--data-dir "$DATA_DIR"}
python benchmarks/medical.py --medical runs/medical/checkpoint ${DATA_DIR:+--data-dir "$DATA_DIR"}
# the previous default (one instruction; git f2bd2a6): the instruction pilot started from it, and
# instructions.py compares the shipped tokens with it
prev=runs/previous_default
mkdir -p "$prev"
for f in config.json gen.safetensors; do git show "f2bd2a6:ragsafe/checkpoints/default/$f" > "$prev/$f"; done
# the instruction pilot: the previous default continued on 600 pack queries under one instruction and
# under the 'varied' pool (the second run reuses the first one's answers)
pilot="--domain default --max-queries 600 --init-from $prev --steps 120 --batch-size 16 --lr 2e-4 --checkpoint-every 20"
ragsafe train --restart --out runs/pilot_control $pilot ${DATA_DIR:+--data-dir "$DATA_DIR"}
mkdir -p runs/pilot_varied && cp runs/pilot_control/responses.jsonl runs/pilot_control/targets-*.npz runs/pilot_varied/
ragsafe train --restart --out runs/pilot_varied $pilot --query-instructions varied ${DATA_DIR:+--data-dir "$DATA_DIR"}
python benchmarks/instructions.py \
  --checkpoints shipped=default,previous=$prev,control=runs/pilot_control/checkpoint,varied=runs/pilot_varied/checkpoint \
  ${DATA_DIR:+--data-dir "$DATA_DIR"}
python benchmarks/summary.py
