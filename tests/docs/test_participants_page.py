"""docs/participants.md: its registry file loads as copied, and the page is in the site's nav."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from refunds.participants.registry import load_registry

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "participants.md"


def _toml_blocks() -> list[str]:
    return re.findall(r"^```toml\n(.*?)^```$", PAGE.read_text(), flags=re.MULTILINE | re.DOTALL)


def test_the_pages_registry_file_loads_as_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (text,) = _toml_blocks()
    for name in sorted(set(re.findall(r"env:([A-Z0-9_]+)", text))):
        monkeypatch.setenv(name, f"value-of-{name.lower()}")
    copied = tmp_path / "registry.toml"
    copied.write_text(text)
    registry = load_registry(copied)
    assert sorted(str(c) for c in registry.credentials) == ["psp-eu", "psp-us"]
    assert registry.codes == ("SHOP-EU-1", "SHOP-EU-2", "SHOP-US-1")
    assert registry.codes_of("psp-eu") == {"SHOP-EU-1", "SHOP-EU-2"}
    assert registry.default == "SHOP-EU-1"
    assert len(registry.credentials["psp-us"].webhook_secrets) == 2
    (apps,) = registry.intake_keys
    assert apps.participants == {"SHOP-EU-1", "SHOP-EU-2"}


def test_the_page_is_in_the_sites_navigation() -> None:
    assert "participants.md" in (REPO / "mkdocs.yml").read_text()
