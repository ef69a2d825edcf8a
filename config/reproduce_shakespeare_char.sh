#!/usr/bin/env bash
# From nothing to the README's Shakespeare-char results on a CPU: data; for the mask and the uniform
# source a DFM model and two few-step students (RK4 and RK2 teachers); an AR judge; then ELBO
# perplexity, sample quality against steps, and generation speed.
#
#   bash config/reproduce_shakespeare_char.sh
#   INPUT=path/to/tinyshakespeare.txt bash config/reproduce_shakespeare_char.sh   # no download
#   OUT=out-repro STEPS=1,2,4,8,16,32,64,128,256 SAMPLES=64 bash config/reproduce_shakespeare_char.sh
#   TRAIN_ARGS="--max_iters=20 --eval_interval=10" STEPS=1,8 SAMPLES=4 bash config/reproduce_shakespeare_char.sh
#       (a smoke run of every stage in a few minutes; TRAIN_ARGS is appended to each train.py call)
#
# Every stage writes under $OUT: logs, checkpoints, the tables (*.md) and every number (*.json), and
# the plots (*.png, when matplotlib is installed). The two sources train side by side, one thread
# each: about 50 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-out-repro-shakespeare-char}
STEPS=${STEPS:-1,2,4,8,16,32,64,128,256}
SAMPLES=${SAMPLES:-64}
TRAIN_ARGS=${TRAIN_ARGS:-}
mkdir -p "$OUT"

# 1. data: train.bin, val.bin, meta.json (downloads the text, or reads $INPUT)
python data/shakespeare_char/prepare.py ${INPUT:+--input="$INPUT"}

# 2. per source: the DFM model, then its students with the RK4 and the RK2 shortcut teacher
models() {  # runs in the background, one thread (two processes spinning two threads each on two cores crawl)
  local source=$1
  export OMP_NUM_THREADS=1
  python train.py config/shakespeare_char_cpu.py --source="$source" --out_dir="$OUT/dfm-$source" $TRAIN_ARGS
  for teacher in rk4 rk2; do
    python train.py config/shakespeare_char_cpu_student.py --init_from="$OUT/dfm-$source/best.pt" \
        --teacher=$teacher --out_dir="$OUT/student-$source-$teacher" $TRAIN_ARGS
  done
}
models mask > "$OUT/train-mask.log" 2>&1 &
mask_pid=$!
models uniform > "$OUT/train-uniform.log" 2>&1 &
uniform_pid=$!
wait $mask_pid || { echo "mask-source training failed: see $OUT/train-mask.log"; exit 1; }
# 3. the AR baseline, which is also the judge, while the uniform source finishes
OMP_NUM_THREADS=1 python train.py config/shakespeare_char_cpu_ar.py --out_dir="$OUT/ar" $TRAIN_ARGS > "$OUT/train-ar.log" 2>&1
wait $uniform_pid || { echo "uniform-source training failed: see $OUT/train-uniform.log"; exit 1; }

# 4. ELBO perplexity of the mask-source DFM model on the validation text
python eval.py --mode=elbo --device=cpu --dfm="$OUT/dfm-mask/best.pt" --out_json="$OUT/elbo.json" | tee "$OUT/elbo.md"

# 5. quality: generative perplexity and entropy against steps, judged by the AR model (both sources at once)
quality() {
  OMP_NUM_THREADS=1 python eval.py --mode=quality --device=cpu --dfm="$OUT/dfm-$1/best.pt" \
      --student="$OUT/student-$1-rk4/ckpt.pt,$OUT/student-$1-rk2/ckpt.pt" \
      --judge="$OUT/ar/best.pt" --steps_list="$STEPS" --num_samples="$SAMPLES" \
      --out_json="$OUT/quality-$1.json" --out_png="$OUT/quality-$1.png" > "$OUT/quality-$1.md" 2> "$OUT/quality-$1.log"
}
quality mask & mask_pid=$!
quality uniform & uniform_pid=$!
wait $mask_pid && wait $uniform_pid || { echo "quality evaluation failed: see $OUT/quality-*.log"; exit 1; }
cat "$OUT/quality-mask.md" "$OUT/quality-uniform.md"

# 6. speed of the three trained models (same size): AR with KV cache, DFM at 256 steps, student at 8
python eval.py --mode=speed --device=cpu --ar="$OUT/ar/best.pt" --dfm="$OUT/dfm-mask/best.pt" \
    --student="$OUT/student-mask-rk4/ckpt.pt" --speed_batch_sizes=1,32 --out_json="$OUT/speed.json" | tee "$OUT/speed.md"
