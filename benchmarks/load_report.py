"""The ``p13n bench load`` result as RESULTS.md markdown and PNG plots."""

from __future__ import annotations

from pathlib import Path

from benchmarks.report import machine_line, markdown_table

__all__ = ["load_markdown", "plot_load"]


def plot_load(result: dict, directory: Path) -> list[Path]:
    """latency-vs-rate and a latency histogram, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not (result["score"] or result["rewrite"]):
        return []  # only the arrivals/bursts steps ran: their tables say it all
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


def _stages(row: dict) -> str:
    """``stage p50/p99`` for the server's stages, e.g. ``total 2.1/7.9``."""
    stages = row.get("server_stages_ms", {})
    names = [n for n in stages if n != "total"] + (["total"] if "total" in stages else [])
    return "; ".join(f"{n} {stages[n].get('p50')}/{stages[n].get('p99')}" for n in names)


def _arrival_rows(result: dict) -> list[list]:
    rows = []
    for process, by_rate in result.get("arrivals_compare", {}).items():
        for rate, row in sorted(by_rate.items(), key=lambda kv: float(kv[0])):
            lat = row["latency_ms"]
            rows.append([process, rate, row["achieved_rate"], lat.get("p50"), lat.get("p90"), lat.get("p99"), lat.get("max"),
                         sum(row["errors"].values()), _stages(row), row["send_lag_ms"].get("p99"),
                         row["generator_cpu_share"]])  # fmt: skip
    return rows


def _burst_rows(result: dict) -> list[list]:
    rows = []
    for size, row in result.get("bursts", {}).items():
        burst, lat = row["burst_ms"], row["latency_ms"]
        rows.append([size, f"{row['complete_bursts']}/{row['bursts']}", burst.get("p50"), burst.get("p99"), burst.get("max"),
                     lat.get("p50"), lat.get("p99"), sum(row["errors"].values()), _stages(row),
                     row["send_lag_ms"].get("p99"), row["generator_cpu_share"]])  # fmt: skip
    return rows


def load_markdown(result: dict, images: list[Path]) -> str:
    """The RESULTS.md section of one run: its title and conditions, then a table per step that ran, the
    targets and the plots."""
    lines = _heading(result)
    for section in (_endpoint_lines, _budget_lines, _memory_lines, _arrival_lines, _burst_lines, _locust_lines,
                    _target_lines):  # fmt: skip
        lines += section(result)
    lines += [f"![{p.stem}](plots/{p.name})" for p in images]
    return "\n".join(lines)


def _heading(result: dict) -> list[str]:
    """Title, machine and load average, request shapes and arrivals, the command that reproduces the run."""
    shapes = result.get("shapes", {})
    shape_line = (f"Request shapes: **{shapes.get('name', 'synthetic')}** ({shapes.get('users')} users, "
                  f"{shapes.get('catalog_items')} catalog items, {shapes.get('candidates_per_request', {}).get('min')}–"
                  f"{shapes.get('candidates_per_request', {}).get('max')} candidates per /v1/score); arrivals "
                  f"**{result.get('arrivals', 'uniform')}** unless a table says otherwise (seed {result.get('seed', 0)}).")  # fmt: skip
    steps = result.get("steps", [])
    default = shapes.get("name", "synthetic") == "synthetic" and steps[:1] == ["floor"] and "locust" not in steps
    title = "## Load (`p13n bench load`)" if default or not steps else \
        f"## Load: {shapes.get('name')} shapes; {', '.join(steps)} (`p13n bench load`)"
    return [
        title,
        "",
        machine_line(result)
        + f"; {result['seconds_per_step']:g} s per step, open loop (aiohttp), generator on the same machine"
        + (f"; load average (1/5/15 min) {la['before']} before, {la['after']} after the run." if (la := result.get("load_average")) else "."),
        "",
        shape_line,
        "",
        *([f"Reproduce: `{result['command']}`", ""] if result.get("command") else []),
    ]


def _endpoint_lines(result: dict) -> list[str]:
    """/v1/score and /v1/rewrite at each rate, beside the floor measured at the same rate."""
    rows = []
    for section in ("score", "rewrite"):
        for rate, row in result[section].items():
            floor = result["floor"].get(rate, {}).get("latency_ms", {})
            lat = row["latency_ms"]
            ratio = round(lat["p99"] / floor["p99"], 1) if lat.get("p99") and floor.get("p99") else "n/a"
            rows.append([f"/v1/{section}", rate, row["achieved_rate"], lat.get("p50"), lat.get("p90"), lat.get("p99"),
                         lat.get("p99.9"), lat.get("max"), sum(row["errors"].values()), row["degraded_ratio"],
                         floor.get("p99"), ratio, row["send_lag_ms"].get("p99"), row["generator_cpu_share"]])  # fmt: skip
    if not rows:
        return []
    return [markdown_table(["endpoint", "offered/s", "achieved/s", "p50 ms", "p90", "p99", "p99.9", "max", "errors",
                            "degraded", "floor p99", "p99 ÷ floor", "send lag p99", "generator CPU"], rows), ""]  # fmt: skip


