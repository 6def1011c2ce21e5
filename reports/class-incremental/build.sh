#!/bin/sh
# Assemble reports/class-incremental.md from its parts and the measured tables.
# The tables come from each directory's summary.json where one is present, else from its committed runs.csv.
cd "$(dirname "$0")/../.." || exit 1
R=reports/class-incremental
{
  cat $R/head.md
  echo; echo "## Split-MNIST class-IL (mnist5k), seeds 0-4"
  python3 $R/table.py $R/split-mnist | tail -n +3
  cat $R/order.md
  if [ -f $R/split-fashion/runs.csv ]; then cat $R/fashion-head.md; python3 $R/table.py $R/split-fashion | tail -n +3; [ -f $R/fashion-notes.md ] && cat $R/fashion-notes.md; fi
  if [ -f $R/inits/runs.csv ]; then cat $R/inits-head.md; python3 $R/table.py $R/inits | tail -n +3; [ -f $R/inits-notes.md ] && cat $R/inits-notes.md; fi
  if [ -f $R/check-rerun/runs.csv ]; then
    cat $R/rerun-head.md; python3 $R/table.py --brief $R/check-rerun | tail -n +3
    cat $R/rerun-mid.md; python3 $R/table.py --brief $R/check-rerun-fashion | tail -n +3
    cat $R/rerun-notes.md
  fi
  cat $R/findings.md
} > reports/class-incremental.md
