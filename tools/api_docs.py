"""Write docs/api.md from the public API's signatures and docstrings, so the reference cannot drift from the code.

python3 tools/api_docs.py           # rewrite docs/api.md
python3 tools/api_docs.py --check   # exit 1 if docs/api.md differs from what the code says (tests/test_docs.py)
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import sys
import textwrap
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "api.md"

HEADER = """# Python API reference

Generated from the code by `python3 tools/api_docs.py` (a test fails when this page and the code disagree). Every
name below is importable from the top-level package, `import cluster`, and loads on first use; the CLI is a shell over
these calls ([cli.md](cli.md)). A runnable tour: [examples/tune_from_python.py](examples/tune_from_python.py).

Bad input raises a `ValueError` subclass that names the option, the value and what is allowed
(`OptionError`, `SearchSpaceError`, `StorageError`, and the data errors of `prepare`), before anything is written
or started; the CLI prints that line and exits with code 2.
"""


def _doc(obj: Any) -> str:
    return inspect.cleandoc(obj.__doc__ or "").strip()


def _field_docs(cls: type) -> dict[str, str]:
    """The string under each annotated field of a dataclass (the convention this codebase documents fields with)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for node, after in zip(body, [*body[1:], None], strict=True):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if (
                isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = " ".join(inspect.cleandoc(after.value.value).split())
    return docs


def _signature(obj: Any) -> str:
    """The signature as written in the source (annotations are strings there: shown without quotes)."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return "(...)"
    parts: list[str] = []
    seen_kw_only = False
    params = list(sig.parameters.values())
    for i, p in enumerate(params):
        if p.kind is p.KEYWORD_ONLY and not seen_kw_only:
            parts.append("*")
            seen_kw_only = True
        text = (
            p.name
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            else ("*" if p.kind is p.VAR_POSITIONAL else "**") + p.name
        )
        if p.kind is p.VAR_POSITIONAL:
            seen_kw_only = True
        if p.annotation is not p.empty:
            text += f": {p.annotation if isinstance(p.annotation, str) else inspect.formatannotation(p.annotation)}"
        if p.default is not p.empty:
            text += f" = {p.default!r}"
        parts.append(text)
        if p.kind is p.POSITIONAL_ONLY and (i + 1 == len(params) or params[i + 1].kind is not p.POSITIONAL_ONLY):
            parts.append("/")
    ret = sig.return_annotation
    arrow = "" if ret is sig.empty else f" -> {ret if isinstance(ret, str) else inspect.formatannotation(ret)}"
    return f"({', '.join(parts)}){arrow}"


def _function(name: str, fn: Any) -> list[str]:
    return [f"### `cluster.{name}{_signature(fn)}`", "", _doc(fn), ""]


def _members(cls: type) -> list[str]:
    out: list[str] = []
    for attr, value in sorted(vars(cls).items()):
        if attr.startswith("_"):
            continue
        raw = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
        if isinstance(raw, property) or hasattr(raw, "attrname"):  # property, cached_property
            target = raw.fget if isinstance(raw, property) else raw.func
            doc = _doc(target)
            out.append(f"- `.{attr}` (property)" + (f": {' '.join(doc.split())}" if doc else ""))
        elif inspect.isfunction(raw):
            doc = _doc(raw)
            out.append(f"- `.{attr}{_signature(raw)}`" + (f": {' '.join(doc.split())}" if doc else ""))
    return out


def _class(name: str, cls: type) -> list[str]:
    lines = [f"### `cluster.{name}`", "", _doc(cls), ""]
    if issubclass(cls, BaseException):
        return lines
    if dataclasses.is_dataclass(cls):
        docs = _field_docs(cls)
        rows = []
        for f in dataclasses.fields(cls):
            default = (
                repr(f.default)
                if f.default is not dataclasses.MISSING
                else (f"{f.default_factory.__name__}()" if f.default_factory is not dataclasses.MISSING else "required")
            )
            rows.append(f"| `{f.name}` | `{f.type}` | `{default}` | {docs.get(f.name, '')} |")
        if rows:
            lines += ["| field | type | default | meaning |", "| --- | --- | --- | --- |", *rows, ""]
    members = _members(cls)
    if members:
        lines += [*members, ""]
    return lines


def render() -> str:
    sys.path.insert(0, str(REPO))
    import cluster

    functions = [n for n in cluster.__all__ if inspect.isfunction(getattr(cluster, n))]
    classes = [n for n in cluster.__all__ if inspect.isclass(getattr(cluster, n))]
    lines = [HEADER, "## Functions", ""]
    for name in functions:
        lines += _function(name, getattr(cluster, name))
    lines += ["## Classes", ""]
    for name in classes:
        lines += _class(name, getattr(cluster, name))
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT.relative_to(REPO)} is out of date: run python3 tools/api_docs.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
