"""results/tables.py: every lever is compared with its baseline's row of the same seed, every ratio with the right
reference row, and results/README.md's tables are rewritten from their files while the prose stays."""

import json
import runpy
from pathlib import Path

import pytest

from nanodfm.evaluate import ratio_interval

TABLES = runpy.run_path(str(Path(__file__).resolve().parents[1] / "results" / "tables.py"))


def report(seed, students):
    """An eval.py quality report of one seed: its reference at temperature 1 and students (folder -> ratios)."""
    reference = {"name": "dfm cumulative", "method": "cumulative", "steps": 1024, "temperature": 1.0, "seed": seed,
                 "made_by": f"out/dfm-s{seed}/best.pt", "gen_ppl": 20.0, "gen_ppl_ci95": 0.5, "entropy": 4.3,
                 "entropy_ci95": 0.02, "num_samples": 256}
    rows = [reference]
    for folder, (ratio, entropy_ratio) in students.items():
        rows.append({"name": f"{folder} cumulative", "method": "cumulative", "steps": 8, "temperature": 1.0,
                     "seed": seed, "made_by": f"out/{folder}/ckpt.pt", "gen_ppl": 20.0 * ratio, "gen_ppl_ci95": 0.5,
                     "entropy": 4.3 * entropy_ratio, "entropy_ci95": 0.02, "num_samples": 256,
                     "gen_ppl_ratio": ratio, "gen_ppl_ratio_ci95": 0.03, "entropy_ratio": entropy_ratio,
                     "entropy_ratio_ci95": 0.004})
    return {"mode": "quality", "length": 128, "judge": "out/ar/best.pt", "judge_val_loss": 1.67,
            "reference": {"name": "dfm cumulative", "steps": 1024}, "settings": {"temperature": 1.0}, "rows": rows}


def test_student_names_come_from_the_checkpoint_folders():
    name = TABLES["student_name"]
    assert name({"made_by": "out/student-s7/ckpt.pt"}) == "recipe"
    assert name({"made_by": "out/student-own-s7/ckpt.pt"}) == "own"
    assert name({"made_by": "/abs/out/student-anchor-s1337/ckpt.pt"}) == "anchor"
    assert name({"made_by": "out/student-s7/ckpt.pt", "schedule": {"name": "front", "sizes": [0.5, 0.5]}}) == \
        "recipe, schedule front"
    assert name({"made_by": "out/student-s7/ckpt.pt", "schedule": {"name": "front", "sizes": [0.5, 0.5]},
                 "first_temperature": 1.5}) == "recipe, schedule front, first step at 1.5"
    assert name({"made_by": "out/student-s7/ckpt.pt", "first_temperature": 3.0, "jumps": "spread"}) == \
        "recipe, first step at 3, spread jumps"


def test_levers_are_compared_with_the_recipe_of_the_same_seed_and_left_out_of_the_frontier():
    # seed 1: the lever is better than its recipe, seed 2 worse; a comparison across seeds would see it better on both
    reports = [report(1, {"student-s1": (1.10, 0.96), "student-own-s1": (1.05, 0.97)}),
               report(2, {"student-s2": (1.20, 0.97), "student-own-s2": (1.25, 0.98)})]
    frontier = TABLES["combine"](reports)
    assert {TABLES["student_name"](r) for r in frontier["rows"] if r["name"].startswith("student")} == {"recipe"}
    raw = frontier["summary"]["student@8"]["raw"]
    assert raw["mean"] == pytest.approx(1.15) and (raw["min"], raw["max"]) == (1.10, 1.20)
    assert raw["ci95_of_mean"] == pytest.approx((2 * 0.03 ** 2) ** 0.5 / 2)  # independent seeds
    own = TABLES["combine"](reports, only=None)["summary"]["own@8"]["versus_recipe"]
    assert own["raw"]["values"] == pytest.approx([-0.05, 0.05]) and own["raw"]["better_on"] == 1
    assert own["raw"]["ci95"] == pytest.approx([0.03 * 2 ** 0.5] * 2)  # the interval of a difference
    assert own["raw"]["ci95_of_mean"] == pytest.approx(0.03)
    assert own["entropy"]["better_on"] == 2 and own["matched"] is None  # more entropy is better; no curve, no match
    assert "| own | 8 | 1, 2 | 1.050 ± 0.030, 1.250 ± 0.030 | 1.150 ± 0.021 |" in TABLES["levers"]([("", {
        "rows": [], "summary": TABLES["combine"](reports, only=None)["summary"]})])


