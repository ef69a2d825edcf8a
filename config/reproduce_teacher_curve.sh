#!/usr/bin/env bash
# How long the teacher must train: the CPU DFM preset (config/shakespeare_char_cpu.py, uniform source)
# trained for each length in $ITERS on one seed, each scored at 1024 steps by the AR judge
# (config/shakespeare_char_cpu_ar.py) with its validation loss beside it. A few-step claim belongs on a
# teacher trained to where doubling its length gains little: this finds that length.
#
#   bash config/reproduce_teacher_curve.sh                      # 2k, 4k, 8k and 16k iterations, seed 1337
#   INPUT=path/to/tinyshakespeare.txt bash config/reproduce_teacher_curve.sh     # no download
#   ITERS="20 40" SAMPLES=4 REFERENCE_STEPS=8 TRAIN_ARGS="--eval_interval=10" AR_ARGS="--max_iters=20" \
#       OUT=out-smoke bash config/reproduce_teacher_curve.sh                    # every stage in two minutes
#
# One process at a time, one thread each (two side by side: LANES=2). A rerun into the same $OUT
# continues: a stage whose output is there is skipped. The rows land in $OUT/teacher-curve-uniform.json.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-out-teacher-curve}
ITERS=${ITERS:-2000 4000 8000 16000}
SEED=${SEED:-1337}
SAMPLES=${SAMPLES:-256}
REFERENCE_STEPS=${REFERENCE_STEPS:-1024}
TRAIN_ARGS=${TRAIN_ARGS:-}  # more train.py flags for the DFM runs
AR_ARGS=${AR_ARGS:-}  # and for the judge
LANES=${LANES:-1}
export OMP_NUM_THREADS=1
mkdir -p "$OUT"
python data/shakespeare_char/prepare.py ${INPUT:+--input="$INPUT"}

source config/timed.sh  # timed NAME COMMAND...: a stage, run once
teacher() {  # teacher N: train N iterations, then score it at $REFERENCE_STEPS steps
  timed "dfm-$1" python train.py config/shakespeare_char_cpu.py --source=uniform --seed="$SEED" --max_iters="$1" \
      --out_dir="$OUT/dfm-$1" --overwrite=True $TRAIN_ARGS
  timed "reference-$1" python eval.py --mode=quality --device=cpu --judge="$OUT/ar/best.pt" \
      --steps_list="$REFERENCE_STEPS" --dfm_methods=cumulative --num_samples="$SAMPLES" --dfm="$OUT/dfm-$1/best.pt" \
      --out_json="$OUT/reference-$1.json"
}
timed ar python train.py config/shakespeare_char_cpu_ar.py --out_dir="$OUT/ar" --overwrite=True $AR_ARGS
pids=()
lane() { local i=0 n; for n in $ITERS; do [ $((i++ % LANES)) = "$1" ] && { teacher "$n" || return 1; }; done; return 0; }
for k in $(seq 0 $((LANES - 1))); do lane "$k" & pids+=($!); done
for pid in "${pids[@]}"; do wait "$pid"; done

python - "$OUT" $ITERS <<'EOF'
import json, sys
out, rows = sys.argv[1], []
for n in sys.argv[2:]:
    log = [json.loads(line) for line in open(f"{out}/dfm-{n}/log.jsonl")]
    reference = next(r for r in json.load(open(f"{out}/reference-{n}.json"))["rows"] if r["name"].startswith("dfm"))
    rows.append({"iters": int(n), "val_loss": min(r["val"] for r in log if "val" in r),
                 **{k: reference[k] for k in ("steps", "gen_ppl", "gen_ppl_ci95", "entropy", "entropy_ci95",
                                              "ngram_js", "ngram_js_ci95", "num_samples")}})
    print(f"{n:>6} iterations: val loss {rows[-1]['val_loss']:.4f}, {rows[-1]['steps']} steps: generative "
          f"perplexity {rows[-1]['gen_ppl']:.2f} ± {rows[-1]['gen_ppl_ci95']:.2f}, entropy {rows[-1]['entropy']:.3f}, "
          f"n-gram JS {rows[-1]['ngram_js']:.4f}")
json.dump({"rows": rows}, open(f"{out}/teacher-curve-uniform.json", "w"), indent=1)
EOF
