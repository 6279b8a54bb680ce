"""The one way every file a user gives is read: plain JSON data → typed dataclasses, checked by pydantic.

`from_plain(cls, data, what)` builds `cls` (a dataclass, possibly nesting others, lists, dicts, unions of dataclasses
tagged by a `Literal` field) with strict types: the string "zero" is not a number, a string is not a list, an
integer is a number but a number is not an integer, NaN and infinities are refused, and an unknown key is an error.
Any problem is one `UserError` line naming the file, the field and what was expected:

    ψ file runs/psi.json: objects.mug.azimuth.low: expected a number, got 'zero'

Checks that involve several fields live in the dataclasses' `__post_init__`, which raises `Invalid` naming the field.
Files of formats neuralsim does not own (nerfstudio, COCO) set `__pydantic_config__ = FOREIGN` on their top dataclass:
the same strictness, but keys neuralsim does not read are ignored.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import types
import typing
from typing import Any, Literal, Union

import pydantic

from neuralsim.errors import UserError

STRICT = pydantic.ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)
"""neuralsim's own files (configs, ψ and distribution files)."""
FOREIGN = pydantic.ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)
"""Files in other projects' formats, which carry keys neuralsim does not read."""


class Invalid(ValueError):
    """A check in a schema dataclass's `__post_init__` that failed: the field (a key or a path of keys and indices,
    relative to the dataclass), what was expected and the value found."""

    def __init__(self, field: str | tuple[str | int, ...], expected: str, value: Any):
        self.path = (field,) if isinstance(field, str) else tuple(field)
        self.expected, self.value = expected, value
        super().__init__(f"{_dotted(self.path)}: expected {expected}, got {_short(value)}")


def problem(what: str, path: tuple | list, expected: str, value: Any) -> UserError:
    """The error of one field of a file, for checks made after parsing: `what: path: expected …, got …`."""
    where = f"{_dotted(path)}: " if path else ""
    return UserError(f"{what}: {where}expected {expected}, got {_short(value)}")


def from_plain(cls: Any, data: Any, what: str = "config") -> Any:
    """Build `cls` from plain JSON data, strictly; any problem is a one-line `UserError` starting with `what`."""
    try:
        value = _adapter(cls).validate_json(json.dumps(data))
    except pydantic.ValidationError as e:
        raise UserError(_first_problem(what, cls, data, e.errors())) from None
    if value is None:
        raise UserError(f"{what}: expected an object, got None")
    return value


@functools.cache
def _adapter(cls: Any) -> pydantic.TypeAdapter:
    # The union with None is no dataclass, so the config reaches every dataclass inside that has none of its own.
    return pydantic.TypeAdapter(cls | None, config=STRICT)


# ----------------------------------------------------------------------------- one line per problem

_EXPECTED = {
    "float_type": "a number", "finite_number": "a finite number", "int_type": "an integer",
    "string_type": "a string", "bool_type": "true or false", "list_type": "a list", "tuple_type": "a list",
    "dict_type": "an object", "dataclass_type": "an object", "model_attributes_type": "an object",
}


