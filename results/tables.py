"""Print the README's tables (markdown) from the JSON that eval.py and bench.py wrote.

    python results/tables.py results/shakespeare_char_cpu
    python results/tables.py results/shakespeare_char_cpu --plots=assets   # and the README's quality plots
    python results/tables.py results/speed
    python results/tables.py --readme        # write results/README.md: every table of both folders
    python results/tables.py --frontier=a.json,b.json --frontier_json=all.json --frontier_png=plot.png \
        --levers_json=levers.json --levers_png=levers.png
        # eval.py quality runs with --reference_temperatures, one per training seed, in one file and one
        # plot; students beside the recipe's (config/reproduce_frontier.sh's LEVERS) in the lever table

Every number in the README's results comes from these files; this script only formats them.
"""

import contextlib
import io
import json
import os
import re
import sys
from fractions import Fraction

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from nanodfm.evaluate import plot_frontier, plot_quality, ratio_interval  # noqa: E402
from bench import share  # noqa: E402


def load(folder, name):
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def cell(row, key="gen_ppl"):
    return f"{row[key]:.3g} ± {row[key + '_ci95']:.2g}"


def best_cells(reports):
    """{(name, steps): row} over several reports: each cell from the report with the most samples."""
    by = {}
    for report in reports:
        for r in report["rows"]:
            key = (r["name"], r["steps"])
            if key not in by or r["num_samples"] > by[key]["num_samples"]:
                by[key] = r
    return by


def quality_table(reports, source):
    """Steps down, samplers across: perplexity ± 95% interval / entropy. Where several reports hold a
    cell, the one with the most samples is shown, its sample count beside it if not the first's."""
    base = reports[0]["rows"][0]["num_samples"]
    by = best_cells(reports)
    rows = list(by.values())
    names = list(dict.fromkeys(r["name"] for r in reports[0]["rows"] if r["steps"] is not None))
    steps = sorted({r["steps"] for r in rows if r["steps"] is not None})
    label = lambda r: f"{cell(r)} / {r['entropy']:.2f}" + (f" (n={r['num_samples']})" if r["num_samples"] != base else "")
    lines = ["| steps | " + " | ".join(f"{source}: {n}" for n in names) + " |", "| ---: |" + " --- |" * len(names)]
    for S in steps:
        lines.append(f"| {S} | " + " | ".join(label(by[(n, S)]) if (n, S) in by else "" for n in names) + " |")
    refs = [r for r in rows if r["steps"] is None]
    lines.append("")
    lines.append("reference rows: " + "; ".join(f"{r['name']} {label(r)} bits" for r in refs))
    return "\n".join(lines)


def ratio(row, key):
    return f"{row[key + '_ratio']:.3f} ± {row[key + '_ratio_ci95']:.3f}"


def ratio_table(reports, steps=(4, 8)):
    """Each student row at a few steps, as ratios to its DFM reference (cumulative, most steps)."""
    lines = ["| source | row | steps | gen. perplexity | × reference | entropy (bits) | × reference |",
             "| --- | --- | ---: | --- | --- | --- | --- |"]
    for source, report in reports:
        ref = report["reference"]
        for r in report["rows"]:
            if r["steps"] in steps and r["name"].startswith("student") or (
                    r["name"] == ref["name"] and r["steps"] == ref["steps"]):
                lines.append(f"| {source} | {r['name']} | {r['steps']} | {cell(r)} | {ratio(r, 'gen_ppl')} | "
                             f"{cell(r, 'entropy')} | {ratio(r, 'entropy')} |")
    return "\n".join(lines)


