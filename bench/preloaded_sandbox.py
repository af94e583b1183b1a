"""The sandbox simulator with refunds already created and confirmed at start.

``python -m bench.preloaded_sandbox --port P --refs-file F --out O [--config JSON]`` flags one
payment per reference in ``F`` (one a line, transaction id ``tx-<ref>``), creates and confirms a
refund for each directly on the simulator's state (the same ``SandboxState`` methods its HTTP
endpoints call, without HTTP), writes one line per refund to ``O`` (reference, refund id, Create
answer, Confirm answer; tab-separated, answers as JSON), then serves HTTP like
``python -m sandbox`` until SIGTERM.

Why: benchmark 4 needs 100,000 refunds in flight at the provider, and creating them over HTTP on
a 2-core machine would take longer than the whole benchmark budget. Polls of these refunds are then
real HTTP calls to a simulator that knows them.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from sandbox.config import SandboxConfig
from sandbox.server import make_server
from sandbox.state import Payment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.preloaded_sandbox")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--refs-file", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--config", default="{}")
    args = parser.parse_args(argv)
    config = SandboxConfig().merge(json.loads(args.config))
    server = make_server("127.0.0.1", args.port, config)
    state = server.state
    refs = args.refs_file.read_text().split()
    state.flag_payments(
        [Payment(1, f"tx-{ref}", "10.00", "USDT", "TRON", "completed") for ref in refs]
    )
    with args.out.open("w") as out:
        for ref in refs:
            created = state.create_refund(1, f"tx-{ref}", ref)
            confirmed = state.confirm_refund(created["cryptoRefundId"], None)
            row = [ref, created["cryptoRefundId"], json.dumps(created), json.dumps(confirmed)]
            out.write("\t".join(row) + "\n")
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    loop = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    loop.start()
    print(f"sandbox listening on {server.url} with {len(refs)} refunds", flush=True)
    while not stop.wait(0.1):
        pass
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
