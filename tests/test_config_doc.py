"""docs/config.md is the config dataclasses' own description: regenerate it when a setting changes."""

from pathlib import Path

from neuralsim.config_doc import field_docs, render


def test_config_md_is_current():
    path = Path(__file__).parents[1] / "docs" / "config.md"
    assert path.read_text() == render(), "run: python -m neuralsim.config_doc > docs/config.md"


def test_field_docs_reads_the_docstring_under_each_field():
    from neuralsim.bilevel.estimators.nso import NSOConfig

    docs = field_docs(NSOConfig)
    assert docs["tau"] == "Temperature of the relaxed draws (Tool 1)." and "method" not in docs
