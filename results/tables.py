"""Markdown tables and plots from the JSON that eval.py, bench.py and the reproduce scripts wrote; it only formats.

    python results/tables.py OUT [--plots=DIR]   # a reproduce script's $OUT; its quality_*.png into DIR
    python results/tables.py --readme            # rewrite the tables of results/README.md
    python results/tables.py --frontier=a.json,b.json --frontier_json=all.json --frontier_png=plot.png \
        --levers_json=levers.json --levers_png=levers.png   # config/reproduce_frontier.sh's seeds (and LEVERS)

results/README.md is prose around tables, each between `<!-- table WRITER FILES... [OPTION=VALUE...] -->` and
`<!-- end -->`: --readme rewrites it with WRITERS[WRITER] from FILES (globs under results/).
"""

import glob
import json
import math
import os
import re
import sys
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from eval import plot_quality  # noqa: E402
from nanodfm.evaluate import markdown_table, pyplot, ratio_interval  # noqa: E402
from results.plots import plot_frontier, plot_levers, student_name  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()] if path.endswith(".jsonl") else json.load(f)


def fmt(value, ci=None, spec=None):
    """A cell: a number to 4 significant digits, with an interval to its 2 (or to `spec`); a pair as a range."""
    if isinstance(value, list):
        return (" to " if len(value) == 2 else ", ").join(map(fmt, value))
    spec = spec or (f".{max(0, 1 - math.floor(math.log10(ci)))}f" if ci else ".4g")
    text = "-" if value is None else f"{value:{spec}}" if isinstance(value, float) else str(value)
    return text if ci is None else f"{text} ± {ci:.{len(text.partition('.')[2])}f}"


def cells(files, keys, across=(), table="rows"):
    """{(key, column): row} over the files' rows (list `table`, else the file; a JSONL file's lines), key and column
    the row's (or its file's) `keys` and `across` fields, else the file's name; where rows meet, the most sampled."""
    out = {}
    for name, data in files:
        for r in data.get(table, [data]) if isinstance(data, dict) else data:
            get = lambda k: r.get(k, data.get(k) if isinstance(data, dict) else None)
            at = (tuple(map(get, keys)), tuple(map(get, across)) if across else name)
            if at not in out or r.get("num_samples", 0) > out[at].get("num_samples", 0):
                out[at] = r
    return out


def rows(files, keys, values, across="", table="rows"):
    """`cells`, keys down: each value in a column, or the columns across, " / " between the values. A value "a.b"
    is field b of field a; x and x_ci95 show as "x ± interval"."""
    keys, values = keys.split(","), values.split(",")
    got = cells(files, keys, across.split(",") if across else (), table)
    columns = list(dict.fromkeys(c for _, c in got))
    shown = [v for v in values if not (v.endswith("_ci95") and v[:-5] in values)]
    get = lambda r, v: r.get(v) if "." not in v else (r.get(v.split(".")[0]) or {}).get(v.split(".")[1])
    text = lambda r: [fmt(get(r, v), get(r, v + "_ci95") if v + "_ci95" in values else None) for v in shown]
    names = [v + " (± 95%)" * (v + "_ci95" in values) for v in shown]
    if len(columns) == 1:
        return markdown_table(keys + names, [list(map(fmt, k)) + text(r) for (k, _), r in got.items()])
    return markdown_table(keys + [" ".join(map(fmt, c)) if across else c for c in columns], [
        list(map(fmt, k)) + [" / ".join(text(got[(k, c)])) if (k, c) in got else "" for c in columns]
        for k in dict.fromkeys(k for k, _ in got)]) + f"\n\na cell: {' / '.join(names)}"


def ratios(files):
    """Each report's reference row and students at 4 and 8 steps, as ratios to the reference (without one, eval.py
    run on --student alone, the first report's) with the ratio's 95% interval."""
    first, lines = None, []
    for name, report in files:
        ref = next((r for r in report["rows"] if report.get("reference") and r["name"] == report["reference"]["name"]
                    and r["steps"] == report["reference"]["steps"]), first)
        first = first or ref
        ratio = lambda r, k: (1.0, 0.0) if r is ref else ratio_interval(r[k], r[k + "_ci95"], ref[k], ref[k + "_ci95"])
        lines += [[name, r["name"], r["steps"], fmt(r["gen_ppl"], r["gen_ppl_ci95"]), fmt(*ratio(r, "gen_ppl"), ".3f"),
                   fmt(r["entropy"], r["entropy_ci95"]), fmt(*ratio(r, "entropy"), ".3f")]
                  for r in report["rows"] if r is ref or r["name"].startswith("student") and r["steps"] in (4, 8)]
    return markdown_table(["file", "row", "steps", "gen. perplexity", "× reference", "entropy (bits)", "× reference"],
                          lines)


def spread(values, cis):
    """Over seeds: mean, range and the 95% half-width of the mean (independent seeds; None if a value has none)."""
    return {"values": values, "ci95": cis, "mean": sum(values) / len(values), "min": min(values), "max": max(values),
            "ci95_of_mean": None if None in cis else math.hypot(*cis) / len(cis)}


