#!/usr/bin/env bash
# From nothing to the README's Shakespeare-char results on a CPU: data; a DFM model per source; the
# few-step students of the recipe (config/shakespeare_char_cpu_student.py) and of its ablations; an AR
# judge; then the ELBO, the quality tables (256 samples a cell, 95% intervals), the headline cells with
# 512 samples, the student at higher temperatures, the ablation table and the speed table. Every number
# lands in $OUT as JSON; `python results/tables.py $OUT` prints the tables.
#
#   bash config/reproduce_shakespeare_char.sh
#   INPUT=path/to/tinyshakespeare.txt bash config/reproduce_shakespeare_char.sh   # no download
#   TRAIN_ARGS="--max_iters=20 --eval_interval=10" STEPS=1,8 STUDENT_STEPS=1,8 SAMPLES=4 \
#       OUT=out-smoke bash config/reproduce_shakespeare_char.sh                    # every stage in minutes
#
# Two lanes run side by side, one thread each (two processes spinning two threads each on two cores
# crawl). A rerun into the same $OUT continues: a stage whose output is there is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-out-repro-shakespeare-char}
STEPS=${STEPS:-1,2,4,8,16,64,256,1024}      # DFM rows, Euler and cumulative; the largest is the reference
STUDENT_STEPS=${STUDENT_STEPS:-1,2,4,8,16,64,256,1024}
ABLATION_STEPS=${ABLATION_STEPS:-4,8}
SAMPLES=${SAMPLES:-256}
HEADLINE_SAMPLES=${HEADLINE_SAMPLES:-512}  # the headline cells: about +-2% instead of +-3%
HEADLINE_STEPS=${HEADLINE_STEPS:-4,8}
TEMPERATURES=${TEMPERATURES:-1.05 1.1}  # the uniform student sampled hotter: perplexity at matched entropy
TRAIN_ARGS=${TRAIN_ARGS:-}
export OMP_NUM_THREADS=1
mkdir -p "$OUT"

# 1. data: train.bin, val.bin, meta.json (downloads the text, or reads $INPUT)
python data/shakespeare_char/prepare.py ${INPUT:+--input="$INPUT"}

# 2. training; each run's wall clock goes to $OUT/times.jsonl (the distillation budget is read from it)
train() {  # train NAME ARGS...
  local name=$1; shift
  [ -f "$OUT/$name/done" ] && return 0
  local start=$SECONDS
  python train.py "$@" --out_dir="$OUT/$name" --overwrite=True $TRAIN_ARGS > "$OUT/$name.log" 2>&1 \
    || { echo "training $name failed: see $OUT/$name.log"; return 1; }
  echo "{\"run\": \"$name\", \"seconds\": $((SECONDS - start))}" >> "$OUT/times.jsonl"
  touch "$OUT/$name/done"
}
waitfor() { until [ -f "$OUT/$1/done" ]; do sleep 10; done; }
student() {  # student NAME SOURCE ARGS...: the recipe preset, distilled from that source's DFM model
  local name=$1 source=$2; shift 2
  waitfor "dfm-$source"
  train "$name" config/shakespeare_char_cpu_student.py --init_from="$OUT/dfm-$source/best.pt" "$@"
}
# the ablations change one thing each from the recipe
lane_a() {
  train dfm-uniform config/shakespeare_char_cpu.py --source=uniform --max_iters=2000
  student student-uniform uniform                                          # the recipe
  student student-uniform-1600 uniform --max_iters=1600                    # distillation length
  student student-uniform-rk2 uniform --teacher=rk2                        # RK2 teacher
  student student-uniform-inverse-h uniform --step_size_weighting=inverse_h          # the paper's P(h)
}
lane_b() {
  train dfm-mask config/shakespeare_char_cpu.py --source=mask --max_iters=2000
  train ar config/shakespeare_char_cpu_ar.py
  student student-mask mask                                                # the other source
  student student-uniform-400 uniform --max_iters=400                      # distillation length
  student student-uniform-probs uniform --teacher_average=probs            # average probabilities
  student student-uniform-inverse-h-probs uniform --step_size_weighting=inverse_h --teacher_average=probs
  student student-uniform-ema999 uniform --ema_decay=0.999                  # a slower teacher
}
lane_a > "$OUT/lane-a.log" 2>&1 & a=$!
lane_b > "$OUT/lane-b.log" 2>&1 & b=$!
trap 'kill $a $b 2>/dev/null' EXIT
wait $a || { echo "lane a failed: see $OUT/lane-a.log"; exit 1; }
wait $b || { echo "lane b failed: see $OUT/lane-b.log"; exit 1; }
trap - EXIT

# 3. ELBO perplexity of the mask-source DFM model on the validation text
python eval.py --mode=elbo --device=cpu --dfm="$OUT/dfm-mask/best.pt" --out_json="$OUT/elbo.json" > "$OUT/elbo.md"

