"""The ψ-gradient methods behind one interface (`StepInputs` → `StepOutcome`), chosen by `method`.

Adding a method is one new module defining its config (a dataclass with a `method: Literal[name]` tag and a
`step`) and one line in `METHOD_CONFIGS`."""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field
from tyro.conf import subcommand

from neuralsim.bilevel.estimators.autosim import AutoSimConfig
from neuralsim.bilevel.estimators.base import SecondOrderConfig, StepInputs, StepOutcome
from neuralsim.bilevel.estimators.influence import InfluenceConfig
from neuralsim.bilevel.estimators.lts import LTSConfig
from neuralsim.bilevel.estimators.ns import NSConfig
from neuralsim.bilevel.estimators.nso import NSOConfig
from neuralsim.errors import UserError

METHOD_CONFIGS = (NSConfig, LTSConfig, AutoSimConfig, NSOConfig, InfluenceConfig)
METHODS: dict[str, type] = {c.method: c for c in METHOD_CONFIGS}
"""Method name → its config class, whose defaults are the method's measured best settings; in the order reports
show them (the baseline first, ours last)."""

MethodConfig = Annotated[
    Union[tuple(Annotated[c, subcommand(c.method)] for c in METHOD_CONFIGS)],  # noqa: UP007
    Field(discriminator="method")]
"""One method and its own settings, tagged by `method` (in a JSON config: {"method": "nso", "tau": 0.2}; on the
command line the subcommand `method:nso` and `--method.tau 0.2`)."""

LOGITS_ONLY = ("autosim", "lts")
"""Methods whose estimate covers the bin logits only: lighting weights are mixed, not drawn."""


def method_config(name: str):
    """The config of method `name` with its default settings."""
    if name not in METHODS:
        raise UserError(f"Unknown method {name!r}; choose from {', '.join(METHODS)}.")
    return METHODS[name]()


__all__ = ["LOGITS_ONLY", "METHODS", "METHOD_CONFIGS", "MethodConfig", "SecondOrderConfig", "StepInputs",
           "StepOutcome", "method_config"]
