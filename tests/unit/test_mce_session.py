"""The MCE session reads the proxy and CA-bundle variables once, as requests would per call."""

from __future__ import annotations

import pytest

from refunds.mce import client


@pytest.fixture(autouse=True)
def fresh_session(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "_session", None)
    for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "REQUESTS_CA_BUNDLE",
                 "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


def test_the_proxy_and_ca_bundle_of_the_environment_are_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/corp.pem")
    session = client.process_session("https://api.mce.example")
    assert session.trust_env is False  # not read again on every call
    assert session.proxies["https"] == "http://proxy.internal:3128"
    assert session.verify == "/etc/ssl/corp.pem"


def test_no_proxy_covering_the_provider_means_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "api.mce.example")
    session = client.process_session("https://api.mce.example")
    assert "https" not in session.proxies
    assert session.verify is True
