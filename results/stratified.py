"""Stratified jumps (stratified hazard sampling, arXiv 2601.02799), an experiment on the uniform source.

The cumulative step lets each position leave x_t with probability J (sampler.jump_probability), an
independent coin at every step. Here each position draws one phase theta ~ U(0, 1) at t = 0 and keeps
the running total A of its J's; it jumps in a step whenever A crosses theta + k (k = 0, 1, ...). Since
frac(A - theta) is uniform, a step's jump chance is still J (J <= 1), the number of jumps over the run
is floor or ceil of the total (variance at most 1/4), and the destination is drawn as before.

    python results/stratified.py --dfm=DFM/best.pt --student=STUDENT/ckpt.pt --judge=AR/best.pt \
        --frontier=results/shakespeare_char_cpu/coupling-uniform.json --out_json=stratified.json
"""

import json
import os
import sys

import torch
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from nanodfm import checkpoint, evaluate
from nanodfm.config import UsageError, parse, run
from nanodfm.data import dataset_folder, split_path
from nanodfm.path import ProbPath, uniform
from nanodfm.sampler import Schedule, draw, jump_probability, step

# ----------------------------------------------------------------------------- defaults
dfm = ""  # a uniform-source DFM checkpoint
student = ""  # its few-step student
judge = ""  # an AR checkpoint
frontier = ""  # an eval.py quality JSON holding the DFM model's 1024-step rows at several temperatures
dfm_steps = "8,16,64"
student_steps = "4,8,16"
num_samples = 256
length = 128
batch_size = 32
seed = 1337
out_json = ""
# -----------------------------------------------------------------------------
DEFAULTS = {k: v for k, v in globals().items() if not k.startswith("_") and isinstance(v, (int, float, str))}


def stratified_step(x, logits, t, h, path, phase, total, generator=None):
    """(x at t + h, the new running totals): the cumulative step with each position's jump decided by
    its phase (B, L) and running total of jump probabilities (B, L) instead of a fresh coin."""
    h = torch.full_like(t, h, dtype=torch.float64)
    probs = torch.softmax(logits.double(), dim=-1)
    current = x[..., None]
    p_xt = probs.gather(-1, current).squeeze(-1)
    final = (t + h >= 1 - 1e-6)[:, None]
    J = jump_probability(p_xt, t, h, path, "cumulative")
    moves = final | (torch.floor(total + J - phase) > torch.floor(total - phase))
    target = torch.where((moves & ~final)[..., None], probs.scatter(-1, current, 0.0), probs)
    x = x.clone()
    x[moves] = draw(target[moves], generator)
    return x, total + J


@torch.no_grad()
def sample(model, path, num_samples, seq_len, steps, stratified, generator):
    """num_samples sequences in `steps` equal steps, with the reference step or the stratified one."""
    x = path.source_tokens((num_samples, seq_len), generator)
    phase = uniform(x.shape, generator, x.device, torch.float64)
    total = torch.zeros_like(phase)
    for t, h in Schedule.of(steps).times():
        t = torch.full((num_samples,), t)
        logits = model(x, t, h if model.config.step_conditioned else None)
        if stratified:
            x, total = stratified_step(x, logits, t, h, path, phase, total, generator)
        else:
            x = step(x, logits, t, h, path, "cumulative", generator=generator)
    return x


def main(argv):
    cfg = parse(DEFAULTS, argv, __doc__, __file__)
    judge_fn, _, _, _ = evaluate.load_judge(cfg["judge"], "cpu")
    with open(cfg["frontier"]) as f:
        reference = json.load(f)
    curve = [r for r in reference["rows"] if r["name"] == reference["reference"]["name"] and r["steps"] == 1024]
    rows = []
    for name, steps_list in (("dfm", cfg["dfm_steps"]), ("student", cfg["student_steps"])):
        ck = checkpoint.load(cfg[name], kinds=(name,))
        if ck["config"]["source"] != "uniform":
            raise UsageError(f"{cfg[name]} has the {ck['config']['source']} source; stratified jumps are for uniform")
        model = checkpoint.build_model(ck).eval()
        path = ProbPath(model.config.vocab_size, "uniform", ck["config"]["kappa_power"])
        train_file = split_path(dataset_folder(ck["config"]), "train")
        profile = evaluate.ngram_profile(evaluate.reference_text(train_file), path.vocab_size)
        for steps in [int(s) for s in steps_list.split(",")]:
            for stratified in (False, True):
                g = torch.Generator().manual_seed(cfg["seed"])
                ids = torch.cat([sample(model, path, min(cfg["batch_size"], cfg["num_samples"] - b), cfg["length"],
                                        steps, stratified, g)
                                 for b in tqdm(range(0, cfg["num_samples"], cfg["batch_size"]),
                                               desc=f"{name} {steps} {'stratified' if stratified else 'coin'}")])
                row = {"name": name, "sampler": "stratified" if stratified else "cumulative", "steps": steps,
                       "made_by": cfg[name], **evaluate.score(judge_fn, ids)}
                row["ngram_js"], row["ngram_js_ci95"] = evaluate.ngram_divergence(ids, profile, path.vocab_size)
                row["matched"], row["matched_note"] = evaluate.matched_entropy_ratio(
                    curve, row["entropy"], row["gen_ppl"], row["gen_ppl_ci95"], row["entropy_ci95"])
                rows.append(row)
                m = row["matched"]
                matched = f"  matched {m['gen_ppl_ratio']:.3f} ± {m['gen_ppl_ratio_ci95']:.3f}" if m else ""
                print(f"{name:8} {steps:3} {row['sampler']:10} ppl {row['gen_ppl']:6.2f} ± {row['gen_ppl_ci95']:.2f}"
                      f"  H {row['entropy']:.3f} ± {row['entropy_ci95']:.3f}  JS {row['ngram_js']:.4f}{matched}",
                      flush=True)
    if cfg["out_json"]:
        with open(cfg["out_json"], "w") as f:
            json.dump({"settings": cfg, "frontier": curve, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    run(lambda: main(sys.argv[1:]), "nothing written")
