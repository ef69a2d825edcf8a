"""Sample from a trained model.

    python sample.py --ckpt=out-shakespeare-char/ckpt.pt --steps=64
    python sample.py --ckpt=out-shakespeare-char-student/ckpt.pt --steps=8 --start="ROMEO:" --schedule=coarse-to-fine
    python sample.py --ckpt=out-shakespeare-char/ckpt.pt --sampler=euler --start=FILE:prompt.txt
    python sample.py --ckpt=out-shakespeare-char-student/ckpt.pt --show=frames --start=$'ROMEO:\\n____\\nJULIET:'

A DFM model or a few-step student writes all `length` tokens in parallel over `steps` model calls of
1/steps each, or of the sizes in --schedule (large steps first help a few-step student: coarse-to-fine,
nanodfm/sampler.py; README, Results). An autoregressive checkpoint (kind=ar) writes them one at a time
with its KV cache. A prompt (--start) is clamped as a prefix and never resampled; each run of four or
more underscores in it is a hole of `hole_len` tokens, and the sample then ends where the prompt ends,
unless --length asks for more. --show=steps colours each token by the step that decoded it,
--show=frames prints the sequence as it fills in, --html=FILE writes a page (nanodfm/display.py).
"""

import os
import re
import shlex
import sys

import torch

from nanodfm import checkpoint, engine
from nanodfm.autoregressive import generate, start_token
from nanodfm.config import (NON_NEGATIVE, POSITIVE, SEED, TEMPERATURE, TEMPERATURE_OR_OFF, UsageError, autocast_for,
                            check, device_memory_gb, one_of, output, output_file, refuse_foreign_outputs, parse,
                            pick_device, size_list, run)
from nanodfm.display import html_page, legend, marks, render, render_codes
from nanodfm.path import ProbPath
from nanodfm.sampler import COARSE_TO_FINE, STEP_RULES, Schedule, sample as reference_sample
from nanodfm.tokenizer import load_tokenizer

# ----------------------------------------------------------------------------- defaults
ckpt = "out/ckpt.pt"  # the checkpoint to sample: a DFM model, a student or an AR model
steps = 64  # model calls per sample (NFE)
schedule = ""  # "coarse-to-fine" (4, 8 or 16 steps), or the step sizes, e.g. "1/2,1/4,1/8,1/8" (summing to 1;
# steps is their number); "": 1/steps each
sampler = "cumulative"  # "cumulative" (FS-DFM) or "euler" (DFM)
num_samples = 2  # samples drawn at once
length = 0  # tokens per sample; 0: the model's block_size
start = ""  # prompt text, or FILE:path to read it from a file; ____ (4+ underscores) is a hole
hole_len = 16  # tokens per hole: the model fills each hole with exactly this many
temperature = 1.0  # divides the logits: below 1 sharper, above 1 more varied
first_temperature = 0.0  # the first step's temperature instead (e.g. 3: a student's diversity back); 0: temperature
spread = False  # True: spread jump tests, positions moving together lie apart (few steps: better; README, Results)
top_k = 0  # AR checkpoints: draw from the k most likely tokens only; 0: off
seed = 1337  # the same seed draws the same samples
device = "auto"  # "auto", "cpu", "cuda", "cuda:1", "mps"
compile = False  # torch.compile the model: pays off on a GPU and for long runs (docs/speed.md)
dtype = "auto"  # "auto" (bfloat16 autocast on a CUDA GPU that has it, else float32), "bfloat16", "float32"
reference = False  # True: draw with the plain reference sampler (nanodfm/sampler.py): the engine's law, slower
show = "text"  # "text" (plain), "steps" (coloured by decode step) or "frames" (each step as it fills in)
html = ""  # write the samples, coloured by decode step, as a standalone HTML page to this file
overwrite = False  # True: an output may replace a file that is not a report of its kind (a checkpoint, data)
color = "auto"  # "auto" (colour when stdout is a terminal), "always" or "never"
# -----------------------------------------------------------------------------
DEFAULTS = {k: v for k, v in globals().items() if not k.startswith("_") and isinstance(v, (int, float, bool, str))}
FEW_STEPS = 64  # below this, a model that was not distilled is sampled far from its accuracy
HOLE = re.compile(r"_{4,}")  # a hole in --start: four or more underscores
RULES = {"steps": POSITIVE, "sampler": one_of(*STEP_RULES), "num_samples": POSITIVE, "length": NON_NEGATIVE,
         "hole_len": POSITIVE, "temperature": TEMPERATURE, "first_temperature": TEMPERATURE_OR_OFF,
         "top_k": NON_NEGATIVE, "seed": SEED, "show": one_of("text", "steps", "frames"),
         "color": one_of("auto", "always", "never"), "html": output("html"),
         "dtype": one_of("auto", "bfloat16", "float32")}
MAX_FRAMES = 16  # --show=frames prints at most this many steps, evenly spaced, and the last
# keys that only some kinds of model take; a key set for another kind would be ignored without a word
ONLY_FOR = {"top_k": ("ar",), **dict.fromkeys(("steps", "schedule", "sampler", "first_temperature", "spread",
                                                "reference", "show", "html", "hole_len"), ("dfm", "student"))}


