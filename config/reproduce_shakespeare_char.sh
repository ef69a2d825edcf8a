#!/usr/bin/env bash
# From nothing to the Shakespeare-char results on a CPU: data, DFM model, few-step student, AR judge,
# then ELBO perplexity, sample quality against steps, and generation speed.
#
#   bash config/reproduce_shakespeare_char.sh
#   INPUT=path/to/tinyshakespeare.txt bash config/reproduce_shakespeare_char.sh   # no download
#   OUT=out-repro STEPS=1,2,4,8,16,32,64,128,256 SAMPLES=64 bash config/reproduce_shakespeare_char.sh
#   TRAIN_ARGS="--max_iters=20 --eval_interval=10" STEPS=1,8 SAMPLES=4 bash config/reproduce_shakespeare_char.sh
#       (a smoke run of every stage in a minute or two; TRAIN_ARGS is appended to each train.py call)
#
# Every stage writes under $OUT; the tables go to stdout and $OUT/*.json, the plot to $OUT/quality.png
# (when matplotlib is installed). Roughly 15 (DFM) + student + 5-10 (AR) minutes of training on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-out-repro-shakespeare-char}
STEPS=${STEPS:-1,2,4,8,16,32,64,128,256}
SAMPLES=${SAMPLES:-64}
TRAIN_ARGS=${TRAIN_ARGS:-}
mkdir -p "$OUT"

# 1. data: train.bin, val.bin, meta.pkl (downloads the text, or reads $INPUT, or the shared offline copy)
python data/shakespeare_char/prepare.py ${INPUT:+--input="$INPUT"}

# 2. the DFM model (mask source), 3. its few-step student, 4. the AR baseline, which is also the judge
python train.py config/shakespeare_char_cpu.py --out_dir="$OUT/dfm" $TRAIN_ARGS
python train.py config/shakespeare_char_cpu_student.py --init_from="$OUT/dfm/ckpt.pt" --out_dir="$OUT/student" $TRAIN_ARGS
python train.py config/shakespeare_char_cpu_ar.py --out_dir="$OUT/ar" $TRAIN_ARGS

# 5. ELBO perplexity of the DFM model on the validation text
python eval.py --mode=elbo --device=cpu --dfm="$OUT/dfm/ckpt.pt" --out_json="$OUT/elbo.json"

# 6. quality: generative perplexity and entropy against steps, judged by the AR model
python eval.py --mode=quality --device=cpu --dfm="$OUT/dfm/ckpt.pt" --student="$OUT/student/ckpt.pt" \
    --judge="$OUT/ar/ckpt.pt" --steps_list="$STEPS" --num_samples="$SAMPLES" \
    --out_json="$OUT/quality.json" --out_png="$OUT/quality.png" | tee "$OUT/quality.md"

# 7. speed of the three trained models (same size): AR with KV cache, DFM at 256 steps, student at 8
python eval.py --mode=speed --device=cpu --ar="$OUT/ar/ckpt.pt" --dfm="$OUT/dfm/ckpt.pt" \
    --student="$OUT/student/ckpt.pt" --speed_batch_sizes=1,32 --out_json="$OUT/speed.json" | tee "$OUT/speed.md"
