"""The plots of results/tables.py's --frontier: the seeds' perplexity-entropy frontier and the levers' panels;
student_name, the recipe of a student row, is shared with tables.py."""

import os
import re

from nanodfm.evaluate import pyplot, save_figure


def student_name(row):
    """A student row's recipe by its checkpoint's folder (config/reproduce_frontier.sh's): student-s7 -> "recipe",
    student-own-s7 -> "own"; + schedule, first step, jumps: "recipe, schedule front, first step at 3, spread jumps"."""
    stem = re.sub(r"-s\d+$", "", os.path.basename(os.path.dirname(row["made_by"])))
    name = "recipe" if stem == "student" else stem.removeprefix("student-")
    name = f"{name}, schedule {row['schedule']['name']}" if row.get("schedule") else name
    name = f"{name}, first step at {row['first_temperature']:g}" if row.get("first_temperature") else name
    return f"{name}, spread jumps" if row.get("jumps") == "spread" else name


def plot_levers(levers, path):
    """One panel a seed: the reference's temperature curve and each student recipe through its step counts."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(levers["seeds"]), figsize=(4.2 * len(levers["seeds"]), 4.2), squeeze=False)
    for ax, seed in zip(axes[0], levers["seeds"]):
        mine = sorted((r for r in levers["rows"] if r["seed"] == seed and r["method"] is not None),
                      key=lambda r: (r["steps"], r["entropy"]))
        curve = [r for r in mine if r["name"] == "dfm cumulative"]
        for k, (name, group) in enumerate([("DFM, by temperature", curve)] + [
                (name, [r for r in mine if r["name"].startswith("student") and student_name(r) == name])
                for name in levers["students"]]):
            x, y, xerr, yerr = ([r[key] for r in group]
                                for key in ("entropy", "gen_ppl", "entropy_ci95", "gen_ppl_ci95"))
            ax.errorbar(x, y, yerr, xerr, color=f"C{k - 1}" if k else "grey", marker="s", ms=3, capsize=2, lw=0.8,
                        label=name)
            for r in group:  # the curve's temperatures, the students' steps
                ax.annotate(str(r["steps"]) if k else f"T={r['temperature']:g}", (r["entropy"], r["gen_ppl"]), size=6)
        ax.set(title=f"training seed {seed}", xlabel="unigram entropy (bits)", ylabel="generative perplexity")
    axes[0][0].legend(fontsize=7)
    save_figure(plt, fig, path)


def plot_frontier(frontier, path):
    """Perplexity (log) against entropy, every seed on one plot in a colour of its own: the reference's temperature
    curve (each point labelled with its temperature) and the students as points, a marker per step count."""
    from matplotlib.ticker import ScalarFormatter
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    markers = ["s", "^", "D", "v", "P", "X", "*"]
    students = [r for r in frontier["rows"] if r["name"].startswith("student")]
    steps = sorted({r["steps"] for r in students})
    for k, seed in enumerate(frontier["seeds"]):
        curve = sorted((r for r in frontier["rows"] if r["seed"] == seed and r["name"] == "dfm cumulative"),
                       key=lambda r: r["entropy"])
        x, y, xerr, yerr = ([r[key] for r in curve] for key in ("entropy", "gen_ppl", "entropy_ci95", "gen_ppl_ci95"))
        ax.errorbar(x, y, yerr, xerr, color=f"C{k}", marker="o", ms=4, capsize=2,
                    label=f"DFM, {curve[0]['steps']} steps, temperatures (seed {seed})")
        for r in curve:
            ax.annotate(f"{r['temperature']:g}", (r["entropy"], r["gen_ppl"]), textcoords="offset points",
                        xytext=(4, -10), fontsize=7, color=f"C{k}")
        for r in (r for r in students if r["seed"] == seed):
            ax.errorbar(r["entropy"], r["gen_ppl"], r["gen_ppl_ci95"], r["entropy_ci95"], color=f"C{k}",
                        marker=markers[steps.index(r["steps"]) % len(markers)], ms=7, capsize=2, linestyle="none")
    for i, S in enumerate(steps):  # the markers' legend, in no seed's colour
        ax.plot([], [], marker=markers[i % len(markers)], color="gray", linestyle="none", label=f"student, {S} steps")
    ax.set(yscale="log", xlabel="unigram entropy (bits)", ylabel="generative perplexity")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.set_title("DFM's perplexity-entropy frontier and the few-step students", fontsize=10)
    ax.legend(fontsize=7)
    save_figure(plt, fig, path)