def encode_prompt(text, tokenizer, hole_len):
    """Token ids of --start with None at each hole position: every run of 4+ underscores becomes
    hole_len Nones. The text between holes is encoded piece by piece (BPE never merges across one)."""
    try:
        encoded = [tokenizer.encode(piece) if piece else [] for piece in HOLE.split(text)]
    except ValueError as e:  # characters outside a char vocabulary
        raise UsageError(str(e)) from None
    ids = encoded[0]
    for piece in encoded[1:]:
        ids += [None] * hole_len + piece
    return ids


def prompt_tensor(prompt_ids, seq_len):
    """A prompt as the sampler takes it: (L,) token ids, -1 where a position is to be sampled (a
    hole, or after the prompt); None without one. prompt_ids: ids from position 0, None at holes."""
    if not prompt_ids:
        return None
    if len(prompt_ids) > seq_len or None not in prompt_ids and len(prompt_ids) == seq_len:
        holes = " (holes included)" if None in prompt_ids else ""
        raise UsageError(f"the prompt is {len(prompt_ids)} tokens{holes} but samples are {seq_len} long: shorten "
                         f"it{', lower --hole_len' if holes else ''} or raise --length (up to the model's block_size)")
    prompt = torch.full((seq_len,), -1, dtype=torch.long)
    prompt[:len(prompt_ids)] = torch.tensor([-1 if token is None else token for token in prompt_ids])
    return prompt


