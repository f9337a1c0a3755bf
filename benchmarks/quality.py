"""``p13n bench quality``: ``p13n eval`` on the synthetic drift dataset (and any JSONL log given),
HR@10 / NDCG@10 per scorer variant as a table and a bar chart.

The baselines the blend replaces — popularity and a plain mean embedding — are measured in the
same run, and the table reports the blend's ratio to each.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from p13n.config import Config

__all__ = ["run_quality", "quality_markdown", "plot_quality"]


def _evaluate_file(config: Config, events: Path, items: Path | None, encode) -> dict:
    from features.evaluation import evaluate, load_eval_inputs

    inputs = load_eval_inputs(events, items, encode=encode, now_ms=int(time.time() * 1000))
    result = evaluate(inputs.events, inputs.items, config, text_vectors=inputs.text_vectors, negatives=100, seed=0)
    return {"events": len(inputs.events), "rejected": inputs.rejected, **result.to_json()}


def run_quality(config: Config, client=None, *, quick: bool = False, extra: list[tuple[Path, Path | None]] = ()) -> dict:
    from features.encoder import Encoder
    from features.synthetic import SyntheticSpec, generate

    encoder = Encoder(config.encoder.directory, variant=config.encoder.consumer_variant)
    datasets: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="p13n-quality-") as scratch:
        data = generate(SyntheticSpec(users=60 if quick else 200, seed=0))
        events, items = Path(scratch) / "events.jsonl", Path(scratch) / "items.jsonl"
        events.write_text("".join(json.dumps(e) + "\n" for e in data.events))
        items.write_text("".join(json.dumps(i) + "\n" for i in data.items))
        datasets["synthetic drift"] = _evaluate_file(config, events, items, encoder.encode)
    for events_path, items_path in extra:
        datasets[Path(events_path).name] = _evaluate_file(config, Path(events_path), items_path, encoder.encode)
    targets = {}
    synthetic = datasets["synthetic drift"]["variants"]
    for baseline in ("popularity", "mean"):
        ratio = synthetic["blend"]["hr@10"] / synthetic[baseline]["hr@10"] if synthetic[baseline]["hr@10"] else None
        targets[f"blend HR@10 >= 1.1 x {baseline} (synthetic)"] = {
            "measured": round(ratio, 2) if ratio else None, "met": ratio is not None and ratio >= 1.1}
    return {"quick": quick, "datasets": datasets, "targets": targets}


def plot_quality(result: dict, directory: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in result["datasets"].items():
        variants = list(data["variants"])
        hr = [data["variants"][v]["hr@10"] for v in variants]
        ndcg = [data["variants"][v]["ndcg@10"] for v in variants]
        fig, ax = plt.subplots(figsize=(7, 3.5))
        xs = range(len(variants))
        ax.bar([x - 0.2 for x in xs], hr, width=0.4, label="HR@10")
        ax.bar([x + 0.2 for x in xs], ndcg, width=0.4, label="NDCG@10")
        ax.set_xticks(list(xs), variants)
        ax.set(ylim=(0, 1), title=f"next-item ranking among 100 sampled negatives — {name}")
        ax.legend()
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        paths.append(directory / f"quality_{name.replace(' ', '_').replace('.', '_')}.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def quality_markdown(result: dict, images: list[Path] = ()) -> str:
    from benchmarks.report import machine_line, markdown_table

    lines = ["## Quality (`p13n bench quality`)", "",
             machine_line(result),
             ""]  # fmt: skip
    for name, data in result["datasets"].items():
        blend = data["variants"]["blend"]["hr@10"]
        rows = [[v, row["hr@10"] and round(row["hr@10"], 3), round(row["ndcg@10"], 3), row["users"],
                 round(blend / row["hr@10"], 2) if row["hr@10"] else "n/a"] for v, row in data["variants"].items()]  # fmt: skip
        lines += [f"**{name}** ({data['events']:,} events)", "",
                  markdown_table(["variant", "HR@10", "NDCG@10", "users", "blend ÷ variant (HR)"], rows), ""]  # fmt: skip
    lines += [markdown_table(["target", "measured", "status"],
                             [[k, v["measured"], "met" if v["met"] else "NOT met"] for k, v in result["targets"].items()]),
              ""]  # fmt: skip
    lines += [f"![{p.stem}](plots/{p.name})" for p in images]
    return "\n".join(lines)
