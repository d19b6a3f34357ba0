"""GET /push/service/status."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

from fastapi import APIRouter

from clarion import __version__
from clarion.api.powerauth.deps import ServicesDep
from clarion.api.powerauth.envelope import ObjectResponse, PowerAuthRoute, ok
from clarion.api.powerauth.models import ServiceStatus

router = APIRouter(route_class=PowerAuthRoute, tags=["Service"])


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and an offset, as PowerAuth clients parse it:
    ``datetime.isoformat(timespec="milliseconds")`` of the moment in UTC, formatted by hand
    (half the CPU: an inbox page formats 20 of them)."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03d+00:00" % (  # noqa: UP031 (faster than format)
        moment.year,
        moment.month,
        moment.day,
        moment.hour,
        moment.minute,
        moment.second,
        moment.microsecond // 1000,
    )


@cache
def build_time() -> str:
    """When this clarion was built (installed): the package metadata's modification time."""
    try:
        files = distribution("clarion").files or []
        meta = next((f for f in files if f.name == "METADATA"), None)
        path = Path(str(meta.locate())) if meta is not None else Path(__file__)
    except PackageNotFoundError:
        path = Path(__file__)
    return iso(datetime.fromtimestamp(path.stat().st_mtime, UTC))


@router.get(
    "/push/service/status",
    response_model=ObjectResponse[ServiceStatus],
    summary="Service status",
)
async def service_status(svc: ServicesDep) -> dict[str, Any]:
    return ok(
        {
            "applicationName": "clarion",
            "applicationDisplayName": svc.settings.display_name,
            "applicationEnvironment": svc.settings.environment,
            "version": __version__,
            "buildTime": build_time(),
            "timestamp": iso(datetime.now(UTC)),
        }
    )


# HEAD too (undocumented): load balancers' health checks send it.
router.add_api_route(
    "/push/service/status",
    service_status,
    methods=["HEAD"],
    response_model=ObjectResponse[ServiceStatus],
    include_in_schema=False,
)
