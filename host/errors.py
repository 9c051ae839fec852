"""The host's exception tree.

HostError                 start-up and command failures, shown to the user
 +-- ManifestError        spin.toml is malformed (names file, table, key, value)
 +-- ComponentError       a component cannot be loaded, compiled or instantiated
 +-- BuildError           a `build` command failed
 +-- ConfigError          a command-line flag or a setting is invalid
 |    +-- VariableError   an environment variable is invalid (exit code 2, as a bad flag)
 +-- OciError             an image, layout or registry problem
 +-- NotASpinApp          a container's filesystem has no spin.toml (exit code 3)
 +-- WorkerError          a worker process (--workers) could not start: its error and code
 +-- TemplateError        `host new`/`add` cannot generate: bad NAME or --value (exit code 2),
                          a non-empty target directory, a component id or route taken
GuestError                a request failed in its guest: 500, logged, never a traceback
 +-- GuestTimeout         the guest ran past its deadline: 504
 +-- GuestTrap            the guest trapped (a wasm trap, a limit, a failed host function): 500
 +-- HandlerError         a message handler returned its interface's error (Redis trigger)
 +-- OutputTooLarge       a WAGI program printed more than the response limit
 +-- CgiError             a WAGI program's output is not CGI: carries the status to answer
BackendError              a key-value store failed; the guest sees it as `error::other`
MarshalError (TypeError)  a value does not fit the WIT type it crosses the boundary as

Every HostError message is one line meant for the user; the CLI prints it and
exits non-zero, never with a traceback. A GuestError is the guest's fault and
becomes a response in one place (host/server.py), or, for a Redis message, a log
line (host/redis_trigger.py). Any other exception raised on
the request path is a host bug: it is logged with its traceback and answers 500.

Internal errors that never leave their module stay there: `ExportNotFound`
(host/runtime/abi.py, becomes a ComponentError), `AllowedHostError`
(host/capabilities/allowed_hosts.py, becomes a ManifestError or ConfigError),
`DeadlineExceeded` (host/deadline.py, becomes the host call's error value).
"""

from __future__ import annotations


class HostError(Exception):
    """Base of every error the host reports to its user."""

    exit_code = 1


class ManifestError(HostError):
    """The manifest is malformed: the message names file, table, key and value."""


class ComponentError(HostError):
    """A component could not be read, compiled, checked or instantiated."""


class BuildError(HostError):
    """A component's build command failed; carries the command's exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ConfigError(HostError):
    """A flag or environment variable has an invalid value."""


class VariableError(ConfigError):
    """An environment variable has an invalid value: a usage error, as a bad flag."""

    exit_code = 2


class OciError(HostError):
    """An image, layout or registry problem: tampered blob, unknown tag, refused login..."""


class NotASpinApp(HostError):
    """The container's filesystem has no spin.toml at its root."""

    exit_code = 3


class WorkerError(HostError):
    """A worker process failed to start: carries its one-line error and exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class TemplateError(HostError):
    """`host new` or `host add` refused: a bad NAME or --value (exit 2), a taken target (1)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class GuestError(Exception):
    """The guest trapped or broke the interface contract."""


class GuestTimeout(GuestError):
    """The guest ran past its execution deadline (epoch interruption)."""


class GuestTrap(GuestError):
    """The guest trapped: a wasm trap, a limit hit, a host function that failed."""


class HandlerError(GuestError):
    """A message handler returned its interface's error value (logged, not a trap)."""


class OutputTooLarge(GuestError):
    """The program printed more than the response limit; it was stopped there."""


class CgiError(GuestError):
    """The program's output is not a valid CGI response; carries the status to answer."""

    def __init__(self, message: str, status: int, body: bytes = b"") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class BackendError(Exception):
    """A storage failure, reported to the guest as `other(message)`."""


class MarshalError(TypeError):
    """A value does not fit the WIT type it is lowered to or lifted from."""