def test_the_ngram_divergence_is_compared_where_the_rows_have_it_and_left_out_where_they_do_not():
    reports = [report(seed, {f"student-s{seed}": (1.1, 0.97), f"student-own-s{seed}": (1.0, 0.98)}) for seed in (1, 2)]
    for rep, (recipe, own) in zip(reports, ((0.100, 0.090), (0.110, 0.116))):
        for row, js in zip(rep["rows"][1:], (recipe, own)):
            row |= {"ngram_js": js, "ngram_js_ci95": 0.004}
    summary = TABLES["combine"](reports, only=None)["summary"]
    assert summary["recipe@8"]["ngram_js"]["mean"] == pytest.approx(0.105)
    delta = summary["own@8"]["versus_recipe"]["ngram_js"]
    assert delta["values"] == pytest.approx([-0.010, 0.006]) and delta["better_on"] == 1  # lower is nearer the text
    table = TABLES["levers"]([("", {"rows": [], "summary": summary})])
    assert "| n-gram JS, per seed | mean |" in table and "| 0.090 ± 0.004, 0.116 ± 0.004 | 0.103 ± 0.003 |" in table
    assert table.splitlines()[-1].endswith("| -0.002 ± 0.004 (1 of 2) |")  # Δ JS, the last column
    for rep in reports:
        for row in rep["rows"]:
            row.pop("ngram_js", None)
    assert "n-gram" not in TABLES["levers"]([("", {"rows": [], "summary": TABLES["combine"](reports, only=None)["summary"]})])


def test_levers_without_the_recipe_are_refused():
    with pytest.raises(SystemExit, match="no recipe student"):
        TABLES["combine"]([report(1, {"student-own-s1": (1.05, 0.97)})], only=None)


def test_a_hot_first_step_or_spread_jumps_are_compared_with_the_same_rows_without_and_schedules_with_the_recipe():
    reports = [report(seed, {f"student-s{seed}": (ratio, 0.97)}) for seed, ratio in ((1, 1.10), (2, 1.20))]
    for rep, (plain, hot) in zip(reports, ((1.00, 1.08), (1.02, 1.06))):
        schedule = {"name": "front", "sizes": [0.25] * 3 + [0.0625] * 3 + [0.03125] * 2}
        rep["rows"].append({**rep["rows"][1], "name": "student rk4 cumulative, schedule front", "gen_ppl_ratio": plain,
                            "entropy_ratio": 0.95, "schedule": schedule})
        rep["rows"].append({**rep["rows"][1], "name": "student rk4 cumulative, schedule front, first step at 3",
                            "gen_ppl_ratio": hot, "entropy_ratio": 0.99, "schedule": schedule, "first_temperature": 3.0})
        rep["rows"].append({**rep["rows"][-1], "name": rep["rows"][-1]["name"] + ", spread jumps", "jumps": "spread",
                            "gen_ppl_ratio": hot - 0.05})
    levers = TABLES["combine"](reports, only=None)
    assert TABLES["combine"](reports)["summary"]["student@8"]["raw"]["mean"] == pytest.approx(1.15)  # equal steps only
    scheduled, hot = levers["summary"]["recipe, schedule front@8"], levers["summary"]["recipe, schedule front, first step at 3@8"]
    assert scheduled["versus"] == "recipe" and scheduled["versus_recipe"]["raw"]["values"] == pytest.approx([-0.10, -0.18])
    assert hot["versus"] == "recipe, schedule front"
    assert hot["versus_recipe"]["raw"]["values"] == pytest.approx([0.08, 0.04])  # against the schedule, not the recipe
    assert hot["versus_recipe"]["entropy"]["values"] == pytest.approx([0.04, 0.04])
    assert hot["versus_recipe"]["entropy"]["better_on"] == 2 and hot["versus_recipe"]["raw"]["better_on"] == 0
    spread = levers["summary"]["recipe, schedule front, first step at 3, spread jumps@8"]  # against the same unspread
    assert spread["versus"] == "recipe, schedule front, first step at 3"
    assert spread["versus_recipe"]["raw"]["values"] == pytest.approx([-0.05, -0.05])
    assert "- schedule front at 8 steps: 1/4, 1/4, 1/4, 1/16, 1/16, 1/16, 1/32, 1/32" in TABLES["levers"]([("", levers)])


