"""The total deadline holds over TLS too: the watchdog breaks a trickled HTTPS answer.

A TLS socket's own shutdown drops its SSL object under a read that may be running; the watchdog
shuts the plain socket instead, and the read ends in an SSL error the client maps to a timeout.
The simulator serves HTTPS here with a throwaway self-signed certificate made by ``openssl``.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from config.settings import load_settings
from refunds.errors import MceTimeoutError
from refunds.mce.client import MceClient
from refunds.mce.deadline import GuardedAdapter
from sandbox.server import SandboxServer, make_server

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl tool")


@pytest.fixture(scope="module")
def tls_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SandboxServer, Path]]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    command = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1"
    command += " -addext subjectAltName=IP:127.0.0.1"
    subprocess.run(
        [*command.split(), "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True
    )
    server = make_server("127.0.0.1", 0)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server, cert
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_a_trickled_https_answer_ends_in_a_timeout_within_one_call_deadline(
    tls_sandbox: tuple[SandboxServer, Path], redis_db: str
) -> None:
    server, cert = tls_sandbox
    server.config = server.config.merge(
        {"trickle_bytes": 1, "trickle_interval_ms": 100, "fault_operations": ["token"]}
    )
    settings = load_settings(
        profile="sandbox",
        redis_url=redis_db,
        mce_base_url=f"https://127.0.0.1:{server.server_port}",
        http_connect_timeout=1,
        http_read_timeout=2,
    )
    session = requests.Session()
    session.mount("https://", GuardedAdapter(max_retries=0))
    session.trust_env = False  # the environment's CA bundle would replace ``verify``
    session.verify = str(cert)
    started = time.monotonic()
    with pytest.raises(MceTimeoutError):
        MceClient(settings, session=session).fetch_token()
    took = time.monotonic() - started
    assert settings.http_deadline - 0.1 <= took <= settings.http_deadline + 0.75, took
