"""The one schema layer: strict types, unknown keys, tagged unions of dataclasses, one line per problem."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal, Union

import pydantic
import pytest

from neuralsim.errors import UserError
from neuralsim.schema import FOREIGN, Invalid, from_plain


@dataclass
class Fast:
    method: Literal["fast"] = "fast"
    lr: float = 0.1


@dataclass
class Careful:
    method: Literal["careful"] = "careful"
    iterations: int = 10

    def __post_init__(self):
        if self.iterations > 100:
            raise Invalid("iterations", "at most 100 iterations", self.iterations)


Method = Annotated[Union[Fast, Careful], pydantic.Field(discriminator="method")]  # noqa: UP007


@dataclass
class Inner:
    size: int = 64
    sizes: tuple[int, int] = (1, 1)


@dataclass
class Settings:
    method: Method = field(default_factory=Fast)
    either: Fast | Careful = field(default_factory=Fast)
    inner: Inner = field(default_factory=Inner)
    names: list[str] = field(default_factory=list)
    scale: float = 1.0
    bin: int | str | None = None
    objects: dict[str, Inner] = field(default_factory=dict)


def problem(data) -> str:
    with pytest.raises(UserError) as info:
        from_plain(Settings, data, "Settings file s.json")
    return str(info.value).removeprefix("Settings file s.json: ")


def test_plain_data_becomes_the_dataclasses():
    settings = from_plain(Settings, {"method": {"method": "careful", "iterations": 3}, "either": {"method": "careful"},
                                     "inner": {"sizes": [2, 3]}, "scale": 2, "bin": "dim_top",
                                     "objects": {"a/b": {"size": 8}}}, "s")
    assert settings.method == Careful(iterations=3) and settings.either == Careful()
    assert settings.inner == Inner(64, (2, 3)) and settings.objects == {"a/b": Inner(8)}
    assert settings.scale == 2.0 and isinstance(settings.scale, float) and settings.bin == "dim_top"
    assert from_plain(Settings, {}, "s") == Settings()


@pytest.mark.parametrize("data, message", [
    ({"scale": "zero"}, "scale: expected a number, got 'zero'"),
    ({"scale": float("nan")}, "scale: expected a finite number, got nan"),
    ({"scale": True}, "scale: expected a number, got True"),
    ({"names": "studio"}, "names: expected a list, got 'studio'"),
    ({"inner": {"size": 64.0}}, "inner.size: expected an integer, got 64.0"),
    ({"inner": {"sizes": [1]}}, "inner.sizes[1]: required, but not given"),
    ({"inner": {"colour": 3}}, "inner.colour: unknown setting (known: size, sizes), got 3"),
    ({"objects": {"a/b": {"size": "8"}}}, "objects['a/b'].size: expected an integer, got '8'"),
    ({"bin": 1.5}, "bin: expected an integer or a string, got 1.5"),
    ({"method": {"method": "careful", "lr": 0.1}}, "method.lr: unknown setting (known: method, iterations), got 0.1"),
    ({"method": {"method": "careful", "iterations": 101}}, "method.iterations: expected at most 100 iterations, got 101"),
    ({"method": {"method": "magic"}}, "method.method: expected one of 'fast', 'careful', got 'magic'"),
    ({"method": {"lr": 0.1}}, "method.method: required (one of 'fast', 'careful'), but not given"),
    ({"either": {"method": "careful", "lr": 0.1}}, "either.lr: unknown setting (known: method, iterations), got 0.1"),
    ({"either": {"method": "magic"}}, "either.method: expected 'fast' or 'careful', got 'magic'"),
    ([1], "expected an object, got [1]"),
    (None, "expected an object, got None"),
])
def test_each_problem_is_one_line_naming_the_field(data, message):
    assert problem(data) == message


def test_foreign_formats_ignore_keys_they_do_not_read():
    @dataclass
    class Foreign:
        __pydantic_config__ = FOREIGN

        inner: Inner
        scale: float = 1.0

    assert from_plain(Foreign, {"inner": {"size": 2, "other": 1}, "extra": 1}, "f") == Foreign(Inner(2))
    with pytest.raises(UserError, match="^f: scale: expected a number, got 'x'$"):
        from_plain(Foreign, {"inner": {}, "scale": "x"}, "f")
