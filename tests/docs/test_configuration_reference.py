"""docs/configuration.md is generated from Settings: a setting changed but not regenerated fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack import config_docs


def test_configuration_page_matches_the_settings_model() -> None:
    assert config_docs.PAGE.read_text() == config_docs.render(), (
        "docs/configuration.md is stale: run .venv/bin/python -m devstack.config_docs"
    )


def test_every_setting_appears_once_under_its_environment_names() -> None:
    rendered = config_docs.render()
    rows = list(config_docs.rows())
    names = [n for r in rows for n in r.names]
    assert len(names) == len(set(names))
    for name in names:
        assert f"`{name}`" in rendered
    # Read generically: every field of the model is a row (or rows of its nested group).
    assert len(rows) >= len(config_docs.Settings.model_fields)


def test_every_setting_has_a_meaning() -> None:
    missing = [r.names[0] for r in config_docs.rows() if r.meaning.startswith("(no description")]
    assert missing == []


def test_check_mode_reports_a_stale_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text(config_docs.render().replace("| `REFUNDS_", "| `OLD_", 1))
    monkeypatch.setattr(config_docs, "PAGE", stale)
    assert config_docs.main(["--check"]) == 1
    stale.write_text(config_docs.render())
    assert config_docs.main(["--check"]) == 0
