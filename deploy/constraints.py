"""The images' dependencies: what pyproject.toml asks for, and the pins in constraints.txt.

    python deploy/constraints.py requirements [--extra train]   # pyproject's, one a line
    python deploy/constraints.py write [--extra train] [--out deploy/constraints.txt]

`requirements` is what the Dockerfile installs before it copies the sources (so that a code
change does not reinstall the dependencies); it needs the standard library only.

`write` pins every distribution the image installs (the base dependencies, the extras given,
and everything they require, recursively), and the checkers in `PINNED_TOOLS`, to the version
installed in the running environment: `pip freeze`, restricted to that closure. Run it with
the interpreter of the environment the test suite passed in (`make constraints` uses .venv),
on Linux and the image's Python (3.11): markers are evaluated for the running interpreter.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path

HERE = Path(__file__).resolve().parent
# In the repository: ../pyproject.toml; in the image's build stage, beside this file.
PYPROJECT = next(p for p in (HERE / "pyproject.toml", HERE.parent / "pyproject.toml") if p.exists())
CONSTRAINTS = HERE / "constraints.txt"
IMAGE_EXTRAS = ("train",)
"""The extras some image installs (deploy/Dockerfile's `train` target)."""
PINNED_TOOLS = ("mypy",)
"""Dev tools pinned too (`make` installs with these constraints): a new mypy release reports
new errors, so `make lint` and CI check with the version the code last passed."""


def requirements(pyproject: Path = PYPROJECT, extras: Iterable[str] = ()) -> list[str]:
    """The project's runtime requirements, with those of `extras`, as written in pyproject."""
    project = tomllib.loads(pyproject.read_text())["project"]
    out = list(project["dependencies"])
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise SystemExit(f"pyproject.toml has no extra {extra!r}")
        out += optional[extra]
    return out


def tool_requirements(
    pyproject: Path = PYPROJECT, tools: Iterable[str] = PINNED_TOOLS
) -> list[str]:
    """The `dev` extra's requirements of `tools`, as written in pyproject."""
    dev = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]["dev"]
    wanted = {t.lower() for t in tools}
    out = [r for r in dev if re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() in wanted]
    missing = wanted - {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() for r in out}
    if missing:
        raise SystemExit(f"pyproject.toml's dev extra does not name {sorted(missing)}")
    return out


def closure(roots: Iterable[str]) -> dict[str, str]:
    """Canonical name -> installed version of `roots` and everything they require.

    Raises SystemExit naming a requirement that is not installed in this environment.
    """
    import importlib.metadata as md

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pinned: dict[str, str] = {}
    todo = [(Requirement(r), "") for r in roots]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        key = (name, frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            raise SystemExit(f"{req} is required but not installed here") from None
        pinned[name] = dist.version
        for child in dist.requires or []:
            child_req = Requirement(child)
            # A requirement applies without an extra, or under one that was asked for.
            for wanted in ("", *sorted(req.extras)):
                if child_req.marker is None or child_req.marker.evaluate({"extra": wanted}):
                    todo.append((child_req, wanted))
                    break
    return pinned


def render(pins: dict[str, str], extras: Iterable[str]) -> str:
    extras = list(extras)
    command = "python deploy/constraints.py write" + "".join(f" --extra {e}" for e in extras)
    head = [
        "# Pins for the images (pip's -c): the base dependencies"
        + (f" and the extras {', '.join(extras)}" if extras else "")
        + ", recursively; and "
        + ", ".join(PINNED_TOOLS)
        + " (make lint).",
        f"# Generated from the test environment by `make constraints` ({command});",
        "# do not edit by hand. Python "
        f"{sys.version_info.major}.{sys.version_info.minor} on {sys.platform}.",
    ]
    return "\n".join(head + [f"{name}=={pins[name]}" for name in sorted(pins)]) + "\n"


def parse_pins(text: str) -> dict[str, str]:
    """`name==version` lines of a constraints file (canonical names), comments skipped."""
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.strip().lower().replace("_", "-").replace(".", "-")] = version.strip()
    return pins


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    req = sub.add_parser("requirements", help="print pyproject's requirements, one a line")
    req.add_argument("--extra", action="append", default=[])
    write = sub.add_parser("write", help="write the constraints from this environment")
    write.add_argument("--extra", action="append", default=None)
    write.add_argument("--out", type=Path, default=CONSTRAINTS)
    args = parser.parse_args(argv)
    if args.command == "requirements":
        print("\n".join(requirements(extras=args.extra)))
        return 0
    extras = IMAGE_EXTRAS if args.extra is None else args.extra
    roots = requirements(extras=extras) + tool_requirements()
    args.out.write_text(render(closure(roots), extras))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
