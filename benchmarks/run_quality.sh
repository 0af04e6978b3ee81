#!/usr/bin/env bash
# The quality runs behind docs/benchmarks.md: one process per dataset, one torch thread each
# (two processes on two cores beat one process with two threads here). ~1 h on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
common=(--n-unlabeled 1000 --train-steps 100 --distill-steps 125 --ipet-generations 1)
for ds in "$@"; do
  (
    export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
    python benchmarks/quality.py --dataset "$ds" --n-labeled 10 --seeds 1 2 3 --methods supervised pet ipet "${common[@]}"
    python benchmarks/quality.py --dataset "$ds" --n-labeled 50 --seeds 1 2 3 --methods supervised pet "${common[@]}"
  ) > "benchmarks/work/quality-$ds.log" 2>&1 &
done
wait
