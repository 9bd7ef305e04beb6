"""atp from Python: run commands over a working directory in sandboxes
(local processes, Docker containers, Modal sandboxes), through libatp.

    import atp

    with atp.open(backend="docker") as be:
        with be.session("proj", env={"LEAN_NUM_THREADS": "2"}) as s:
            for line in s.exec("lake build", timeout=600).stream():
                print(line)
            r = s.exec(["lake", "env", "lean", "Main.lean"]).wait()
            print(r.status, r.exit_code, r.duration_s)
            s.sync_out()

See python/README.md for the whole surface and the exceptions.
"""

from ._ffi import LibraryNotFound, library_path, lib as _lib, text as _text
from ._types import BatchProgress, BatchResult, Event, Result, Status
from ._core import Backend, Command, Config, Session, open, shell_join
from ._batch import Batch, batch, read_jsonl
from .errors import (Cancelled, CommandFailed, CommandTimeout, ComputeError,
                     ConfigError, Error, ImageUnavailable, InfraError,
                     InfraTimeout, MissingCredentials, ProvisionError,
                     SandboxDead, TransferError, Unsupported)

__version__ = "0.2.0"
#: The version of the libatp that was loaded.
libatp_version: str = _text(_lib.atp_version())

__all__ = [
    "open", "Config", "Backend", "Session", "Command", "Result", "Status",
    "Event", "batch", "Batch", "BatchResult", "BatchProgress", "read_jsonl",
    "shell_join", "Error", "CommandFailed", "CommandTimeout", "Cancelled",
    "ComputeError", "InfraError", "InfraTimeout", "SandboxDead",
    "TransferError", "ProvisionError", "ImageUnavailable",
    "MissingCredentials", "Unsupported", "ConfigError", "LibraryNotFound",
    "library_path", "libatp_version",
]
