"""A running dev stack's addresses are a source the command line adds, not one configuration reads itself.

Before: every process that loaded configuration (the consumer, each Serve replica) read
``<dev.state_dir>/stack.json``; now only the CLI does, below the file and the environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from p13n.config import Config
from p13n.devstack import DevStack, ServiceRecord, config_defaults
from tests.conftest import REPO, clean_env

STACK_REDIS = "redis://127.0.0.1:1/0"
STACK_KAFKA = "127.0.0.1:2"


def _running_stack(state_dir: Path) -> Path:
    """A stack record whose services are this (live) process, so the records count as running."""
    records = [ServiceRecord(name=name, pid=os.getpid(), port=port, url=url, argv=[sys.executable], log="")
               for name, port, url in (("redis", 1, STACK_REDIS), ("kafka", 2, STACK_KAFKA))]  # fmt: skip
    DevStack(state_dir)._write(records)
    return state_dir


def test_configuration_alone_does_not_read_the_dev_stack(tmp_path):
    state = _running_stack(tmp_path / "state")
    assert config_defaults(state) == {"redis": {"url": STACK_REDIS}, "kafka": {"bootstrap": STACK_KAFKA}}
    cfg = Config.from_sources(env={"P13N_DEV_STATE_DIR": str(state)})
    assert (cfg.redis.url, cfg.kafka.bootstrap) == (Config().redis.url, Config().kafka.bootstrap)


def test_the_cli_adds_the_dev_stack_below_the_environment(tmp_path):
    state = _running_stack(tmp_path / "state")
    show = [sys.executable, "-m", "p13n.cli", "config", "show"]
    shown = subprocess.run(show, env=clean_env(P13N_DEV_STATE_DIR=str(state)), cwd=REPO, capture_output=True,
                           text=True, timeout=60)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    cfg = json.loads(shown.stdout)
    assert (cfg["redis"]["url"], cfg["kafka"]["bootstrap"]) == (STACK_REDIS, STACK_KAFKA)
    env = clean_env(P13N_DEV_STATE_DIR=str(state), P13N_REDIS_URL="redis://127.0.0.1:3/0")
    shown = subprocess.run(show, env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["redis"]["url"] == "redis://127.0.0.1:3/0"
