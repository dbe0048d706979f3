#!/usr/bin/env bash
# A real frontier study with the default sampler for several objectives, against the tabular benchmark's grid
# (experiments/README.md#frontier; experiments/frontier/study.toml).
#
# Two workers (one per core) share the study's 20 trials in one SQLite storage kept here; their runs go to
# runs/frontier, apart from the tabular benchmark's, so that no trial reuses a training of the grid. Killed or
# interrupted, the same command continues. Then it exports the trials and compares the study's front with
# the grid's seed-0 front (compare.py: hypervolume and compute of each).
#
#   bash experiments/frontier/run.sh            # from the repository root, after bash setup.sh
#   bash experiments/frontier/run.sh --results  # only the export, the comparison and the figure
set -euo pipefail
here=experiments/frontier
store=sqlite:///$here/sweeps.db
cores=($(python3 -c "import os; print(*sorted(os.sched_getaffinity(0))[:2])"))
if [ "${1:-}" != "--results" ]; then
    for i in "${!cores[@]}"; do
        taskset -c "${cores[$i]}" sqzdse sweep run "$here/study.toml" --storage "$store" --runs-dir runs/frontier \
            --no-progress > "$here/worker$i.log" 2>&1 &
    done
    wait
fi
sqzdse sweep export --storage "$store" --study frontier --format csv -o "$here/trials.csv"
python3 "$here/compare.py" "$here/trials.csv" experiments/tabular/table.csv > "$here/comparison.md"
sqzdse plot frontier "$here/trials.csv" experiments/tabular/table.csv --where seed=0 -o "$here/frontier.png"
