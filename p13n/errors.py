"""Errors p13n raises on purpose, and the exit code the command line gives each.

Hierarchy::

    P13nError              base class; its message is one line a person can act on
    ├── ConfigError        invalid configuration or CLI argument           (exit 2)
    ├── InputError         an input file or record cannot be used         (exit 2)
    └── ServiceError       a server p13n needs did not answer or failed    (exit 1)

Third-party errors are translated at the boundary with ``raise ... from exc``
so the CLI can print one line; anything else is a bug and keeps its traceback.

>>> str(ConfigError("redis.url: expected a redis:// URL"))
'redis.url: expected a redis:// URL'
>>> ConfigError("x").exit_code, ServiceError("y").exit_code
(2, 1)
"""

from __future__ import annotations

__all__ = ["P13nError", "ConfigError", "InputError", "ServiceError"]


class P13nError(Exception):
    """Base of every error p13n raises deliberately."""

    exit_code = 1


class ConfigError(P13nError):
    """Configuration (file, environment, CLI argument) is invalid or unusable."""

    exit_code = 2


class InputError(P13nError):
    """An input file or record cannot be used as given."""

    exit_code = 2


class ServiceError(P13nError):
    """A server p13n depends on (Redis, Kafka, a subprocess) failed or did not answer."""

    exit_code = 1
