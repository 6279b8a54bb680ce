"""The content-addressed cache: an entry appears only complete."""

import pytest

from neuralsim.experiments.cache import cached


def test_an_interrupted_build_leaves_no_entry_and_the_next_call_builds_it(tmp_path):
    def interrupted(folder):
        (folder / "config.json").write_text("{}")  # what a fit writes first
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached(tmp_path, "fields", "mug", {"steps": 3}, interrupted)
    assert not (tmp_path / "fields").exists() or not any((tmp_path / "fields").iterdir())
    built = []
    path = cached(tmp_path, "fields", "mug", {"steps": 3}, lambda folder: (folder / "field.json").write_text("{}"))
    path_again = cached(tmp_path, "fields", "mug", {"steps": 3}, built.append)
    assert path == path_again and (path / "field.json").is_file() and built == []  # built once, then reused
    assert cached(tmp_path, "fields", "mug", {"steps": 4}, built.append) != path and len(built) == 1
