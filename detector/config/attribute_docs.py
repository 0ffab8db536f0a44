"""Docstrings written under class attributes, as pydantic's ``use_attribute_docstrings``
reads them, for the dataclasses whose fields are settings (`DetectionConfig`,
`PayloadLimits`): the settings built from them carry these as field descriptions.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import textwrap


def attribute_docs(cls: type) -> dict[str, str]:
    """``x: int = 1`` then a string in the body of `cls` -> ``{"x": "the string"}``, its
    whitespace folded to one line."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for node, nxt in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs
