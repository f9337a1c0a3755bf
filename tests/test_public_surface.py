"""Every public module says what it exports (``__all__``), and the names it lists exist.

A module's ``__all__`` is its chosen surface (httpx's habit): the names others may import, the ones a
refactor must keep. This checks, over every module of p13n's packages, that there is one, that each listed
name resolves and is listed once; and it pins the surface of the packages that were split into submodules
(``p13n.config``, ``p13n.devstack``), whose callers import from the package.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

PACKAGES = ["p13n", "features", "stream", "serving", "benchmarks"]
#: Modules without ``__all__``, and why.
EXEMPT = {
    "benchmarks.locustfile": "a Locust script: Locust finds its user classes itself, and importing it patches "
                             "the standard library with gevent",
    "benchmarks.conftest": "pytest's hook file",
}


def _public_modules() -> list[str]:
    names = []
    for package in PACKAGES:
        module = importlib.import_module(package)
        names.append(package)
        for info in pkgutil.walk_packages(module.__path__, prefix=f"{package}."):
            if not any(part.startswith("_") for part in info.name.split(".")) and info.name not in EXEMPT:
                names.append(info.name)
    return sorted(names)


MODULES = [name for name in _public_modules() if name not in PACKAGES]  # the top packages are namespaces only


def test_the_walk_finds_the_modules():
    assert {"p13n.config", "p13n.config.sections", "p13n.devstack.stack", "features.core.decay", "serving.personalizer",
            "stream.consumer"} <= set(MODULES)  # fmt: skip


@pytest.mark.parametrize("name", MODULES)
def test_a_public_module_lists_its_exports_and_they_exist(name):
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert len(exported) == len(set(exported)), f"{name}.__all__ lists a name twice"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it does not define: {missing}"


def test_the_split_configuration_package_keeps_its_surface():
    import p13n.config

    assert sorted(p13n.config.__all__) == sorted([
        "EVENT_TYPES", "ITEM_EVENT_TYPES", "Config", "RedisConfig", "KafkaConfig", "StateConfig", "ConsumerConfig",
        "EncoderConfig", "ScoringConfig", "FIXED_FEATURES", "MAX_EVENT_WEIGHT", "ServingConfig", "MemoryConfig",
        "DevConfig", "load_config", "config_reference_markdown",
    ])  # fmt: skip


def test_the_split_dev_stack_package_keeps_its_surface():
    import p13n.devstack

    assert sorted(p13n.devstack.__all__) == sorted([
        "ServiceRecord", "DevStack", "running_endpoints", "config_defaults", "free_port", "wait_until",
        "spawn_detached", "session_members", "iter_processes_of", "redis_server_binary", "redis_argv",
        "kafka_broker_binary", "ensure_topics", "DEV_API_KEYS", "STACK_FILE",
    ])  # fmt: skip
