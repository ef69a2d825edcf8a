"""What the first step predicts: where a few-step student loses its diversity (README, Results).

    python results/first_step.py --pairs=DFM/best.pt:STUDENT/ckpt.pt[,DFM2/best.pt:STUDENT2/ckpt.pt ...] \
        --data=data/shakespeare_char/train.bin --out_json=first-step-predictions.json

At t = 0 under the uniform source every position holds a random token, so what a model predicts
there is what a sample's first step draws from. For each pair (a DFM model and its student) this
feeds both the same uniform-noise sequences at t = 0 and reports, in bits, the entropy of the
average prediction over all positions (the marginal the first step draws its tokens from) and the
mean entropy of a position's prediction: for the DFM model (no step size), for the student at each
step size h, and each of them with the logits divided by a temperature. The data's own unigram
entropy (from --data) is the line they are read against: the exact denoiser at t = 0 predicts the
data's marginal at every position.
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from nanodfm import checkpoint  # noqa: E402
from nanodfm.path import ProbPath  # noqa: E402


def entropy_bits(p):
    """Entropy in bits over the last dimension of probabilities p."""
    return -(p * torch.log2(p.clamp_min(1e-300))).sum(-1)


def predictions(model, x, h=None, temperature=1.0):
    """(entropy of the average prediction, mean entropy of a position's prediction) at t = 0, bits."""
    with torch.no_grad():
        p = torch.softmax(model(x, 0.0, h).double() / temperature, dim=-1)
    return entropy_bits(p.flatten(0, 1).mean(0)).item(), entropy_bits(p).mean().item()


def data_entropy(path, vocab_size):
    counts = np.bincount(np.memmap(path, dtype=np.uint16, mode="r"), minlength=vocab_size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", required=True, help="DFM:STUDENT checkpoint pairs, separated by commas")
    parser.add_argument("--data", required=True, help="the training tokens (a .bin file): the data's unigram entropy")
    parser.add_argument("--steps", default="2,4,8,32", help="the student's step sizes h = 1/S, one S each")
    parser.add_argument("--temperatures", default="1,3", help="each prediction also at these temperatures")
    parser.add_argument("--num_samples", type=int, default=256, help="noise sequences a model sees")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out_json", default="")
    args = parser.parse_args()
    if not os.path.isfile(args.data):
        sys.exit(f"error: {args.data} not found: prepare the dataset first (data/<name>/prepare.py)")
    torch.set_num_threads(1)
    rows, data_h = [], None
    for pair in args.pairs.split(","):
        if pair.count(":") != 1:
            sys.exit(f"error: --pairs entry {pair!r} is not DFM:STUDENT")
        try:
            dfm_ck, student_ck = (checkpoint.load(p, kinds=(kind,)) for p, kind in zip(pair.split(":"), ("dfm", "student")))
        except ValueError as e:  # a missing file, or a checkpoint of the wrong kind: one line
            sys.exit(f"error: {e}")
        path = ProbPath.of(dfm_ck)
        if path.source != "uniform":
            sys.exit(f"error: {pair}: the DFM model's source is {path.source}; at t = 0 the mask source predicts "
                     "from MASK alone, use uniform-source models")
        dfm = checkpoint.build_model(dfm_ck).eval()
        student = checkpoint.build_model(student_ck, weights="ema").eval()
        data_h = data_h if data_h is not None else data_entropy(args.data, path.vocab_size)
        length = dfm.config.block_size
        x = path.source_tokens((args.num_samples, length), torch.Generator().manual_seed(args.seed))
        seed = dfm_ck["config"].get("seed")
        for temperature in (float(t) for t in args.temperatures.split(",")):
            models = [("dfm", dfm, None)] + [(f"student h=1/{s}", student, 1.0 / int(s)) for s in args.steps.split(",")]
            for name, model, h in models:
                marginal, position = predictions(model, x, h, temperature)
                rows.append({"seed": seed, "model": name, "h": h, "temperature": temperature,
                             "marginal_entropy": marginal, "position_entropy": position})
                print(f"seed {seed}  {name:<18} T={temperature:g}  marginal {marginal:.3f} bits  "
                      f"per position {position:.3f} bits  (data {data_h:.3f})")
    if args.out_json:
        with open(args.out_json, "w") as f:
            json.dump({"settings": vars(args), "data_entropy": data_h,
                       "num_samples": args.num_samples, "seed": args.seed,
                       "log2_vocab": math.log2(path.vocab_size), "rows": rows}, f, indent=1)
        print(f"wrote {args.out_json}")


if __name__ == "__main__":
    main()
