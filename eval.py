"""Evaluate checkpoints: sample quality and ELBO perplexity (docs/method.md section 6).

    python eval.py --mode=quality --dfm=out-dfm/ckpt.pt --student=out-student/ckpt.pt --judge=out-ar/ckpt.pt
    python eval.py --mode=elbo --dfm=out-dfm/ckpt.pt

quality: rows of N samples of `length` tokens (held-out text, AR samples, and the DFM model and each student at
every step count, schedule and temperature asked for) scored by the judge: generative perplexity and unigram
entropy, means with 95% intervals, also as ratios to the reference row and at matched entropy
(evaluate.matched_entropy_ratio). A table on stdout, every number in out_json, a plot in out_png.
elbo: the ELBO perplexity of a mask-source DFM checkpoint on val.bin. Speed is bench.py's.
"""

import json
import math
import os
import sys

import torch
from tqdm import tqdm

from nanodfm import checkpoint, evaluate
from nanodfm.autoregressive import start_token
from nanodfm.config import (NON_NEGATIVE, POSITIVE, POSITIVE_FLOAT, POSITIVE_INTS, SEED, TEMPERATURE,
                            TEMPERATURE_OR_OFF, Rule, UsageError, comma_list, autocast_for, check, int_list, one_of,
                            output, output_file, refuse_foreign_outputs, parse, pick_device, size_list, run)
from nanodfm.data import dataset_folder, load_meta, same_vocabulary, split_path
from nanodfm.engine import compile as compile_model
from nanodfm.path import ProbPath
from nanodfm.sampler import COARSE_TO_FINE, STEP_RULES, Schedule
from nanodfm.tokenizer import load_tokenizer

# ----------------------------------------------------------------------------- defaults
mode = "quality"  # "quality" or "elbo"
# checkpoints ("" = not used)
dfm = ""  # a DFM model (kind=dfm)
student = ""  # a few-step student (kind=student), or several separated by commas (e.g. RK4 and RK2)
ar = ""  # an AR model, for the AR samples row; "" in quality: the judge if it is a checkpoint
judge = ""  # an AR checkpoint path, or "gpt2-large" (needs transformers; GPT-2-tokenized models only)
dataset = ""  # data/<dataset>/val.bin for held-out text; "": the data the checkpoints were trained on
data_dir = ""  # read val.bin from this folder instead (overrides dataset)
# quality
steps_list = "1,2,4,8,16,64,256,1024"  # model calls per sample, one row each
student_steps_list = ""  # the students' step counts; "": steps_list
student_schedules = ""  # the students also at these step sizes, a row each: NAME=SIZES entries separated by spaces
# or ";" (e.g. "front=1/2,1/4,1/8,1/8"; one name may cover several step counts), or "coarse-to-fine" (4, 8, 16 steps)
student_first_temperature = 0.0  # > 0: every student row (equal steps and each schedule) also with its first step at
# this temperature, a row each (e.g. 3: the few-step student's diversity back, README, Results); 0: off
dfm_methods = "euler,cumulative"  # the DFM model's samplers; the student always takes the cumulative step
jumps = "independent"  # the jump tests of every row but the reference, a row each: "independent", "spread" or both
reference_steps = 0  # the reference row: DFM, cumulative step, at this many steps; 0: the largest of steps_list
reference_temperatures = ""  # e.g. "1.0,0.8,0.6": the reference row also at these temperatures (its frontier), and
# each other row's perplexity against the reference's at the row's entropy ("matched"); "": off
num_samples = 256  # samples per row; a 95% interval is about +-3% of the perplexity at 256 (it is printed)
length = 0  # tokens per sample; 0: the smallest block_size among the models
temperature = 1.0  # divides the logits of every generator
top_k = 0  # AR samples only; 0: off
batch_size = 32  # samples per model call (quality, elbo)
out_json = ""  # write every number to this file
previous = ""  # quality JSON files of earlier runs (comma-separated): rows of the same models and settings are reused
out_png = ""  # plot perplexity and entropy against steps to this file (needs matplotlib)
overwrite = False  # True: an output may replace a file that is not a report of its kind (a checkpoint, data)
# elbo
num_batches = 50  # held-out batches of batch_size sequences
elbo_times = 8  # stratified times t per sequence
# system
device = "auto"  # "auto", "cpu", "cuda", "cuda:1", "mps"
dtype = "auto"  # the generators': "auto" (bfloat16 autocast on a CUDA GPU that has it, else float32), "bfloat16",
# "float32"; the judge always scores in float32 (bfloat16 would add noise to every probability), and so does elbo
compile = False  # torch.compile the generators (all of them or none)
seed = 1337  # seeds every sample, batch and model
# -----------------------------------------------------------------------------
DEFAULTS = {k: v for k, v in globals().items() if not k.startswith("_") and isinstance(v, (int, float, bool, str))}