def overhead_table(stages, reruns=()):
    """The sampler's time outside the model per case, one pair of columns per stage (label, report),
    the last stage's forward time too, and the medians of its reruns (other reports) if any."""
    key = lambda r: (r["vocab_size"], r["length"], r["source"], r["steps"])
    label, last = stages[-1]
    by = [{key(r): r for r in report["rows"]} for _, report in stages[:-1]]
    again = [{key(r): r for r in report["rows"]} for report in reruns]
    lines = ["| V | L | source | steps | " + "".join(f"{name}: sample (s) | {name}: outside the model | "
                                               for name, _ in stages[:-1])
             + f"{label}: sample (s) | {label}: forwards alone (s) | {label}: outside the model |"
             + (" reruns: outside the model |" if again else ""),
             "| ---: | ---: | --- | ---: |" + " ---: |" * (2 * len(stages) + 1 + bool(again))]
    for r in last["rows"]:
        cells = []
        for old in by:
            b = old.get(key(r))
            cells.append(f"{b['total_s']:.3g} | {share(b)}" if b else "- | -")
        cells.append(f"{r['total_s']:.3g} | {r['forward_s']:.3g} | {share(r)}")
        if again:
            cells.append(", ".join(f"{100 * a[key(r)]['overhead']:.1f}%" for a in again if key(r) in a))
        lines.append(f"| {r['vocab_size']} | {r['length']} | {r['source']} | {r['steps']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def versus_table(versus):
    lines = ["| V | L | source | steps | previous (s) | engine (s) | engine / previous (quartiles) | same samples |",
             "| ---: | ---: | --- | ---: | ---: | ---: | ---: | --- |"]
    for r in versus["rows"]:
        lines.append(f"| {r['vocab_size']} | {r['length']} | {r['source']} | {r['steps']} | {r['previous_s']:.3g} | "
                     f"{r['engine_s']:.3g} | {r['engine_over_previous']:.2f} ({r['quartiles'][0]:.2f} to "
                     f"{r['quartiles'][1]:.2f}) | {'yes' if r['same_samples'] else 'no'} |")
    return "\n".join(lines)


def study_table(study):
    """Seconds per sequence, generators down, (length, batch size) across; the large size apart."""
    rows = study["rows"]
    cols = list(dict.fromkeys((r["size"], r["length"], r["batch_size"]) for r in rows))
    calls = lambda r: "L - 1" if r["name"] == "ar_cache" else r["nfe"]
    gens = list(dict.fromkeys((r["name"], calls(r)) for r in rows))
    by = {(r["name"], calls(r), r["size"], r["length"], r["batch_size"]): r for r in rows}
    head = [f"{'L' if s == 'small' else s + ' L'}={L}, B={B}" for s, L, B in cols]
    lines = ["| s / sequence | " + " | ".join(head) + " |", "| --- |" + " ---: |" * len(cols)]
    for name, nfe in gens:
        cells = []
        for s, L, B in cols:
            r = by.get((name, nfe, s, L, B))
            cells.append("" if r is None else f"{r['seconds_per_sequence']:.3g}" + ("*" if r["timed_steps"] < r["nfe"] else ""))
        label = "AR, KV cache" if name == "ar_cache" else name
        lines.append(f"| {label} ({nfe} calls) | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("crossover: " + "; ".join(
        f"{c['size']} L={c['length']} {c['name']}: {c['crossover_batch_size'] or 'none up to batch ' + str(max(c['batch_sizes']))}"
        for c in study["crossovers"]))
    return "\n".join(lines)


def estimate_table(estimate):
    lines = ["| generator | model calls | batch | TFLOP | GB moved | bound | ms / sequence |",
             "| --- | ---: | ---: | ---: | ---: | --- | ---: |"]
    for r in estimate["rows"]:
        label = "AR, KV cache" if r["name"] == "ar_cache" else r["name"]
        lines.append(f"| {label} | {r['steps']} | {r['batch_size']} | {r['flops'] / 1e12:.3g} | {r['bytes'] / 1e9:.3g} | "
                     f"{r['bound']} | {1e3 * r['seconds_per_sequence']:.3g} |")
    return "\n".join(lines)


def speed(folder):
    after = load(folder, "overhead.json")
    if after:
        print("## the sampler's time outside the model, batch 1\n")
        stages = [("Gumbel draw", load(folder, "overhead-gumbel.json")), ("one pass", load(folder, "overhead-onepass.json")),
                  ("fused", after)]
        reruns = [load(folder, n) for n in sorted(os.listdir(folder)) if n.startswith("overhead-rerun")]
        print(overhead_table([s for s in stages if s[1]], reruns) + "\n")
        engine = load(folder, "overhead-engine.json")
        if engine:
            print("## the same, the fused sampler (overhead.json, a quiet machine) against the engine in its own module "
                  "(overhead-engine.json, two training runs sharing the cores)\n")
            print(overhead_table([("fused", after), ("engine", engine)]) + "\n")
    versus = load(folder, "engine-vs-previous.json")
    if versus:
        print(f"## the engine against the sampler it was split from ({versus['previous']}), interleaved, "
              f"batch {versus['batch_size']}, {versus['threads']} thread (results/engine_vs_previous.py)\n")
        print(versus_table(versus) + "\n")
    for name in sorted(os.listdir(folder)):
        if name.startswith("overhead-") and not name.startswith("overhead-rerun") and \
                name not in ("overhead-gumbel.json", "overhead-onepass.json", "overhead-engine.json"):
            other = load(folder, name)
            print(f"## {name}: {other['threads']} threads, {other['settings']['n_layer']} layers x "
                  f"{other['settings']['n_embd']} wide\n")
            print(overhead_table([("fused", other)]) + "\n")
        if name.startswith("study"):
            study = load(folder, name)
            print(f"## {name}: {study['device_name']} ({study['device']}), {study['dtype']}, {study['threads']} threads, "
                  f"compile={study['compile']} (* = timed on every k-th step and scaled)\n")
            print(study_table(study) + "\n")
        if name.startswith("estimate"):
            print(f"## {name}: an estimate, not a measurement\n")
            print(estimate_table(load(folder, name)) + "\n")


