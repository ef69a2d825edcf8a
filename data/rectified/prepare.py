"""Pairs for a rectified coupling: a DFM model's own samples x1, each with the source x0 it started from.

    python data/rectified/prepare.py --ckpt=out-shakespeare-char-cpu/best.pt --pairs=4096 --steps=256
    python train.py config/shakespeare_char_cpu.py --init_from=out-shakespeare-char-cpu/best.pt \\
        --dataset=rectified --learning_rate=3e-4 --max_iters=1000 --out_dir=out-rectified

A DFM model with the uniform source turns noise x0 into text x1. Retrained on its own pairs, with x_t
mixing each x1 with its own x0 instead of fresh noise (`ProbPath.x_t`), the model learns a coupling in
which x1 is nearly fixed by x0: the positions a few-step sampler draws independently then depend on
each other less (rectified discrete flow, ReDi, NeurIPS 2025; docs/method.md, section 7). A second
round draws pairs from the rectified model.

The folder (--out_dir, default data/rectified) is a dataset like the others: train.bin and val.bin hold
the samples, one row of --length tokens after another, and train.source.bin and val.source.bin their
sources, row for row; meta.json (the model's vocabulary) records the four files and `pairs`: the model,
its steps, the row length and the seed.
"""

import argparse
import sys
from pathlib import Path

import torch
from tqdm import tqdm

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # so `import nanodfm` works when run as a script

from nanodfm import checkpoint, engine  # noqa: E402
from nanodfm.config import UsageError, pick_device, run  # noqa: E402
from nanodfm.data import load_meta, make_folder, write_meta, write_split  # noqa: E402
from nanodfm.path import ProbPath  # noqa: E402

DATASET_KEYS = ("tokens", "max_token_id", "files", "pairs")  # what a meta records of its own files


def draw_pairs(model, path, num_pairs, length, steps, batch_size, generator, device):
    """(x0, x1), (num_pairs, length) each: sources drawn from the path's source and the samples the
    model makes of them at `steps` cumulative steps, batch by batch."""
    sources, samples = [], []
    for first in tqdm(range(0, num_pairs, batch_size), desc="pairs", dynamic_ncols=True):
        x0 = path.source_tokens((min(batch_size, num_pairs - first), length), generator, device)
        x1, _ = engine.sample(model, path, len(x0), length, steps, "cumulative", generator=generator,
                              device=device, source=x0)
        sources.append(x0.cpu())
        samples.append(x1.cpu())
    return torch.cat(sources), torch.cat(samples)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="the DFM model (kind dfm, uniform source) that draws the pairs")
    parser.add_argument("--pairs", type=int, default=4096, help="training pairs (val gets 1/16 as many more)")
    parser.add_argument("--steps", type=int, default=256, help="cumulative steps per sample")
    parser.add_argument("--length", type=int, default=0, help="tokens per sample; 0: the model's block_size")
    parser.add_argument("--batch_size", type=int, default=64, help="samples drawn at once")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out_dir", default=str(HERE), help="where the dataset goes")
    args = parser.parse_args()
    for key in ("pairs", "steps", "batch_size"):
        if getattr(args, key) < 1:
            raise UsageError(f"--{key} must be a positive integer, got {getattr(args, key)}")
    ck = checkpoint.load(args.ckpt, kinds=("dfm",))
    path = ProbPath.of(ck)
    if path.source != "uniform":
        raise UsageError(f"{args.ckpt} has the mask source, whose x0 is the same for every sample: a coupling "
                         f"needs the uniform source (train one with --source=uniform)")
    block = ck["model_config"]["block_size"]
    length = args.length or block
    if not 1 <= length <= block:
        raise UsageError(f"--length must be in [1, {block}] (the model's block_size), got {args.length}")
    device = pick_device(args.device)
    model = checkpoint.build_model(ck).to(device).eval()
    out_dir = Path(make_folder(args.out_dir))
    generator = torch.Generator(device).manual_seed(args.seed)
    with torch.no_grad():  # all pairs first: an interrupted run writes nothing
        pairs = {split: draw_pairs(model, path, count, length, args.steps, args.batch_size, generator, device)
                 for split, count in (("train", args.pairs), ("val", max(1, args.pairs // 16)))}
    for split, (x0, x1) in pairs.items():
        write_split(out_dir / f"{split}.bin", [x1.numpy()])
        write_split(out_dir / f"{split}.source.bin", [x0.numpy()])
    meta = {k: v for k, v in ck["meta"].items() if k not in DATASET_KEYS}
    write_meta(out_dir, {**meta, "pairs": {"model": str(args.ckpt), "steps": args.steps, "row": length,
                                           "seed": args.seed}})
    meta = load_meta(str(out_dir))
    print(f"{meta['tokens']['train'] // length:,} training and {meta['tokens']['val'] // length:,} validation pairs "
          f"of {length} tokens at {args.steps} steps -> {out_dir}")


if __name__ == "__main__":
    run(main, "no partial file is left: the folder's dataset, if any, is as it was")
