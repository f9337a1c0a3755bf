"""Benchmarks are not tests; these only keep them working and their numbers sane (short runs)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO, clean_env


def test_bench_features_quick_writes_sane_json(tmp_path, config):
    env = clean_env(P13N_REDIS_URL=config.redis.url, P13N_REDIS_PREFIX=config.redis.prefix)
    proc = subprocess.run([sys.executable, "-m", "p13n.cli", "bench", "features", "--quick", "--out", str(tmp_path),
                           "--no-results-md"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "features.json").read_text())
    assert result["machine"]["cores"] >= 1
    assert result["fold"]["events_per_s"] > 0
    assert 1000 < result["redis_memory"]["bytes_mean"] <= result["redis_memory"]["bytes_max"]
    for name in ("torch", "onnx_fp32", "onnx_int8"):
        latency = result["encoders"][name]["single_query_ms"]
        assert 0 < latency["p50"] <= latency["p99"]
        assert result["encoders"][name]["batch64_texts_per_s"] > 0
    assert set(result["targets"]) == {"fold_events_per_s >= 50000", "redis_bytes_per_user <= 8192",
                                      "int8_p50_speedup_vs_torch >= 4"}  # fmt: skip
    assert "Core micro-benchmarks" in proc.stdout


def test_bench_ingest_quick_writes_sane_json(tmp_path, config):
    env = clean_env(P13N_REDIS_URL=config.redis.url, P13N_KAFKA_BOOTSTRAP=config.kafka.bootstrap)
    proc = subprocess.run([sys.executable, "-m", "p13n.cli", "bench", "ingest", "--quick", "--out", str(tmp_path),
                           "--no-results-md"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "ingest.json").read_text())
    processing = result["processing"]
    assert processing["events_per_s"] > 0 and processing["applied"] > 0
    assert result["processing_sweep"][0] == processing and processing["events_per_user_write"] >= 1
    assert processing["redis_cpu_seconds"] > 0 and processing["events_per_redis_cpu_s"] > 0  # the server said
    assert result["broker"]["received"] == result["broker"]["records"] > 0
    messages = result["messages"]  # quick: 2 users x 20 distinct turns, each embedded and remembered
    assert messages["records"] == messages["applied"] == 40 and messages["events_per_s"] > 0
    assert messages["stage_seconds"]["encode_text"] > 0
    e2e = result["end_to_end"]
    assert e2e["applied"] == e2e["sent"] > 0
    f = e2e["freshness_ms"]
    assert 0 <= f["p50"] <= f["p90"] <= f["p99"]
    assert "Ingestion" in proc.stdout and "Redis ceiling (one core)" in proc.stdout
    assert "processing stage, message events" in proc.stdout


def _tiny_movielens(directory) -> None:
    """A MovieLens-format directory: 150 movies, 6 users with 10 ratings each, the latest one liked (5.0)."""
    directory.mkdir()
    movies = ["movieId,title,genres"] + [f"{m},Movie {m} ({1990 + m % 30}),Drama|Comedy" for m in range(1, 151)]
    ratings = ["userId,movieId,rating,timestamp"]
    for user in range(1, 7):
        for k in range(10):
            ratings.append(f"{user},{user * 11 + k},{5.0 if k == 9 else 3.0},{1_600_000_000 + user * 1000 + k}")
    (directory / "movies.csv").write_text("\n".join(movies) + "\n")
    (directory / "ratings.csv").write_text("\n".join(ratings) + "\n")


def _assert_cell(row: dict) -> None:
    lat = row["latency_ms"]
    assert row["ok"] > 0 and not row["errors"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
    stages = row["server_stages_ms"]
    assert "total" in stages and len(stages) > 1  # the answers' timings_ms, per stage
    assert all(0 <= v["p50"] <= v["p99"] for v in stages.values())
    assert row["send_lag_ms"]["p50"] <= row["send_lag_ms"]["p99"]
    assert 0 <= row["generator_cpu_share"] <= 2


def test_bench_load_quick_against_a_dev_stack(tmp_path):
    state = tmp_path / "state"
    env = clean_env(P13N_DEV_STATE_DIR=str(state))
    _tiny_movielens(tmp_path / "ml")
    cli = [sys.executable, "-m", "p13n.cli"]
    up = subprocess.run([*cli, "dev", "up"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    try:
        assert up.returncode == 0, up.stderr
        proc = subprocess.run([*cli, "bench", "load", "--quick", "--users", "20", "--out", str(tmp_path / "out"),
                               "--no-results-md"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        real = subprocess.run([*cli, "bench", "load", "--quick", "--users", "20", "--out", str(tmp_path / "out"),
                               "--no-results-md", "--steps", "arrivals,bursts,locust", "--burst-sizes", "4,16",
                               "--shapes", "movielens", "--movielens", str(tmp_path / "ml"), "--arrivals", "uniform",
                               "--write-bodies", str(tmp_path / "bodies.jsonl")],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
        assert real.returncode == 0, real.stderr
    finally:
        subprocess.run([*cli, "dev", "down"], cwd=REPO, env=env, capture_output=True, timeout=120)
    result = json.loads((tmp_path / "out" / "load.json").read_text())
    assert result["arrivals"] == "poisson" and result["shapes"]["name"] == "synthetic"
    for section in ("score", "rewrite", "floor"):
        for row in result[section].values():
            lat = row["latency_ms"]
            assert row["ok"] > 0 and row["achieved_rate"] > 0 and row["arrivals"] == "poisson"
            assert lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
    assert 0 <= result["budget"]["measured"]["within_budget_plus_5ms"] <= 1
    assert (tmp_path / "out" / "plots" / "load_latency_vs_rate.png").stat().st_size > 1000
    # quick steps run 50 score and 25 rewrite req/s: only the targets measured at those are reported
    assert set(result["targets"]) == {"budget 20 ms: >= 99.9% within 25 ms, encoder saturated",
                                      "bursts of 32: p99 of the time to the last answer <= 50 ms",
                                      "memory stage p99 <= 5 ms, 500 memories per user"}  # fmt: skip
    memories = result["memories"]  # quick: 2 users holding 100 memories each, rewrites at 50 req/s
    assert (memories["users"], memories["memories_per_user"], memories["rate"]) == (2, 100, 50)
    assert memories["ok"] > 0 and memories["errors"] == {}
    assert memories["server_stages_ms"]["memory"]["p50"] <= memories["server_stages_ms"]["memory"]["p99"]
    for process in ("uniform", "poisson"):
        _assert_cell(result["arrivals_compare"][process]["50"])
    assert set(result["bursts"]) == {"8", "32", "128"}
    assert len(result["load_average"]["before"]) == 3

    ml = json.loads((tmp_path / "out" / "load-movielens-arrivals-bursts-locust.json").read_text())
    # 6 users, each scored on its held-out item + 100 items it never rated (140 unrated of 150)
    assert ml["shapes"] == {"name": "movielens", "users": 6, "catalog_items": 150, "events": 54,
                            "candidates_per_request": {"min": 101, "max": 101}}  # fmt: skip
    assert ml["steps"] == ["arrivals", "bursts", "locust"] and ml["score"] == {} and "budget" not in ml
    assert ml["command"].startswith("p13n bench load --quick")
    for row in (*ml["arrivals_compare"]["uniform"].values(), *ml["arrivals_compare"]["poisson"].values()):
        _assert_cell(row)
    for size, row in ml["bursts"].items():
        assert row["size"] == int(size) and row["bursts"] == 5 and row["ok"] == 5 * int(size)
        assert row["complete_bursts"] == 5
        assert row["burst_ms"]["p50"] <= row["burst_ms"]["p99"] <= row["burst_ms"]["max"]
        assert row["latency_ms"]["p99"] <= row["burst_ms"]["max"]  # a burst ends with its last answer
        assert "total" in row["server_stages_ms"]
    locust = ml["locust"]  # Locust (bench extra) on the same cell: 50 users x 1 req/s for 4 s
    assert locust["users"] == 50 and locust["requests"] > 0 and locust["failures"] == 0
    assert 0 < locust["latency_ms"]["p50"] <= locust["latency_ms"]["p99"]  # Locust rounds to 2 significant digits
    bodies = [json.loads(line) for line in (tmp_path / "bodies.jsonl").read_text().splitlines()]
    assert len(bodies) == 6 and all(len(b["candidates"]) == 101 for b in bodies)
    assert all(len({c["item_id"] for c in b["candidates"]}) == 101 for b in bodies)


def test_bench_encoder_and_quality_quick(tmp_path):
    for name in ("encoder", "quality"):
        proc = subprocess.run([sys.executable, "-m", "p13n.cli", "bench", name, "--quick", "--out", str(tmp_path),
                               "--no-results-md"], cwd=REPO, env=clean_env(), capture_output=True, text=True,
                              timeout=600)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    encoder = json.loads((tmp_path / "encoder.json").read_text())
    for variant in ("fp32", "int8", "int8-static"):
        assert 0.9 < encoder["parity"][variant]["min"] <= encoder["parity"][variant]["mean"] <= 1.0001
    catalog = encoder["catalog"]
    assert catalog["items"] == 300 and catalog["dataset"].endswith("movielens-tiny")
    assert all(v["items_per_s"] > 0 for v in catalog["variants"].values())
    assert [v["batch_independent"] for v in catalog["variants"].values()] == [True, True, False, True, True]
    for key in ("serve_batching", "local_batching"):
        batching = encoder[key]
        assert batching["batched"]["texts_per_s"] > 0 and batching["unbatched"]["texts_per_s"] > 0
        assert batching["batched"]["latency_ms_p50"] <= batching["batched"]["latency_ms_p99"]
    quality = json.loads((tmp_path / "quality.json").read_text())
    variants = quality["datasets"]["synthetic drift"]["variants"]
    assert set(variants) == {"popularity_count", "popularity", "cooccurrence", "mean", "session", "long", "covisitation",
                             "blend"}
    assert all(0 <= v["ndcg@10"] <= v["hr@10"] <= 1 for v in variants.values())
    assert (tmp_path / "plots" / "quality_synthetic_drift.png").exists()


def test_bench_memory_quick(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "p13n.cli", "bench", "memory", "--quick", "--out", str(tmp_path),
                           "--no-results-md"], cwd=REPO, env=clean_env(), capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "memory.json").read_text())
    retrievers = result["eval"]["retrievers"]
    assert set(retrievers) == {"fused", "bm25", "dense", "recent"}
    assert all(0 <= row["recall@256"] <= row["recall@512"] <= row["recall@1024"] <= 1 for row in retrievers.values())
    stage = result["stage"]
    assert stage["memories"] == 500 and 0 < stage["bytes_per_memory"] < 1024
    assert 0 < stage["ms"]["total"]["p50"] <= stage["ms"]["total"]["p99"]
    assert "## Conversational memory" in proc.stdout
