"""Where configuration comes from: a ``defaults`` layer, a TOML file, ``P13N_<SECTION>_<FIELD>`` environment
variables and explicit overrides, merged section by section into one plain mapping (later sources win).
Types are not checked here; :meth:`p13n.config.model.Config.from_sources` converts the result.

>>> layered(sections=("redis", "kafka"), env={"P13N_REDIS_URL": "redis://h:1/0", "HOME": "/root"},
...         defaults={"redis": {"url": "redis://d:1/0", "cluster": True}})
{'redis': {'url': 'redis://h:1/0', 'cluster': True}}
>>> layered(sections=("redis",), env={"P13N_REDLOCK_URL": "x"})
Traceback (most recent call last):
...
p13n.errors.ConfigError: unknown environment variable P13N_REDLOCK_URL: no configuration section 'redlock'
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from p13n.errors import ConfigError, open_input

__all__ = ["layered"]


def layered(
    *,
    sections: Collection[str],
    file: str | Path | None = None,
    env: Mapping[str, str],
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    defaults: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Merge ``defaults``, the TOML ``file`` (or ``env["P13N_CONFIG"]``), the ``P13N_*`` variables of ``env`` and
    ``overrides``, later ones winning field by field: ``{section: {field: value}}``.

    Raises :class:`ConfigError` for a missing or malformed file, an environment variable naming no section of
    ``sections``, a value that is not valid JSON where JSON is expected, or a section that is not a table."""
    layers: list[dict[str, dict[str, Any]]] = [{k: dict(v) for k, v in (defaults or {}).items()}]
    file = file or env.get("P13N_CONFIG") or None
    if file is not None:
        layers.append(_read_toml(Path(file)))
    layers.append(_env_layer(env, sections))
    if overrides:
        layers.append({k: dict(v) for k, v in overrides.items()})
    merged: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for section, values in layer.items():
            if not isinstance(values, dict):
                raise ConfigError(f"invalid configuration: `{section}` must be a table of settings")
            merged.setdefault(section, {}).update(values)
    return merged


def _read_toml(path: Path) -> dict[str, dict[str, Any]]:
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        with open_input(path, ConfigError, "config file") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: not UTF-8 text (byte {exc.start})") from exc


#: ``P13N_*`` variables that are not ``<section>_<field>`` settings: the file to read, and the recovery
#: tests' crash point (``stream.crash``, read by ``p13n consume`` itself).
_NOT_SETTINGS = frozenset({"P13N_CONFIG", "P13N_CRASH_AT"})


def _env_layer(env: Mapping[str, str], sections: Collection[str]) -> dict[str, dict[str, Any]]:
    """Turn ``P13N_SECTION_FIELD=value`` variables into a nested layer."""
    layer: dict[str, dict[str, Any]] = {}
    for name, raw in env.items():
        if not name.startswith("P13N_") or name in _NOT_SETTINGS:
            continue
        rest = name[len("P13N_") :].lower()
        section = next((s for s in sections if rest.startswith(s + "_")), None)
        if section is None:
            raise ConfigError(f"unknown environment variable {name}: no configuration section {rest.split('_')[0]!r}")
        field = rest[len(section) + 1 :]
        layer.setdefault(section, {})[field] = _parse_env_value(name, raw)
    return layer


def _parse_env_value(name: str, raw: str) -> Any:
    """Maps and lists arrive as JSON; everything else as the string it is (msgspec converts it).

    >>> _parse_env_value("P13N_SERVING_API_KEYS", '{"k": "shop"}'), _parse_env_value("P13N_SERVING_UPSTREAM_API_KEY", "")
    ({'k': 'shop'}, '')
    """
    stripped = raw.strip()
    if stripped and stripped[0] in "{[":
        try:
            return json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{name}: not valid JSON ({exc.msg} at char {exc.pos})") from exc
    return raw
