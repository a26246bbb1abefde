"""The one exception tree of crowdcut.

::

    CrowdcutError
     ├── UserFacingError            message is safe to show a Discord member as-is
     │    ├── InvalidPrompt         empty, too long, blocked words
     │    ├── InvalidImage          reference image refused (type, size, pixels, broken)
     │    ├── InvalidClip           a generated clip that is not usable video
     │    ├── QuotaExceeded         too many jobs waiting for one member
     │    ├── BudgetExceeded        the project's or the member's daily budget is spent
     │    ├── PermissionDenied      not a moderator, not the author
     │    ├── NotFound              no such job / clip / project
     │    ├── InvalidState          e.g. prompting into a closed project
     │    └── StorageFull           the database's disk is full: new work is refused
     ├── ConfigError                a bad setting; names the setting and what is allowed
     ├── MediaError                 ffmpeg / probing failed; carries the stderr tail
     └── GeneratorError             a backend failed; normalized ``kind``

One handler in the Discord front end turns a ``UserFacingError`` into an
ephemeral reply and logs everything else with its traceback.
"""

from __future__ import annotations

from enum import StrEnum


class CrowdcutError(Exception):
    """Base of every error crowdcut raises on purpose."""


class UserFacingError(CrowdcutError):
    """An error whose message is written for the member who caused it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidPrompt(UserFacingError):
    """The prompt text was refused."""


class InvalidImage(UserFacingError):
    """The reference image was refused."""


class InvalidClip(UserFacingError):
    """A generated clip is not usable video."""


class QuotaExceeded(UserFacingError):
    """The member has too many jobs waiting."""


class BudgetExceeded(UserFacingError):
    """A new prompt would take a project or a member over their budget (``scope``:
    "project" or "member"); nothing was spent or queued."""

    def __init__(self, message: str, *, scope: str) -> None:
        super().__init__(message)
        self.scope = scope


class PermissionDenied(UserFacingError):
    """The member may not do this."""


class NotFound(UserFacingError):
    """The thing asked for does not exist."""


class InvalidState(UserFacingError):
    """The action does not fit the current state (e.g. the project is closed)."""


class StorageFull(UserFacingError):
    """A write was refused because the database's disk is full (SQLite's SQLITE_FULL).
    Nothing of that write was stored; what was stored before is intact. Raised by
    ``storage.AsyncStore`` for every write, so no command handles it on its own."""

    MESSAGE = (
        "crowdcut's storage is full; the operator has been told. Nothing you sent before "
        "is lost. Please try again later."
    )

    def __init__(self, message: str = MESSAGE) -> None:
        super().__init__(message)


class ConfigError(CrowdcutError):
    """A setting has a bad value; the message names it and what is allowed."""


class MediaError(CrowdcutError):
    """ffmpeg or probing failed. ``stderr_tail`` holds the last lines ffmpeg wrote."""

    def __init__(self, message: str, stderr_tail: str = "") -> None:
        super().__init__(message if not stderr_tail else f"{message}\n{stderr_tail}")
        self.stderr_tail = stderr_tail


class GeneratorErrorKind(StrEnum):
    CONTENT_POLICY = "content_policy"  # the provider refused the prompt or image
    INVALID_INPUT = "invalid_input"  # the provider cannot use this request
    RATE_LIMITED = "rate_limited"  # 429: come back later
    UNAVAILABLE = "unavailable"  # no answer, refused connection, 5xx
    AUTH = "auth"  # bad key, no credits
    UNKNOWN = "unknown"  # anything else the provider reported
    MALFORMED = "malformed_response"  # a 2xx whose body is not what the API documents
    TRUNCATED = "truncated_download"  # the download ended before its Content-Length
    NOT_VIDEO = "not_video"  # the downloaded output is not a video file
    OUTPUT_EXPIRED = "output_expired"  # the output URL answers 404/410 or has expired
    #: a create request that may or may not have reached the provider (timeout, dropped
    #: connection after sending): it must be looked up before it is ever sent again
    OUTCOME_UNKNOWN = "outcome_unknown"


#: kinds worth retrying with backoff; the rest fail the job at once. Whether a retry is a
#: new *submission* or the same request again is the worker's call (see its docstring):
#: after the provider accepted a job, retries poll and download that job, never a new one.
TRANSIENT_KINDS = frozenset(
    {
        GeneratorErrorKind.RATE_LIMITED,
        GeneratorErrorKind.UNAVAILABLE,
        GeneratorErrorKind.UNKNOWN,
        GeneratorErrorKind.MALFORMED,
        GeneratorErrorKind.TRUNCATED,
        GeneratorErrorKind.NOT_VIDEO,
    }
)


class GeneratorError(CrowdcutError):
    """A generator backend failed, normalized to a ``kind``.

    ``retry_after`` (seconds) is set when the provider said when to come back.
    ``max_submissions`` caps how many times in all a job may be submitted when a
    generation fails this way (Runway's ``INTERNAL.BAD_OUTPUT`` is worth one more try,
    not five); ``None`` leaves it to ``RETRY_MAX_ATTEMPTS``.
    """

    def __init__(
        self,
        kind: GeneratorErrorKind,
        message: str,
        *,
        retry_after: float | None = None,
        max_submissions: int | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = GeneratorErrorKind(kind)
        self.message = message
        self.retry_after = retry_after
        self.max_submissions = max_submissions

    @property
    def transient(self) -> bool:
        return self.kind in TRANSIENT_KINDS
