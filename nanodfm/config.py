"""Configuration for the scripts: defaults, then a config file, then --key=value overrides.

As in nanoGPT, a script's defaults are a block of plain assignments at its top, and a config file (config/*.py) is
a Python file of assignments too. Unlike nanoGPT nothing is exec'd into the script's globals: the file is run with
runpy into a dict of its own, so an unknown key or a value of the wrong type is caught and named, not made a global.
"""

import ast
import contextlib
import difflib
import math
import os
import re
import runpy
import sys
import traceback
from fractions import Fraction
from pathlib import Path
from typing import Callable, NamedTuple

import torch


class UsageError(ValueError):
    """Bad input from the user. Scripts print it as one line and exit; it is never a bug."""


def run(main, interrupted):
    """A script's entry point: bad input and Ctrl-C end in one line on stderr (exit 1), never a
    traceback. interrupted: what Ctrl-C leaves, said after "interrupted: "."""
    try:
        main()
    except UsageError as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        sys.exit(f"interrupted: {interrupted}")


def _coerce(key, value, default):
    """Check value against the type of the default; parse it first if it came from the command line."""
    if isinstance(value, str) and not isinstance(default, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise UsageError(f"--{key}: cannot parse {value!r} as a {type(default).__name__}") from None
    if value is None:
        kind = {bool: "True or False", int: "a whole number", float: "a number"}.get(type(default), "a value")
        raise UsageError(f"{key} cannot be None: give {kind}")
    if isinstance(default, float) and type(value) is int:
        return float(value)
    strict = isinstance(default, bool) or isinstance(value, bool)  # to Python True is an int; not to a config
    if type(value) is not type(default) if strict else not isinstance(value, type(default)):
        raise UsageError(f"{key} must be {type(default).__name__}, got {value!r}")
    return value


def device_memory_gb(dev):
    """The memory of a device in GB (a CUDA GPU's, or the machine's for the CPU); None where unknown."""
    if dev.startswith("cuda"):
        return torch.cuda.get_device_properties(dev).total_memory / 1e9
    if dev == "cpu" and hasattr(os, "sysconf"):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    return None


def pick_device(name):
    """"auto": CUDA if present, then Apple's MPS, then the CPU; any other name as given, if this
    machine has it (else a UsageError, not a traceback from the first tensor moved there)."""
    count = {"cpu": 1, "cuda": torch.cuda.device_count(), "mps": int(torch.backends.mps.is_available())}
    if name == "auto":
        return "cuda" if count["cuda"] else "mps" if count["mps"] else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device={name!r} is not a device: use auto, cpu, cuda, cuda:N or mps") from None
    if (device.index or 0) >= count.get(device.type, 0):
        raise UsageError(f"--device={name}: this machine has {count.get(device.type) or 'no'} {device.type} "
                         f"device(s); use --device=auto or --device=cpu")
    return name


def autocast_for(device_type, dtype):
    """(context, name): bfloat16 autocast for dtype "bfloat16", or for "auto" on a CUDA GPU that has
    it; float32 otherwise (the scripts' RULES check dtype). Parameters and optimiser state stay float32."""
    bf16 = dtype == "bfloat16" or (dtype == "auto" and device_type == "cuda" and torch.cuda.is_bf16_supported())
    if bf16 and device_type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UsageError("this GPU has no bfloat16 (it came with Ampere): use --dtype=float32")
    context = torch.autocast(device_type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    return context, "bfloat16" if bf16 else "float32"


# Dense bfloat16 tensor-core peaks (FLOP/s, no sparsity) from NVIDIA's data sheets, by torch.cuda.get_device_name:
# variants of one chip differ (an H100 PCIe has 3/4 of an SXM's). Unlisted GPUs get no MFU unless --peak_flops.
PEAK_BF16_FLOPS = {"NVIDIA H100 80GB HBM3": 989e12, "NVIDIA H100 PCIe": 756e12, "NVIDIA H100 NVL": 835e12,
                   "NVIDIA H200": 989e12, "NVIDIA H200 NVL": 835e12, "NVIDIA A100-SXM4-40GB": 312e12,
                   "NVIDIA A100-SXM4-80GB": 312e12, "NVIDIA A100-PCIE-40GB": 312e12, "NVIDIA A100 80GB PCIe": 312e12,
                   "NVIDIA L4": 121e12, "NVIDIA L40S": 362e12, "NVIDIA L40": 181e12}


def device_peak_flops(device, override=0.0):
    """Peak FLOP/s for MFU: override (--peak_flops) if set, else the GPU's PEAK_BF16_FLOPS entry, else 0 (no MFU)."""
    if override or torch.device(device).type != "cuda":
        return override
    return PEAK_BF16_FLOPS.get(torch.cuda.get_device_name(device), 0.0)


# ----------------------------------------------------------------------------- checking values
# A script declares RULES, {key: Rule}, for the keys it reads; its main calls check(cfg, RULES) once, before any work.

class Rule(NamedTuple):
    what: str  # "a positive integer": the error says "--key must be <what>, got <value>"
    ok: Callable  # value -> True, or False (or a string: why not)


POSITIVE = Rule("a positive integer", lambda v: v >= 1)
NON_NEGATIVE = Rule("0 or more", lambda v: math.isfinite(v) and v >= 0)
POSITIVE_FLOAT = Rule("a finite number above 0", lambda v: math.isfinite(v) and v > 0)
# below it every draw is the most likely token (the greedy limit), and logits / T overflow float32 near 1e-38
MIN_TEMPERATURE = 1e-4
TEMPERATURE = Rule(f"a finite number of at least {MIN_TEMPERATURE:g} (the greedy limit)",
                   lambda v: math.isfinite(v) and v >= MIN_TEMPERATURE)
TEMPERATURE_OR_OFF = Rule(f"0 (off) or {TEMPERATURE.what}", lambda v: v == 0 or TEMPERATURE.ok(v))
PROBABILITY = Rule("in [0, 1)", lambda v: math.isfinite(v) and 0 <= v < 1)
SEED = Rule("an integer in [0, 2**31)", lambda v: 0 <= v < 2**31)  # runs add ranks and steps to it
POSITIVE_INTS = Rule("comma-separated positive integers", lambda v: min(comma_list(v, int) or [0]) >= 1)
REPORTS = {"json": lambda head: head.startswith(b"{") and b'"mode"' in head,  # eval.py's and bench.py's
           "html": lambda head: head.startswith(b"<!DOCTYPE html>"), "png": lambda head: head.startswith(b"\x89PNG")}


def refuse_foreign_outputs(cfg, kinds):
    """Each output key of kinds {key: kind} may replace only a report of its kind (REPORTS), unless --overwrite."""
    for key, kind in kinds.items():
        if cfg[key] and os.path.isfile(cfg[key]) and not cfg["overwrite"]:
            with open(cfg[key], "rb") as f:
                if not REPORTS[kind](f.read(4096)):
                    raise UsageError(f"--{key}: {cfg[key]} holds something other than a {kind} report, which is not "
                                     f"replaced: pick another path, or replace it with --overwrite=True")


def output(kind, create=False):
    """The rule of an output file: "" (no output), or a path that can be written. Else why not: its folder is
    missing (create: the nearest folder that exists above it is the one to write in), a file, or read-only."""
    def writable(path):
        path = os.path.abspath(path)
        if os.path.isdir(path):
            return f"{path} is a folder"
        folder = os.path.dirname(path)
        while create and not os.path.lexists(folder):
            folder = os.path.dirname(folder)
        if not os.path.isdir(folder):
            return f"{folder} is a file, not a folder" if os.path.exists(folder) else f"folder {folder} does not exist"
        if not os.access(folder, os.W_OK | os.X_OK) or os.path.exists(path) and not os.access(path, os.W_OK):
            return f"{path if os.path.exists(path) else folder}: Permission denied"
        return True
    return Rule(f"a {kind} file that can be written", lambda v: not v or writable(v))


def one_of(*choices):
    return Rule(f"one of {', '.join(map(str, choices))}", lambda v: v in choices)


def check(cfg, rules, heads=()):
    """Raise a UsageError for the first key of cfg that breaks its rule in rules {key: Rule}; heads: pairs of keys
    (n_head, n_embd) whose head width, n_embd / n_head, must be a whole even number (rotary turns feature pairs)."""
    for key, rule in rules.items():
        verdict = rule.ok(cfg[key])
        if verdict is not True:
            why = f": {verdict}" if isinstance(verdict, str) else ""
            raise UsageError(f"--{key} must be {rule.what}, got {cfg[key]!r}{why}")
    for n_head, n_embd in heads:
        if cfg[n_embd] % (2 * cfg[n_head]):
            raise UsageError(f"--{n_head}={cfg[n_head]} does not fit --{n_embd}={cfg[n_embd]}: each head is "
                             f"{n_embd} / {n_head} wide, which must be a whole even number")


def comma_list(text, parse):
    """The values of a comma-separated text, each through parse; None if one does not parse or none is there."""
    try:
        return [parse(v.strip()) for v in text.split(",") if v.strip()] or None
    except (ValueError, ZeroDivisionError):
        return None


def int_list(key, text):
    """The positive integers of a comma-separated --key value, or a one-line UsageError."""
    check({key: text}, {key: POSITIVE_INTS})
    return comma_list(text, int)


def size_list(key, text):
    """The step sizes of a comma-separated --key value, fractions or decimals ("1/2,1/4,0.25"), as
    floats, or a one-line UsageError (sampler.Schedule.of checks that they sum to 1)."""
    values = comma_list(text, lambda v: float(Fraction(v)))
    if not values:
        raise UsageError(f"--{key} must be comma-separated step sizes such as 1/2,1/4,1/4, got {text!r}")
    return values


@contextlib.contextmanager
def output_file(path, mode="w", name=None):
    """open(path, mode) for writing, atomically: the data goes to path.tmp, flushed to disk, then
    renamed over path, so a crash or a full disk never leaves a partial file at path. A failed write
    is a UsageError naming the file (name, else path) and the cause, and leaves no temporary."""
    tmp = f"{path}.tmp"
    try:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)  # a killed write's, perhaps a hard link to another file: never write through it
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        cause = e  # torch.save reports a failed write (or Ctrl-C) as a RuntimeError raised while handling it
        while isinstance(cause, RuntimeError):
            cause = cause.__context__
        if isinstance(cause, KeyboardInterrupt):  # the script's Ctrl-C line, not torch's RuntimeError
            raise KeyboardInterrupt from None
        if not isinstance(cause, OSError):
            raise
        raise UsageError(f"cannot write {name or path}: {cause.strerror or cause}; the previous one there, if any, "
                         f"is intact") from None


def parse(defaults, argv, doc="", script=None, explicit=None):
    """Return a new dict: defaults updated by config files and --key=value arguments, in order.
    explicit: a set to which the keys that a file or an argument set are added.

    --help (or -h) prints doc, then the block of defaults of script (the caller's __file__) as written, from
    "# --- defaults" to the next "# ---": each key, its default and its comments (without a script, key = value)."""
    config, explicit = dict(defaults), set() if explicit is None else explicit
    if "--help" in argv or "-h" in argv:
        text = Path(script).read_text(encoding="utf-8") if script else ""
        block = re.search(r"^# -+ defaults\n(.*?)^# -+\n", text, re.M | re.S)
        lines = block.group(1).splitlines() if block else [f"{key} = {value!r}" for key, value in defaults.items()]
        header = [doc.strip(), "", "keys (--key=value), their defaults and meaning:"]
        print("\n".join(header + [f"  {line}" for line in lines]))
        raise SystemExit(0)
    for arg in argv:
        if arg.startswith("--"):
            key, sep, value = arg[2:].partition("=")
            if not sep:
                raise UsageError(f"expected --key=value, got {arg!r}")
            values, where = {key: value}, "the command line"
        elif not os.path.isfile(arg):
            raise UsageError(f"config file {arg!r} not found (arguments are config files or --key=value)")
        else:
            try:
                values, where = runpy.run_path(arg), arg
            except SyntaxError as e:
                raise UsageError(f"config file {arg}: {e.msg} at line {e.lineno}") from None
            except Exception as e:  # the file is Python, and any error in it is the user's
                line = next((f.lineno for f in reversed(traceback.extract_tb(e.__traceback__))
                             if os.path.abspath(f.filename) == os.path.abspath(arg)), "?")
                raise UsageError(f"config file {arg} failed at line {line}: {type(e).__name__}: {e}") from None
            values = {key: value for key, value in values.items()  # its assignments, not its imports or functions
                      if not key.startswith("_") and not callable(value) and type(value).__name__ != "module"}
        for key, value in values.items():
            if key not in config:
                close = " or ".join(difflib.get_close_matches(key, config, n=3))
                hint = f"did you mean {close}?" if close else "the keys are the names at the top of the script"
                raise UsageError(f"unknown config key {key!r} in {where}: {hint}")
            config[key] = _coerce(key, value, config[key])
            explicit.add(key)
    return config
