"""The Ray Serve application: Ingress (HTTP) → Personalizer (Redis, scorer, prompt) and Encoder (ONNX).

Deployments are composed by passing handles into constructors. ``serving/serve_config.yaml``
points at :func:`build_app`; it is the one source for ``p13n serve`` and the RayService in
``k8s/``. Replicas read their configuration from ``P13N_*`` environment variables (and
``P13N_CONFIG``) when they start; nothing connects at import.
"""

from __future__ import annotations

import gc
import json
from typing import Any

from ray import serve
from ray.exceptions import RayTaskError
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import Response

from features.encoder.runtime import Encoder
from features.encoder.export import METADATA_FILE
from features.core.personalize import CandidateIn
from features.core.prompt import token_counter
from p13n.config import Config, load_config
from p13n.errors import P13nError
from serving.encoder_deployment import EncoderDeployment
from serving.ingress import Api
from serving.local_encoder import BatchingEncoder, EncoderProcess
from serving.metrics import ServingMetrics
from serving.personalizer import Personalizer
from serving.responses import RewriteAnswer, ScoreAnswer, UserProfile

__all__ = ["build_app", "Ingress", "PersonalizerDeployment", "EncoderDeployment"]


def _personalizer(config: Config, encoder: DeploymentHandle, metrics: ServingMetrics) -> Personalizer:
    meta = json.loads((config.encoder.directory / METADATA_FILE).read_text())
    tokenizer = config.serving.prompt_tokenizer or str(config.encoder.directory / meta.get("tokenizer", "tokenizer.json"))
    if config.serving.query_encoder == "process":
        batcher = BatchingEncoder.in_process(EncoderProcess(config.encoder, nice=config.serving.encoder_nice),
                                             max_queue_ms=config.serving.encoder_max_queue_ms,
                                             on_batch=metrics.observe_encoder_batch)
        encode = batcher.encode
    elif config.serving.query_encoder == "local":
        local = Encoder(config.encoder.directory, variant=config.encoder.variant, threads=config.encoder.threads,
                        max_length=config.encoder.max_length)  # fmt: skip
        local.encode(["warm-up"])
        encode = BatchingEncoder.in_thread(local, nice=config.serving.encoder_nice,
                                           max_queue_ms=config.serving.encoder_max_queue_ms,
                                           on_batch=metrics.observe_encoder_batch).encode
    else:

        async def encode(text: str, remaining_ms: float):
            return await encoder.encode.remote(text)

    personalizer = Personalizer(config, encode, token_counter(tokenizer, cache_size=100_000), dim=int(meta["dimension"]))
    gc.freeze()  # everything loaded so far lives forever: keep it out of the collector's scans (tail latency)
    return personalizer


# Per-request access logs cost ~3% of a replica's CPU at 200 req/s (py-spy); metrics cover the same ground.
QUIET = {"enable_access_log": False, "log_level": "WARNING"}


@serve.deployment(name="Personalizer", max_ongoing_requests=256, ray_actor_options={"num_cpus": 0}, logging_config=QUIET)
class PersonalizerDeployment:
    """The Personalizer as its own deployment (``serving.personalizer = "deployment"``)."""

    def __init__(self, encoder: DeploymentHandle) -> None:
        self.core = _personalizer(load_config(), encoder, ServingMetrics())

    async def score(self, tenant: str, user_id: str, candidates: list[CandidateIn], **kwargs: Any) -> ScoreAnswer:
        return await self.core.score(tenant, user_id, candidates, **kwargs)

    async def rewrite(self, tenant: str, user_id: str, messages: list[dict], **kwargs: Any) -> RewriteAnswer:
        return await self.core.rewrite(tenant, user_id, messages, **kwargs)

    async def profile(self, tenant: str, user_id: str) -> UserProfile | None:
        return await self.core.profile(tenant, user_id)

    async def delete(self, tenant: str, user_id: str) -> bool:
        return await self.core.delete(tenant, user_id)

    async def ping(self) -> bool:
        return await self.core.ping()


async def _unwrapped(response: Any) -> Any:
    """Await a handle call; an error p13n raised on purpose comes back as itself (Ray wraps it in a
    ``RayTaskError`` whose message is the remote traceback)."""
    try:
        return await response
    except RayTaskError as exc:
        if isinstance(exc.cause, P13nError):
            raise exc.cause from None
        raise


class _Remote:
    """Calls a PersonalizerDeployment through its handle with the Personalizer's signatures."""

    def __init__(self, handle: DeploymentHandle) -> None:
        self.handle = handle

    async def score(self, *args: Any, **kwargs: Any) -> ScoreAnswer:
        return await self.handle.score.remote(*args, **kwargs)

    async def rewrite(self, *args: Any, **kwargs: Any) -> RewriteAnswer:
        return await self.handle.rewrite.remote(*args, **kwargs)

    async def profile(self, *args: Any) -> UserProfile | None:
        return await _unwrapped(self.handle.profile.remote(*args))

    async def delete(self, *args: Any) -> bool:
        return await _unwrapped(self.handle.delete.remote(*args))

    async def ping(self) -> bool:
        return await self.handle.ping.remote()


@serve.deployment(name="Ingress", max_ongoing_requests=512, ray_actor_options={"num_cpus": 0}, logging_config=QUIET)
class Ingress:
    def __init__(self, encoder: DeploymentHandle, personalizer: DeploymentHandle | None = None) -> None:
        config = load_config()
        metrics = ServingMetrics()
        core = _Remote(personalizer) if personalizer is not None else _personalizer(config, encoder, metrics)
        self.api = Api(config, core, metrics)

    async def __call__(self, request: Request) -> Response:
        return await self.api.handle(request)


DEPLOYMENT_OPTIONS = ("num_replicas", "max_ongoing_requests", "user_config", "ray_actor_options",
                      "autoscaling_config", "max_queued_requests")  # fmt: skip


def build_app(args: dict[str, Any] | None = None, deployments: list[dict] | None = None):
    """Application builder for the Serve config (``import_path: serving.app:build_app``).

    ``deployments`` (the config file's per-deployment settings) is applied here when the app is started by
    ``p13n serve``; under KubeRay, Serve applies the same list itself."""
    config = load_config()
    mode = (args or {}).get("personalizer", config.serving.personalizer)
    options = {d["name"]: {k: v for k, v in d.items() if k in DEPLOYMENT_OPTIONS} for d in deployments or []}

    def configured(deployment):
        return deployment.options(**options[deployment.name]) if deployment.name in options else deployment

    encoder = configured(EncoderDeployment).bind()
    if mode == "deployment":
        return configured(Ingress).bind(encoder, configured(PersonalizerDeployment).bind(encoder))
    return configured(Ingress).bind(encoder)
