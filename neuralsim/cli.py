"""The `neuralsim` command. Each part registers its sub-commands from its own `cli` module; errors a
user can cause end as one line on stderr and exit code 2."""

from __future__ import annotations

import importlib
import sys

import typer

app = typer.Typer(
    name="neuralsim",
    help="Learn to generate training data with radiance fields (Neural-Sim).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Modules that define `register(app)`; each adds its commands.
_COMMAND_MODULES = [
    "neuralsim.assets.cli",
    "neuralsim.tasks.cli",
    "neuralsim.fit.cli",
    "neuralsim.bilevel.cli",
    "neuralsim.experiments.cli",
    "neuralsim.learn.cli",
    "neuralsim.examples_cli",
]



@app.callback()
def _before_every_command() -> None:
    """Every command runs with deterministic algorithms: same seed, same bytes at its thread count."""
    from neuralsim.runtime import make_deterministic

    make_deterministic()


for _name in _COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; a `UserError` or bad value becomes `error: …` and exit code 2."""
    from neuralsim.errors import UserError

    try:
        app(args=argv, standalone_mode=True)
    except UserError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