RULES = {"mode": one_of("quality", "elbo"), "steps_list": POSITIVE_INTS, "reference_steps": NON_NEGATIVE,
         "num_samples": POSITIVE, "length": NON_NEGATIVE, "temperature": TEMPERATURE, "top_k": NON_NEGATIVE,
         "student_first_temperature": TEMPERATURE_OR_OFF, "jumps": Rule("independent, spread or independent,spread",
             lambda v: bool(v.strip(",")) and all(j in ("independent", "spread") for j in v.split(",") if j)),
         "num_batches": POSITIVE, "elbo_times": POSITIVE, "seed": SEED, "out_json": output("json"),
         "out_png": output("png"), "dtype": one_of("auto", "bfloat16", "float32"), "batch_size": POSITIVE,
         "dfm_methods": Rule(f"a comma-separated subset of {','.join(STEP_RULES)}",
                             lambda v: bool(v.strip(",")) and all(m in STEP_RULES for m in v.split(",") if m)),
         "reference_temperatures": Rule("comma-separated positive numbers", lambda v: not v or all(
             POSITIVE_FLOAT.ok(t) for t in comma_list(v, float) or [0]))}


def load_model(path, kind, dev, compile=False):
    """(model, checkpoint) for a path of the given kind; a student uses its EMA weights."""
    ck = checkpoint.load(path, kinds=(kind,))
    model = checkpoint.build_model(ck, weights="ema" if kind == "student" else "model").to(dev).eval()
    return compile_model(model) if compile else model, ck


def val_path(cfg, ck):
    """--data_dir or --dataset if given, else the folder the checkpoint was trained on; its tokens
    must be the checkpoint's, and every id in val.bin inside the vocabulary."""
    folder = dataset_folder(cfg if cfg["data_dir"] or cfg["dataset"] else ck["config"])
    if not same_vocabulary(load_meta(folder), ck["meta"]):
        raise UsageError(f"{folder} holds another vocabulary than {ck['loaded_from']} was trained on (its tokens "
                         f"differ, not only their number): use the dataset it was trained on")
    return split_path(folder, "val", ck["model_config"]["vocab_size"])


def write_json(path, result):
    if path:
        with output_file(path) as f:
            json.dump(result, f, indent=2)
        print(f"wrote {path}")


def new_row(name, method, steps, temp, ck, path, schedule=None, first=None, spread=False):
    """A row's settings, in the order the JSON lists them."""
    made_by = os.path.relpath(path)  # inside the working folder: relative, so that results name no machine's folders
    return {"name": name, "method": method, "steps": steps, "temperature": temp,
            "seed": ck["config"].get("seed") if ck else None,
            "made_by": made_by if not made_by.startswith("..") else os.path.abspath(path),
            **({"schedule": schedule} if schedule else {}), **({"first_temperature": first} if first else {}),
            **({"jumps": "spread"} if spread else {})}


