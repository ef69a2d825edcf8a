"""Print the README's quality tables (markdown) from the JSON that eval.py wrote.

    python results/tables.py results/shakespeare_char_cpu

Every number in the README's results comes from these files; this script only formats them.
"""

import json
import os
import sys


def load(folder, name):
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def cell(row, key="gen_ppl"):
    return f"{row[key]:.3g} ± {row[key + '_ci95']:.2g}"


def quality_table(report, source):
    """Steps down, samplers across: perplexity ± 95% interval / entropy."""
    by = {(r["name"], r["steps"]): r for r in report["rows"]}
    names = list(dict.fromkeys(r["name"] for r in report["rows"] if r["steps"] is not None))
    steps = sorted({r["steps"] for r in report["rows"] if r["steps"] is not None})
    lines = ["| steps | " + " | ".join(f"{source}: {n}" for n in names) + " |", "| ---: |" + " --- |" * len(names)]
    for S in steps:
        cells = [f"{cell(by[(n, S)])} / {by[(n, S)]['entropy']:.2f}" if (n, S) in by else "" for n in names]
        lines.append(f"| {S} | " + " | ".join(cells) + " |")
    refs = [r for r in report["rows"] if r["steps"] is None]
    lines.append("")
    lines.append("reference rows: " + "; ".join(f"{r['name']} {cell(r)} / {r['entropy']:.2f} bits" for r in refs))
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


def main(folder):
    for source in ("uniform", "mask"):
        report = load(folder, f"quality-{source}.json")
        if report:
            print(f"## quality, {source} source ({report['rows'][0]['num_samples']} samples a cell, "
                  f"{report['length']} tokens, judge val loss {report['judge_val_loss']:.4f})\n")
            print(quality_table(report, source) + "\n")
    reports = [(s, load(folder, f"quality-{s}.json")) for s in ("uniform", "mask")]
    print("## students against the reference\n")
    print(ratio_table([(s, r) for s, r in reports if r]) + "\n")
    ablation = load(folder, "ablation-uniform.json")
    if ablation:
        print("## ablation, uniform source\n")
        print(ratio_table([("uniform", ablation)]) + "\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "shakespeare_char_cpu"))