def _budget_lines(result: dict) -> list[str]:
    if "budget" not in result:
        return []
    budget = result["budget"]["measured"]
    return [
        f"Budget under saturation: `budget_ms=20` rewrites at {budget['rate']:g}/s while "
        f"{result['budget']['saturating_load']['rate']:g}/s score requests with 16 unseen candidate texts each "
        f"(2 s budget) keep the encoder's queue full "
        f"(their degraded ratio: {result['budget']['saturating_load']['degraded_ratio']}): "
        f"{100 * (budget.get('within_budget_plus_5ms') or 0):.2f}% answered within 25 ms "
        f"(p99 {budget['latency_ms'].get('p99')} ms, degraded {budget['degraded_ratio']}).",
        "",
    ]


def _memory_lines(result: dict) -> list[str]:
    if not result.get("memories"):
        return []
    mem = result["memories"]
    lat = mem["latency_ms"]
    return [f"`/v1/rewrite` for {mem['users']} users holding {mem['memories_per_user']} memories each (their "
            "conversations' own questions; server stages p50/p99 ms):", "",
            markdown_table(["offered/s", "achieved/s", "p50 ms", "p90", "p99", "max", "errors", "degraded",
                            "server stages p50/p99 ms", "send lag p99", "generator CPU"],
                           [[mem["rate"], mem["achieved_rate"], lat.get("p50"), lat.get("p90"), lat.get("p99"),
                             lat.get("max"), sum(mem["errors"].values()), mem["degraded_ratio"], _stages(mem),
                             mem["send_lag_ms"].get("p99"), mem["generator_cpu_share"]]]), ""]  # fmt: skip


def _arrival_lines(result: dict) -> list[str]:
    if not result.get("arrivals_compare"):
        return []
    return ["`/v1/score`, uniform vs Poisson arrivals (client latency from the scheduled send; server stages "
            "from the answers' `timings_ms`, p50/p99 ms):", "",
            markdown_table(["arrivals", "offered/s", "achieved/s", "p50 ms", "p90", "p99", "max", "errors",
                            "server stages p50/p99 ms", "send lag p99", "generator CPU"], _arrival_rows(result)),
            ""]  # fmt: skip


def _burst_lines(result: dict) -> list[str]:
    if not result.get("bursts"):
        return []
    interval = next(iter(result["bursts"].values()))["interval_s"]
    return [f"`/v1/score` in bursts (N requests at once, one burst every {interval:g} s; burst time = due time "
            "to the burst's last answer):", "",
            markdown_table(["N", "complete bursts", "burst p50 ms", "burst p99", "burst max", "request p50",
                            "request p99", "errors", "server stages p50/p99 ms", "send lag p99",
                            "generator CPU"], _burst_rows(result)),
            ""]  # fmt: skip


def _locust_lines(result: dict) -> list[str]:
    """Locust's numbers beside ours for the same cell, and how the two measure differently."""
    if not result.get("locust"):
        return []
    lo = result["locust"]
    ours = result.get("arrivals_compare", {}).get("uniform", {}).get(f"{lo['rate']:g}", {})
    ol = ours.get("latency_ms", {})
    return [f"Cross-check with Locust ({lo['users']} users × {lo['rate'] / lo['users']:g} req/s, "
            f"`constant_throughput`, {lo['seconds']:g} s, same bodies, same stack, right after our steps):", "",
            markdown_table(["tool", "offered/s", "achieved/s", "requests", "errors", "p50 ms", "p90", "p99",
                            "p99.9", "max"],
                           [["Locust", lo["rate"], lo["achieved_rate"], lo["requests"], lo["failures"],
                             *(lo["latency_ms"].get(p) for p in ("p50", "p90", "p99", "p99.9", "max"))],
                            ["ours, uniform", ours.get("rate"), ours.get("achieved_rate"), ours.get("sent"),
                             sum(ours.get("errors", {}).values()) if ours else None,
                             *(ol.get(p) for p in ("p50", "p90", "p99", "p99.9", "max"))]]),
            "",
            "How the two relate: both send the same bodies to the same stack at the same mean rate. Ours is "
            "open loop and measures from the *scheduled* send (generator lateness and queueing count); a Locust "
            "user waits for its answer before its next request and Locust measures from the actual send. "
            "Both clients are Python on the same 2 cores as the stack, so client CPU starvation shows up as "
            f"latency in both: our generator used {ours.get('generator_cpu_share')} of a core in its step, "
            f"Locust {lo.get('locust_cpu_share', 'n/a')} (whole process, start-up included). "
            f"Load average before/after the run: {result.get('load_average', {}).get('before')} / "
            f"{result.get('load_average', {}).get('after')}.", ""]  # fmt: skip


def _target_lines(result: dict) -> list[str]:
    if not result.get("targets"):
        return []
    return [markdown_table(["target", "measured", "status"],
                           [[k, v["measured"], "met" if v["met"] else "NOT met"] for k, v in result["targets"].items()]),
            ""]  # fmt: skip
