#!/bin/sh
# Assemble reports/class-incremental.md from its parts and the measured tables.
cd "$(dirname "$0")/../.." || exit 1
{
  cat reports/class-incremental/head.md
  echo; echo "## Split-MNIST class-IL (mnist5k), seeds 0-4"
  python3 reports/class-incremental/table.py reports/class-incremental/split-mnist | tail -n +3
  cat reports/class-incremental/order.md
  [ -f reports/class-incremental/fashion.md ] && cat reports/class-incremental/fashion.md
  [ -f reports/class-incremental/inits.md ] && cat reports/class-incremental/inits.md
  cat reports/class-incremental/findings.md
} > reports/class-incremental.md
