"""``p13n bench load``: open-loop latency of /v1/score and /v1/rewrite on a running stack.

Steps through arrival rates; beside every rate it measures the stack's floor in the same run — a
no-op request (``/healthz``) through the same HTTP proxy — so the ratio p13n/floor stays meaningful
when the shared machine is slower or faster than last time. A last step sends ``budget_ms=20``
rewrites while other clients saturate the encoder, and counts answers within budget + 5 ms.

Targets (serving issue): score p99 ≤ 15 ms at 200 req/s (100 known candidates); rewrite p99 ≤ 30 ms
at 100 req/s; with budget_ms=20, ≥ 99.9 % of answers within 25 ms while the encoder is saturated.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from benchmarks.loadgen import run_open_loop

__all__ = ["LoadTarget", "seed_users", "run_load", "load_markdown", "plot_load"]

QUESTIONS = ["Can you suggest a gift I would enjoy?", "What should I buy next?", "Anything new for my hobby?",
             "Which of my past purchases should I replace?", "Plan a weekend around what I like."]  # fmt: skip


class LoadTarget:
    """Where to send load: base URL, API key, the users and candidates to use."""

    def __init__(self, url: str, key: str, users: list[str], candidates: list[str]) -> None:
        self.url, self.key, self.users, self.candidates = url, key, users, candidates

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}"}


def seed_users(config, *, users: int = 200, tenant: str = "demo", timeout_s: float = 300) -> tuple[list[str], list[str]]:
    """Publish a synthetic stream for ``users`` users to Kafka and wait until the consumer folded it."""
    from p13n.seeding import publish, recent_synthetic, wait_folded

    run = int(time.time()) % 100_000
    data = recent_synthetic(users=users, tenant=tenant, user_prefix=f"load{run}-", seed=run % 997)
    publish(config, data)
    return wait_folded(config, data, timeout_s=timeout_s), [i["item_id"] for i in data.items]


def _score_body(target: LoadTarget, n_candidates: int = 100):
    def body(n: int) -> dict:
        start = (n * 7) % max(1, len(target.candidates) - n_candidates)
        return {"user_id": target.users[n % len(target.users)], "k": 10,
                "candidates": [{"item_id": i} for i in target.candidates[start : start + n_candidates]]}  # fmt: skip

    return body


def _rewrite_body(target: LoadTarget, budget_ms: float | None = None, unique: bool = True):
    def body(n: int) -> dict:
        question = QUESTIONS[n % len(QUESTIONS)] + (f" (request {n})" if unique else "")
        out = {"user_id": target.users[n % len(target.users)], "messages": [{"role": "user", "content": question}]}
        if budget_ms is not None:
            out["budget_ms"] = budget_ms
        return out

    return body


async def _step(target: LoadTarget, path: str, body, rate: float, seconds: float, budget_ms: float | None = None) -> dict:
    result = await run_open_loop(target.url + path, body, rate=rate, duration_s=seconds, headers=target.headers,
                                 budget_ms=budget_ms)  # fmt: skip
    return result.summary()


async def _budget_under_saturation(target: LoadTarget, seconds: float, rate: float, noise_rate: float) -> dict:
    """budget_ms=20 rewrites at ``rate`` while score requests at ``noise_rate``, each with 16 never-seen
    candidate texts and a 2 s budget, queue more encoding than the encoder can do (16 × rate texts/s)."""

    run = uuid.uuid4().hex[:8]  # never seen by this stack, even when the benchmark runs again

    def noise(n: int) -> dict:
        texts = [f"{QUESTIONS[k % len(QUESTIONS)]} — unseen item {run}-{n}-{k} " * 3 for k in range(16)]
        return {"user_id": target.users[n % len(target.users)], "budget_ms": 2000,
                "candidates": [{"item_id": f"unseen-{run}-{n}-{k}", "text": t} for k, t in enumerate(texts)]}  # fmt: skip

    measured, background = await asyncio.gather(
        run_open_loop(target.url + "/v1/rewrite", _rewrite_body(target, budget_ms=20.0), rate=rate, duration_s=seconds,
                      headers=target.headers, budget_ms=20.0),
        run_open_loop(target.url + "/v1/score", noise, rate=noise_rate, duration_s=seconds, headers=target.headers,
                      timeout_s=30),
    )  # fmt: skip
    return {"measured": measured.summary(), "saturating_load": background.summary()}


def run_load(target: LoadTarget, *, quick: bool = False, progress=lambda text: None) -> dict:
    seconds = 2.0 if quick else 10.0
    score_rates = [50] if quick else [50, 100, 200, 300]
    rewrite_rates = [25] if quick else [25, 50, 100, 150]

    async def main() -> dict:
        out: dict = {"seconds_per_step": seconds, "floor": {}, "score": {}, "rewrite": {}}
        # warm-up: connections, caches, the encoder's first batches
        await _step(target, "/v1/score", _score_body(target), 20, 1.0)
        await _step(target, "/v1/rewrite", _rewrite_body(target), 20, 1.0)
        for rate in sorted(set(score_rates + rewrite_rates)):
            progress(f"floor (no-op request) at {rate} req/s")
            out["floor"][str(rate)] = await _step(target, "/healthz", lambda n: {}, rate, seconds)
        for rate in score_rates:
            progress(f"/v1/score at {rate} req/s")
            out["score"][str(rate)] = await _step(target, "/v1/score", _score_body(target), rate, seconds)
        for rate in rewrite_rates:
            progress(f"/v1/rewrite at {rate} req/s")
            out["rewrite"][str(rate)] = await _step(target, "/v1/rewrite", _rewrite_body(target), rate, seconds)
        progress("budget_ms=20 rewrites while the encoder is saturated")
        out["budget"] = await _budget_under_saturation(target, seconds, rate=50 if quick else 100,
                                                       noise_rate=20 if quick else 40)  # fmt: skip
        return out

    result = asyncio.run(main())
    result["targets"] = _targets(result)
    return result


def _targets(result: dict) -> dict:
    def p99(section: str, rate: int):
        row = result[section].get(str(rate))
        return row["latency_ms"].get("p99") if row and row["ok"] else None

    score = p99("score", 200)
    rewrite = p99("rewrite", 100)
    within = result["budget"]["measured"].get("within_budget_plus_5ms")
    return {
        "score p99 <= 15 ms at 200 req/s": {"measured": score, "met": score is not None and score <= 15},
        "rewrite p99 <= 30 ms at 100 req/s": {"measured": rewrite, "met": rewrite is not None and rewrite <= 30},
        "budget 20 ms: >= 99.9% within 25 ms, encoder saturated": {"measured": within,
                                                                   "met": within is not None and within >= 0.999},
    }  # fmt: skip


def plot_load(result: dict, directory: Path) -> list[Path]:
    """latency-vs-rate and a latency histogram, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, ax = plt.subplots(figsize=(7, 4))
    for section, color in (("score", "tab:blue"), ("rewrite", "tab:orange"), ("floor", "tab:gray")):
        rates = sorted(int(r) for r in result[section])
        for pct, style in (("p50", "--"), ("p99", "-")):
            values = [result[section][str(r)]["latency_ms"].get(pct) for r in rates]
            ax.plot(rates, values, style, color=color, marker="o", label=f"{section} {pct}")
    ax.axhline(15, color="tab:blue", alpha=0.3, lw=1)
    ax.axhline(30, color="tab:orange", alpha=0.3, lw=1)
    ax.set(xlabel="offered rate (requests/s, open loop)", ylabel="latency (ms)", yscale="log",
           title="p13n latency vs arrival rate (faint lines: p99 targets)")  # fmt: skip
    ax.legend(fontsize=7, ncol=3)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(directory / "load_latency_vs_rate.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for section, rate, color in (("score", "200", "tab:blue"), ("rewrite", "100", "tab:orange"), ("floor", "200", "tab:gray")):
        row = result[section].get(rate)
        if not row:
            continue
        edges, counts = row["histogram"]["edges_ms"], row["histogram"]["counts"]
        ax.stairs(counts, edges, color=color, label=f"{section} at {rate}/s", fill=False, lw=1.5)
    ax.set(xscale="log", xlabel="latency (ms, from scheduled send)", ylabel="requests", title="latency histogram")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(directory / "load_latency_histogram.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def load_markdown(result: dict, images: list[Path]) -> str:
    from benchmarks.report import machine_line, markdown_table

    rows = []
    for section in ("score", "rewrite"):
        for rate, row in result[section].items():
            floor = result["floor"].get(rate, {}).get("latency_ms", {})
            lat = row["latency_ms"]
            ratio = round(lat["p99"] / floor["p99"], 1) if lat.get("p99") and floor.get("p99") else "n/a"
            rows.append([f"/v1/{section}", rate, row["achieved_rate"], lat.get("p50"), lat.get("p90"), lat.get("p99"),
                         lat.get("p99.9"), lat.get("max"), sum(row["errors"].values()), row["degraded_ratio"],
                         floor.get("p99"), ratio, row["send_lag_ms"].get("p99"), row["generator_cpu_share"]])  # fmt: skip
    budget = result["budget"]["measured"]
    lines = [
        "## Load (`p13n bench load`)",
        "",
        machine_line(result)
        + f"; {result['seconds_per_step']:g} s per step, open loop (aiohttp), generator on the same machine.",
        "",
        markdown_table(["endpoint", "offered/s", "achieved/s", "p50 ms", "p90", "p99", "p99.9", "max", "errors",
                        "degraded", "floor p99", "p99 ÷ floor", "send lag p99", "generator CPU"], rows),  # fmt: skip
        "",
        f"Budget under saturation: `budget_ms=20` rewrites at {budget['rate']:g}/s while "
        f"{result['budget']['saturating_load']['rate']:g}/s score requests with 16 unseen candidate texts each "
        f"(2 s budget) keep the encoder's queue full "
        f"(their degraded ratio: {result['budget']['saturating_load']['degraded_ratio']}): "
        f"{100 * (budget.get('within_budget_plus_5ms') or 0):.2f}% answered within 25 ms "
        f"(p99 {budget['latency_ms'].get('p99')} ms, degraded {budget['degraded_ratio']}).",
        "",
        markdown_table(["target", "measured", "status"],
                       [[k, v["measured"], "met" if v["met"] else "NOT met"] for k, v in result["targets"].items()]),
        "",
    ]
    lines += [f"![{p.stem}](plots/{p.name})" for p in images]
    return "\n".join(lines)