def quality(cfg, dev, schedules):
    """Every row's samples drawn (or reused from --previous), scored by the judge, set against the reference row."""
    autocast, dtype = autocast_for(dev.type, cfg["dtype"])
    steps_list = int_list("steps_list", cfg["steps_list"])
    student_steps = int_list("student_steps_list", cfg["student_steps_list"] or cfg["steps_list"])
    dfm_methods = [m for m in cfg["dfm_methods"].split(",") if m]
    N, bs, seed, T = cfg["num_samples"], cfg["batch_size"], cfg["seed"], cfg["temperature"]
    reference_steps = cfg["reference_steps"] or max(steps_list)
    curve_temperatures = [t for t in dict.fromkeys(comma_list(cfg["reference_temperatures"], float) or []) if t != T]
    has_reference = cfg["dfm"] and "cumulative" in dfm_methods
    if not cfg["judge"]:
        raise UsageError("quality needs a judge: --judge=PATH to an AR checkpoint (or --judge=gpt2-large)")
    if not (cfg["dfm"] or cfg["student"]):
        raise UsageError("quality needs --dfm=PATH and/or --student=PATH")
    if cfg["student"] and not all(cfg["student"].split(",")):
        raise UsageError(f"--student={cfg['student']} has an empty entry: give checkpoint paths separated by commas")
    if cfg["out_png"] and evaluate.pyplot() is None:  # said now, not after the whole evaluation
        raise UsageError("--out_png needs matplotlib: pip install matplotlib, or drop --out_png")
    if curve_temperatures and not (has_reference and reference_steps in steps_list):
        raise UsageError("--reference_temperatures samples the reference row: it needs --dfm, the cumulative step "
                         "in --dfm_methods and --reference_steps in --steps_list")
    if has_reference and reference_steps not in steps_list:
        raise UsageError(f"--reference_steps={reference_steps} is not in --steps_list: the reference row is DFM "
                         f"with the cumulative step at one of the step counts sampled")
    judge, judge_block, judge_vocab, judge_ck = evaluate.load_judge(cfg["judge"], dev)
    # every generator compiled or none, so that no row is faster for it
    flows = [("dfm", cfg["dfm"], *load_model(cfg["dfm"], "dfm", dev, cfg["compile"]))] if cfg["dfm"] else []
    students = [(path, *load_model(path, "student", dev, cfg["compile"])) for path in cfg["student"].split(",")
                if cfg["student"]]
    # a student row is named by its teacher (rk4, rk2) or, where that is ambiguous, by its folder
    labels = [ck["config"]["teacher"] for _, _, ck in students]
    if len(set(labels)) < len(labels):
        labels = [os.path.basename(os.path.dirname(os.path.abspath(path))) for path, _, _ in students]
    flows += [(label if label.startswith("student") else f"student {label}", *s) for label, s in zip(labels, students)]
    ar_path = cfg["ar"] or ("" if evaluate.is_gpt2(cfg["judge"]) else cfg["judge"])
    ar_model, ar_ck = load_model(ar_path, "ar", dev, cfg["compile"]) if ar_path else (None, None)
    generators = [(model, ck) for _, _, model, ck in flows] + ([(ar_model, ar_ck)] if ar_path else [])
    if any(m.config.vocab_size != judge_vocab or not same_vocabulary(ck["meta"], judge_ck["meta"])
           for m, ck in generators):
        raise UsageError(f"the judge's vocabulary ({judge_vocab} tokens) differs from the models' "
                         f"({generators[0][0].config.vocab_size}; the tokens, not only their number): judge with a "
                         f"model trained on the same data")
    max_len = min([judge_block] + [m.config.block_size for m, _ in generators])
    L = cfg["length"] or max_len
    if not 2 <= L <= max_len:
        raise UsageError(f"--length must be in [2, {max_len}] (the smallest block_size of the models), got {L}")
    held_out = val_path(cfg, flows[0][3])
    train_text = evaluate.reference_text(split_path(os.path.dirname(held_out), "train"))
    ngrams = evaluate.ngram_profile(train_text, judge_vocab)

    def flow_job(kind, path, model, ck, method, S, temp, schedule=None, first=None, spread=False):
        name = f"{kind} {method}" + (f", schedule {schedule['name']}" if schedule else "") + (
            f", first step at {first:g}" if first else "") + (", spread jumps" if spread else "")
        steps = Schedule.of(S, schedule and schedule["sizes"], temp, first, spread)
        return new_row(name, method, S, temp, ck, path, schedule, first, spread), lambda: evaluate.flow_samples(
            model, ProbPath.of(ck), N, L, steps, method, bs, seed, dev)

    # (a row's settings, how to draw its samples)
    jobs = [(new_row("held-out text", None, None, None, None, held_out),
             lambda: evaluate.real_samples(held_out, N, L, seed))]
    if ar_path:
        start = start_token(load_tokenizer(ar_ck["meta"]))
        jobs.append((new_row("AR samples", None, None, T, ar_ck, ar_path), lambda: evaluate.ar_samples(
            ar_model, N, L, start, T, cfg["top_k"] or None, bs, seed, dev)))
    # a student at equal steps and each schedule, then (with a first temperature) each again with its first step hot
    plans = [(S, None) for S in student_steps] + [(len(s["sizes"]), s) for s in schedules]
    firsts = [None, cfg["student_first_temperature"]] if cfg["student_first_temperature"] else [None]
    spreads = list(dict.fromkeys(j == "spread" for j in cfg["jumps"].split(",") if j))
    for kind, path, model, ck in flows:
        if kind != "dfm":
            jobs += [flow_job(kind, path, model, ck, "cumulative", S, T, schedule, first, spread)
                     for spread in spreads for first in firsts for S, schedule in plans]
            continue
        for method in dfm_methods:
            for S in steps_list:
                on_curve = method == "cumulative" and S == reference_steps
                jobs += [flow_job(kind, path, model, ck, method, S, temp, spread=spread)
                         for spread in ([False] if on_curve else spreads)
                         for temp in [T] + (curve_temperatures if on_curve else [])]
    done = previous_rows(cfg, L, dtype)
    rows = []
    for row, make in tqdm(jobs, desc="quality", dynamic_ncols=True):
        reused = done.get(row_key(row))  # the same samples, scored the same way, in a --previous file
        if reused is not None:
            rows.append({**reused, "name": row["name"], "temperature": row["temperature"], "seed": row["seed"]})
        else:
            with autocast:
                ids = make().to(dev)
            js, js_ci = evaluate.ngram_divergence(ids, ngrams, judge_vocab, seed=seed)
            rows.append({**row, **evaluate.score(judge, ids, bs), "ngram_js": js, "ngram_js_ci95": js_ci})
    at_reference = [r for r in rows if has_reference and (r["name"], r["steps"]) == ("dfm cumulative", reference_steps)]
    reference = next((r for r in at_reference if r["temperature"] == T), None)
    curve = at_reference if curve_temperatures else []  # the reference at each temperature, for "matched"
    notes = []
    for r in rows:
        for key in ("gen_ppl", "entropy") if reference else ():  # ratios to the reference, with 95% intervals
            r[f"{key}_ratio"], r[f"{key}_ratio_ci95"] = (1.0, 0.0) if r is reference else evaluate.ratio_interval(
                r[key], r[f"{key}_ci95"], reference[key], reference[f"{key}_ci95"])
        if curve and r["method"] is not None and not any(r is c for c in curve):
            r.pop("matched_note", None)  # a row reused from a --previous file may carry one
            r["matched"], note = evaluate.matched_entropy_ratio(curve, r["entropy"], r["gen_ppl"], r["gen_ppl_ci95"],
                                                                r["entropy_ci95"])
            if note:  # outside the curve's range: None, and why
                r["matched_note"] = note
                notes.append(f"{r['name']} at {r['steps']} steps: {note}")
    summary = None if reference is None else {"name": reference["name"], "steps": reference["steps"], "temperature": T}
    result = {"mode": "quality", "length": L, "judge": cfg["judge"], "dtype": dtype,
              "judge_val_loss": judge_ck.get("best_val_loss"), "reference": summary, "settings": cfg, "rows": rows}
    print_quality(result, curve, notes, ar_path == cfg["judge"])
    write_json(cfg["out_json"], result)
    if cfg["out_png"]:
        plot_quality([r for r in rows if r["temperature"] in (None, T)], cfg["out_png"])
        print(f"wrote {cfg['out_png']}")


