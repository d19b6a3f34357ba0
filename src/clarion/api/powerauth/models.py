"""Request and response bodies of the PowerAuth dialect (the ``requestObject`` contents).

Lengths match the store's columns, so an over-long value is a 400 here, never a database error.
Platform, environment and activation status are plain strings here and parsed by ``core`` so
that both PowerAuth generations' spellings are accepted, case-insensitively.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StrictBool

from clarion.api.powerauth.body import Body

AppId = Annotated[str, Field(min_length=1, max_length=255, examples=["mobile-app"])]
ActivationId = Annotated[
    str, Field(min_length=1, max_length=64, examples=["49414e31-f3df-4cea-87e6-f214ca3b8412"])
]
Token = Annotated[str, Field(min_length=1, max_length=512)]
PlatformName = Annotated[
    str,
    Field(min_length=1, max_length=16, description="ios, android or huawei (or apns, fcm, hms)"),
]
Short = Annotated[str, Field(min_length=1, max_length=255)]
KeyPart = Annotated[str, Field(min_length=1, max_length=64)]
Base64Blob = Annotated[str, Field(min_length=1, max_length=65_536)]


# --- devices -------------------------------------------------------------------------------


class CreateDeviceRequest(Body):
    appId: AppId
    token: Token
    platform: PlatformName
    environment: str | None = Field(
        default=None, max_length=16, description="development, production or null (APNs only)"
    )
    activationId: ActivationId
    userId: Short | None = Field(
        default=None, description="clarion extension: the activation's user (local directory)"
    )
    activationStatus: str | None = Field(
        default=None,
        max_length=32,
        description="clarion extension: the activation's status (local directory)",
    )


class CreateDeviceMultiRequest(Body):
    appId: AppId
    token: Token
    platform: PlatformName
    environment: str | None = Field(default=None, max_length=16)
    activationIds: list[ActivationId] = Field(min_length=1, max_length=1000)
    userId: Short | None = None
    activationStatus: str | None = Field(default=None, max_length=32)


class RemoveDeviceRequest(Body):
    appId: AppId
    token: Token


class UpdateStatusRequest(Body):
    activationId: ActivationId
    activationStatus: str | None = Field(
        default=None,
        max_length=32,
        description="CREATED, PENDING_COMMIT, ACTIVE, BLOCKED or REMOVED; absent: ask directory",
    )


# --- admin ---------------------------------------------------------------------------------


class AppIdRequest(Body):
    appId: AppId


class AppDetailRequest(Body):
    appId: AppId
    includeIos: StrictBool = True
    includeAndroid: StrictBool = True
    includeHuawei: StrictBool = True


class IosUpdateRequest(Body):
    appId: AppId
    bundle: Short
    keyId: KeyPart
    teamId: KeyPart
    environment: str | None = Field(
        default=None, max_length=16, description="development, production, or null: the default"
    )
    privateKeyBase64: Base64Blob = Field(description="base64 of the .p8 PEM key")


class AndroidUpdateRequest(Body):
    appId: AppId
    projectId: Short
    privateKeyBase64: Base64Blob = Field(description="base64 of the Google service account JSON")


class HuaweiUpdateRequest(Body):
    appId: AppId
    projectId: Short
    clientId: Short
    clientSecret: Annotated[str, Field(min_length=1, max_length=1024)]


class ApplicationModel(BaseModel):
    appId: str
    ios: bool | None
    android: bool | None
    huawei: bool | None


class ApplicationList(BaseModel):
    applicationList: list[ApplicationModel]


class ApplicationDetail(BaseModel):
    application: ApplicationModel
    iosBundle: str | None = None
    iosKeyId: str | None = None
    iosTeamId: str | None = None
    iosEnvironment: str | None = None
    androidProjectId: str | None = None
    huaweiProjectId: str | None = None
    huaweiClientId: str | None = None
    # Extensions: present only when the provider rejected the platform's credentials (sends to
    # it are suspended until new ones are uploaded), with the provider's reason.
    iosCredentialsRejected: str | None = None
    androidCredentialsRejected: str | None = None
    huaweiCredentialsRejected: str | None = None


class CreatedApplication(BaseModel):
    appId: str


class ServiceStatus(BaseModel):
    applicationName: str
    applicationDisplayName: str
    applicationEnvironment: str
    version: str
    buildTime: str
    timestamp: str