RATIOS = {"raw": lambda r: (r["gen_ppl_ratio"], r["gen_ppl_ratio_ci95"]),  # an eval.py row's (value, half-width)
          "entropy": lambda r: (r["entropy_ratio"], r.get("entropy_ratio_ci95")),
          "matched": lambda r: (r["matched"]["gen_ppl_ratio"], r["matched"]["gen_ppl_ratio_ci95"]) if r.get("matched")
          else (None, None), "ngram_js": lambda r: (r.get("ngram_js"), r.get("ngram_js_ci95"))}  # lower: nearer the text


def compare(rows, name_of, baseline_of=lambda name: name, ratios=RATIOS):
    """{"NAME@STEPS": entry}: each ratio's `spread` over seeds (where every seed has it) and its differences from
    the row of baseline_of(NAME) of the same seed and steps, each with its interval (independent samples), their
    `spread`, and on how many seeds the row is better."""
    by, summary = {(name_of(r), r["seed"], r["steps"]): r for r in rows}, {}
    for name in dict.fromkeys(map(name_of, rows)):
        for S in sorted({r["steps"] for r in rows if name_of(r) == name}):
            mine = [r for r in rows if name_of(r) == name and r["steps"] == S]
            e = summary[f"{name}@{S}"] = {"seeds": [r["seed"] for r in mine]} | {
                key: spread(*zip(*map(of, mine))) if None not in (of(r)[0] for r in mine) else None
                for key, of in ratios.items()}
            if baseline_of(name) == name:
                continue
            e["versus"], e["versus_recipe"] = baseline_of(name), {}
            for key, of in ratios.items():
                pairs = [(of(r), of(b)) for r in mine if (b := by.get((baseline_of(name), r["seed"], S)))
                         and None not in (of(r)[0], of(b)[0])]
                d = spread([a - b for (a, _), (b, _) in pairs], [None if None in (ca, cb) else math.hypot(ca, cb)
                                                                 for (_, ca), (_, cb) in pairs]) if pairs else None
                e["versus_recipe"][key] = d and {**d, "of": len(pairs), "better_on": sum(
                    v > 0 if key == "entropy" else v < 0 for v in d["values"])}  # a lower ratio, more entropy
    return summary


def combine(reports, only="recipe"):
    """eval.py quality reports with --reference_temperatures, one a training seed, as one: every seed's reference
    curve and students, the held-out and AR rows once, and the students compared: those of recipe `only` as
    "student", or (only=None, the levers) every recipe against the recipe's student of its seed, a row with a
    hotter first step (or spread jumps) against the same row without it."""
    first = reports[0]
    if len({(r["length"], r["judge"], r["reference"]["steps"]) for r in reports}) > 1:
        raise SystemExit("the frontier reports differ in length, judge or reference steps: not comparable")
    rows = [r for k, report in enumerate(reports) for r in report["rows"] if (r["method"] is not None or k == 0)
            and not (only and r["name"].startswith("student") and student_name(r) != only)]
    students = [r for r in rows if r["name"].startswith("student")]
    names = list(dict.fromkeys(map(student_name, students)))
    if "recipe" not in names:
        raise SystemExit("the reports hold no recipe student (student-s<seed>): nothing to compare the levers with")
    baseline = lambda name: m[1] if (m := re.fullmatch(r"(.+), (?:first step at [\d.]+|spread jumps)", name)) else "recipe"
    return {"mode": "levers" if only is None else "frontier", "length": first["length"], "judge": first["judge"],
            "judge_val_loss": first["judge_val_loss"], "num_samples": first["rows"][0]["num_samples"],
            "reference": {**first["reference"], "temperature": first["settings"]["temperature"]},
            "seeds": [next(r["seed"] for r in report["rows"] if r["name"] == "dfm cumulative") for report in reports],
            "students": names, "rows": rows, "summary": compare(students, student_name, baseline) if only is None
            else compare(students, lambda r: "student")}