def _first_problem(what: str, cls: Any, data: Any, errors: list[dict]) -> str:
    """The first problem pydantic found, as `what: path: expected …, got …`. A union tries every branch; only the
    branch that the data's tag chose counts, and the expectations of branches that fail at one place are joined."""
    located = [(e, *_locate(cls, data, e["loc"])) for e in errors]
    chosen = [x for x in located if x[3]] or located
    error, path, parent, _ = chosen[0]
    same = [e for e, p, _, _ in chosen if p == path]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if isinstance(ctx.get("error"), Invalid):
        path, expected, value = path + list(ctx["error"].path), ctx["error"].expected, ctx["error"].value
    elif error["type"] in ("missing", "missing_argument"):
        return f"{what}: {_dotted(path)}: required, but not given"
    elif error["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
        known = f" (known: {', '.join(f.name for f in dataclasses.fields(parent))})" if parent else ""
        return f"{what}: {_dotted(path)}: unknown setting{known}, got {_short(value)}"
    elif error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        path = path + [ctx["discriminator"].strip("'")]
        if "tag" not in ctx:
            tags = ", ".join(map(repr, _tags(_typed_at(cls, path[:-1]))))
            return f"{what}: {_dotted(path)}: required (one of {tags}), but not given"
        expected, value = f"one of {ctx['expected_tags']}", ctx["tag"]
    else:
        expected = " or ".join(dict.fromkeys(_expectation(e) for e in same))
    return str(problem(what, path, expected, value))


def _expectation(error: dict) -> str:
    ctx = error.get("ctx") or {}
    if error["type"] == "literal_error":
        return ctx["expected"]
    if error["type"] == "value_error":
        return str(ctx["error"])
    if error["type"] in ("too_short", "too_long"):
        bound = ctx.get("min_length") if error["type"] == "too_short" else ctx.get("max_length")
        return f"{'at least' if error['type'] == 'too_short' else 'at most'} {bound} item{'s' * (bound != 1)}"
    return _EXPECTED.get(error["type"]) or error["msg"].removeprefix("Input should be ")


def _locate(cls: Any, data: Any, loc: tuple) -> tuple[list, type | None, bool]:
    """Follow pydantic's error location through the types and the data: the path a user reads (without the labels
    pydantic gives union branches), the dataclass holding the last key, and whether every union on the way was
    entered by the branch that the data's tag names."""
    tp, path, parent, chosen = cls, [], None, True
    for seg in loc:
        members = _union_members(tp)
        if members is not None:  # the segment names a branch: its tag (tagged union) or its type (smart union)
            branch = next((m for m in members if seg == getattr(m, "__name__", None) or seg in _tags(m)), None)
            tag = _tag_field(branch)
            if tag and isinstance(data, dict) and data.get(tag) not in _tags(branch):
                chosen = False
            tp = branch
            continue
        parent = _strip(tp) if dataclasses.is_dataclass(_strip(tp)) else None
        tp = _child(tp, seg)
        data = data.get(seg) if isinstance(data, dict) else data[seg] if isinstance(data, list) and \
            isinstance(seg, int) and seg < len(data) else None
        path.append(seg)
    return path, parent, chosen


def _typed_at(cls: Any, path: list) -> Any:
    tp = cls
    for seg in path:
        tp = _child(tp, seg)
    return tp


def _strip(tp: Any) -> Any:
    """`Annotated[X, …]` and `X | None` → X."""
    while True:
        if typing.get_origin(tp) is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif _is_union(tp) and type(None) in typing.get_args(tp):
            rest = tuple(a for a in typing.get_args(tp) if a is not type(None))
            tp = rest[0] if len(rest) == 1 else Union[rest]  # noqa: UP007 (a tuple of types)
        else:
            return tp


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _union_members(tp: Any) -> tuple | None:
    tp = _strip(tp)
    return typing.get_args(tp) if _is_union(tp) else None


def _child(tp: Any, seg: Any) -> Any:
    """The type of item `seg` of a value of type `tp` (None where unknown)."""
    tp = _strip(tp)
    if dataclasses.is_dataclass(tp):
        return typing.get_type_hints(tp, include_extras=True).get(seg)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (list, dict) and args:
        return args[-1]
    if origin is tuple and args:
        return args[0] if len(args) == 2 and args[1] is Ellipsis else args[seg] if isinstance(seg, int) and \
            seg < len(args) else None
    return None


def _tag_field(tp: Any) -> str | None:
    """The field of dataclass `tp` typed `Literal[…]` (its tag in a tagged union)."""
    if not dataclasses.is_dataclass(tp):
        return None
    hints = typing.get_type_hints(tp)
    return next((name for name, hint in hints.items() if typing.get_origin(hint) is Literal), None)


def _tags(tp: Any) -> tuple:
    """The tag values of a tagged dataclass, or of every branch of a union of them."""
    members = _union_members(tp)
    if members is not None:
        return tuple(t for m in members for t in _tags(m))
    field = _tag_field(tp)
    return typing.get_args(typing.get_type_hints(tp)[field]) if field else ()


def _dotted(path: list | tuple) -> str:
    """("objects", "mug", "azimuth") → objects.mug.azimuth; ("frames", 3) → frames[3]; odd keys are quoted."""
    out = ""
    for seg in path:
        if isinstance(seg, int):
            out += f"[{seg}]"
        elif re.fullmatch(r"[\w-]+", seg):
            out += f".{seg}" if out else seg
        else:
            out += f"[{seg!r}]"
    return out


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def from_args(cls: Any, default: Any, args: list[str], prog: str, description: str | None = None) -> Any:
    """`default` with the settings given on a command line (`--steps 5`, `--optimize.psi-optimizer.lr 2`,
    `method:nso --method.tau 0.2`), the options generated by tyro from the dataclasses and their docstrings.
    `--help` prints them all with their current values and exits; an option that names no setting, or a value of
    the wrong type, is one `UserError` line."""
    import tyro

    wants_help = "--help" in args or "-h" in args
    try:
        return tyro.cli(cls, default=default, args=args, prog=prog, description=description,
                        console_outputs=wants_help)
    except SystemExit as e:
        if wants_help and not e.code:
            raise
        raise UserError(f"{prog}: the settings {' '.join(args)!r} are not all known settings with values of their "
                        "type; --help lists them.") from None
