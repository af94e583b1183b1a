"""Finance exports over HTTP (operator key): the same file and manifest as ``refunds export``.

The file is written to a temporary directory first (bounded memory: rows stream from the archive
to disk), then sent; the manifest's figures travel in headers (``X-Export-Rows``,
``X-Export-Sha256``) and in full at ``?manifest=true``.
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, JSONResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from refunds.archive.db import engine_for
from refunds.archive.export_files import Format, write_export
from refunds.archive.export_rows import Period, rows
from refunds.archive.reads import window_edge
from refunds.models import State
from refunds.web.deps import OperatorDep, SettingsDep
from refunds.web.errors import problem
from refunds.web.schemas import OPERATOR

router = APIRouter()

_MEDIA = {
    "csv": "text/csv",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "parquet": "application/vnd.apache.parquet",
}


@router.get(
    "/exports/refunds",
    summary="Refunds created in [from, to) as CSV, XLSX or Parquet",
    responses={
        200: {
            "description": "The export file (or, with manifest=true, its manifest as JSON)",
            "content": {**{m: {} for m in _MEDIA.values()}, "application/json": {}},
        },
        **OPERATOR,
    },
)
async def export_refunds(  # noqa: PLR0917 - FastAPI passes parameters by keyword
    operator: OperatorDep,
    settings: SettingsDep,
    start: Annotated[datetime, Query(alias="from")],
    end: Annotated[datetime, Query(alias="to")],
    fmt: Annotated[Format, Query(alias="format")] = "csv",
    state: Annotated[list[State] | None, Query()] = None,
    manifest: bool = False,
) -> Any:
    period = Period(
        window_edge(start) or 0.0, window_edge(end) or 0.0, tuple(str(s) for s in state or ())
    )
    if period.end <= period.start:
        return problem(422, "invalid request", [{"field": "to", "message": "must be after from"}])
    workdir = Path(tempfile.mkdtemp(prefix="refunds-export-"))
    path = workdir / f"refunds.{fmt}"
    engine = engine_for(settings.database_url)
    written = await run_in_threadpool(write_export, path, fmt, rows(engine, period), period)
    cleanup = BackgroundTask(shutil.rmtree, workdir, ignore_errors=True)
    if manifest:
        shutil.rmtree(workdir, ignore_errors=True)
        return JSONResponse(written)
    return FileResponse(
        path,
        media_type=_MEDIA[fmt],
        filename=path.name,
        headers={"X-Export-Rows": str(written["rows"]), "X-Export-Sha256": written["sha256"]},
        background=cleanup,
    )
