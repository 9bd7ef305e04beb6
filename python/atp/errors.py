"""Exceptions: one per atp status class, all under :class:`Error`.

Every exception carries the core's message (``str(e)``), the status class
(``e.status``), the ATP_E_* name of the failing call where there was one
(``e.code``) and the :class:`~atp.Result` as far as it got (``e.result``):
a command that timed out keeps the output it printed before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Optional, Type

if TYPE_CHECKING:
    from ._types import Result


class Error(Exception):
    """Base class of every exception the package raises about atp."""

    #: The status class this exception stands for.
    status: str = ""

    def __init__(self, message: str, result: "Optional[Result]" = None,
                 code: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.result = result
        self.code = code


class CommandFailed(Error):
    """The command exited non-zero (raised only when ``check=True``)."""
    status = "exit"


class CommandTimeout(Error):
    """The command used up its own budget.  ``result`` holds the output it
    printed until it was stopped."""
    status = "timeout"


class Cancelled(Error):
    """The session was cancelled (:meth:`Command.cancel`,
    :meth:`Session.cancel`, or an exception raised by a line callback)."""
    status = "cancelled"


class ComputeError(Error):
    """Parent of the infrastructure failures: the sandbox or the backend
    failed, not the command."""
    status = "infra_error"


class InfraError(ComputeError):
    """A backend operation failed (I/O, the provider, out of memory)."""
    status = "infra_error"


class InfraTimeout(ComputeError):
    """A backend operation (provision, transfer, the exec call itself)
    stalled past its deadline.  Not the command's budget."""
    status = "infra_timeout"


class SandboxDead(ComputeError):
    """The sandbox was terminated or reaped while in use."""
    status = "sandbox_dead"


class TransferError(ComputeError):
    """Pushing or pulling the workdir failed."""
    status = "transfer_error"


class ProvisionError(ComputeError):
    """The sandbox never came up."""
    status = "provision_error"


class ImageUnavailable(ProvisionError):
    """The image does not exist or cannot be fetched."""
    status = "image_unavailable"


class MissingCredentials(ComputeError):
    """The backend needs credentials it did not find."""
    status = "missing_credentials"


class Unsupported(Error):
    """The backend lacks a capability the request needs."""
    status = "unsupported"


class ConfigError(Error):
    """The configuration, a backend name or an argument is wrong."""
    status = "config_error"


#: The exception raised for each status class ("ok" raises nothing).
EXCEPTIONS: Dict[str, Type[Error]] = {
    "exit": CommandFailed,
    "timeout": CommandTimeout,
    "cancelled": Cancelled,
    "infra_error": InfraError,
    "infra_timeout": InfraTimeout,
    "sandbox_dead": SandboxDead,
    "transfer_error": TransferError,
    "provision_error": ProvisionError,
    "image_unavailable": ImageUnavailable,
    "missing_credentials": MissingCredentials,
    "unsupported": Unsupported,
    "config_error": ConfigError,
}


def for_status(status: str) -> Type[Error]:
    """The exception class of a status class name."""
    return EXCEPTIONS.get(status, InfraError)