def levers(files, seeds=None):
    """The students of a file of `combine`: their ratios per seed and the mean ± its half-width, and Δ from the
    baseline; the sizes of its schedules below. Or first-step-sample.jsonl (rows of `seeds`) against "own"."""
    data = files[0][1]
    if isinstance(data, list):  # first-step-sample.jsonl
        of = {"raw": lambda r: (r["raw"], r["raw_ci95"]), "entropy": lambda r: (r["entropy_ratio"], None),
              "matched": lambda r: (r["matched"], r["matched_ci95"])}
        mine = [r for r in data if str(r["seed"]) in (seeds or str(r["seed"])).split(",")]
        data = {"rows": [], "summary": compare(mine, lambda r: r["variant"], lambda name: "own", of)}
    per_seed = lambda e: ", ".join(fmt(v, c, ".3f") for v, c in zip(e["values"], e["ci95"])) \
        + f" | {fmt(e['mean'], e['ci95_of_mean'], '.3f')}"
    delta = lambda d: f"{fmt(d['mean'], d['ci95_of_mean'], '+.3f')} ({d['better_on']} of {d['of']})" if d else "-"
    js = any(e.get("ngram_js") for e in data["summary"].values())  # the n-gram divergence, where the rows have it
    lines = [name.split("@") + [", ".join(map(str, e["seeds"])), per_seed(e["raw"]),
                                per_seed(e["matched"]) if e.get("matched") else "outside the curve on a seed | -",
                                per_seed(e["entropy"])] + [per_seed(e["ngram_js"]) if e.get("ngram_js") else "- | -"] * js
             + [e.get("versus", "recipe") if "versus_recipe" in e else "-"]
             + [delta(e.get("versus_recipe", {}).get(k)) for k in ("raw", "matched", "entropy", "ngram_js")[:3 + js]]
             for name, e in data["summary"].items()]
    table = markdown_table(["student", "steps", "seeds", "× reference, per seed", "mean", "matched, per seed", "mean",
                            "entropy ×, per seed", "mean"] + ["n-gram JS, per seed", "mean"] * js
                           + ["Δ against", "Δ ×", "Δ matched", "Δ entropy ×"] + ["Δ JS"] * js, lines)
    sizes = {f"- schedule {r['schedule']['name']} at {len(r['schedule']['sizes'])} steps: "
             + ", ".join(str(Fraction(h).limit_denominator(1 << 20)) for h in r["schedule"]["sizes"]): None
             for r in data["rows"] if r.get("schedule")}
    return "\n\n".join([table, "\n".join(sizes)]) if sizes else table


def frontier(flags):
    """--frontier: the seeds' reports in one file and plot, and their table; with other students, the levers'."""
    reports = [load(path) for path in flags["frontier"].split(",")]
    combined = combine(reports)
    lever = any(student_name(r) != "recipe" for report in reports for r in report["rows"]
                if r["name"].startswith("student")) and combine(reports, only=None)
    print(f"## the recipe's students (each seed's own reference)\n\n{levers([('', combined)])}\n")
    print(f"## the levers against their baselines\n\n{levers([('', lever)])}" if lever else "")
    for key, report, plot in (("frontier", combined, plot_frontier), ("levers", lever, plot_levers)):
        if report and flags.get(f"{key}_json"):
            Path(flags[f"{key}_json"]).write_text(json.dumps(report, indent=2))
        if report and flags.get(f"{key}_png"):
            plot(report, flags[f"{key}_png"])


WRITERS = {"rows": rows, "ratios": ratios, "levers": levers}
QUALITY = ("rows quality-{0}.json quality-{0}-*.json headline-{0}.json keys=steps across=name "
           "values=gen_ppl,gen_ppl_ci95,entropy,num_samples")
OUT = (QUALITY.format("uniform"), QUALITY.format("mask"), "ratios quality-uniform.json quality-mask.json",  # and speed/
       "ratios headline-uniform.json headline-mask.json", "ratios headline-uniform.json temperature-uniform-*.json",
       "ratios ablation-uniform.json", "rows elbo.json keys=mode values=nats,perplexity",
       "rows speed.json study*.json keys=name,nfe across=size,length,batch_size values=seconds_per_sequence",
       "rows overhead*.json keys=vocab_size,length,source,steps values=total_s,forward_s,overhead,overhead_iqr",
       "rows estimate*.json keys=name,steps,batch_size,bound values=flops,bytes,seconds_per_sequence")


def expand(spec, folder):
    """A `WRITER FILES... [OPTION=VALUE...]` line: its writer, FILES under folder as (name, contents), options."""
    writer, *args = spec.split()
    paths = dict.fromkeys(p for a in args if "=" not in a for p in sorted(glob.glob(os.path.join(folder, a))))
    return WRITERS[writer], [(os.path.relpath(p, folder), load(p)) for p in paths], dict(a.split("=", 1) for a in args
                                                                                         if "=" in a)


def readme():
    """Rewrite each table of results/README.md from its files; the prose around them stays."""
    def table(match):
        writer, files, options = expand(match[2], HERE)
        return f"{match[1]}\n\n{writer(files, **options)}\n\n<!-- end -->"
    path = Path(HERE, "README.md")
    path.write_text(re.sub(r"(<!-- table (.+?) -->)\n.*?<!-- end -->", table, path.read_text(), flags=re.S))


if __name__ == "__main__":
    flags = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
    folders = [a for a in sys.argv[1:] if not a.startswith("--")]
    if {"plots", "frontier_png", "levers_png"} & set(flags) and pyplot() is None:
        sys.exit("error: --plots, --frontier_png and --levers_png need matplotlib: pip install matplotlib")
    if "--readme" in sys.argv:
        readme()
    elif "frontier" in flags:
        frontier(flags)
    elif not folders:
        sys.exit(__doc__)
    else:
        for spec in OUT:
            writer, files, options = expand(spec, folders[0])
            if files:
                print(f"## {spec}\n\n{writer(files, **options)}\n")
        for source in ("uniform", "mask") if "plots" in flags else ():
            if files := expand(QUALITY.format(source), folders[0])[1]:
                plot_quality(list(cells(files, ["steps"], ["name"]).values()), f"{flags['plots']}/quality_{source}.png")
