"""The house's layering: scaling_core at the bottom, then fits, then planner; probes stands on
scaling_core and fits' public names only; no two modules import each other (at module level or
inside a function)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("scaling_core", "fits", "planner", "probes")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).glob("*.py"):
            out[pkg if f.stem == "__init__" else f"{pkg}.{f.stem}"] = f
    return out


def _imports(name: str, path: Path, mods) -> set[str]:
    """Project modules that ``name`` imports anywhere in its file (a package's lazy ``__getattr__``
    table is not an import)."""
    pkg = name.split(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                base = pkg + ("." + node.module if node.module else "")
            elif node.level == 0:
                base = node.module or ""
            else:
                continue
            for cand in (base, *(f"{base}.{a.name}" for a in node.names)):
                if cand in mods and cand != name:
                    out.add(cand)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in mods and a.name != name)
    return out


def test_no_two_modules_import_each_other():
    mods = _modules()
    graph = {m: _imports(m, p, mods) for m, p in mods.items()}
    pairs = sorted({tuple(sorted((a, b))) for a in graph for b in graph[a]
                    if a in graph.get(b, ()) and a not in PACKAGES and b not in PACKAGES})
    assert not pairs, f"import circles: {pairs}"


def test_layers():
    mods = _modules()
    rank = {"scaling_core": 0, "fits": 1, "planner": 2, "probes": 2}
    for m, p in mods.items():
        for dep in _imports(m, p, mods):
            a, b = m.split(".")[0], dep.split(".")[0]
            assert rank[b] <= rank[a] and not (a, b) in (("planner", "probes"), ("probes", "planner")), \
                f"{m} imports {dep}: a lower layer may not import a higher one, nor probes and planner each other"
            if a == "probes" and b == "fits":
                assert not dep.split(".")[-1].startswith("_"), f"{m} imports the private {dep}"