def print_quality(result, curve, notes, ar_is_judge):
    """The settings, the reference, and a table of every row's means with their 95% intervals."""
    cfg, rows, reference = result["settings"], result["rows"], result["reference"]
    loss = "" if result["judge_val_loss"] is None else f" (its val loss {result['judge_val_loss']:.4f})"
    print(f"\n{cfg['num_samples']} samples of {result['length']} tokens per row, generated in {result['dtype']}, "
          f"judge {cfg['judge']}{loss} in float32, seed {cfg['seed']}; every value is a mean with its 95% confidence "
          f"interval; n-gram JS: the divergence of the samples' 1- to 4-gram frequencies from the training text's "
          f"(evaluate.ngram_divergence)")
    if reference is not None:
        print(f"ratios are to the reference row: {reference['name']} at {reference['steps']} steps, "
              f"temperature {reference['temperature']:g}")
    if curve:
        print(f"matched: perplexity / the reference's at the row's entropy, interpolated along the reference at "
              f"temperatures {', '.join(format(r['temperature'], 'g') for r in curve)}")
    if ar_is_judge:
        print("(the AR samples are scored by the model that wrote them: read that row as a lower reference)")
    pm = lambda r, key: f"{r[key]:.4g} ± {r[key + '_ci95']:.2g}" if key in r else "-"  # a mean and its interval
    matched = lambda r: "-" if "matched" not in r else "outside" if r["matched"] is None else pm(
        r["matched"], "gen_ppl_ratio")
    print("\n" + evaluate.markdown_table(
        ["row", "steps (NFE)", "temperature", "gen. perplexity", "entropy (bits)", "perplexity / reference",
         "entropy / reference", "n-gram JS (bits)"] + (["perplexity / reference at its entropy"] if curve else []),
        [[r["name"], r["steps"] or "-", "-" if r["temperature"] is None else f"{r['temperature']:g}",
          pm(r, "gen_ppl"), pm(r, "entropy"), pm(r, "gen_ppl_ratio"), pm(r, "entropy_ratio"), pm(r, "ngram_js")]
         + ([matched(r)] if curve else []) for r in rows]))
    for note in notes:
        print(f"note: {note}")
    wide = [r["name"] + (f" at {r['steps']} steps" if r["steps"] else "") for r in rows
            if r["gen_ppl_ci95"] > 0.03 * r["gen_ppl"]]
    if wide:
        print(f"\nnote: the 95% interval is wider than 3% of the perplexity for {', '.join(wide)}: "
              f"raise --num_samples to settle a 5% question there")


