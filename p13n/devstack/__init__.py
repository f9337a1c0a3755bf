"""The embedded development stack (``p13n dev``) and the process tools the tests share with it.

By concept: :mod:`~p13n.devstack.stack` (:class:`DevStack`: up, down, status; the configuration layer of a
running stack), :mod:`~p13n.devstack.servers` (the Redis and Kafka servers: binaries, command lines, readiness
probes), :mod:`~p13n.devstack.processes` (start detached, poll with a deadline, stop a whole session) and
:mod:`~p13n.devstack.records` (the ``stack.json`` state file). Import from ``p13n.devstack``.
"""

from p13n.devstack.processes import iter_processes_of, session_members, spawn_detached, wait_until
from p13n.devstack.records import STACK_FILE, ServiceRecord
from p13n.devstack.servers import kafka_broker_binary, redis_argv, redis_server_binary
from p13n.devstack.stack import DEV_API_KEYS, DevStack, config_defaults, running_endpoints
from p13n.kafka_client import ensure_topics  # re-exported: tests import it from here
from p13n.ports import free_port  # re-exported: tests and tools import it from here

__all__ = [
    "ServiceRecord",
    "DevStack",
    "running_endpoints",
    "config_defaults",
    "free_port",
    "wait_until",
    "spawn_detached",
    "session_members",
    "iter_processes_of",
    "redis_server_binary",
    "redis_argv",
    "kafka_broker_binary",
    "ensure_topics",
    "DEV_API_KEYS",
    "STACK_FILE",
]
