"""One configuration object for every p13n process.

The package, by concept: :mod:`~p13n.config.sections` (one struct per ``[section]``: fields, bounds, defaults,
meanings), :mod:`~p13n.config.model` (:class:`Config`, checks across sections), :mod:`~p13n.config.sources`
(defaults, TOML file, environment, overrides merged) and :mod:`~p13n.config.reference` (the Markdown reference).
Import from ``p13n.config``; the submodules are its layout, not its interface.

Sources, later ones winning:

1. the defaults of :mod:`~p13n.config.sections`;
2. a ``defaults`` layer the caller adds: the CLI adds the embedded dev stack's addresses when one
   is running under ``dev.state_dir`` (so ``p13n dev up`` followed by ``p13n produce`` just works);
   this module never looks for a dev stack itself (it is the ground floor, the dev stack a tool);
3. a TOML file: ``--config FILE`` or ``P13N_CONFIG``;
4. environment variables ``P13N_<SECTION>_<FIELD>``, e.g. ``P13N_REDIS_URL``,
   ``P13N_KAFKA_BOOTSTRAP``, ``P13N_STATE_HORIZONS='{"session": 3600}'``
   (maps and lists are JSON).

Every field is validated when the configuration is loaded; an invalid value
raises :class:`~p13n.errors.ConfigError` naming the field.

>>> cfg = Config.from_sources(env={"P13N_REDIS_URL": "redis://10.0.0.5:6380/1"})
>>> cfg.redis.url
'redis://10.0.0.5:6380/1'
>>> Config.from_sources(env={}, defaults={"kafka": {"bootstrap": "127.0.0.1:9"}}).kafka.bootstrap
'127.0.0.1:9'
>>> Config.from_sources(env={"P13N_KAFKA_PARTITIONS": "zero"})
Traceback (most recent call last):
...
p13n.errors.ConfigError: invalid configuration: Expected `int`, got `str` - at `$.kafka.partitions`
"""

from p13n.config.model import Config, load_config
from p13n.config.reference import config_reference_markdown
from p13n.config.sections import (
    FIXED_FEATURES,
    MAX_EVENT_WEIGHT,
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
from p13n.vocabulary import EVENT_TYPES, ITEM_EVENT_TYPES  # re-exported: older callers import them from here

__all__ = [
    "EVENT_TYPES",
    "ITEM_EVENT_TYPES",
    "Config",
    "RedisConfig",
    "KafkaConfig",
    "StateConfig",
    "ConsumerConfig",
    "EncoderConfig",
    "ScoringConfig",
    "FIXED_FEATURES",
    "MAX_EVENT_WEIGHT",
    "ServingConfig",
    "MemoryConfig",
    "DevConfig",
    "load_config",
    "config_reference_markdown",
]
