"""The host's exception tree.

HostError
 +-- ManifestError      spin.toml is malformed (names file, table, key, value)
 +-- ComponentError     a component cannot be loaded, compiled or instantiated
 +-- BuildError         a `build` command failed
 +-- ConfigError        a command-line flag or environment variable is invalid

Every HostError message is one line meant for the user; the CLI prints it and
exits non-zero, never with a traceback.
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
