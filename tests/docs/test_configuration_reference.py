"""docs/configuration.md is generated from Settings: a setting changed but not regenerated fails."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import AliasChoices, BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

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


class _Timeouts(BaseModel):
    connect: float = Field(3.0, gt=0, validation_alias=AliasChoices("REFUNDS_CONNECT", "connect"))
    read: float = Field(10.0, description="read timeout")


class _Grouped(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REFUNDS_")

    url: str = Field("redis://x", validation_alias=AliasChoices("REDIS_URL", "url"))
    timeouts: _Timeouts = Field(default_factory=_Timeouts)
    secret: SecretStr | None = None


def test_rows_read_any_settings_shape_generically() -> None:
    found = {r.names: r for r in config_docs.rows(_Grouped)}
    assert set(found) == {
        ("REDIS_URL",),
        ("REFUNDS_CONNECT",),
        ("REFUNDS_READ",),
        ("REFUNDS_SECRET",),
    }
    assert found[("REFUNDS_CONNECT",)].type == "float (> 0)"
    assert found[("REFUNDS_CONNECT",)].default == "3"
    assert found[("REFUNDS_READ",)].meaning == "read timeout"
    assert found[("REFUNDS_SECRET",)].type == "secret, optional"
    assert found[("REDIS_URL",)].default == "`redis://x`"
