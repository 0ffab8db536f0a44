"""The optional dependencies a command needs, checked before it starts.

Without them a command would fail half-way with a long ModuleNotFoundError; instead it prints
one line naming the extra to install (`iotad[train]`) and exits non-zero.
"""

from __future__ import annotations

import importlib.util

TRAIN_EXTRA = "pip install 'iotad[train]'"
"""How to install the training dependencies (TensorFlow/Keras, matplotlib)."""

TRAIN_MODULES = {"tensorflow": "TensorFlow", "keras": "Keras", "matplotlib": "matplotlib"}
"""Top-level modules the `train` extra brings, with the names users know them by."""


def missing_modules(modules: tuple[str, ...]) -> list[str]:
    """The modules of `modules` that cannot be imported here (found, not imported: cheap)."""
    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a broken install or a blocked module
            found = False
        if not found:
            missing.append(name)
    return missing


def train_extra_problem(
    command: str, modules: tuple[str, ...] = ("tensorflow",), alternative: str = ""
) -> str | None:
    """One line for `command` when any of `modules` is missing, else None.

    `alternative` is appended in parentheses: what to do instead (``--forecaster naive``).

    >>> train_extra_problem("iotad x", ("no_such_mod",))
    "iotad x: no_such_mod is not installed; install the train extra: pip install 'iotad[train]'"
    """
    missing = missing_modules(modules)
    if not missing:
        return None
    names = " and ".join(TRAIN_MODULES.get(m, m) for m in missing)
    verb = "is" if len(missing) == 1 else "are"
    line = f"{command}: {names} {verb} not installed; install the train extra: {TRAIN_EXTRA}"
    return f"{line} (or {alternative})" if alternative else line


def is_train_module_error(exc: ModuleNotFoundError) -> bool:
    """Whether `exc` is about a module of the `train` extra (not a bug of ours)."""
    return (exc.name or "").split(".")[0] in TRAIN_MODULES
