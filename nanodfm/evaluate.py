"""Measuring quality: generative perplexity, unigram entropy and ELBO perplexity.

docs/method.md section 6 states the choices (section 3 the ELBO). A sample's perplexity is exp(mean NLL of tokens
2..L given the tokens before them) under a causal judge, an AR checkpoint trained here or GPT-2 through `transformers`;
beside it, its unigram entropy in bits: a low perplexity with a low entropy means repetition, not quality. Every mean
comes with its 95% interval: at 64 samples a cell it is about +-8%, too wide for a 5% question, hence eval.py's 256.
Rows sample through the engine (the reference sampler's law) from generators seeded alike: they differ by method only.
"""

import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from nanodfm import checkpoint
from nanodfm.autoregressive import generate
from nanodfm.config import UsageError
from nanodfm.data import get_batch
from nanodfm.engine import sample
from nanodfm.path import elbo_bound

GPT2_VOCAB = 50257


def is_gpt2(spec):
    """Whether a --judge is a GPT-2 model: its name, or a folder that GPT-2's save_pretrained wrote
    (config.json of model_type gpt2); else it is an AR checkpoint path."""
    if spec in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"):
        return True
    try:
        with open(os.path.join(spec, "config.json"), encoding="utf-8") as f:
            return json.load(f).get("model_type") == "gpt2"
    except (OSError, ValueError, AttributeError):
        return False


def load_judge(spec, device):
    """(logits_fn, block_size, vocab_size, checkpoint) of a judge: an AR checkpoint path, a GPT-2 name or
    a GPT-2 folder, whose checkpoint is then only its meta. logits_fn(ids (B, T)) returns logits (B, T, V)."""
    if not is_gpt2(spec):
        ck = checkpoint.load(spec, kinds=("ar",))
        model = checkpoint.build_model(ck).to(device).eval()
        return model, model.config.block_size, model.config.vocab_size, ck
    try:
        from transformers import GPT2LMHeadModel
    except ImportError:
        raise UsageError(f"--judge={spec} needs `pip install transformers`; or pass an AR checkpoint path") from None
    try:
        hf = GPT2LMHeadModel.from_pretrained(spec).to(device).eval()
    except OSError as e:  # offline and not in the Hugging Face cache
        raise UsageError(f"--judge={spec}: cannot load it ({str(e).splitlines()[0]}); download it once with "
                         f"a network, or pass an AR checkpoint path") from None
    if hf.config.vocab_size != GPT2_VOCAB:
        raise UsageError(f"--judge={spec} has {hf.config.vocab_size} tokens, not GPT-2's {GPT2_VOCAB}")
    meta = {"tokenizer": "gpt2", "vocab_size": GPT2_VOCAB}  # GPT-2's checkpoint, as far as eval.py reads one
    return (lambda ids: hf(ids).logits), hf.config.n_positions, GPT2_VOCAB, {"meta": meta}


@torch.no_grad()
def generative_perplexity(judge, ids, batch_size=32):
    """Per-sample exp(mean NLL) (N,) of tokens 2..L of ids (N, L) under the causal judge."""
    nll = []
    for chunk in ids.split(batch_size):
        logits = judge(chunk[:, :-1]).float()  # (b, L-1, V): position i predicts token i+1
        nll.append(F.cross_entropy(logits.transpose(1, 2), chunk[:, 1:], reduction="none").mean(dim=1))
    return torch.cat(nll).exp()


def unigram_entropy(ids):
    """Per-sample entropy in bits (N,) of the token histogram of each row of ids (N, L)."""
    p = torch.zeros(ids.shape[0], int(ids.max()) + 1, dtype=torch.float64, device=ids.device).scatter_add_(
        1, ids, torch.ones_like(ids, dtype=torch.float64)) / ids.shape[1]  # (N, V): each row's token frequencies
    return -(p * torch.log2(p.clamp_min(1e-300))).sum(dim=1)  # 0 log 0 = 0


def reference_text(train_file, tokens=2 ** 20):
    """The first `tokens` ids of the training text (1, T) (2^20: all of Tiny Shakespeare's), whose n-gram
    frequencies samples are compared with: larger than the held-out split and disjoint from the held-out
    row, whose divergence is what text of the data's distribution scores (a model of its n-grams can score below)."""
    return torch.from_numpy(np.fromfile(train_file, dtype=np.uint16, count=tokens).astype(np.int64))[None]


