#!/usr/bin/env bash
# The reproduction of the paper's Section 5-6 findings on real Fashion-MNIST (experiments/README.md).
#
# Runs the shipped squeeze_ratio, pct3x3 and bypass sweeps into one SQLite storage kept with this
# experiment, one worker per core (taskset: XLA sizes its thread pool from the affinity mask):
# core 0 takes squeeze_ratio then helps with bypass, core 1 takes pct3x3 then bypass. Killed or
# interrupted, the same command continues: finished trials are kept, a dead worker's trial is retried.
# Then it exports every trial and every design (its seeds' mean and 95 % interval), writes a report page per
# study and draws the figures.
#
#   bash experiments/fashion_mnist/run.sh            # from the repository root, after bash setup.sh
#   bash experiments/fashion_mnist/run.sh --results  # only the exports, reports, claims, tables and figures
set -euo pipefail
here=experiments/fashion_mnist
store=sqlite:///$here/sweeps.db
cores=($(python3 -c "import os; print(*sorted(os.sched_getaffinity(0))[:2])"))
chain() {  # chain CORE SWEEP...: run the sweeps one after the other on one core
    local core=$1; shift
    for s in "$@"; do taskset -c "$core" sqzdse sweep run "sweeps/$s.toml" --storage "$store" --no-progress; done
}
start=$(date +%s)
if [ "${1:-}" = "--results" ]; then
    :
elif [ "${#cores[@]}" -ge 2 ]; then
    chain "${cores[0]}" squeeze_ratio bypass > "$here/worker0.log" 2>&1 &
    chain "${cores[1]}" pct3x3 bypass > "$here/worker1.log" 2>&1 &
    wait
else
    chain "${cores[0]}" squeeze_ratio pct3x3 bypass > "$here/worker0.log" 2>&1
fi
[ "${1:-}" = "--results" ] || echo "sweeps: $(( $(date +%s) - start )) s wall"
python3 "$here/intervals.py" "$store" > "$here/intervals.md"

for s in squeeze_ratio pct3x3 bypass; do
    sqzdse sweep export --storage "$store" --study "$s" --format csv -o "$here/$s.csv"
    sqzdse sweep export --storage "$store" --study "$s" --summary -o "$here/${s}_designs.csv"
    sqzdse report "$store" --study "$s" -o "$here/report_$s.md"
done
for s in squeeze_ratio pct3x3 bypass; do sqzdse claims "$store" --study "$s"; done > "$here/claims.txt"
sqzdse importance "$store" --study squeeze_ratio --study pct3x3 --study bypass -o "$here/importance.png" \
    > "$here/importance.txt"
sqzdse plot sr "$store" --study squeeze_ratio -o "$here/squeeze_ratio.png" --paper
sqzdse plot pct3x3 "$store" --study pct3x3 -o "$here/pct3x3.png" --paper
sqzdse plot bypass "$store" --study bypass -o "$here/bypass.png"
sqzdse plot frontier "$store" --study squeeze_ratio --study pct3x3 --study bypass -o "$here/frontier.png"
sqzdse plot edf "$store" --study squeeze_ratio --study pct3x3 --study bypass -o "$here/edf.png"
sqzdse plot curves "$store" --study squeeze_ratio -o "$here/curves_squeeze_ratio.png"