# 4. quality against steps, judged by the AR model: DFM (Euler, cumulative) and the student per source,
#    held-out text and AR samples beside them; the DFM model at the most steps is the reference row
quality() {  # quality SOURCE STUDENT
  python eval.py --mode=quality --device=cpu --dfm="$OUT/dfm-$1/best.pt" --student="$OUT/$2/ckpt.pt" \
      --judge="$OUT/ar/best.pt" --steps_list="$STEPS" --student_steps_list="$STUDENT_STEPS" --num_samples="$SAMPLES" \
      --out_json="$OUT/quality-$1.json" --out_png="$OUT/quality-$1.png" > "$OUT/quality-$1.md" 2> "$OUT/quality-$1.log"
}
quality uniform student-uniform & a=$!
quality mask student-mask & b=$!
wait $a && wait $b || { echo "quality evaluation failed: see $OUT/quality-*.log"; exit 1; }

# 4b. the headline, with more samples: the reference (DFM, cumulative, at the most steps) and the student
#     at 4 and 8 steps, where a 95% interval of +-3% is too wide to settle a 5% question
headline() {  # headline SOURCE STUDENT
  python eval.py --mode=quality --device=cpu --dfm="$OUT/dfm-$1/best.pt" --student="$OUT/$2/ckpt.pt" \
      --judge="$OUT/ar/best.pt" --steps_list="${STEPS##*,}" --student_steps_list="$HEADLINE_STEPS" \
      --dfm_methods=cumulative --num_samples="$HEADLINE_SAMPLES" --out_json="$OUT/headline-$1.json" \
      > "$OUT/headline-$1.md" 2> "$OUT/headline-$1.log"
}
headline uniform student-uniform & a=$!
headline mask student-mask & b=$!
wait $a && wait $b || { echo "headline evaluation failed: see $OUT/headline-*.log"; exit 1; }

# 4c. more samples for the cells whose 95% interval at 256 samples was wider than +-3% (few steps both
#     sources, the mask source's 256 steps and its Euler 1024); tables.py shows the larger of each cell
more() {  # more SOURCE NAME STEPS STUDENT_STEPS METHODS
  python eval.py --mode=quality --device=cpu --dfm="$OUT/dfm-$1/best.pt" ${4:+--student="$OUT/student-$1/ckpt.pt"} \
      --judge="$OUT/ar/best.pt" --steps_list="$3" ${4:+--student_steps_list="$4"} --dfm_methods="$5" \
      --num_samples="$HEADLINE_SAMPLES" --out_json="$OUT/quality-$1-$2.json" > "$OUT/quality-$1-$2.md" 2> "$OUT/quality-$1-$2.log"
}
more uniform more 1,2,4,8,16,64 1,2,4,8,16,64 euler,cumulative & a=$!
{ more mask more 1,2,4,8,16,64,256 1,2,4,8,16,64,256 euler,cumulative && more mask more-euler 1024 "" euler; } & b=$!
wait $a && wait $b || { echo "evaluation failed: see $OUT/quality-*-more*.log"; exit 1; }

# 4d. the uniform student at temperatures above 1, judged against the same reference: how much of its
#     perplexity is bought with entropy (each row as a ratio: python results/tables.py "$OUT")
for T in $TEMPERATURES; do
  python eval.py --mode=quality --device=cpu --student="$OUT/student-uniform/ckpt.pt" --judge="$OUT/ar/best.pt" \
      --student_steps_list="$HEADLINE_STEPS" --num_samples="$HEADLINE_SAMPLES" --temperature="$T" \
      --out_json="$OUT/temperature-uniform-$T.json" > "$OUT/temperature-uniform-$T.md" 2> "$OUT/temperature-uniform-$T.log"
done

# 5. the ablation: every student at a few steps against the headline's reference, with as many samples
#    (the reference and the recipe's rows are reused)
ablation=""
for s in student-uniform student-uniform-400 student-uniform-1600 student-uniform-rk2 student-uniform-inverse-h \
         student-uniform-probs student-uniform-inverse-h-probs student-uniform-ema999; do ablation="$ablation,$OUT/$s/ckpt.pt"; done
python eval.py --mode=quality --device=cpu --dfm="$OUT/dfm-uniform/best.pt" --student="${ablation#,}" \
    --judge="$OUT/ar/best.pt" --steps_list="${STEPS##*,}" --student_steps_list="$ABLATION_STEPS" --dfm_methods=cumulative \
    --num_samples="$HEADLINE_SAMPLES" --previous="$OUT/headline-uniform.json" --out_json="$OUT/ablation-uniform.json" \
    > "$OUT/ablation-uniform.md" 2> "$OUT/ablation-uniform.log"

# 6. speed at the trained models' size (it does not depend on the weights): AR with KV cache, the student, DFM
python bench.py --mode=study --device=cpu --lengths=128 --batch_sizes=1,32 --large=False --out_json="$OUT/speed.json" > "$OUT/speed.md"

python results/tables.py "$OUT" --plots="$OUT"
