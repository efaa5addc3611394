#!/usr/bin/env bash
# Few-step samplers of a table of numeric columns (docs/tables.md, "Few steps"): a teacher on scikit-learn's
# diabetes table (11 numeric columns), evaluated with its own sampler (Heun, 64 steps) and with plain solvers at a
# few steps, and its students of every distillation method at 4 steps, each on 1000 rows against the held-out
# ones. Runs under $RUNS (default runs/); reports to docs/benchmarks/kinds/numeric-table/, the markdown table on
# stdout. One intra-op thread: small networks gain nothing from more.
set -euo pipefail
RUNS=${RUNS:-runs}
TD="python -m torchdiffusion"
OUT=docs/benchmarks/kinds/numeric-table
export OMP_NUM_THREADS=1
mkdir -p "$OUT"
TEACHER="$RUNS/table-diabetes"
$TD train --preset table-wine --set data.source=sklearn:diabetes --set data.holdout=100 --set train.threads=1 \
  --out "$TEACHER" --no-progress
evaluate() {  # NAME RUN [sampling flags]: 1000 rows against the held-out ones
  local name=$1 run=$2
  shift 2
  $TD evaluate "$run" --n 1000 --threads 1 "$@" --out "$RUNS/eval-$name" > /dev/null
  cp "$RUNS/eval-$name/report.json" "$OUT/$name.json"
}
evaluate teacher-heun-64 "$TEACHER"
evaluate teacher-euler-4 "$TEACHER" --sampler euler --steps 4
evaluate teacher-dpmpp_2m-4 "$TEACHER" --sampler dpmpp_2m --steps 4
evaluate teacher-unipc-4 "$TEACHER" --sampler unipc --steps 4
for method in progressive consistency reflow dmd; do
  $TD distill "$TEACHER" --method "$method" --steps 4 --images 20000 --threads 1 --no-progress \
    --out "$RUNS/table-diabetes-$method"
  evaluate "$method-4" "$RUNS/table-diabetes-$method"
done
python - "$OUT" <<'PY'
import json, sys
from pathlib import Path

from torchdiffusion.samplers import nfe

rows = ["| sampling | NFE | marginal W1 | correlation error | DCR copy share |", "|---|---|---|---|---|"]
for f in sorted(Path(sys.argv[1]).glob("*.json"), key=lambda f: (not f.stem.startswith("teacher"), f.stem)):
    r = json.loads(f.read_text())
    s = r.get("sampling", r)  # the sampling record (reports written before it held these keys at the top)
    m, evals = r["model"], nfe(s["sampler"], s["steps"])
    rows.append(f"| {f.stem} ({s['sampler']}, {s['steps']} steps) | {evals} | {m['marginal_w1']:.3f} | "
                f"{m['correlation_error']:.3f} | {m['dcr_copy_share']:.3f} |")
base = json.loads(next(Path(sys.argv[1]).glob("teacher-heun-64.json")).read_text())["independent_marginals"]
rows.append(f"| independent marginals (baseline) | - | {base['marginal_w1']:.3f} | {base['correlation_error']:.3f} | "
            f"{base['dcr_copy_share']:.3f} |")
print("\n".join(rows))
PY
