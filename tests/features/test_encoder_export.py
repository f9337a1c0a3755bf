"""`p13n encoder export --if-missing`: which exports count as up to date (no torch needed here)."""

from __future__ import annotations

import json

from features.encoder.export import METADATA_FILE, VARIANT_FILES, is_current, source_hash


def test_an_export_is_current_only_with_every_variant_and_the_same_source(tmp_path):
    model, out = tmp_path / "model", tmp_path / "out"
    model.mkdir()
    out.mkdir()
    (model / "config.json").write_text('{"hidden_size": 4}')
    (out / "tokenizer.json").write_text("{}")
    files = {"fp32": VARIANT_FILES["fp32"], "int8": VARIANT_FILES["int8"]}  # an export from before int8-static
    for name in files.values():
        (out / name).write_bytes(b"onnx")
    meta = {"files": files, "tokenizer": "tokenizer.json", "source_sha256": source_hash(model)}
    (out / METADATA_FILE).write_text(json.dumps(meta))
    assert is_current(out, model, "none")
    assert not is_current(out, model, "int8")  # the static variant is missing: --if-missing adds it

    (out / VARIANT_FILES["int8-static"]).write_bytes(b"onnx")
    (out / METADATA_FILE).write_text(json.dumps({**meta, "files": VARIANT_FILES}))
    assert is_current(out, model, "int8")

    (out / VARIANT_FILES["int8"]).unlink()  # listed but gone
    assert not is_current(out, model, "int8")
    assert is_current(out, model, "none")

    (model / "config.json").write_text('{"hidden_size": 8}')  # another model: re-export everything
    assert not is_current(out, model, "none")
