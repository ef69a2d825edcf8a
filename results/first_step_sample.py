"""Students sampled with their first step changed: hotter, or conditioned on a smaller step size.

    python results/first_step_sample.py --students=S1/ckpt.pt,S2/ckpt.pt --judge=AR/best.pt \
        --references=frontier-s1.json,frontier-s2.json --variants="own;T=2;T=3;h=1/32;h=1/32:T=1.5" \
        --out_jsonl=first-step-sample.jsonl
    python results/first_step_sample.py --summary=first-step-sample.jsonl   # the mean over seeds

Each student is sampled with coarse-to-fine step sizes (nanodfm.sampler.COARSE_TO_FINE) at each of
--steps, by the reference sampler (nanodfm.sampler.sample), once per variant: "own" (every step as sample.py
takes it), "T=x" (the first step at temperature x), "h=a/b" (the first step's model call given the
step size a/b instead of its own: nearer the data's marginal at t = 0, results/first_step.py), or
both ("h=1/32:T=1.5"). Every variant draws from the same generator seed, so the variants of one
student differ by the change alone. Each row is scored by --judge and put against the reference
rows of an eval.py JSON (its "dfm cumulative" rows at the most steps, temperature 1 the reference):
raw, in entropy, and at matched entropy (nanodfm.evaluate.matched_entropy_ratio).
"""

import argparse
import json
import os
import sys
from fractions import Fraction

import torch
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from nanodfm import checkpoint, evaluate  # noqa: E402
from nanodfm.config import UsageError  # noqa: E402
from nanodfm.path import ProbPath  # noqa: E402
from nanodfm.sampler import COARSE_TO_FINE, sample  # noqa: E402


def parse_variant(text):
    """"own", "T=3", "h=1/32" or "h=1/32:T=1.5" -> (the first step's conditioning h or None, its temperature)."""
    h, temperature = None, 1.0
    for part in filter(None, text.strip().split(":")):
        key, _, value = part.partition("=")
        try:
            if key == "h" and 0 < Fraction(value) <= 1:
                h = float(Fraction(value))
                continue
            if key == "T" and float(value) > 0:
                temperature = float(value)
                continue
        except (ValueError, ZeroDivisionError):
            pass
        if part != "own":
            raise UsageError(f"variant {text!r}: use own, T=<temperature>, h=<step size in (0, 1]> or h=...:T=...")
    return h, temperature


class FirstStepConditioned(torch.nn.Module):
    """A student whose call at t = 0 (the first step) is given the step size first_h instead of its own."""

    def __init__(self, model, first_h):
        super().__init__()
        self.model, self.first_h, self.config = model, first_h, model.config

    def forward(self, x, t, h=None):
        return self.model(x, t, self.first_h if float(t.max()) == 0.0 else h)


@torch.no_grad()
def first_step_samples(model, path, num_samples, length, sizes, first_h=None, first_temperature=1.0, seed=0,
                       batch_size=64):
    """(num_samples, length) ids from the reference sampler in len(sizes) steps of those sizes; the first
    step's model call is given first_h (None: its own size) and its draw made at first_temperature."""
    generator = torch.Generator().manual_seed(seed)
    model = model if first_h is None else FirstStepConditioned(model, first_h)
    return torch.cat([sample(model, path, min(batch_size, num_samples - b), length, len(sizes), schedule=sizes,
                             generator=generator, first_temperature=first_temperature)[0]
                      for b in range(0, num_samples, batch_size)])


def reference_curve(report_path):
    """The reference rows of an eval.py JSON: (the row at temperature 1, every temperature's row)."""
    with open(report_path) as f:
        rows = json.load(f)["rows"]
    dfm = [r for r in rows if r["name"] == "dfm cumulative"]
    if not dfm:
        raise UsageError(f"{report_path} has no 'dfm cumulative' rows: give eval.py --mode=quality JSON with --dfm")
    most = max(r["steps"] for r in dfm)
    curve = [r for r in dfm if r["steps"] == most]
    base = next((r for r in curve if r["temperature"] == 1.0), None)
    if base is None:
        raise UsageError(f"{report_path} has no reference row at temperature 1")
    return base, curve


