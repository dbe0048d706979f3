#!/usr/bin/env bash
# Dense-Sparse-Dense against plain training on real Fashion-MNIST, same budget, three seeds
# (experiments/README.md, "DSD"). The network: squeezenet_small at widths base_e = incr_e = 32
# (the reproduction sweeps' scale), 8 epochs of the default small-input recipe; DSD spends them as
# 4 dense + 2 sparse (30 % of every conv's weights pruned, mask held) + 2 re-dense at 0.1x lr.
# Each run resumes if killed; summaries are copied here and tabulated at the end.
#
#   bash experiments/dsd/run.sh          # from the repository root, after bash setup.sh
set -euo pipefail
here=experiments/dsd
model=(--preset squeezenet_small --base-e 32 --incr-e 32 --dataset fashion_mnist --epochs 8 --no-progress)
for seed in 0 1 2; do
    sqzdse train "${model[@]}" --seed "$seed" --workdir "runs/dsd-exp/plain_s$seed" --json > /dev/null
    sqzdse train "${model[@]}" --seed "$seed" --dsd --workdir "runs/dsd-exp/dsd_s$seed" --json > /dev/null
    cp "runs/dsd-exp/plain_s$seed/summary.json" "$here/plain_s$seed.json"
    cp "runs/dsd-exp/dsd_s$seed/summary.json" "$here/dsd_s$seed.json"
done
python3 - "$here" <<'PY'
import json, statistics, sys
here = sys.argv[1]
rows = {k: [json.load(open(f"{here}/{k}_s{s}.json")) for s in range(3)] for k in ("plain", "dsd")}
def top1(r, split):  # a DSD summary holds its phases; its result is the last phase's
    return r[f"{split}_top1"]
print("| run | seed 0 | seed 1 | seed 2 | mean |")
print("| --- | --- | --- | --- | --- |")
for split in ("val", "test"):
    for k, rs in rows.items():
        v = [100 * top1(r, split) for r in rs]
        print(f"| {k} {split} top-1 | " + " | ".join(f"{x:.2f} %" for x in v) + f" | {statistics.mean(v):.2f} % |")
d = [100 * (top1(a, "test") - top1(b, "test")) for a, b in zip(rows["dsd"], rows["plain"])]
print(f"\nDSD - plain, test top-1 per seed: {', '.join(f'{x:+.2f}' for x in d)}; mean {statistics.mean(d):+.2f} points")
PY
