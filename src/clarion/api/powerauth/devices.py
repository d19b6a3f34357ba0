"""Device registrations: /push/device/..."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import model_validator

from clarion.api.powerauth.deps import ServicesDep
from clarion.api.powerauth.envelope import ObjectRequest, OkResponse, PowerAuthRoute, add_routes, ok
from clarion.api.powerauth.models import (
    CreateDeviceMultiRequest,
    CreateDeviceRequest,
    RemoveDeviceRequest,
    UpdateStatusRequest,
)
from clarion.core.devices import Registration
from clarion.core.platforms import parse_activation_status, parse_environment, parse_platform
from clarion.core.services import Services

router = APIRouter(route_class=PowerAuthRoute, tags=["Devices"])


def _registration(
    body: CreateDeviceRequest | CreateDeviceMultiRequest, activation_ids: list[str]
) -> Registration:
    return Registration(
        app_id=body.appId,
        token=body.token,
        platform=parse_platform(body.platform),
        activation_ids=activation_ids,
        environment=parse_environment(body.environment) if body.environment else None,
        user_id=body.userId,
        activation_status=(
            parse_activation_status(body.activationStatus) if body.activationStatus else None
        ),
    )


@router.post("/push/device/create", response_model=OkResponse, summary="Create device")
async def create_device(
    request: ObjectRequest[CreateDeviceRequest], svc: ServicesDep
) -> dict[str, Any]:
    return await register_one(svc, request.requestObject)


async def register_one(svc: Services, body: CreateDeviceRequest) -> dict[str, Any]:
    """Register the device (the FastAPI route and the hot route share it)."""
    await svc.devices.register(_registration(body, [body.activationId]))
    return ok()


@router.post(
    "/push/device/create/multi",
    response_model=OkResponse,
    summary="Create device for multiple activations",
)
async def create_device_multi(
    request: ObjectRequest[CreateDeviceMultiRequest], svc: ServicesDep
) -> dict[str, Any]:
    body = request.requestObject
    await svc.devices.register(_registration(body, body.activationIds))
    return ok()


async def remove_device(
    request: ObjectRequest[RemoveDeviceRequest], svc: ServicesDep
) -> dict[str, Any]:
    """Remove every registration of the token in the app; removing nothing is OK."""
    body = request.requestObject
    await svc.devices.remove(body.appId, body.token)
    return ok()


add_routes(
    router,
    remove_device,
    [
        ("DELETE", "/push/device/remove"),
        ("POST", "/push/device/delete"),
        ("DELETE", "/push/device/delete"),
        ("POST", "/push/device/remove"),
    ],
    response_model=OkResponse,
    summary="Remove device",
)


class StatusUpdateBody(ObjectRequest[UpdateStatusRequest]):
    """The envelope, or the plain ``{"activationId": ..., "activationStatus": ...}``.

    The seed shows this one endpoint's body without ``requestObject``: it is PowerAuth Server's
    status-change callback format, and the official Java client's ``updateDeviceStatus`` posts
    it so. A body with neither ``requestObject`` nor a field of the request is the envelope's
    error ("Request object must not be null.").
    """

    @model_validator(mode="before")
    @classmethod
    def _plain_form(cls, data: Any) -> Any:
        if (
            isinstance(data, dict)
            and "requestObject" not in data
            and data.keys() & UpdateStatusRequest.model_fields.keys()
        ):
            return {"requestObject": data}
        return data


async def update_device_status(request: StatusUpdateBody, svc: ServicesDep) -> dict[str, Any]:
    """Set the registrations of an activation active or not, by its status."""
    body = request.requestObject
    status = parse_activation_status(body.activationStatus) if body.activationStatus else None
    await svc.devices.update_status(body.activationId, status)
    return ok()


add_routes(
    router,
    update_device_status,
    [("POST", "/push/device/status/update"), ("PUT", "/push/device/status/update")],
    response_model=OkResponse,
    summary="Update device status",
)
