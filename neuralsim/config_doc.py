"""docs/config.md from the config dataclasses: every setting of an optimize and a bench config with its type,
default and docstring. `python -m neuralsim.config_doc > docs/config.md` writes it; a test keeps it current."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import textwrap
import typing

from neuralsim.runtime import to_plain


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (and of its bases), by field name."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for node, after in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
                docs[node.target.id] = " ".join(inspect.cleandoc(after.value.value).split())
    return docs


def _type_name(hint) -> str:
    """A short name of a type: the class name, or the written form with the config unions by their members."""
    if typing.get_origin(hint) is list and _nested(typing.get_args(hint)[0]):
        return "list[" + " \\| ".join(c.__name__ for c in _nested(typing.get_args(hint)[0])) + "]"
    text = getattr(hint, "__name__", None) if typing.get_origin(hint) is None else None
    return (text or str(hint).replace("typing.", "")).replace("|", "\\|")


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


def _nested(hint) -> list[type]:
    """The dataclasses a field's type holds (itself, or a union's members)."""
    if typing.get_origin(hint) is list:
        return _nested(typing.get_args(hint)[0])
    args = typing.get_args(typing.get_args(hint)[0]) if typing.get_origin(hint) is typing.Annotated else ()
    candidates = [typing.get_args(c)[0] if typing.get_origin(c) is typing.Annotated else c
                  for c in args or (hint, *typing.get_args(hint))]
    return [c for c in candidates if dataclasses.is_dataclass(c)]


def section(cls: type, done: set) -> list[str]:
    """A markdown table of `cls`'s settings, then a section for each config class it nests."""
    if cls in done:
        return []
    done.add(cls)
    doc = " ".join(inspect.cleandoc(cls.__doc__ or "").split())
    lines = [f"## `{cls.__name__}`", "", doc, "", "| setting | type | default | meaning |", "|---|---|---|---|"]
    hints, docs, nested = typing.get_type_hints(cls, include_extras=True), field_docs(cls), []
    for f in dataclasses.fields(cls):
        inner = _nested(hints[f.name])
        nested += inner
        default = _default(f)
        shown = f"[`{type(default).__name__}`](#{type(default).__name__.lower()})" if dataclasses.is_dataclass(default) \
            else f"`{json.dumps(to_plain(default))}`"
        kind = " \\| ".join(c.__name__ for c in inner) if len(inner) > 1 and typing.get_origin(hints[f.name]) is not list \
            else _type_name(hints[f.name])
        lines.append(f"| `{f.name}` | {kind} | {shown} | {docs.get(f.name, '')} |".replace("\n", " "))
    lines.append("")
    for inner in nested:
        lines += section(inner, done)
    return lines


def render() -> str:
    from neuralsim.experiments.recipes import BenchConfig
    from neuralsim.learn.project import ProjectConfig

    head = ["# Configuration", "",
            "Every setting of `neuralsim learn PROJECT` (`ProjectConfig`), `neuralsim optimize CONFIG` (`OptimizeConfig`)",
            "and `neuralsim bench CONFIG` (`BenchConfig`, whose `optimize` is an `OptimizeConfig` shared by its runs),",
            "with its default. A config names only what differs from the defaults; `method` is chosen by its tag:",
            "`{\"method\": \"nso\", \"tau\": 0.2}`. A project's `learn` starts from `default_learning()` (every factor,",
            "4 elevation and 4 radius bins, the demo's sizes) and changes only what it names.",
            "Generated from the dataclasses by `python -m neuralsim.config_doc > docs/config.md`.", ""]
    done: set = set()
    return "\n".join(head + section(ProjectConfig, done) + section(BenchConfig, done)).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
