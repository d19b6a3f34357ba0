"""The exception hierarchy: raised in core/, mapped to each dialect's error body in api/."""


class ClarionError(Exception):
    """Base of every error clarion raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(ClarionError):
    """The request is malformed or breaks a validation rule (a field, an enum, a key)."""


class NotFound(ClarionError):
    """A referenced object (application, campaign, message) does not exist."""


class Conflict(ClarionError):
    """The request clashes with existing state (a duplicate, an already-sent campaign)."""


class Refused(ClarionError):
    """A business rule refuses the request (a disabled feature, a removed activation)."""


class DirectoryError(ClarionError):
    """The activation directory is unreachable or does not know the activation."""


class Unauthorized(ClarionError):
    """The caller did not present valid credentials for a protected endpoint; ``challenge`` is
    the ``WWW-Authenticate`` value naming the schemes that would do, if any."""

    def __init__(self, message: str, *, challenge: str | None = None) -> None:
        super().__init__(message)
        self.challenge = challenge


class MessageNotFound(NotFound):
    """An inbox message does not exist, or is not the asking user's."""
