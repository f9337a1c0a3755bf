"""The whole configuration (:class:`Config`, one field per section) and how it is built: sources layered by
:mod:`p13n.config.sources`, converted and validated by msgspec, then checked across sections and for
non-finite numbers.

>>> Config.from_sources(env={}, overrides={"state": {"horizons": {"day": 86400.0}}}).scoring.weights["sim_day"]
1.0
>>> Config.from_sources(env={"P13N_SERVING_SCORE_BUDGET_MS": "inf"})
Traceback (most recent call last):
...
p13n.errors.ConfigError: invalid configuration: serving.score_budget_ms must be a finite number, got inf
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from p13n.config.sections import (
    FIXED_FEATURES,
    ConsumerConfig,
    DevConfig,
    EncoderConfig,
    KafkaConfig,
    MemoryConfig,
    RedisConfig,
    ScoringConfig,
    ServingConfig,
    StateConfig,
)
from p13n.config.sources import layered
from p13n.errors import ConfigError

__all__ = ["Config", "load_config"]


class Config(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """All of p13n's configuration. Build it with :meth:`from_sources` or :func:`load_config`."""

    redis: RedisConfig = msgspec.field(default_factory=RedisConfig)
    kafka: KafkaConfig = msgspec.field(default_factory=KafkaConfig)
    consumer: ConsumerConfig = msgspec.field(default_factory=ConsumerConfig)
    state: StateConfig = msgspec.field(default_factory=StateConfig)
    scoring: ScoringConfig = msgspec.field(default_factory=ScoringConfig)
    encoder: EncoderConfig = msgspec.field(default_factory=EncoderConfig)
    serving: ServingConfig = msgspec.field(default_factory=ServingConfig)
    memory: MemoryConfig = msgspec.field(default_factory=MemoryConfig)
    dev: DevConfig = msgspec.field(default_factory=DevConfig)

    @classmethod
    def from_sources(
        cls,
        *,
        file: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
        defaults: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Config:
        """Layer the built-in defaults, ``defaults`` (e.g. a running dev stack's addresses, added by the CLI),
        a TOML file, ``P13N_*`` variables and ``overrides``, later ones winning (:func:`p13n.config.sources.layered`);
        ``env`` defaults to the process environment. Raises :class:`ConfigError` naming the field at fault."""
        env = os.environ if env is None else env
        merged = layered(sections=_SECTIONS, file=file, env=env, overrides=overrides, defaults=defaults)
        try:
            config = msgspec.convert(merged, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"invalid configuration: {exc}") from exc
        _check_finite(config)
        return config

    def __post_init__(self) -> None:
        known = {f"sim_{h}" for h in self.state.horizons} | set(FIXED_FEATURES)
        if self.scoring.weights == ScoringConfig().weights and not known >= set(self.scoring.weights):
            # default weights with custom horizons: weigh every horizon's similarity equally
            fixed = {k: v for k, v in self.scoring.weights.items() if k in FIXED_FEATURES}
            self.scoring.weights = {**{f"sim_{h}": 1.0 for h in self.state.horizons}, **fixed}
        unknown = sorted(set(self.scoring.weights) - known)
        if unknown:
            raise ValueError(f"scoring.weights: unknown feature {unknown[0]!r} (known: {', '.join(sorted(known))})")

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (for `p13n config show` and subprocess hand-off)."""
        return msgspec.to_builtins(self)


def _check_finite(config: Config) -> None:
    """Raise :class:`ConfigError` for a setting (or a value of a map setting) that is ``inf`` or ``nan``: TOML and
    the float parser accept both, and no budget, bound or weight of p13n means anything infinite."""
    for section in msgspec.structs.fields(Config):
        values = getattr(config, section.name)
        for field in msgspec.structs.fields(values):
            value = getattr(values, field.name)
            items = value.items() if isinstance(value, dict) else [(None, value)]
            for key, item in items:
                if isinstance(item, float) and not math.isfinite(item):
                    name = f"{section.name}.{field.name}" + (f".{key}" if key is not None else "")
                    raise ConfigError(f"invalid configuration: {name} must be a finite number, got {item}")


def load_config(file: str | Path | None = None, **overrides: Mapping[str, Any]) -> Config:
    """Load the configuration from the process environment (and ``file``)."""
    return Config.from_sources(file=file, overrides=overrides or None)


#: The section names, in the order of :class:`Config`'s fields (the environment variables' prefixes).
_SECTIONS = tuple(Config.__annotations__)
