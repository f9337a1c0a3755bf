"""Errors p13n raises on purpose: one tree for the command line and the request path.

Hierarchy::

    P13nError                  base class; its message is one line a person can act on
    ├── ConfigError            invalid configuration or CLI argument                (exit 2)
    ├── InputError             an input file, record or request cannot be used      (exit 2)
    │   └── BadRequest         a request field is invalid; names it (``param``)
    └── ServiceError           a server p13n needs did not answer or failed         (exit 1)
        ├── StoreUnavailable   Redis (connection, timeout, command refused)
        ├── BrokerUnavailable  Kafka (no broker, metadata or produce timed out)
        └── UpstreamUnavailable the upstream LLM of /v1/chat/completions

Third-party errors (redis-py, kafka-python, aiohttp) are translated once, at the module that talks
to that dependency, with ``raise StoreUnavailable(...) from exc``; callers above that boundary catch
these classes only, and the HTTP API renders them in one place (``serving/errors.py``). Anything else
is a bug and keeps its traceback.

>>> str(ConfigError("redis.url: expected a redis:// URL"))
'redis.url: expected a redis:// URL'
>>> ConfigError("x").exit_code, ServiceError("y").exit_code, StoreUnavailable("z").exit_code
(2, 1, 1)
>>> e = BadRequest("expected a string", param="messages[0].content[1].text")
>>> isinstance(e, InputError), e.param, e.code
(True, 'messages[0].content[1].text', 'invalid_field')
>>> BrokerUnavailable("no broker").reason
'broker_unavailable'
>>> import pickle  # errors cross process boundaries (Ray handles) with their fields
>>> pickle.loads(pickle.dumps(e)).param
'messages[0].content[1].text'
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

__all__ = [
    "P13nError",
    "ConfigError",
    "InputError",
    "BadRequest",
    "ServiceError",
    "StoreUnavailable",
    "BrokerUnavailable",
    "UpstreamUnavailable",
    "open_input",
]


class P13nError(Exception):
    """Base of every error p13n raises deliberately."""

    exit_code = 1


class ConfigError(P13nError):
    """Configuration (file, environment, CLI argument) is invalid or unusable."""

    exit_code = 2


class InputError(P13nError):
    """An input file, record or request cannot be used as given."""

    exit_code = 2


class BadRequest(InputError):
    """A request field is invalid. ``param``: the field's path (``candidates[2].item_id``) or None for the
    whole body; ``code``: a short machine-readable reason (``invalid_field``, ``invalid_json``, …)."""

    def __init__(self, message: str, *, param: str | None = None, code: str = "invalid_field") -> None:
        super().__init__(message)
        self.param = param
        self.code = code

    def __reduce__(self):  # keep param and code across processes (Ray handles pickle exceptions)
        return (_bad_request, (str(self), self.param, self.code))


def _bad_request(message: str, param: str | None, code: str) -> BadRequest:
    return BadRequest(message, param=param, code=code)


class ServiceError(P13nError):
    """A server p13n depends on (Redis, Kafka, a subprocess) failed or did not answer."""

    exit_code = 1
    reason = "service_unavailable"


class StoreUnavailable(ServiceError):
    """Redis refused, timed out or failed a command."""

    reason = "store_unavailable"


class BrokerUnavailable(ServiceError):
    """Kafka could not be reached or did not acknowledge in time."""

    reason = "broker_unavailable"


class UpstreamUnavailable(ServiceError):
    """The upstream LLM could not be reached."""

    reason = "upstream_unavailable"


def open_input(path: str | Path, error: type[P13nError] = InputError, what: str = "input file") -> BinaryIO:
    """``path`` opened for reading bytes; any reason it cannot be (missing, a directory, no permission, …)
    raises ``error`` (:class:`InputError` by default, exit 2) in one line naming the path — the boundary where
    the OS's errors about a file a user named become p13n's.

    >>> open_input("/")
    Traceback (most recent call last):
    p13n.errors.InputError: input file / is a directory, not a file
    >>> open_input("/nonexistent/x.jsonl")
    Traceback (most recent call last):
    p13n.errors.InputError: no such file: /nonexistent/x.jsonl
    """
    try:
        return Path(path).open("rb")
    except FileNotFoundError:
        raise error(f"no such file: {path}") from None
    except IsADirectoryError:
        raise error(f"{what} {path} is a directory, not a file") from None
    except PermissionError:
        raise error(f"{what} {path} cannot be read: permission denied") from None
    except OSError as exc:
        raise error(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