def temperature_table(headline, reports):
    """Student rows sampled at temperatures other than 1, as ratios to the headline's reference."""
    ref = next(r for r in headline["rows"] if r["name"] == headline["reference"]["name"]
               and r["steps"] == headline["reference"]["steps"])
    lines = ["| temperature | steps | gen. perplexity | × reference | entropy (bits) | × reference |",
             "| ---: | ---: | --- | --- | --- | --- |"]
    rows = [(1.0, r) for r in headline["rows"] if r["name"].startswith("student")]
    rows += [(rep["settings"]["temperature"], r) for rep in reports for r in rep["rows"] if r["name"].startswith("student")]
    for T, r in sorted(rows, key=lambda tr: (tr[1]["steps"], tr[0])):
        cells = []
        for key in ("gen_ppl", "entropy"):
            value, ci = ratio_interval(r[key], r[f"{key}_ci95"], ref[key], ref[f"{key}_ci95"])
            cells.append(f"{cell(r, key)} | {value:.3f} ± {ci:.3f}")
        lines.append(f"| {T:g} | {r['steps']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def spread(values, cis):
    """Mean, sample standard deviation, min and max over seeds of per-seed values, the mean of their
    95% sampling half-widths, and the sampling half-width of the mean (independent seeds)."""
    n = len(values)
    mean = sum(values) / n
    std = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else 0.0
    return {"values": values, "ci95": cis, "mean": mean, "std": std, "min": min(values), "max": max(values),
            "mean_ci95": sum(cis) / n, "ci95_of_mean": sum(c * c for c in cis) ** 0.5 / n}


def student_name(row):
    """The recipe a student row comes from, by its checkpoint's folder (config/reproduce_frontier.sh's
    names): student-s7 -> "recipe", student-own-s7 -> "own"; sampled with a step schedule (eval.py
    --student_schedules), its name after the recipe's: "recipe, schedule front"; with a hotter first step
    (eval.py --student_first_temperature), that too: "recipe, schedule front, first step at 3"."""
    folder = os.path.basename(os.path.dirname(row["made_by"]))
    stem = re.sub(r"-s\d+$", "", folder)
    name = "recipe" if stem == "student" else stem.removeprefix("student-")
    name = f"{name}, schedule {row['schedule']['name']}" if row.get("schedule") else name
    return f"{name}, first step at {row['first_temperature']:g}" if row.get("first_temperature") else name


def combine_frontier(reports, only="recipe"):
    """One report from eval.py quality runs with --reference_temperatures, one per training seed:
    every seed's reference curve and students, the held-out and AR rows once, and over seeds the
    students' ratios to the reference (raw, and at matched entropy). Students of other recipes than
    `only` (levers, `combine_levers`) are left out; only=None keeps every student."""
    first = reports[0]
    for r in reports[1:]:
        if (r["length"], r["judge"], r["reference"]["steps"]) != (first["length"], first["judge"], first["reference"]["steps"]):
            raise SystemExit("the frontier reports differ in length, judge or reference steps: not comparable")
    ref_steps, rows, seeds = first["reference"]["steps"], [], []
    for k, report in enumerate(reports):
        T = report["settings"]["temperature"]
        for r in report["rows"]:
            if r["method"] is None and k > 0:  # held-out text and AR samples: the same in every report
                continue
            if only and r["name"].startswith("student") and student_name(r) != only:
                continue
            rows.append(r)
        seed = next(r["seed"] for r in report["rows"] if r["name"] == "dfm cumulative")
        seeds.append(seed)
    summary = {}
    students = [r for r in rows if r["name"].startswith("student")]
    for S in sorted({r["steps"] for r in students}):
        mine = [r for r in students if r["steps"] == S]
        entry = {"raw": spread([r["gen_ppl_ratio"] for r in mine], [r["gen_ppl_ratio_ci95"] for r in mine]),
                 "entropy": spread([r["entropy_ratio"] for r in mine], [r["entropy_ratio_ci95"] for r in mine]),
                 "seeds": [r["seed"] for r in mine]}
        matched = [r["matched"] for r in mine if r.get("matched")]
        if len(matched) == len(mine):
            entry["matched"] = spread([m["gen_ppl_ratio"] for m in matched], [m["gen_ppl_ratio_ci95"] for m in matched])
            entry["matched_with_entropy"] = spread([m["gen_ppl_ratio"] for m in matched],
                                                   [m["gen_ppl_ratio_ci95_with_entropy"] for m in matched])
        else:
            entry["matched"] = None
            entry["matched_notes"] = [f"seed {r['seed']}: {r.get('matched_note', 'no reference curve')}"
                                      for r in mine if not r.get("matched")]
        summary[f"student@{S}"] = entry
    return {"mode": "frontier", "length": first["length"], "judge": first["judge"],
            "judge_val_loss": first["judge_val_loss"], "num_samples": first["rows"][0]["num_samples"],
            "reference": {"name": "dfm cumulative", "steps": ref_steps, "temperature": first["settings"]["temperature"]},
            "seeds": seeds, "summary": summary, "rows": rows}


def frontier_tables(combined):
    """The frontier per seed (reference at each temperature), the students against it, the means over seeds."""
    rows, ref_steps = combined["rows"], combined["reference"]["steps"]
    curve = lambda seed: sorted((r for r in rows if r["seed"] == seed and r["name"] == "dfm cumulative"
                                 and r["steps"] == ref_steps), key=lambda r: -r["temperature"])
    out = [f"## the reference (dfm cumulative, {ref_steps} steps) at each temperature, per training seed "
           f"({combined['num_samples']} samples a cell)\n",
           "| seed | temperature | gen. perplexity | entropy (bits) |", "| ---: | ---: | --- | --- |"]
    for seed in combined["seeds"]:
        out += [f"| {seed} | {r['temperature']:g} | {cell(r)} | {cell(r, 'entropy')} |" for r in curve(seed)]
    out += ["", "## the students against their own seed's reference: at temperature "
            f"{combined['reference']['temperature']:g}, and at the student's entropy (interpolated along the curve)\n",
            "| seed | steps | gen. perplexity | entropy (bits) | × reference | entropy × reference | × reference at matched entropy "
            "| (± with the entropy's interval) |", "| ---: | ---: | --- | --- | --- | --- | --- | --- |"]
    for seed in combined["seeds"]:
        for r in sorted((r for r in rows if r["seed"] == seed and r["name"].startswith("student")), key=lambda r: r["steps"]):
            m = r.get("matched")
            matched = (f"{m['gen_ppl_ratio']:.3f} ± {m['gen_ppl_ratio_ci95']:.3f} | ± {m['gen_ppl_ratio_ci95_with_entropy']:.3f}"
                       if m else f"outside ({r.get('matched_note', 'no curve')}) | -")
            out.append(f"| {seed} | {r['steps']} | {cell(r)} | {cell(r, 'entropy')} | {ratio(r, 'gen_ppl')} | "
                       f"{ratio(r, 'entropy')} | {matched} |")
    out += ["", f"## over the {len(combined['seeds'])} seeds: mean, standard deviation and range of the per-seed ratios, "
            "beside the sampling half-widths (their mean, and that of the mean)\n",
            "| row | ratio | mean | std over seeds | min - max | mean sampling ± | sampling ± of the mean |",
            "| --- | --- | ---: | ---: | --- | ---: | ---: |"]
    labels = (("raw", "× reference"), ("matched", "× reference at matched entropy"),
              ("matched_with_entropy", "(with the entropy's interval)"), ("entropy", "entropy × reference"))
    notes = []
    for name, entry in combined["summary"].items():
        for key, label in labels:
            e = entry.get(key)
            if e is None:
                if key == "matched":
                    out.append(f"| {name} | {label} | - | - | - | - | - |")
                    notes += [f"{name}, {note}" for note in entry.get("matched_notes", [])]
                continue
            out.append(f"| {name} | {label} | {e['mean']:.3f} | {e['std']:.3f} | {e['min']:.3f} - {e['max']:.3f} | "
                       f"{e['mean_ci95']:.3f} | {e['ci95_of_mean']:.3f} |")
    if notes:
        out += ["", "not matched (the student's entropy outside the reference curve):"] + [f"- {n}" for n in notes]
    return "\n".join(out)


def headline_table(combined):
    """The README's headline: per step count the students' mean ratio over seeds with the sampling
    half-width of that mean and, in brackets, the lowest and highest seed."""
    def entry(e, digits):
        if e is None:
            return "-"
        return f"{e['mean']:.{digits}f} ± {e['ci95_of_mean']:.{digits}f} ({e['min']:.{digits}f} to {e['max']:.{digits}f})"
    out = ["| student steps | × reference | × reference at matched entropy | entropy × reference |",
           "| ---: | --- | --- | --- |"]
    for name, e in combined["summary"].items():
        out.append(f"| {name.split('@')[1]} | {entry(e['raw'], 2)} | {entry(e.get('matched'), 2)} | {entry(e['entropy'], 3)} |")
    return "\n".join(out)


def baseline_name(name):
    """What a student row is compared with in the lever table: the same rows without a hotter first
    step ("recipe, schedule front, first step at 3" -> "recipe, schedule front"), else the recipe."""
    return name.split(", first step at ")[0] if ", first step at " in name else "recipe"


def combine_levers(reports):
    """The levers against the recipe, from the same per-seed reports: for each student recipe and
    step count, its ratios over seeds (as `combine_frontier`), and per seed its difference from its
    baseline's ratio (`baseline_name`: the recipe, or the same rows without a hotter first step) with
    the interval of the difference (independent samples; wide, since both ratios share the reference
    row's interval), the mean difference with its sampling interval, and how many seeds it is better
    on (lower perplexity ratio; higher entropy ratio)."""
    combined = combine_frontier(reports, only=None)
    students = [r for r in combined["rows"] if r["name"].startswith("student")]
    names = list(dict.fromkeys(student_name(r) for r in students))
    if "recipe" not in names:
        raise SystemExit("the reports hold no recipe student (student-s<seed>): nothing to compare the levers with")
    by_name = {(student_name(r), r["seed"], r["steps"]): r for r in students}
    def versus(mine, value, ci, higher_is_better=False):
        base = lambda r: by_name.get((baseline_name(student_name(r)), r["seed"], r["steps"]))
        pairs = [(value(r), ci(r), value(base(r)), ci(base(r))) for r in mine if base(r)]
        pairs = [p for p in pairs if None not in p]
        if not pairs:
            return None
        deltas = [a - b for a, _, b, _ in pairs]
        cis = [(ca * ca + cb * cb) ** 0.5 for _, ca, _, cb in pairs]
        return {"values": deltas, "ci95": cis, "mean": sum(deltas) / len(deltas),
                "ci95_of_mean": sum(c * c for c in cis) ** 0.5 / len(cis),
                "better_on": sum((d > 0) if higher_is_better else (d < 0) for d in deltas), "of": len(deltas)}
    matched = lambda key: (lambda r: r["matched"][key] if r.get("matched") else None)
    summary = {}
    for name in names:
        for S in sorted({r["steps"] for r in students}):
            mine = [r for r in students if student_name(r) == name and r["steps"] == S]
            if not mine:
                continue
            entry = {"seeds": [r["seed"] for r in mine],
                     "raw": spread([r["gen_ppl_ratio"] for r in mine], [r["gen_ppl_ratio_ci95"] for r in mine]),
                     "entropy": spread([r["entropy_ratio"] for r in mine], [r["entropy_ratio_ci95"] for r in mine])}
            if all(r.get("matched") for r in mine):
                entry["matched"] = spread([r["matched"]["gen_ppl_ratio"] for r in mine],
                                          [r["matched"]["gen_ppl_ratio_ci95"] for r in mine])
            if name != "recipe":
                entry["versus"] = baseline_name(name)
                entry["versus_recipe"] = {
                    "raw": versus(mine, lambda r: r["gen_ppl_ratio"], lambda r: r["gen_ppl_ratio_ci95"]),
                    "entropy": versus(mine, lambda r: r["entropy_ratio"], lambda r: r["entropy_ratio_ci95"], True),
                    "matched": versus(mine, matched("gen_ppl_ratio"), matched("gen_ppl_ratio_ci95"))}
            summary[f"{name}@{S}"] = entry
    return {**combined, "mode": "levers", "summary": summary, "students": names}


def lever_tables(levers):
    """Each recipe's ratios per seed and their mean, and each lever's difference from the recipe."""
    out = ["| student | steps | seeds | × reference, per seed | mean | at matched entropy, per seed | mean "
           "| entropy ×, mean | vs baseline: Δ ×, mean ± sampling (better on) | Δ matched | Δ entropy × |",
           "| --- | ---: | --- | --- | ---: | --- | ---: | ---: | --- | --- | --- |"]
    per_seed = lambda e: ", ".join(f"{v:.3f} ± {c:.3f}" for v, c in zip(e["values"], e["ci95"]))
    delta = lambda d: "-" if d is None else f"{d['mean']:+.3f} ± {d['ci95_of_mean']:.3f} ({d['better_on']} of {d['of']})"
    for key, e in levers["summary"].items():
        name, S = key.rsplit("@", 1)
        m, v = e.get("matched"), e.get("versus_recipe")
        matched = f"{per_seed(m)} | {m['mean']:.3f}" if m else "outside the curve on a seed | -"
        versus = f"{delta(v['raw'])} | {delta(v['matched'])} | {delta(v['entropy'])}" if v else "- | - | -"
        out.append(f"| {name} | {S} | {', '.join(map(str, e['seeds']))} | {per_seed(e['raw'])} | {e['raw']['mean']:.3f} "
                   f"| {matched} | {e['entropy']['mean']:.3f} | {versus} |")
    hot = any(", first step at " in key for key in levers["summary"])
    out.append("\nbaseline: the recipe at equal steps" + "; for a row with a hotter first step, the same row without it" * hot)
    return "\n".join(out)


def schedule_lines(report):
    """One line per step schedule in a report's rows: its name, steps and sizes as fractions."""
    seen = {}
    for r in report["rows"]:
        if r.get("schedule"):
            sizes = ", ".join(str(Fraction(h).limit_denominator(1 << 20)) for h in r["schedule"]["sizes"])
            seen[(r["schedule"]["name"], len(r["schedule"]["sizes"]))] = sizes
    return [f"- schedule {name} at {steps} steps: {sizes}" for (name, steps), sizes in seen.items()]


def plot_levers(levers, path):
    """One panel per seed: the reference's temperature curve (grey) and each student recipe's rows at
    its step counts (one colour a recipe, a line through its steps), with 95% error bars. Returns
    False when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows, seeds, ref_steps = levers["rows"], levers["seeds"], levers["reference"]["steps"]
    fig, axes = plt.subplots(1, len(seeds), figsize=(4.2 * len(seeds), 4.2), squeeze=False)
    for ax, seed in zip(axes[0], seeds):
        curve = sorted((r for r in rows if r["seed"] == seed and r["name"] == "dfm cumulative" and r["steps"] == ref_steps),
                       key=lambda r: r["entropy"])
        ax.errorbar([r["entropy"] for r in curve], [r["gen_ppl"] for r in curve], xerr=[r["entropy_ci95"] for r in curve],
                    yerr=[r["gen_ppl_ci95"] for r in curve], color="grey", marker="o", ms=3, capsize=2,
                    label=f"DFM, {ref_steps} steps, by temperature")
        for r in curve:
            ax.annotate(f"T={r['temperature']:g}", (r["entropy"], r["gen_ppl"]), textcoords="offset points",
                        xytext=(4, -10), fontsize=7, color="grey")
        for k, name in enumerate(levers["students"]):
            mine = sorted((r for r in rows if r["seed"] == seed and r["name"].startswith("student")
                           and student_name(r) == name), key=lambda r: r["steps"])
            ax.errorbar([r["entropy"] for r in mine], [r["gen_ppl"] for r in mine], xerr=[r["entropy_ci95"] for r in mine],
                        yerr=[r["gen_ppl_ci95"] for r in mine], color=f"C{k}", marker="s", ms=4, capsize=2, lw=0.8,
                        label=name)
            for r in mine:
                ax.annotate(str(r["steps"]), (r["entropy"], r["gen_ppl"]), textcoords="offset points", xytext=(3, 3),
                            fontsize=6, color=f"C{k}")
        ax.set_title(f"training seed {seed}", fontsize=9)
        ax.set_xlabel("unigram entropy (bits)")
    axes[0][0].set_ylabel("generative perplexity (students: steps beside each point)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def frontier(paths, out_json=None, out_png=None, levers_json=None, levers_png=None):
    reports = []
    for path in paths:
        with open(path) as f:
            reports.append(json.load(f))
    combined = combine_frontier(reports)
    print(frontier_tables(combined))
    print(f"\n## the headline: the mean over the {len(combined['seeds'])} seeds (± the sampling half-width of the mean; "
          "lowest and highest seed)\n")
    print(headline_table(combined))
    if any(student_name(r) != "recipe" for rep in reports for r in rep["rows"] if r["name"].startswith("student")):
        levers = combine_levers(reports)
        print("\n## the levers against the recipe (each seed's own reference; Δ: lever minus baseline)\n")
        print(lever_tables(levers))
        if levers_json:
            with open(levers_json, "w") as f:
                json.dump(levers, f, indent=2)
            print(f"\nwrote {levers_json}")
        if levers_png and plot_levers(levers, levers_png):
            print(f"wrote {levers_png}")
    if out_json:
        with open(out_json, "w") as f:
            json.dump(combined, f, indent=2)
        print(f"\nwrote {out_json}")
    if out_png:
        ref_steps = combined["reference"]["steps"]
        curves = {seed: [r for r in combined["rows"] if r["seed"] == seed and r["name"] == "dfm cumulative"
                         and r["steps"] == ref_steps] for seed in combined["seeds"]}
        students = {seed: [r for r in combined["rows"] if r["seed"] == seed and r["name"].startswith("student")]
                    for seed in combined["seeds"]}
        if plot_frontier(curves, students, out_png):
            print(f"wrote {out_png}")
        else:
            print("matplotlib is not installed: no plot")


def main(folder, plots=None):
    if os.path.isfile(os.path.join(folder, "overhead.json")) or any(n.startswith("study") for n in os.listdir(folder)):
        return speed(folder)
    for source in ("uniform", "mask"):
        report = load(folder, f"quality-{source}.json")
        if report:
            names = sorted(n for n in os.listdir(folder) if n.startswith(f"quality-{source}-") and n.endswith(".json"))
            more = [r for r in [load(folder, n) for n in names] + [load(folder, f"headline-{source}.json")] if r]
            print(f"## quality, {source} source ({report['rows'][0]['num_samples']} samples a cell unless marked, "
                  f"{report['length']} tokens, judge val loss {report['judge_val_loss']:.4f})\n")
            print(quality_table([report] + more, source) + "\n")
            if plots:  # the README's plots, from the same cells
                rows = sorted(best_cells([report] + more).values(), key=lambda r: (r["steps"] or 0))
                names = list(dict.fromkeys(r["name"] for r in report["rows"]))
                plot_quality(sorted(rows, key=lambda r: names.index(r["name"])), os.path.join(plots, f"quality_{source}.png"))
    reports = [(s, load(folder, f"quality-{s}.json")) for s in ("uniform", "mask")]
    print("## students against the reference\n")
    print(ratio_table([(s, r) for s, r in reports if r]) + "\n")
    headline = [(s, load(folder, f"headline-{s}.json")) for s in ("uniform", "mask")]
    if any(r for _, r in headline):
        n = next(r for _, r in headline if r)["rows"][0]["num_samples"]
        print(f"## the headline cells with {n} samples\n")
        print(ratio_table([(s, r) for s, r in headline if r]) + "\n")
    hot = sorted(n for n in os.listdir(folder) if n.startswith("temperature-uniform-") and n.endswith(".json"))
    if hot and headline[0][1]:
        print("## the uniform student at other temperatures, against the headline's reference (temperature 1)\n")
        print(temperature_table(headline[0][1], [load(folder, n) for n in hot]) + "\n")
    ablation = load(folder, "ablation-uniform.json")
    if ablation:
        print("## ablation, uniform source\n")
        print(ratio_table([("uniform", ablation)]) + "\n")


HERE = os.path.dirname(os.path.abspath(__file__))
README = """# Results

Every table here is written by `python results/tables.py --readme` from the JSON files beside it,
which `eval.py` and `bench.py` wrote (each file's `settings` holds the command's keys). The
README quotes the headline; this page holds the rest. All figures are from a 2-core CPU (AMD EPYC),
float32, one thread unless a table says otherwise. A quality cell is generative perplexity ± its
95% interval / unigram entropy in bits, judged by the AR preset trained on the same text; a ratio
is to the reference row (the DFM model, cumulative step, 1024 steps) with the interval of the
ratio. `bash config/reproduce_shakespeare_char.sh` redoes the Shakespeare folder from scratch.

"""


def readme():
    """results/README.md: the Shakespeare tables, then the speed tables."""
    parts = [README]
    for title, folder in (("Shakespeare characters, CPU presets", "shakespeare_char_cpu"), ("Speed", "speed")):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            main(os.path.join(HERE, folder))
        text = out.getvalue()
        for name, heading in (("headline-seeds-uniform.json", "the headline over training seeds, uniform source, the recipe, "
                             "{n} samples a cell: each seed's reference at several temperatures, its student against it, "
                             "raw and at matched entropy (headline-seeds-uniform.json, SAMPLES=512 bash config/reproduce_frontier.sh)"),
                            ("frontier-uniform.json", "the frontier, uniform source, the recipe before it took classical RK "
                             "points (chained), {n} samples a cell: each seed's reference at several temperatures, its "
                             "students against it (frontier-uniform.json, config/reproduce_frontier.sh)")):
            combined = load(os.path.join(HERE, folder), name)
            if combined:  # students over training seeds, against the reference's own frontier
                text += (f"\n## {heading.format(n=combined['num_samples'])}\n\n"
                         + frontier_tables(combined).replace("\n## ", "\n#### ").lstrip("#").lstrip() + "\n\n"
                         + "#### the mean over seeds (± the sampling half-width of the mean; lowest and highest seed)\n\n"
                         + headline_table(combined) + "\n")
        for name, heading in (("schedules-uniform.json", "step schedules against the recipe's uniform steps, uniform source, "
                               "{n} samples a cell, the same students and references (schedules-uniform.json, SEEDS=\"1337 7 "
                               "11 3\" SAMPLES=512 config/reproduce_frontier.sh with EVAL_ARGS=--student_schedules=coarse-to-fine; "
                               "seed 3 trained after the schedules were chosen; the file's note says which rows it reused)"),
                              ("first-step-uniform.json", "a hotter first step (temperature 3), with equal and with "
                               "coarse-to-fine steps, uniform source, {n} samples a cell, each seed's students and references "
                               "trained and sampled afresh (first-step-uniform.json, SAMPLES=512 REFERENCE_TEMPERATURES=1.0,0.4,"
                               "0.15 config/reproduce_frontier.sh with EVAL_ARGS=\"--student_schedules=coarse-to-fine "
                               "--student_first_temperature=3\")"),
                              ("first-step-seed3-uniform.json", "the same on seed 3, trained after the schedules and "
                               "the first step's temperature were chosen on seeds 1337, 7 and 11, {n} samples a cell "
                               "(first-step-seed3-uniform.json: the same command with SEEDS=3)"),
                              ("levers-classical-uniform.json", "the levers against the recipe (classical RK points), "
                               "uniform source, {n} samples a cell: every student against its seed's reference, raw and at "
                               "matched entropy (levers-classical-uniform.json, SAMPLES=512 config/reproduce_frontier.sh with LEVERS)"),
                              ("levers-uniform.json", "the levers against the recipe before it took classical RK points "
                               "(here \"recipe\" is chained points, \"classical\" today's recipe), uniform source, {n} samples "
                               "a cell (levers-uniform.json, config/reproduce_frontier.sh with LEVERS)")):
            levers = load(os.path.join(HERE, folder), name)
            if levers:  # levers against the recipe, with the same references
                text += f"\n## {heading.format(n=levers['num_samples'])}\n\n" + lever_tables(levers) + "\n"
                picture = name.replace(".json", ".png").replace("-", "_")  # drawn by reproduce_frontier.sh, copied to assets/
                if os.path.isfile(os.path.join(HERE, "..", "assets", picture)):
                    text += f"\n![each seed's frontier with these students](../assets/{picture})\n"
                sizes = schedule_lines(levers)
                text += "".join(f"\n{line}" for line in sizes) + "\n" * bool(sizes)
        parts.append(f"# {title} (`{folder}/`)\n\n" + text.replace("\n## ", "\n### ").lstrip("\n"))
        if parts[-1].startswith(f"# {title} (`{folder}/`)\n\n## "):
            parts[-1] = parts[-1].replace("\n\n## ", "\n\n### ", 1)
    with open(os.path.join(HERE, "README.md"), "w") as f:
        f.write("\n".join(p.rstrip("\n") + "\n" for p in parts))
    print(f"wrote {os.path.join(HERE, 'README.md')}")


if __name__ == "__main__":
    if "--readme" in sys.argv:
        readme()
        raise SystemExit(0)
    flags = {a.split("=", 1)[0][2:]: a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--") and "=" in a}
    if "frontier" in flags:
        frontier(flags["frontier"].split(","), flags.get("frontier_json"), flags.get("frontier_png"), flags.get("levers_json"),
                 flags.get("levers_png"))
        sys.exit(0)
    args = [a for a in sys.argv[1:] if not a.startswith("--plots=")]
    plots = flags.get("plots")
    main(args[0] if args else os.path.join(os.path.dirname(os.path.abspath(__file__)), "shakespeare_char_cpu"), plots)
