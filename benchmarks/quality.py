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

from p13n.clock import now_ms as wall_ms
from p13n.config import Config

__all__ = ["run_quality", "quality_markdown", "plot_quality"]


def _evaluate_file(config: Config, events: Path, items: Path | None, encode) -> dict:
    from features.evaluation.replay import evaluate, load_eval_inputs

    inputs = load_eval_inputs(events, items, encode=encode, now_ms=wall_ms())
    result = evaluate(inputs.events, inputs.items, config, text_vectors=inputs.text_vectors, negatives=100, seed=0)
    return {"events": len(inputs.events), "rejected": inputs.rejected, **result.to_json()}


def run_quality(config: Config, client=None, *, quick: bool = False, extra: list[tuple[Path, Path | None]] = (),
                movielens: Path | None = None) -> dict:
    from features.encoder.runtime import Encoder
    from features.datasets.synthetic import SyntheticSpec, generate

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
    weights = {}
    validation = {}
    if movielens is not None:
        from p13n.cli_tune import eval_encode

        real = run_movielens(config, movielens, eval_encode(config))
        datasets.update(real["datasets"])
        targets.update(real["targets"])
        weights = real["weights"]
        validation = real["validation"]
    synthetic = datasets["synthetic drift"]["variants"]
    best = max((row["hr@10"], name) for name, row in synthetic.items() if name != "blend")
    targets[f"blend HR@10 >= best single variant (synthetic: {best[1]})"] = {
        "measured": round(synthetic["blend"]["hr@10"] / best[0], 3) if best[0] else None,
        "met": synthetic["blend"]["hr@10"] >= best[0]}  # fmt: skip
    for baseline in ("popularity", "mean"):
        ratio = synthetic["blend"]["hr@10"] / synthetic[baseline]["hr@10"] if synthetic[baseline]["hr@10"] else None
        targets[f"blend HR@10 >= 1.1 x {baseline} (synthetic)"] = {
            "measured": round(ratio, 2) if ratio else None, "met": ratio is not None and ratio >= 1.1}
    return {"quick": quick, "datasets": datasets, "targets": targets, "weights": weights, "validation": validation}


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_").lower()


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
        fig, ax = plt.subplots(figsize=(max(7, 0.8 * len(variants)), 3.5))
        xs = range(len(variants))
        ax.bar([x - 0.2 for x in xs], hr, width=0.4, label="HR@10")
        ax.bar([x + 0.2 for x in xs], ndcg, width=0.4, label="NDCG@10")
        ax.set_xticks(list(xs), variants, rotation=30 if len(variants) > 8 else 0, ha="right" if len(variants) > 8 else "center")
        ax.set(ylim=(0, 1), title=f"next-item ranking among 100 sampled negatives — {name}")
        ax.legend()
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        paths.append(directory / f"quality_{_slug(name)}.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def quality_markdown(result: dict, images: list[Path] = ()) -> str:
    from benchmarks.report import machine_line, markdown_table

    lines = ["## Quality (`p13n bench quality`)", "",
             machine_line(result),
             ""]  # fmt: skip
    for name, data in result["datasets"].items():
        blend = data["variants"]["blend"]["hr@10"] or float("nan")
        rows = [[v, row["hr@10"] and round(row["hr@10"], 3), round(row["ndcg@10"], 3), row["users"],
                 round(blend / row["hr@10"], 2) if row["hr@10"] else "n/a"] for v, row in data["variants"].items()]  # fmt: skip
        lines += [f"**{name}** ({data['events']:,} events)", "",
                  markdown_table(["variant", "HR@10", "NDCG@10", "users", "blend ÷ variant (HR)"], rows), ""]  # fmt: skip
    lines += [markdown_table(["target", "measured", "status"],
                             [[k, v["measured"], "met" if v["met"] else "NOT met"] for k, v in result["targets"].items()]),
              ""]  # fmt: skip
    if any(name.startswith("MovieLens") for name in result["datasets"]):
        lines += ["MovieLens: ml-latest-small with each user's latest rating withheld (`../shared/data/movielens-small`), "
                  "issue 13's protocol — the latest remaining rating held out when >= 4 stars, ranked among 100 never-rated "
                  "movies — scored at each user's moment and after the whole replay (`--at-end`). `proto:*` and "
                  "`blend_prototypes_tuned` are offline prototypes (features/evaluation/prototypes.py) that the "
                  "consumer and Serve do not compute yet; `blend_tuned` is what `p13n tune` gives them today (weights and "
                  "`state.popularity_tau_s`, chosen among 7, 30, 365 days). Both tuned blends are "
                  "fitted on a validation replay without each user's latest rating. Ties count at random in "
                  "expectation (a variant that cannot tell candidates apart scores chance, HR@10 10/101 = 0.099).", ""]  # fmt: skip
    if result.get("validation"):
        lines += ["MovieLens validation replay (what the tuned blends were fitted on; `blend_tuned` in-sample): "
                  + ", ".join(f"{k} {v['hr@10']:.3f} / {v['ndcg@10']:.3f}" for k, v in result["validation"].items())
                  + " (HR@10 / NDCG@10)", ""]  # fmt: skip
    for name, weights in result.get("weights", {}).items():
        lines += [f"`{name}` weights (fitted on the validation replay): "
                  + ", ".join(f"{k} {v:g}" for k, v in weights.items() if v), ""]  # fmt: skip
    lines += [f"![{p.stem}](plots/{p.name})" for p in images]
    return "\n".join(lines)


#: The prototype signals measured on MovieLens (features/evaluation/prototypes.py). Window, anchors and
#: pairing every rating (not only liked ones) were chosen on the issue-13 protocol itself, which the
#: issue names as the one to tune on (windows 5/20/50/100 were tried; every rating pairs better than
#: liked ones only there: HR@10 0.747 against 0.717 at window 50).
def _prototype_signals():
    from features.evaluation.prototypes import LikedCooccurrence, MultiPopularity, UserNeighbours

    return [LikedCooccurrence(window=50, anchors=100, recency=0.97, prefix="co", liked_only=False), MultiPopularity((365.0,)),
            UserNeighbours(50)]  # fmt: skip


PROTOTYPE_FEATURES = ("co_cos", "co_raw", "pop_365d", "uknn")


def run_movielens(config: Config, directory: Path, encode, progress=lambda step: None) -> dict:
    """Issue 13 on a MovieLens directory: import, the protocol at each user's moment and at the end,
    every baseline, the default blend, the blend tuned by ``p13n tune`` (p13n's features) and a blend
    tuned the same way over p13n's features plus the offline prototypes — all tuned on the validation
    replay (each user's latest item event left out), scored on the protocol's held-out items."""
    from features.evaluation.replay import replay, summarize, variants_of, with_popularity_feature
    from features.evaluation.tuning import fit_blend, fit_weights, stack_features, validation_events
    from p13n.cli_tune import POPULARITY_DAYS
    from p13n.importers import import_movielens

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="p13n-movielens-") as scratch:
        progress("importing")
        import_movielens(Path(directory), Path(scratch))
        progress("embedding items")
        from features.evaluation.replay import load_eval_inputs

        inputs = load_eval_inputs(Path(scratch) / "events.jsonl", Path(scratch) / "items.jsonl", encode=encode,
                                  now_ms=wall_ms())  # fmt: skip
    native = list(config.scoring.weights)
    days = POPULARITY_DAYS
    runs = {}
    for label, events, at_end in (("validation", validation_events(inputs.events), False),
                                  ("moment", inputs.events, False), ("at-end", inputs.events, True)):  # fmt: skip
        progress(f"replaying ({label})")
        runs[label] = replay(events, inputs.items, config, text_vectors=inputs.text_vectors, at_end=at_end,
                             signals=_prototype_signals(), popularity_days=days)  # fmt: skip
    # what `p13n tune` does, on the validation replay above (features.evaluation.tuning.tune_blend)
    progress("p13n tune")
    chosen = fit_blend(runs["validation"], config, days)
    tuned = chosen.fitted.weights
    tuned_rows = {label: summarize(with_popularity_feature(runs[label], chosen.popularity_days),
                                   {"blend_tuned": tuned})["blend_tuned"] for label in ("moment", "at-end")}  # fmt: skip
    proto_names = native + list(PROTOTYPE_FEATURES)
    proto = fit_weights(stack_features(runs["validation"], proto_names), start=config.scoring.weights).weights
    variants = variants_of(config)
    singles = {name: {name: 1.0} for name in PROTOTYPE_FEATURES}
    variants = {**{k: v for k, v in variants.items() if k != "blend"}, **{f"proto:{k}": v for k, v in singles.items()},
                "blend": variants["blend"], "blend_prototypes_tuned": proto}  # fmt: skip
    datasets, targets = {}, {}
    for label in ("moment", "at-end"):
        table = summarize(runs[label], variants)
        table = {**{k: v for k, v in table.items() if k != "blend_prototypes_tuned"}, "blend_tuned": tuned_rows[label],
                 "blend_prototypes_tuned": table["blend_prototypes_tuned"]}  # fmt: skip
        datasets[f"MovieLens ({label})"] = {"events": len(inputs.events), "variants": table}
        best = max(row["hr@10"] for name, row in table.items() if not name.startswith("blend"))
        for blend in ("blend", "blend_tuned", "blend_prototypes_tuned"):
            row = table[blend]
            targets[f"{blend} HR@10 >= 0.80 ({label})"] = {"measured": round(row["hr@10"], 3), "met": row["hr@10"] >= 0.80}
            targets[f"{blend} NDCG@10 >= 0.55 ({label})"] = {"measured": round(row["ndcg@10"], 3), "met": row["ndcg@10"] >= 0.55}
            targets[f"{blend} HR@10 >= 1.05 x best single ({label})"] = {
                "measured": round(row["hr@10"] / best, 3), "met": row["hr@10"] >= 1.05 * best}
    val = summarize(runs["validation"], {"covisitation": {"covisit": 1.0}, "blend": config.scoring.weights})
    validation = {**val, "blend_tuned": {"hr@10": chosen.fitted.hr, "ndcg@10": chosen.fitted.ndcg,
                                         "users": len(runs["validation"])}}  # fmt: skip
    return {"datasets": datasets, "targets": targets, "weights": {"blend_tuned": tuned, "blend_prototypes_tuned": proto},
            "validation": validation, "tuned_popularity_days": chosen.popularity_days,
            "validation_users": len(runs["validation"]), "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