def main(argv):
    explicit = set()
    cfg = parse(DEFAULTS, argv, __doc__, __file__, explicit)
    check(cfg, RULES)
    refuse_foreign_outputs(cfg, {"html": "html"})
    sizes = None  # the step sizes of --schedule, which set --steps
    if cfg["schedule"] == "coarse-to-fine":
        if cfg["steps"] not in COARSE_TO_FINE:
            raise UsageError(f"--schedule=coarse-to-fine is defined for --steps=4, 8 or 16, got "
                             f"--steps={cfg['steps']}: give one of those, or the step sizes themselves")
        sizes = COARSE_TO_FINE[cfg["steps"]]
    elif cfg["schedule"]:
        sizes = size_list("schedule", cfg["schedule"])
        if "steps" in explicit and cfg["steps"] != len(sizes):
            raise UsageError(f"--schedule has {len(sizes)} step sizes but --steps={cfg['steps']}: drop --steps (the "
                             f"schedule sets it) or give {cfg['steps']} sizes")
        cfg["steps"] = len(sizes)
    schedule = Schedule.of(cfg["steps"], sizes, cfg["temperature"], cfg["first_temperature"] or None, cfg["spread"])
    text = cfg["start"]
    if text.startswith("FILE:"):  # the prompt's text from a file
        path = text[len("FILE:"):]
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            why = getattr(e, "strerror", None) or e  # missing, unreadable, or not UTF-8
            raise UsageError(f"prompt file {path!r} is not readable UTF-8 text ({why})") from None
    color = cfg["color"] == "always" or cfg["color"] == "auto" and sys.stdout.isatty()
    dev = pick_device(cfg["device"])
    autocast, _ = autocast_for(torch.device(dev).type, cfg["dtype"])  # the draws stay exact for the logits given
    torch.backends.cuda.matmul.allow_tf32 = True  # on a GPU; nothing elsewhere
    ck = checkpoint.load(cfg["ckpt"], kinds=("dfm", "student", "ar"))
    kind, student = ck["kind"], ck["kind"] == "student"
    wrong = sorted(k for k in explicit if kind not in ONLY_FOR.get(k, (kind,)))  # a key that would change nothing
    if wrong:
        takes = ", ".join(f"--{k}" for k in sorted(ONLY_FOR) if kind in ONLY_FOR[k])
        raise UsageError(f"{', '.join('--' + k for k in wrong)} {'does' if len(wrong) == 1 else 'do'} not apply to "
                         f"{cfg['ckpt']}, a model of kind {kind}: drop {'it' if len(wrong) == 1 else 'them'} (of these "
                         f"keys it takes {takes})")
    if student and cfg["sampler"] != "cumulative":
        raise UsageError("a few-step student was distilled for the cumulative step: drop --sampler (or use cumulative)")
    model = checkpoint.build_model(ck, weights="ema" if student else "model").to(dev).eval()
    if cfg["compile"]:
        model = engine.compile(model)
    tokenizer = load_tokenizer(ck["meta"])
    prompt_ids = encode_prompt(text, tokenizer, cfg["hole_len"])
    infill = None in prompt_ids
    if cfg["hole_len"] != DEFAULTS["hole_len"] and not infill:
        raise UsageError("--hole_len is set but --start has no hole: mark each with ____ (four underscores)")
    seq_len = cfg["length"] or (min(len(prompt_ids), model.config.block_size) if infill else model.config.block_size)
    if seq_len > model.config.block_size:
        raise UsageError(f"--length must be in [1, {model.config.block_size}] (the model's block_size), got {seq_len}")
    if kind == "dfm" and cfg["steps"] < FEW_STEPS:  # a command that runs from here: the student goes beside it
        train = os.path.relpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py"))
        out_dir = (os.path.dirname(os.path.normpath(cfg["ckpt"])) or "out") + "-student"
        distil = shlex.join([train, "--kind=student", f"--init_from={cfg['ckpt']}", f"--out_dir={out_dir}",
                             f"--block_size={model.config.block_size}", f"--batch_size={ck['config']['batch_size']}"])
        print(f"warning: this DFM model was not distilled for few steps; with {cfg['steps']} steps expect poor "
              f"samples. Distil it: python {distil}", file=sys.stderr)
    if student and cfg["schedule"] and "max_step_exponent" in ck["config"]:  # other h only by interpolation
        trained = [2.0 ** -k for k in range(ck["config"]["max_step_exponent"] + 1)]  # the h it learns
        untrained = sorted({h for h in schedule.sizes if min(abs(h - s) for s in trained) > 1e-9 * h}, reverse=True)
        if untrained:
            print(f"warning: this student was distilled for step sizes 1, 1/2, ..., 1/{round(1 / trained[-1])}; "
                  f"{', '.join(f'{h:g}' for h in untrained)} it meets only by interpolation", file=sys.stderr)
    prompt = prompt_tensor(prompt_ids, seq_len)  # also rejects a prompt as long as the samples
    generator = torch.Generator(dev).manual_seed(cfg["seed"])
    if kind == "ar":  # token by token with its KV cache; with no BOS token, from end-of-text or a newline
        if infill:
            raise UsageError("an autoregressive model cannot fill holes: remove the ____ from --start")
        prompt = torch.tensor(prompt_ids or [start_token(tokenizer)], device=dev).expand(cfg["num_samples"], -1)
        with autocast:
            x = generate(model, prompt, seq_len - prompt.shape[1], cfg["temperature"], cfg["top_k"] or None,
                         generator=generator)
        for i, ids in enumerate(x.tolist()):
            print(f"---------- sample {i + 1}/{len(x)}, autoregressive\n{tokenizer.decode(ids)}")
        return
    # the draw's float64 probabilities (the reference sampler holds about three copies, the engine one
    # float32 buffer of logits): refused before it runs out of memory, with the estimate
    need = cfg["num_samples"] * seq_len * model.config.vocab_size * (24 if cfg["reference"] else 8) / 1e9
    if device_memory_gb(dev) and need > device_memory_gb(dev):
        raise UsageError(f"{cfg['num_samples']} samples of {seq_len} tokens need about {need:.3g} GB for their "
                         f"probabilities and {dev} has {device_memory_gb(dev):.3g} GB: draw fewer at once")
    frames = cfg["show"] == "frames"
    shown, ends = set(marks(len(schedule.sizes), MAX_FRAMES)), [t + h for t, h in schedule.times()]

    def print_frame(s, x, last_change):
        """--show=frames: MAX_FRAMES steps, evenly spaced, the last among them; tokens coloured by their last change."""
        if s in shown:
            print(f"---------- after step {s + 1}/{len(ends)} (t = {ends[s]:.3f})")
            for ids, lc in zip(x.tolist(), last_change.tolist()):
                print(render(ids, lc, len(ends), tokenizer, color))
    sample = reference_sample if cfg["reference"] else engine.sample
    with autocast:
        x, last_change = sample(model, ProbPath.of(ck), cfg["num_samples"], seq_len, schedule, cfg["sampler"],
                                prompt, generator, dev, print_frame if frames else None, progress=not frames)
    samples = list(zip(x.tolist(), last_change.tolist()))
    steps_used = f"{cfg['steps']} steps" + (f" (schedule {cfg['schedule']})" if cfg["schedule"] else "") + (
        f", first step at temperature {cfg['first_temperature']:g}" if cfg["first_temperature"] else "")
    for i, (ids, lc) in enumerate(samples if not frames else []):  # the last frame is the sample
        print(f"---------- sample {i + 1}/{len(x)}, {steps_used}, {cfg['sampler']}")
        if cfg["show"] == "steps":
            print(render(ids, lc, cfg["steps"], tokenizer) if color else render_codes(ids, lc, cfg["steps"], tokenizer))
        else:
            print(tokenizer.decode(ids))
    if cfg["show"] != "text" and color:
        print(legend(cfg["steps"]))
    if cfg["html"]:
        sections = [(f"{cfg['ckpt']} ({kind}), sample {i + 1}, {steps_used}, {cfg['sampler']}",
                     ids, lc, cfg["steps"]) for i, (ids, lc) in enumerate(samples)]
        with output_file(cfg["html"]) as f:
            f.write(html_page(sections, tokenizer))


if __name__ == "__main__":
    run(lambda: main(sys.argv[1:]), "nothing was written (the samples and any --html page come at the end)")