def test_first_step_variants_are_compared_with_own_on_the_same_seed():
    row = lambda seed, variant, raw, entropy: {"seed": seed, "steps": 8, "variant": variant, "raw": raw, "raw_ci95": 0.03,
                                               "entropy_ratio": entropy, "matched": None, "matched_ci95": None}
    jsonl = [row(1, "own", 0.90, 0.95), row(1, "T=2", 1.00, 0.98), row(2, "own", 1.00, 0.96), row(2, "T=2", 1.06, 0.98),
             row(3, "own", 2.00, 0.90), row(3, "T=2", 1.00, 0.99)]
    table = TABLES["levers"]([("first-step-sample.jsonl", jsonl)], seeds="1,2")  # seed 3 held out
    # Δ raw: 0.10 and 0.06 (mean 0.08 ± hypot(0.03, 0.03, 0.03, 0.03) / 2); entropy has no interval, nor its Δ
    assert "| T=2 | 8 | 1, 2 | 1.000 ± 0.030, 1.060 ± 0.030 | 1.030 ± 0.021 |" in table
    assert "| own | +0.080 ± 0.030 (0 of 2) | - | +0.025 (2 of 2) |" in table


def test_a_ratio_is_to_its_own_reports_reference_or_the_previous_reports():
    headline = report(1, {"student-s1": (1.10, 0.96)})
    hotter = {"settings": {"temperature": 1.1}, "rows": [{**headline["rows"][1], "gen_ppl": 26.0, "gen_ppl_ci95": 0.6}]}
    ablation = report(2, {"student-s2": (1.20, 0.97)})
    ablation["rows"][0] = {**ablation["rows"][0], "gen_ppl": 25.0}  # another reference: 1.20 would be to 20
    table = TABLES["ratios"]([("headline", headline), ("hotter", hotter), ("ablation", ablation)]).splitlines()
    value, ci = ratio_interval(26.0, 0.6, 20.0, 0.5)
    assert f"| hotter | student-s1 cumulative | 8 | 26.00 ± 0.60 | {value:.3f} ± {ci:.3f} |" in "\n".join(table)
    assert "| headline | dfm cumulative | 1024 | 20.00 ± 0.50 | 1.000 ± 0.000 |" in table[2]
    value, _ = ratio_interval(24.0, 0.5, 25.0, 0.5)
    assert f"| ablation | student-s2 cumulative | 8 | 24.00 ± 0.50 | {value:.3f} ±" in table[-1]


def test_rows_take_each_cell_from_the_file_that_sampled_it_most():
    small = {"rows": [{"name": "dfm", "steps": 8, "gen_ppl": 30.0, "gen_ppl_ci95": 1.0, "num_samples": 256},
                      {"name": "dfm", "steps": 64, "gen_ppl": 23.0, "gen_ppl_ci95": 0.6, "num_samples": 256}]}
    more = {"rows": [{"name": "dfm", "steps": 8, "gen_ppl": 31.0, "gen_ppl_ci95": 0.7, "num_samples": 512}]}
    table = TABLES["rows"]([("a", small), ("b", more)], "steps", "gen_ppl,gen_ppl_ci95,num_samples", across="name")
    assert "| 8 | 31.00 ± 0.70 | 512 |" in table and "| 64 | 23.00 ± 0.60 | 256 |" in table  # one column: a value each
    by_file = TABLES["rows"]([("a", small), ("b", more)], "name,steps", "gen_ppl")  # no `across`: a column a file
    assert "| dfm | 8 | 30 | 31 |" in by_file and "| dfm | 64 | 23 |  |" in by_file


def test_readme_rewrites_the_tables_and_keeps_the_prose(tmp_path, monkeypatch):
    (tmp_path / "a.json").write_text(json.dumps({"rows": [{"name": "x", "value": 1.5}]}))
    prose = "# Results\n\nProse, kept.\n\n<!-- table rows a.json keys=name values=value -->\nstale\n<!-- end -->\n\nMore.\n"
    (tmp_path / "README.md").write_text(prose)
    monkeypatch.setitem(TABLES["readme"].__globals__, "HERE", str(tmp_path))
    TABLES["readme"]()
    text = (tmp_path / "README.md").read_text()
    assert "stale" not in text and "| x | 1.5 |" in text and text.startswith("# Results\n\nProse, kept.")
    TABLES["readme"]()
    assert (tmp_path / "README.md").read_text() == text