def jensen_shannon(p, q):
    """The Jensen-Shannon divergence in bits between distributions p and q over their last dimension: 0 to 1."""
    m = (p + q) / 2
    kl = lambda a: (a * torch.log2(a / m)).where(a > 0, 0.0).sum(-1)  # 0 log 0 = 0
    return (kl(p) + kl(q)) / 2


def ngram_keys(ids, n, vocab_size):
    """One int64 key per n-gram of each row of ids (N, L): (N, L - n + 1); V^4 < 2^63 for GPT-2's V."""
    return (ids.cpu().long().unfold(1, n, 1) * vocab_size ** torch.arange(n)).sum(-1)


def ngram_profile(text, vocab_size, max_n=4):
    """The n-gram frequencies of text (M, L) for `ngram_divergence`: [(sorted keys (U,), counts (U,))], n = 1..max_n."""
    return [torch.unique(ngram_keys(text, n, vocab_size), return_counts=True) for n in range(1, max_n + 1)]


def ngram_divergence(ids, profile, vocab_size, num_boot=200, seed=0):
    """(divergence, half-width of its 95% bootstrap interval): the Jensen-Shannon divergence in bits between the
    n-gram frequencies of samples ids (N, L) and a reference's (`ngram_profile`), averaged over its n = 1..max_n.
    0: the same frequencies; 1: no n-gram in common. It sees which tokens follow which, pooled over all samples,
    which perplexity and entropy do not; not coherence beyond max_n tokens. From finite texts it is above 0 even
    for held-out text: read rows against each other. The interval resamples the samples (the reference held
    fixed). Only the n-grams the samples contain are touched: a reference n-gram they lack adds q / 2 to JS."""
    generator = torch.Generator().manual_seed(seed)
    weights = torch.stack([torch.ones(len(ids), dtype=torch.float64)] + [  # each sample's count: as is, resampled
        torch.bincount(torch.randint(len(ids), (len(ids),), generator=generator), minlength=len(ids)).double()
        for _ in range(num_boot)])  # (B, N)
    total = torch.zeros(num_boot + 1, dtype=torch.float64)
    for n, (keys, counts) in enumerate(profile, 1):
        ours = ngram_keys(ids, n, vocab_size)  # (N, L - n + 1)
        seen, at = torch.unique(ours, return_inverse=True)  # the samples' distinct n-grams (K,)
        p = torch.zeros(len(weights), len(seen), dtype=torch.float64).index_add_(
            1, at.reshape(-1), weights.repeat_interleave(ours.shape[1], dim=1))  # (B, K) counts
        p = p / p.sum(1, keepdim=True)
        where = torch.searchsorted(keys, seen).clamp(max=len(keys) - 1)
        q = torch.where(keys[where] == seen, counts[where].double(), 0.0) / counts.sum()  # (K,); 0: never seen
        total += jensen_shannon(p, q) + (1 - q.sum()) / 2  # the rest of q against m = q / 2: 1 bit
    divergence = total / len(profile)
    low, high = torch.quantile(divergence[1:], torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return divergence[0].item(), (high - low) / 2


def mean_interval(values):
    """(mean, half-width of its 95% confidence interval) of per-sample values (N,): 1.96 standard errors
    (the central limit theorem; at N >= 256 within a few percent of a bootstrap)."""
    values = values.double()
    half = 1.959964 * values.std().item() / math.sqrt(len(values)) if len(values) > 1 else float("inf")
    return values.mean().item(), half


def ratio_interval(a, a_ci, b, b_ci):
    """a / b and the half-width of its 95% interval, from two independent means with 95% half-widths
    (the delta method: relative standard errors add in quadrature)."""
    return a / b, a / b * math.hypot(a_ci / a, b_ci / b)


def matched_entropy_ratio(curve, entropy, ppl, ppl_ci, entropy_ci=0.0):
    """(dict, None): a row's perplexity against the reference's at the row's own entropy; or (None, a note)
    outside the reference curve's range (no extrapolation).

    curve: the reference's points, one or more (e.g. the DFM model at several temperatures), dicts with "entropy",
    "gen_ppl", "gen_ppl_ci95" and optionally "temperature". The reference perplexity and its 95% half-width (an
    upper bound on that of an average of two independent means) are interpolated linearly between the two points
    that bracket `entropy`; "gen_ppl_ratio_ci95_with_entropy" adds the row's own uncertainty, the curve's slope
    times entropy_ci, to the reference's in quadrature."""
    points = sorted(curve, key=lambda p: p["entropy"])
    lowest, highest = points[0]["entropy"], points[-1]["entropy"]
    if not lowest <= entropy <= highest:
        side = (f"below the reference curve's lowest {lowest:.3f}: add lower" if entropy < lowest
                else f"above the reference curve's highest {highest:.3f}: add higher")
        return None, f"entropy {entropy:.3f} {side} --reference_temperatures"
    i = next(i for i, p in enumerate(points) if p["entropy"] >= entropy)
    lo, hi = points[max(i - 1, 0)], points[i]  # the brackets (one point twice at the lowest)
    span = hi["entropy"] - lo["entropy"]
    w = (entropy - lo["entropy"]) / span if span > 0 else 0.5  # 0 at lo, 1 at hi
    ref, ref_ci = ((1 - w) * lo[key] + w * hi[key] for key in ("gen_ppl", "gen_ppl_ci95"))
    slope = (hi["gen_ppl"] - lo["gen_ppl"]) / span if span > 0 else 0.0  # perplexity per bit
    ratio, ratio_ci = ratio_interval(ppl, ppl_ci, ref, ref_ci)
    _, ratio_ci_entropy = ratio_interval(ppl, ppl_ci, ref, math.hypot(ref_ci, slope * entropy_ci))
    return {"reference_gen_ppl": ref, "reference_gen_ppl_ci95": ref_ci, "gen_ppl_ratio": ratio,
            "gen_ppl_ratio_ci95": ratio_ci, "gen_ppl_ratio_ci95_with_entropy": ratio_ci_entropy, "slope": slope,
            "bracket": [lo.get("temperature"), hi.get("temperature")]}, None


def score(judge, ids, batch_size=32):
    """Generative perplexity and entropy over samples: means, standard deviations, 95% half-widths."""
    ppl, ent = generative_perplexity(judge, ids, batch_size).double(), unigram_entropy(ids)
    (ppl_mean, ppl_ci), (ent_mean, ent_ci) = mean_interval(ppl), mean_interval(ent)
    std = lambda v: v.std().item() if len(v) > 1 else 0.0
    return {"gen_ppl": ppl_mean, "gen_ppl_ci95": ppl_ci, "gen_ppl_std": std(ppl), "entropy": ent_mean,
            "entropy_ci95": ent_ci, "entropy_std": std(ent), "num_samples": len(ids)}


def flow_samples(model, path, num_samples, length, steps, sampler="cumulative", batch_size=32, seed=0, device="cpu"):
    """num_samples (N, length) ids from a DFM model or student in `steps` steps (a number or a Schedule), in batches."""
    generator = torch.Generator(device).manual_seed(seed)
    return torch.cat([sample(model, path, min(batch_size, num_samples - b), length, steps, sampler, generator=generator,
                             device=device)[0] for b in range(0, num_samples, batch_size)])


def ar_samples(model, num_samples, length, start_id, temperature=1.0, top_k=None, batch_size=32, seed=0,
               device="cpu"):
    """num_samples (N, length) ids from an AR model, each started from the token start_id."""
    generator = torch.Generator(device).manual_seed(seed)
    starts = torch.full((num_samples, 1), start_id, dtype=torch.long, device=device)
    return torch.cat([generate(model, prompt, length - 1, temperature, top_k, generator=generator)
                      for prompt in starts.split(batch_size)])


def real_samples(val_file, num_samples, length, seed=0):
    """num_samples random windows (N, length) of held-out text, the reference row."""
    return get_batch(val_file, num_samples, length, torch.Generator().manual_seed(seed))


@torch.no_grad()
def elbo_perplexity(model, path, val_file, num_batches, batch_size, length, num_times=8, seed=0, device="cpu"):
    """Mean negative ELBO (nats per token) of a mask-source DFM model over held-out batches."""
    generator = torch.Generator().manual_seed(seed)
    return sum(elbo_bound(model, get_batch(val_file, batch_size, length, generator, device), path, num_times, generator)
               for _ in range(num_batches)) / num_batches


def markdown_table(header, rows):
    """A markdown table from a header list and rows of cells (floats get 2-4 significant digits)."""
    cell = lambda v: (f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}") if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def pyplot():
    """matplotlib.pyplot drawing to files, or None when matplotlib is not installed (the scripts then refuse a plot)."""
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    plt.switch_backend("Agg")
    return plt


def save_figure(plt, fig, path):
    """Lay fig out, write it to path and close it."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
