"""Layers import only to their left: io -> features -> data/models -> interpreters -> explain
-> metrics -> training -> evaluation/pipeline -> report -> outputs -> cli.
Walks imports with ast."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "audiointerp"

# Longest matching prefix wins; a module may import modules of lower or equal rank.
RANKS = {
    "audiointerp": 0,
    "audiointerp.errors": 1,
    "audiointerp.io": 1,
    "audiointerp.config": 2,
    "audiointerp.checkpoints": 2,
    "audiointerp.features": 2,
    "audiointerp.data": 3,
    "audiointerp.models": 4,
    "audiointerp.models.fast": 4,
    "audiointerp.interpreters": 5,
    "audiointerp.explain": 5.5,
    "audiointerp.hub": 5.4,
    "audiointerp.pretrained": 5.5,
    "audiointerp.metrics": 6,
    "audiointerp.training": 7,
    "audiointerp.longaudio": 8,
    "audiointerp.pipeline": 8,
    "audiointerp.evaluation.methods": 8.25,  # evaluation's modules, inside its layer:
    "audiointerp.evaluation.table": 8.5,  # methods -> table, files -> run -> the package
    "audiointerp.evaluation.files": 8.5,
    "audiointerp.evaluation.run": 8.75,
    "audiointerp.evaluation": 9,
    "audiointerp.training.recipes": 10,
    "audiointerp.report": 10,
    "audiointerp.sanity_runs": 10.25,
    "audiointerp.outputs": 10.5,
    "audiointerp.demo": 11,
    "audiointerp.app": 12,
    "audiointerp.cli": 12,
    "audiointerp.__main__": 13,
}


def _rank(module: str) -> float:
    best = max((p for p in RANKS if module == p or module.startswith(p + ".")), key=len)
    return RANKS[best]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {n for n in names if n == "audiointerp" or n.startswith("audiointerp.")}


def test_every_module_has_a_rank() -> None:
    modules = [_module_name(p) for p in PACKAGE.rglob("*.py")]
    assert modules and all(_rank(m) >= 0 for m in modules)


def test_layers_import_only_to_their_left() -> None:
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        for imported in _imports(path):
            if imported != "audiointerp" and _rank(imported) > _rank(module):
                violations.append(f"{module} (rank {_rank(module)}) imports {imported}")
    assert not violations, "\n".join(violations)


def test_no_relative_imports_hide_from_this_check() -> None:
    relative = [
        str(path)
        for path in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.level > 0
    ]
    assert not relative, relative
