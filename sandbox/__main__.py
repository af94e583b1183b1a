"""``python -m sandbox``: run the MCE simulator until SIGTERM/SIGINT (exit 0).

Example::

    python -m sandbox --host 127.0.0.1 --port 8099 --config '{"token_ttl_seconds": 5}' --seed 7
    python -m sandbox --webhook-url http://127.0.0.1:8000/webhooks/mce --webhook-secret s3cret
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from sandbox.config import SandboxConfig
from sandbox.server import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, serve


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099, help="0 picks a free port")
    parser.add_argument(
        "--client-id", default=os.environ.get("SANDBOX_CLIENT_ID", DEFAULT_CLIENT_ID)
    )
    parser.add_argument(
        "--client-secret",
        default=os.environ.get("SANDBOX_CLIENT_SECRET", DEFAULT_CLIENT_SECRET),
    )
    parser.add_argument("--config", default="{}", help="JSON object of config fields to set")
    parser.add_argument("--seed", type=int, default=None, help="seed for fault injection")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    parser.add_argument(
        "--webhook-url", help="POST every refund status change here (sets webhook_url)"
    )
    parser.add_argument(
        "--webhook-secret", help="HMAC secret for webhook signatures (sets webhook_secret)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    # The flags are shortcuts for config fields and win over the same fields in --config.
    shortcuts = {
        name: value
        for name, value in (
            ("webhook_url", args.webhook_url),
            ("webhook_secret", args.webhook_secret),
        )
        if value is not None
    }
    try:
        config = SandboxConfig().merge(json.loads(args.config)).merge(shortcuts)
    except ValueError as exc:  # json.JSONDecodeError is a ValueError too
        print(f"sandbox: bad --config or --webhook-*: {exc}", file=sys.stderr)
        return 2
    serve(
        args.host,
        args.port,
        config=config,
        client_id=args.client_id,
        client_secret=args.client_secret,
        verbose=args.verbose,
        seed=args.seed,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