def summary(rows):
    """Markdown: for each (steps, variant), the mean over the rows' seeds of the three ratios."""
    groups = {}
    for r in rows:
        groups.setdefault((r["steps"], r["variant"]), []).append(r)
    lines = ["| steps | first step | seeds | x reference | entropy x | x reference at matched entropy |",
             "| ---: | --- | --- | ---: | ---: | ---: |"]
    for (steps, variant), group in sorted(groups.items(), key=lambda kv: kv[0][0]):
        mean = lambda key: sum(r[key] for r in group) / len(group)
        matched = f"{mean('matched'):.3f}" if all(r["matched"] is not None for r in group) else "outside the curve"
        seeds = ", ".join(str(r["seed"]) for r in group)
        lines.append(f"| {steps} | {variant} | {seeds} | {mean('raw'):.3f} | {mean('entropy_ratio'):.3f} | {matched} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", default="", help="student checkpoints, separated by commas")
    parser.add_argument("--references", default="", help="an eval.py JSON for each student, same order")
    parser.add_argument("--judge", default="", help="the AR checkpoint that scores the samples")
    parser.add_argument("--variants", default="own;T=3;h=1/32", help="the first steps to try, separated by ;")
    parser.add_argument("--steps", default="8", help="step counts, each with its coarse-to-fine sizes")
    parser.add_argument("--num_samples", type=int, default=512)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out_jsonl", default="", help="rows are appended here, one JSON object a line")
    parser.add_argument("--summary", default="", help="only print the mean over seeds of this JSONL's rows")
    args = parser.parse_args()
    try:
        if args.summary:
            if not os.path.isfile(args.summary):
                raise UsageError(f"{args.summary} not found: give the --out_jsonl of a run")
            with open(args.summary) as f:
                print(summary([json.loads(line) for line in f if line.strip()]))
            return
        if not (args.students and args.references and args.judge and args.out_jsonl):
            raise UsageError("give --students, --references, --judge and --out_jsonl (or --summary=FILE)")
        students, references = args.students.split(","), args.references.split(",")
        if len(students) != len(references):
            raise UsageError(f"{len(students)} students but {len(references)} references: give one JSON a student")
        for p in students + references + [args.judge]:
            if not os.path.isfile(p):
                raise UsageError(f"{p} not found: train the models (config/reproduce_frontier.sh) or fix the path")
        variants = {v.strip(): parse_variant(v) for v in args.variants.split(";") if v.strip()}
        steps = [int(s) for s in args.steps.split(",")]
        if any(s not in COARSE_TO_FINE for s in steps):
            raise UsageError(f"--steps={args.steps}: coarse-to-fine sizes exist for {sorted(COARSE_TO_FINE)} steps")
        torch.set_num_threads(1)
        judge = evaluate.load_judge(args.judge, "cpu")[0]
        jobs = [(p, r, S, v) for p, r in zip(students, references) for S in steps for v in variants]
        model = None
        for student, report, S, name in tqdm(jobs, desc="first steps"):
            if model is None or model_path != student:
                ck = checkpoint.load(student, kinds=("student",))
                model, model_path = checkpoint.build_model(ck, weights="ema").eval(), student
                path, (base, curve) = ProbPath.of(ck), reference_curve(report)
            first_h, first_T = variants[name]
            sizes = list(COARSE_TO_FINE[S])
            ids = first_step_samples(model, path, args.num_samples, args.length, sizes, first_h, first_T, args.seed)
            row = evaluate.score(judge, ids)
            matched, note = evaluate.matched_entropy_ratio(curve, row["entropy"], row["gen_ppl"], row["gen_ppl_ci95"],
                                                           row["entropy_ci95"])
            raw, raw_ci = evaluate.ratio_interval(row["gen_ppl"], row["gen_ppl_ci95"], base["gen_ppl"], base["gen_ppl_ci95"])
            row = {"seed": ck["config"].get("seed"), "student": student, "steps": S, "variant": name, "sizes": sizes,
                   "first_h": first_h, "first_temperature": first_T, **row, "raw": raw, "raw_ci95": raw_ci,
                   "entropy_ratio": row["entropy"] / base["entropy"],
                   "matched": matched and matched["gen_ppl_ratio"], "matched_ci95": matched and matched["gen_ppl_ratio_ci95"],
                   "note": note}
            tqdm.write(f"seed {row['seed']} {S} steps {name:<14} x reference {raw:.3f} +- {raw_ci:.3f}  "
                       f"entropy x {row['entropy_ratio']:.3f}  matched "
                       + (f"{row['matched']:.3f} +- {row['matched_ci95']:.3f}" if matched else note))
            with open(args.out_jsonl, "a") as f:
                f.write(json.dumps(row) + "\n")
    except UsageError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
