"""A stream of ``message`` events through the processing stage (``p13n bench ingest``, issue 14).

Unlike the benchmark stream (item events whose vectors are known), every message carries new text:
the consumer embeds it (the consumer's ONNX encoder variant, as ``p13n consume`` loads it) and folds it
into the user's text embedding and conversational memories. So this figure is bound by the encoder,
and is reported apart from the item-event figure. The messages are turns of generated conversations
(:mod:`features.datasets.conversations`) made distinct (a turn index appended), as the memory benchmark does.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict

from p13n.config import Config

__all__ = ["bench_messages"]


def bench_messages(config: Config, client, *, users: int = 20, messages_per_user: int = 100, batch: int = 500) -> dict:
    """Events/s of the processing stage over ``users × messages_per_user`` message events (wall clock, encoder
    and Redis included), with the time per stage; ``{"records", "applied", "events_per_s", "stage_seconds", …}``."""
    from benchmarks.ingest import _cleanup, _isolated
    from features.datasets.conversations import generate_conversation
    from features.encoder.runtime import Encoder
    from features.evaluation.memory_recall import conversation_events
    from features.redis.store import RedisStore
    from stream.processing import BatchProcessor, records_from_lines

    cfg = _isolated(config, "msg")
    encoder = Encoder(cfg.encoder.directory, variant=cfg.encoder.consumer_variant, threads=cfg.encoder.threads,
                      max_length=cfg.encoder.max_length)  # fmt: skip
    lines: list[bytes] = []
    for u in range(users):
        conv = generate_conversation(seed=u, sessions=max(2, messages_per_user // 30 + 1), turns_per_session=30)
        for n, turn in enumerate(conversation_events(conv, f"talker-{u:03d}")[:messages_per_user]):
            lines.append(json.dumps({"event_id": f"m{u}-{turn.event_id}", "user_id": turn.user_id, "type": "message",
                                     "timestamp": turn.ts_ms, "session_id": turn.session_id,
                                     "text": f"{turn.text} ({n})"}).encode())  # fmt: skip
    store = RedisStore(client, cfg, dim=encoder.dimension)
    try:
        processor = BatchProcessor(store, cfg, encoder.encode)
        records = records_from_lines(lines, cfg.kafka.events_topic)
        records.sort(key=lambda r: (r.offset, r.partition))
        stages: dict[str, float] = defaultdict(float)
        applied = 0
        start = time.perf_counter()
        for i in range(0, len(records), batch):
            outcome = processor.settle(processor.submit(records[i : i + batch]))
            applied += outcome.applied
            for stage, seconds in outcome.stage_s.items():
                stages[stage] += seconds
        elapsed = time.perf_counter() - start
    finally:
        _cleanup(client, cfg.redis.prefix)
    return {"records": len(records), "applied": applied, "users": users, "batch": batch,
            "encoder_variant": cfg.encoder.consumer_variant, "seconds": round(elapsed, 3),
            "events_per_s": round(len(records) / elapsed),
            "stage_seconds": {k: round(v, 3) for k, v in sorted(stages.items(), key=lambda kv: -kv[1])}}  # fmt: skip
