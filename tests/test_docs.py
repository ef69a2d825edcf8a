"""The project stands on its own: every repository file that its docs, docstrings, comments and help
text name exists, every "docs/method.md section N" has that section, every `module.function` of
nanodfm named in the docs is there, and nothing a user runs or reads points outside the checkout."""

import ast
import importlib
import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOP_FOLDERS = ("nanodfm", "docs", "config", "data", "tests", "assets", "results", ".ci")
FILE_TYPES = (".py", ".md", ".sh", ".png", ".html", ".json")
# a path that starts with one of the repository's folders; placeholders (<name>, *) end the match
PATH = re.compile(r"(?<![\w./-])((?:%s)/[\w./-]*\w)" % "|".join(map(re.escape, TOP_FOLDERS)))
SECTION = re.compile(r"docs/method\.md,? sections? ([\d, and]+)")
FUNCTION = re.compile(r"`(path|model|sampler|distill|evaluate|data|tokenizer|display|autoregressive|checkpoint|config"
                      r"|categorical|engine)"
                      r"\.(\w+)`")
METHOD = re.compile(r"`(ProbPath|Recipe|Transformer)\.(\w+)`")  # a method of the package's values
CLASSES = {"ProbPath": "path", "Recipe": "distill", "Transformer": "model"}
OUTSIDE = re.compile(r"\.\./shared|/work/|parent\s*/\s*\"shared\"")


def prose(source):
    """What a reader of a Python file reads as text: its docstrings and comments (which include the
    config blocks' comments that --help prints), not its string literals."""
    docstrings = [ast.get_docstring(node) or "" for node in ast.walk(ast.parse(source))
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
    comments = [tok.string for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                if tok.type == tokenize.COMMENT]
    return "\n".join(docstrings + comments)


def project_files():
    """(relative path, text) of every file a user reads or runs: sources, docs, presets, CI."""
    for path in sorted(ROOT.rglob("*")):
        rel = path.relative_to(ROOT)
        hidden = any(part.startswith(".") and part != ".ci" for part in rel.parts)
        generated = rel.parts[0].startswith("out") or "__pycache__" in rel.parts
        if path.is_file() and not hidden and not generated and (path.suffix in (".py", ".md", ".sh") or rel.parts[0] == ".ci"):
            yield rel.as_posix(), path.read_text(encoding="utf-8")


def project_texts():
    """(relative path, text) of what a user reads: docs, and the docstrings and comments of sources."""
    for rel, text in project_files():
        yield rel, prose(text) if rel.endswith(".py") else text


def test_every_named_repository_file_exists():
    missing = []
    for rel, text in project_texts():
        for name in PATH.findall(text):
            name = name.rstrip(".")
            if (name.endswith(FILE_TYPES) or name == ".ci/run") and not (ROOT / name).is_file():
                missing.append(f"{rel}: {name}")
    assert not missing, "named but not in the repository:\n" + "\n".join(missing)


def test_every_named_method_section_exists():
    method = (ROOT / "docs" / "method.md").read_text(encoding="utf-8")
    sections = set(re.findall(r"^## (\d+)\. ", method, flags=re.M))
    missing = [f"{rel}: section {n}" for rel, text in project_texts()
               for found in SECTION.findall(text) for n in re.findall(r"\d+", found) if n not in sections]
    assert not missing, "docs/method.md has no such section:\n" + "\n".join(missing)


def test_every_named_function_exists():
    missing = []
    for rel, text in project_texts():
        if rel.endswith(".md"):
            for module, name in FUNCTION.findall(text):
                if not hasattr(importlib.import_module(f"nanodfm.{module}"), name):
                    missing.append(f"{rel}: {module}.{name}")
            for cls, name in METHOD.findall(text):
                if not hasattr(getattr(importlib.import_module(f"nanodfm.{CLASSES[cls]}"), cls), name):
                    missing.append(f"{rel}: {cls}.{name}")
    assert not missing, "named but not defined:\n" + "\n".join(missing)


def test_readme_teaches_in_200_lines_and_links_what_moved_out():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    for linked in ("docs/method.md", "docs/speed.md", "docs/training.md", "docs/sampling.md", "results/README.md"):
        assert f"]({linked})" in readme, linked
    assert "nanodfm/engine.py" in readme and "nanodfm/sampler.py" in readme  # the file map names both


def test_results_readme_is_what_tables_py_writes(tmp_path, monkeypatch):
    """Every table of results/README.md is what tables.py writes from the JSON beside it (the prose around the
    tables is hand-written and kept), and every picture it links exists."""
    import runpy
    import shutil
    copy = tmp_path / "results"
    shutil.copytree(ROOT / "results", copy)
    shutil.copytree(ROOT / "assets", tmp_path / "assets")  # the pictures it links, where they exist
    tables = runpy.run_path(str(ROOT / "results" / "tables.py"))
    monkeypatch.setitem(tables["readme"].__globals__, "HERE", str(copy))
    tables["readme"]()
    assert (copy / "README.md").read_text(encoding="utf-8") == (ROOT / "results" / "README.md").read_text(encoding="utf-8")
    for picture in re.findall(r"\]\(\.\./(assets/[^)]+)\)", (copy / "README.md").read_text(encoding="utf-8")):
        assert (ROOT / picture).is_file(), picture


def test_nothing_a_user_reads_points_outside_the_checkout():
    # tests and CI may read the offline copies beside the checkout; the project itself may not
    outside = [f"{rel}: {m}" for rel, text in project_files() if not rel.startswith(("tests/", ".ci/"))
               for m in OUTSIDE.findall(text)]
    assert not outside, "points outside the repository:\n" + "\n".join(outside)
