"""results/tables.py: the lever table compares each lever with the recipe of the same seed."""

import runpy
from pathlib import Path

import pytest

TABLES = runpy.run_path(str(Path(__file__).resolve().parents[1] / "results" / "tables.py"))


def report(seed, students):
    """An eval.py quality report of one seed: its reference at temperature 1 and students (folder -> ratio)."""
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
            "reference": {"steps": 1024}, "settings": {"temperature": 1.0}, "rows": rows}


def test_student_names_come_from_the_checkpoint_folders():
    name = TABLES["student_name"]
    assert name({"made_by": "out/student-s7/ckpt.pt"}) == "recipe"
    assert name({"made_by": "out/student-own-s7/ckpt.pt"}) == "own"
    assert name({"made_by": "/abs/out/student-anchor-s1337/ckpt.pt"}) == "anchor"
    assert name({"made_by": "out/student-s7/ckpt.pt", "schedule": {"name": "front", "sizes": [0.5, 0.5]}}) == \
        "recipe, schedule front"
    assert name({"made_by": "out/student-s7/ckpt.pt", "first_temperature": 3.0}) == "recipe, first step at 3"
    assert name({"made_by": "out/student-s7/ckpt.pt", "schedule": {"name": "front", "sizes": [0.5, 0.5]},
                 "first_temperature": 1.5}) == "recipe, schedule front, first step at 1.5"


def test_a_schedule_is_compared_with_its_own_students_uniform_steps_and_left_out_of_the_headline():
    reports = [report(seed, {f"student-s{seed}": (ratio, 0.97)}) for seed, ratio in ((1, 1.10), (2, 1.20))]
    for rep, ratio in zip(reports, (1.00, 1.05)):
        scheduled = {**rep["rows"][1], "name": "student rk4 cumulative, schedule front", "gen_ppl_ratio": ratio,
                     "entropy_ratio": 0.95, "schedule": {"name": "front", "sizes": [0.25] * 3 + [0.0625] * 3 + [0.03125] * 2}}
        rep["rows"].append(scheduled)
    headline = TABLES["combine_frontier"](reports)
    assert headline["summary"]["student@8"]["raw"]["mean"] == pytest.approx(1.15)  # the uniform rows only
    versus = TABLES["combine_levers"](reports)["summary"]["recipe, schedule front@8"]["versus_recipe"]
    assert versus["raw"]["values"] == pytest.approx([-0.10, -0.15]) and versus["raw"]["better_on"] == 2
    assert versus["entropy"]["values"] == pytest.approx([-0.02, -0.02]) and versus["entropy"]["better_on"] == 0
    assert TABLES["schedule_lines"](reports[0]) == ["- schedule front at 8 steps: 1/4, 1/4, 1/4, 1/16, 1/16, 1/16, 1/32, 1/32"]


def test_levers_are_compared_seed_by_seed_and_left_out_of_the_headline():
    reports = [report(1, {"student-s1": (1.10, 0.96), "student-own-s1": (1.05, 0.97)}),
               report(2, {"student-s2": (1.20, 0.97), "student-own-s2": (1.25, 0.98)})]
    headline = TABLES["combine_frontier"](reports)
    assert {TABLES["student_name"](r) for r in headline["rows"] if r["name"].startswith("student")} == {"recipe"}
    assert headline["summary"]["student@8"]["raw"]["mean"] == pytest.approx(1.15)
    table = TABLES["headline_table"](headline)  # mean ± sqrt(2 * 0.03^2) / 2 (lowest to highest seed)
    assert "| 8 | 1.15 ± 0.02 (1.10 to 1.20) | - | 0.965 ± 0.003 (0.960 to 0.970) |" in table
    levers = TABLES["combine_levers"](reports)
    own = levers["summary"]["own@8"]["versus_recipe"]
    assert own["raw"]["values"] == pytest.approx([-0.05, 0.05]) and own["raw"]["better_on"] == 1
    assert own["raw"]["ci95"] == pytest.approx([0.03 * 2 ** 0.5] * 2)
    assert own["raw"]["ci95_of_mean"] == pytest.approx(0.03)  # sqrt(2 * 0.0018) / 2
    assert own["entropy"]["better_on"] == 2 and own["matched"] is None  # no curve: nothing matched
    assert "own | 8 | 1, 2 |" in TABLES["lever_tables"](levers)


def test_levers_without_the_recipe_are_refused():
    with pytest.raises(SystemExit, match="no recipe student"):
        TABLES["combine_levers"]([report(1, {"student-own-s1": (1.05, 0.97)})])


def test_a_hot_first_step_is_compared_with_the_same_rows_without_it():
    reports = [report(seed, {f"student-s{seed}": (ratio, 0.97)}) for seed, ratio in ((1, 1.10), (2, 1.20))]
    for rep, (plain, hot) in zip(reports, ((1.00, 1.08), (1.02, 1.06))):
        schedule = {"name": "front", "sizes": [0.5, 0.5]}
        rep["rows"].append({**rep["rows"][1], "name": "student rk4 cumulative, schedule front", "gen_ppl_ratio": plain,
                            "entropy_ratio": 0.95, "schedule": schedule})
        rep["rows"].append({**rep["rows"][1], "name": "student rk4 cumulative, schedule front, first step at 3",
                            "gen_ppl_ratio": hot, "entropy_ratio": 0.99, "schedule": schedule, "first_temperature": 3.0})
    assert TABLES["baseline_name"]("recipe, schedule front, first step at 3") == "recipe, schedule front"
    assert TABLES["baseline_name"]("own") == TABLES["baseline_name"]("recipe, schedule front") == "recipe"
    summary = TABLES["combine_levers"](reports)["summary"]
    hot = summary["recipe, schedule front, first step at 3@8"]
    assert hot["versus"] == "recipe, schedule front"
    assert hot["versus_recipe"]["raw"]["values"] == pytest.approx([0.08, 0.04])  # against the schedule, not the recipe
    assert hot["versus_recipe"]["entropy"]["values"] == pytest.approx([0.04, 0.04])
    assert hot["versus_recipe"]["entropy"]["better_on"] == 2 and hot["versus_recipe"]["raw"]["better_on"] == 0
    assert summary["recipe, schedule front@8"]["versus"] == "recipe"
