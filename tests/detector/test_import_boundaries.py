"""Import contracts between the packages of `detector`, and what `training` may use.

Every import is read from the sources with `ast`: module level, inside functions, under
``if TYPE_CHECKING:``, and ``importlib.import_module("...")`` with a literal name.

- ``detector.engine`` (the pure detection core) imports only itself: not the worker's edges,
  not the simulator or the demo, not the settings (its tunables are handed in as values, e.g.
  `DetectionConfig`), not `training`.
- ``detector.config`` (the settings) is a leaf: it imports only itself and the few value
  modules in `VALUE_MODULES` (dataclasses and name rules with no behaviour beyond checking
  a value), which themselves import nothing else of `detector` when run.
- ``detector.worker`` (the worker's edges) imports the core and the settings, never the
  simulator or the demo, nor `training`.
- ``detector.sim`` (simulator and demo) may import all of the above, and `training` (the
  demo trains its model, inside a function).
- ``detector.cli`` and ``detector.__main__``, the `iotad` command table, name every command.
- ``training`` may import the core, the settings, the simulated plant (`detector.sim`: the
  factory evaluation replays it) and, of the worker, only `TRAINING_FROM_WORKER`: the shared
  command-line vocabulary (`cli_flags`), the rules file format the factory evaluation reads
  (`rules_file`), and the Keras safe-mode check the worker applies to an artifact
  (`model_reload`), so that training refuses what the worker would.
- The root ``detector`` (its ``__init__``: the version) may be imported by anyone.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

VALUE_MODULES = (
    "detector.engine.detection_config",
    "detector.engine.readings",
    "detector.worker.partitions",
    "detector.worker.topics",
)
TRAINING_FROM_WORKER = (
    "detector.worker.cli_flags",
    "detector.worker.model_reload",
    "detector.worker.rules_file",
)
ALLOWED: dict[str, tuple[str, ...]] = {
    "detector.engine": ("detector.engine",),
    "detector.config": ("detector.config", *VALUE_MODULES),
    "detector.worker": ("detector.worker", "detector.engine", "detector.config"),
    "detector.sim": (
        "detector.sim",
        "detector.worker",
        "detector.engine",
        "detector.config",
        "training",
    ),
    "training": (
        "training",
        "detector.engine",
        "detector.config",
        "detector.sim",
        *TRAINING_FROM_WORKER,
    ),
}
"""Importer package -> the packages and modules it may import from ours (`detector`,
`training`); third-party and standard-library imports are not constrained here."""
OURS = ("detector", "training")
ANYONE_MAY_IMPORT = ("detector",)


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    type_checking: bool
    """Under ``if TYPE_CHECKING:``: never run."""
    deferred: bool
    """Inside a function: run when it is called, not when the module is imported."""


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules(root: Path) -> dict[str, Path]:
    return {
        module_name(path, root): path
        for package in OURS
        for path in sorted((root / package).rglob("*.py"))
    }


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_in(source: str, module: str, is_package: bool, known: set[str]) -> list[Import]:
    """Every import of `source` (the module `module`), resolved to module names: ``from p
    import m`` counts as ``p.m`` when that is a module, else as ``p``."""
    found: list[Import] = []
    package = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST, type_checking: bool, deferred: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True, deferred)
            for child in node.orelse:
                visit(child, type_checking, deferred)
            return
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            deferred = True
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source_module = ".".join(base + ([node.module] if node.module else []))
            else:
                source_module = node.module or ""
            for alias in node.names:
                candidate = f"{source_module}.{alias.name}"
                names.append(candidate if candidate in known else source_module)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in {"import_module", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names = [node.args[0].value]
        for name in names:
            line = getattr(node, "lineno", 0)
            found.append(Import(module, name, line, type_checking, deferred))
        for child in ast.iter_child_nodes(node):
            visit(child, type_checking, deferred)

    visit(ast.parse(source), False, False)
    return found


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def layer_of(module: str) -> str | None:
    matches = [layer for layer in ALLOWED if _within(module, (layer,))]
    return max(matches, key=len) if matches else None


def violations(imports: list[Import]) -> list[str]:
    """The imports that break `ALLOWED`, and the imports a value module runs when it is
    imported that reach outside `VALUE_MODULES`."""
    bad = []
    for imp in imports:
        if not _within(imp.imported, OURS) or imp.imported in ANYONE_MAY_IMPORT:
            continue
        if (
            imp.importer in VALUE_MODULES
            and not (imp.type_checking or imp.deferred)
            and not _within(imp.imported, VALUE_MODULES)
        ):
            bad.append(f"{imp.importer}:{imp.line} (a value module) imports {imp.imported}")
            continue
        layer = layer_of(imp.importer)
        if layer is not None and not _within(imp.imported, ALLOWED[layer]):
            bad.append(f"{imp.importer}:{imp.line} imports {imp.imported}")
    return bad


def repository_imports(root: Path) -> list[Import]:
    modules = all_modules(root)
    known = set(modules)
    found = []
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        found += imports_in(path.read_text(encoding="utf-8"), name, is_package, known)
    return found


def test_the_packages_keep_their_import_contracts() -> None:
    assert violations(repository_imports(ROOT)) == []


def test_every_detector_module_belongs_to_a_package_or_is_the_command_table() -> None:
    top_level = {
        name for name in all_modules(ROOT) if name.startswith("detector") and layer_of(name) is None
    }
    assert top_level == {"detector", "detector.cli", "detector.__main__"}


def test_the_value_modules_exist() -> None:
    modules = all_modules(ROOT)
    assert set(VALUE_MODULES + TRAINING_FROM_WORKER) <= set(modules)


KNOWN = {
    "detector.engine.core",
    "detector.engine.readings",
    "detector.engine.detection_config",
    "detector.worker",
    "detector.worker.metrics",
    "detector.worker.mqtt_client",
    "detector.sim.simulation",
    "detector.config.settings",
}


def check(source: str, module: str) -> list[str]:
    return violations(imports_in(source, module, False, KNOWN))


def test_the_checker_catches_an_edge_imported_by_the_core() -> None:
    assert check("from detector.worker import metrics", "detector.engine.scoring") == [
        "detector.engine.scoring:1 imports detector.worker.metrics"
    ]
    inside = "def f():\n    import detector.sim.simulation\n"
    assert check(inside, "detector.engine.core") == [
        "detector.engine.core:2 imports detector.sim.simulation"
    ]
    typing_only = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from detector.config.settings import X\n"
    )
    assert check(typing_only, "detector.engine.core") == [
        "detector.engine.core:3 imports detector.config.settings"
    ]
    dynamic = "import importlib\nimportlib.import_module('detector.worker.mqtt_client')\n"
    assert check(dynamic, "detector.engine.windows") == [
        "detector.engine.windows:2 imports detector.worker.mqtt_client"
    ]
    relative = "from ..worker import metrics\n"
    assert check(relative, "detector.engine.scoring") == [
        "detector.engine.scoring:1 imports detector.worker.metrics"
    ]


def test_the_checker_catches_the_demo_imported_by_the_worker_and_training() -> None:
    assert check("from detector.sim.simulation import Plant", "detector.worker.run_cli") == [
        "detector.worker.run_cli:1 imports detector.sim.simulation"
    ]
    assert check("from detector.worker.mqtt_client import X", "training.cli") == [
        "training.cli:1 imports detector.worker.mqtt_client"
    ]
    assert check("import training.models", "detector.worker.loop") == [
        "detector.worker.loop:1 imports training.models"
    ]


def test_the_checker_keeps_the_settings_a_leaf() -> None:
    assert check("from detector.engine.core import DetectionCore", "detector.config.settings") == [
        "detector.config.settings:1 imports detector.engine.core"
    ]
    assert (
        check("from detector.engine.readings import valid_name", "detector.config.settings") == []
    )
    # A value module that grows a real dependency stops being one.
    assert check("from detector.worker.metrics import M", "detector.engine.readings") == [
        "detector.engine.readings:1 (a value module) imports detector.worker.metrics"
    ]
    typing_only = "if TYPE_CHECKING:\n    from detector.engine.core import DetectionCore\n"
    assert check(typing_only, "detector.engine.detection_config") == []
    deferred = "def scoring():\n    from detector.engine.core import DetectionCore\n"
    assert check(deferred, "detector.engine.detection_config") == []


def test_the_checker_lets_allowed_imports_pass() -> None:
    assert check("from detector.engine.core import DetectionCore", "detector.worker.loop") == []
    assert check("from detector.worker.metrics import M", "detector.sim.demo_run") == []
    assert check("from detector import __version__", "detector.engine.artifact") == []
    assert check("import numpy, json", "detector.engine.windows") == []