def parse_schedules(text):
    """[{"name", "sizes"}] from --student_schedules ("NAME=SIZES NAME=SIZES ..." or "NAME=SIZES;NAME=SIZES")."""
    schedules = []
    for entry in text.replace(";", " ").split():
        if entry == "coarse-to-fine":
            schedules += [{"name": entry, "sizes": list(sizes)} for sizes in COARSE_TO_FINE.values()]
            continue
        name, sep, sizes = entry.partition("=")
        if not (sep and name and sizes):
            raise UsageError(f"--student_schedules takes NAME=SIZES entries separated by spaces or ; (e.g. "
                             f"front=1/2,1/4,1/4), got {entry!r}")
        sizes = size_list("student_schedules", sizes)
        Schedule.of(len(sizes), sizes)  # they sum to 1
        schedules.append({"name": name, "sizes": sizes})
    return schedules


def row_key(row):
    """What makes two rows the same samples: the file that made them, the sampler, steps, temperature,
    step sizes (None: 1/steps each), the first step's temperature and the jump tests."""
    return (row["made_by"], row["method"], row["steps"], row["temperature"],
            tuple(row["schedule"]["sizes"]) if row.get("schedule") else None, row.get("first_temperature"),
            row.get("jumps"))


def previous_rows(cfg, length, dtype):
    """{row_key: row} of the --previous quality files, rows this run reuses instead of sampling them again
    (the DFM model at 1024 steps is most of an evaluation's time; each new student then costs its own rows)."""
    done = {}
    for path in filter(None, cfg["previous"].split(",")):
        try:
            with open(path) as f:
                old = json.load(f)
        except (OSError, ValueError) as e:
            raise UsageError(f"--previous={path}: not a readable quality JSON ({e})") from None
        if not (isinstance(old, dict) and old.get("mode") == "quality" and old.get("length") == length
                and isinstance(old.get("settings"), dict) and isinstance(old.get("rows"), list)
                and all(isinstance(r, dict) and "name" in r for r in old["rows"])):
            raise UsageError(f"--previous={path} is not a quality evaluation of {length}-token samples (the "
                             f"--out_json of eval.py --mode=quality)")
        same_samples = ("num_samples", "seed", "top_k", "judge", "batch_size", "device")  # same draws, same judge
        differ = [k for k in same_samples if old["settings"].get(k) != cfg[k]]
        if old.get("dtype", "float32") != dtype:  # files from before the key were float32
            differ.append("dtype")
        if differ:
            raise UsageError(f"--previous={path} was made with other {', '.join(differ)}: its rows are not comparable")
        for r in old["rows"]:
            if "made_by" in r:  # a row written before rows carried their temperature has its file's
                temp = None if r["name"] == "held-out text" else old["settings"]["temperature"]
                done[row_key({"temperature": temp, **r})] = r
    return done


