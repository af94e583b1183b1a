"""``refunds flower``: Flower (Celery's monitor) behind a door that shuts.

Flower's API can shut workers down and revoke tasks, so it must never run open. Started as
``celery flower --basic-auth=$FLOWER_BASIC_AUTH`` it did: Flower reads ``basic_auth`` as a list
split on commas (from the command line and from the ``FLOWER_BASIC_AUTH`` variable it also reads
itself), so an unset or empty variable became the list ``[""]``, which matched the header
``Authorization: Basic =``; a password with a comma became two credentials, each one a working
password while the real one failed; a shell split one with a space.

This launcher reads ``FLOWER_BASIC_AUTH`` once, whole, checks it (``user:password``, no control
characters, not a placeholder, a password of at least ``MIN_PASSWORD_CHARS``), removes it from
the environment so Flower cannot re-read and split it, and runs Flower in this process with
exactly one stored credential. Flower then compares the decoded ``Authorization`` header with it
in constant time, so a password may hold ``,``, ``:`` and spaces. Nothing secret is on the
command line (``ps`` shows the arguments of every process). Binds to 127.0.0.1 unless told.
"""

from __future__ import annotations

import os
import unicodedata

import click

from config.settings import PLACEHOLDER_SECRETS
from refunds.cli.common import EXIT_USAGE, fail

ENV_NAME = "FLOWER_BASIC_AUTH"
MIN_PASSWORD_CHARS = 12
#: Passwords people leave from an example file; refused in every profile (Flower can stop workers).
PLACEHOLDER_PASSWORDS = PLACEHOLDER_SECRETS | {
    "change-this-password",
    "change-this",
    "password",
    "flower",
    "admin",
}


class CredentialError(ValueError):
    """FLOWER_BASIC_AUTH cannot guard Flower; the message never holds the password."""


def flower_credential(value: str | None) -> str:
    """The one ``user:password`` Flower accepts, checked; raises CredentialError saying why.

    The user is what precedes the first ``:`` (RFC 7617: a user id holds no colon); everything
    after it is the password, commas, colons and spaces included.
    """
    if value is None or not value.strip():
        raise CredentialError(f"{ENV_NAME} is not set; Flower does not start without a login")
    user, colon, password = value.partition(":")
    if not colon or not user.strip():
        raise CredentialError(f"{ENV_NAME} must be user:password")
    for char in value:
        if unicodedata.category(char) in {"Cc", "Cf", "Zl", "Zp"}:
            raise CredentialError(
                f"{ENV_NAME} holds the control or invisible character U+{ord(char):04X}"
            )
    if not password.strip():
        raise CredentialError(f"{ENV_NAME} has an empty password")
    folded = password.strip().lower()
    # Any "change-this-..." is an example file's placeholder (ours, Grafana's), whatever follows.
    if folded in PLACEHOLDER_PASSWORDS or folded.startswith("change-this"):
        raise CredentialError(f"{ENV_NAME} has a placeholder password; set a real one")
    if len(password) < MIN_PASSWORD_CHARS:
        raise CredentialError(
            f"{ENV_NAME}'s password is shorter than {MIN_PASSWORD_CHARS} characters"
        )
    return value


@click.command()
@click.option("--address", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=5555, show_default=True)
@click.option(
    "--max-tasks",
    type=click.IntRange(min=1),
    default=10000,
    show_default=True,
    help="Tasks Flower keeps in memory.",
)
@click.option(
    "--purge-offline-workers",
    type=click.IntRange(min=0),
    default=300,
    show_default=True,
    help="Seconds after which an offline worker leaves Flower's list.",
)
def flower(address: str, port: int, max_tasks: int, purge_offline_workers: int) -> None:
    """Run Flower for the pipeline's Celery app, with FLOWER_BASIC_AUTH (user:password) required.

    The whole value is the one login: a password may contain commas, colons and spaces.
    """
    try:
        credential = flower_credential(os.environ.pop(ENV_NAME, None))
    except CredentialError as exc:
        fail(str(exc), EXIT_USAGE)
    run_flower(
        credential,
        [
            f"--address={address}",
            f"--port={port}",
            f"--max_tasks={max_tasks}",
            f"--purge_offline_workers={purge_offline_workers}",
        ],
    )


def run_flower(credential: str, argv: list[str]) -> None:
    """Flower's own start-up (``flower.command.flower``), with ``basic_auth`` set by us, last.

    Flower's other ``FLOWER_*`` variables and its config file still apply; ``basic_auth`` is set
    after them, so neither can widen or blank the login.
    """
    # Flower and tornado ship no type information; imported here so other commands stay quick.
    import signal  # noqa: PLC0415

    from flower import command  # type: ignore[import-untyped]  # noqa: PLC0415
    from flower.app import Flower  # type: ignore[import-untyped]  # noqa: PLC0415
    from flower.urls import settings  # type: ignore[import-untyped]  # noqa: PLC0415
    from tornado.options import options  # noqa: PLC0415

    from worker.app import app  # noqa: PLC0415

    command.apply_env_options()
    command.apply_options("flower", argv)
    options.basic_auth = [credential]
    command.extract_settings()
    command.setup_logging()
    flower_app = Flower(capp=app, options=options, **settings)
    signal.signal(signal.SIGTERM, command.sigterm_handler)
    bound = flower_app.start_http_server()
    command.print_banner(app, "ssl_options" in settings, bound)
    try:
        flower_app.start()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        flower_app.stop()
