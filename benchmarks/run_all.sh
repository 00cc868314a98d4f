#!/usr/bin/env bash
# Regenerate every file in benchmarks/results/ with each script's default (full) settings.
#
#     bash benchmarks/run_all.sh            # from the repository root (or anywhere: it changes there)
#
# Expected time on the 2-core development CPU with nothing else running: about 30 minutes in all
# (coordination about 10, local_solver about 5, scale about 3, sweep about 8, main_job about 3; estimated from small runs
# and earlier full runs of the same scripts). The slow anchors run at the smaller sizes only:
#   coordination: Clarabel and HiGHS IPX up to N = 1000, HiGHS simplex up to 300, the lp instance up to
#     1000, ADMM up to 100 and on the qp instance only (IP-ALADIN runs N = 10 ... 10000);
#   local_solver: the Clarabel loop up to 1000 (qp) and 100 (lp), stacked Clarabel up to 10000 (qp) and
#     1000 (lp), HiGHS IPX up to 1000, HiGHS simplex up to 100, jaxopt's OSQP up to 10 (qp only).
# Run it on an otherwise idle machine: the tables report ratios measured within one run, but a loaded
# machine slows long solves more than short ones. The first failing script stops the run (set -e); the
# results files of the scripts already done stay written.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
start=$(date +%s)
for script in local_solver coordination scale sweep main_job; do
    t0=$(date +%s)
    echo "== benchmarks/$script.py"
    "$PY" "benchmarks/$script.py"
    echo "== benchmarks/$script.py done in $(( $(date +%s) - t0 )) s"
done
echo "all done in $(( $(date +%s) - start )) s; results in benchmarks/results/"