def elbo(cfg, dev):
    if not cfg["dfm"]:
        raise UsageError("elbo needs --dfm=PATH to a DFM checkpoint")
    model, ck = load_model(cfg["dfm"], "dfm", dev)
    if ck["config"]["source"] != "mask":
        raise UsageError(f"the ELBO bound is for the mask source; {cfg['dfm']} uses {ck['config']['source']!r}")
    L = cfg["length"] or model.config.block_size
    if not 0 < L <= model.config.block_size:
        raise UsageError(f"--length must be in [1, {model.config.block_size}] (the models' block_size), got {L}")
    nats = evaluate.elbo_perplexity(model, ProbPath.of(ck), val_path(cfg, ck), cfg["num_batches"], cfg["batch_size"], L,
                                    cfg["elbo_times"], cfg["seed"], dev)
    perplexity = math.exp(nats) if not nats > 700 else math.inf  # a bound too large to exponentiate reads as inf
    print(f"ELBO bound on held-out data: {nats:.4f} nats/token ({nats / math.log(2):.4f} bits), "
          f"perplexity <= {perplexity:.3f} ({cfg['num_batches']} batches of {cfg['batch_size']} x {L})")
    write_json(cfg["out_json"], {"mode": "elbo", "nats": nats, "perplexity": perplexity, "settings": cfg})


# the keys of one mode only (set in the other they would change nothing): elbo's two, and quality's all but BOTH
BOTH = ("mode", "dfm", "dataset", "data_dir", "length", "batch_size", "out_json", "overwrite", "device", "seed")
ONLY_IN = {k: "elbo" if k in ("num_batches", "elbo_times") else "quality" for k in DEFAULTS if k not in BOTH}


def main(argv):
    explicit = set()
    cfg = parse(DEFAULTS, argv, __doc__, __file__, explicit)
    if cfg["mode"] == "speed":
        raise UsageError("--mode=speed moved to bench.py: `python bench.py --mode=study` times AR with its KV cache, "
                         "the student and the DFM model (speed does not depend on the weights: give the size)")
    check(cfg, RULES)
    ignored = sorted(k for k in explicit if ONLY_IN.get(k, cfg["mode"]) != cfg["mode"])
    if ignored:
        raise UsageError(f"{', '.join('--' + k for k in ignored)} only apply to --mode={ONLY_IN[ignored[0]]}, not "
                         f"--mode={cfg['mode']}: drop them")
    refuse_foreign_outputs(cfg, {"out_json": "json", "out_png": "png"})
    schedules = parse_schedules(cfg["student_schedules"])  # a UsageError now rather than after loading
    dev = torch.device(pick_device(cfg["device"]))
    torch.manual_seed(cfg["seed"])
    return quality(cfg, dev, schedules) if cfg["mode"] == "quality" else elbo(cfg, dev)


def plot_quality(rows, path):
    """Perplexity and entropy against steps, a line per sampler with 95% error bars, references dashed."""
    plt = evaluate.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, label in zip(axes, ("gen_ppl", "entropy"), ("generative perplexity", "unigram entropy (bits)")):
        for name in dict.fromkeys(r["name"] for r in rows):
            mine = [r for r in rows if r["name"] == name]
            if mine[0]["steps"] is None:  # a reference row: one value
                ax.axhline(mine[0][key], ls="--", color="gray" if name == "held-out text" else "black", label=name)
            else:  # error bars: the 95% intervals
                ax.errorbar([r["steps"] for r in mine], [r[key] for r in mine], marker="o", label=name, capsize=2,
                            yerr=[r.get(f"{key}_ci95", 0.0) for r in mine])
        ax.set_xscale("log", base=2)
        ax.set(xlabel="sampling steps (NFE)", ylabel=label, yscale="log" if key == "gen_ppl" else "linear")
    axes[0].legend(fontsize=8)
    evaluate.save_figure(plt, fig, path)


if __name__ == "__main__":
    run(lambda: main(sys.argv[1:]), "nothing was written (--out_json comes at the end)")
