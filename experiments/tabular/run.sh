#!/usr/bin/env bash
# The tabular benchmark of the design space (experiments/README.md, experiments/tabular/space.toml).
#
# Trains every network of the space into one SQLite storage kept with this experiment, one worker per
# core (taskset: XLA sizes its thread pool from the affinity mask; both workers take trials of the same
# grid). Killed or interrupted, the same command continues: finished trials are kept, a dead worker's
# trial is retried. Then it exports the table (table.csv), summarises it (summary.md) and draws its front.
#
#   bash experiments/tabular/run.sh            # from the repository root, after bash setup.sh
#   bash experiments/tabular/run.sh --results  # only the table and the figure
set -euo pipefail
here=experiments/tabular
store=sqlite:///$here/sweeps.db
cores=($(python3 -c "import os; print(*sorted(os.sched_getaffinity(0))[:2])"))
start=$(date +%s)
if [ "${1:-}" != "--results" ]; then
    for i in "${!cores[@]}"; do
        taskset -c "${cores[$i]}" sqzdse sweep run "$here/space.toml" --storage "$store" --no-progress \
            > "$here/worker$i.log" 2>&1 &
    done
    wait
    echo "sweep: $(( $(date +%s) - start )) s wall"
fi
sqzdse sweep export --storage "$store" --study tabular --format csv -o "$here/table.csv"
python3 "$here/summary.py" "$here/table.csv" > "$here/summary.md"
sqzdse plot frontier "$store" --study tabular -o "$here/frontier.png"
