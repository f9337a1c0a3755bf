"""The configuration reference as a Markdown table, generated from the sections' types, defaults and
descriptions (`p13n config reference`; the README's section is this table, :mod:`p13n.readme`).

>>> config_reference_markdown().splitlines()[2].startswith("| `redis.url` | `P13N_REDIS_URL` | string |")
True
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from p13n.config.model import Config

__all__ = ["config_reference_markdown"]


def config_reference_markdown() -> str:
    """The configuration reference as a Markdown table (README's section is generated from it)."""
    lines = [
        "| setting | environment variable | type | default | meaning |",
        "|---|---|---|---|---|",
    ]
    info = msgspec.inspect.type_info(Config)
    for section_field in info.fields:
        section_info = section_field.type
        for field in section_info.cls and msgspec.inspect.type_info(section_info.cls).fields:
            typ = field.type
            description = ""
            type_name = _type_name(typ)
            if isinstance(typ, msgspec.inspect.Metadata):
                description = (typ.extra_json_schema or {}).get("description", "")
                type_name = _type_name(typ.type)
            if field.default is not msgspec.NODEFAULT:
                default = field.default
            else:
                default = field.default_factory()
            default_text = json.dumps(default) if not isinstance(default, str) else default
            lines.append(
                f"| `{section_field.name}.{field.name}` | `P13N_{section_field.name.upper()}_{field.name.upper()}` "
                f"| {type_name} | `{default_text or '(empty)'}` | {description} |"
            )
    return "\n".join(lines) + "\n"


def _type_name(typ: Any) -> str:
    if isinstance(typ, msgspec.inspect.Metadata):
        return _type_name(typ.type)
    if isinstance(typ, msgspec.inspect.DictType):
        return f"map {_type_name(typ.key_type)} → {_type_name(typ.value_type)}"
    return {
        msgspec.inspect.StrType: "string",
        msgspec.inspect.IntType: "int",
        msgspec.inspect.FloatType: "float",
        msgspec.inspect.BoolType: "bool",
    }.get(type(typ), type(typ).__name__)
