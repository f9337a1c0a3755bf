"""Files and settings a user names that cannot be used: one line ``p13n: error: …`` and exit 2, never a
traceback (the command line as a subprocess, as users run it)."""

from __future__ import annotations

import pytest

from tests.conftest import clean_env
from tests.test_cli_and_devstack import run


def one_line_error(result) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("p13n: error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("content", "needle"),
    [(None, "is a directory, not a file"), (b"\x89PNG\r\n\x1a\n\x00\xff", "is not valid TOML: not UTF-8 text (byte 0)"),
     (b"\xff\xfe[serving]\n", "is not valid TOML: not UTF-8 text (byte 0)")],
    ids=["directory", "binary", "utf16-bom"],
)  # fmt: skip
def test_a_config_file_that_is_not_toml_text_is_one_line_exit_2(tmp_path, content, needle):
    path = tmp_path / "p13n.toml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    for args, env in ((["--config", str(path)], {}), ([], {"P13N_CONFIG": str(path)})):
        line = one_line_error(run([*args, "config", "show"], clean_env(**env), cwd=tmp_path))
        assert line == f"p13n: error: config file {path} {needle}", line


@pytest.mark.parametrize(
    ("env", "toml", "name"),
    [({"P13N_SERVING_SCORE_BUDGET_MS": "inf"}, None, "serving.score_budget_ms"),
     ({"P13N_SERVING_REWRITE_BUDGET_MS": "Infinity"}, None, "serving.rewrite_budget_ms"),
     ({"P13N_SCORING_WEIGHTS": '{"popularity": 1e999}'}, None, "scoring.weights.popularity"),
     ({}, "[serving]\nbody_timeout_s = inf\n", "serving.body_timeout_s"),
     ({}, "[scoring.weights]\npopularity = nan\n", "scoring.weights.popularity")],
    ids=["env-inf", "env-Infinity", "env-json-1e999", "toml-inf", "toml-nan-weight"],
)  # fmt: skip
def test_non_finite_settings_are_refused_naming_the_setting(tmp_path, env, toml, name):
    """Budgets, bounds and weights are finite: an infinite weight turns every score into null."""
    args = []
    if toml is not None:
        (tmp_path / "p13n.toml").write_text(toml)
        args = ["--config", str(tmp_path / "p13n.toml")]
    line = one_line_error(run([*args, "config", "show"], clean_env(**env), cwd=tmp_path))
    assert line.startswith(f"p13n: error: invalid configuration: {name} must be a finite number, got "), line


def test_produce_of_a_directory_is_one_line_exit_2(tmp_path, servers):
    (tmp_path / "events").mkdir()
    result = run(["produce", str(tmp_path / "events")], clean_env(P13N_KAFKA_BOOTSTRAP=servers["kafka"]), cwd=tmp_path)
    assert one_line_error(result) == f"p13n: error: input file {tmp_path / 'events'} is a directory, not a file"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [(["eval", "{dir}"], "events file {dir} is a directory, not a file"),
     (["eval", "{file}", "--items", "{dir}"], "items file {dir} is a directory, not a file"),
     (["tune", "{file}", "--items", "{dir}"], "items file {dir} is a directory, not a file"),
     (["eval", "{file}", "--tuned", "{dir}"], "--tuned file {dir} is a directory, not a file"),
     (["import", "movielens", "{dir}", "{out}"], "{dir}/movies.csv is not a file (expected a MovieLens directory with movies.csv and ratings.csv)")],
    ids=["eval-events", "eval-items", "tune-items", "eval-tuned", "import-movies"],
)  # fmt: skip
def test_offline_tools_given_a_directory_for_a_file_give_one_line_exit_2(tmp_path, argv, needle):
    """`p13n eval`, `tune` and `import` name the path they cannot read (a directory here), like `produce`."""
    directory, events = tmp_path / "d", tmp_path / "events.jsonl"
    directory.mkdir()
    (directory / "movies.csv").mkdir()
    (directory / "ratings.csv").write_text("userId,movieId,rating,timestamp\n")
    events.write_text('{"event_id":"e1","user_id":"u","type":"click","item_id":"i","timestamp":1767225600000}\n')
    names = {"dir": str(directory), "file": str(events), "out": str(tmp_path / "out")}
    line = one_line_error(run([a.format(**names) for a in argv], clean_env(), cwd=tmp_path))
    assert line.endswith(needle.format(**names)), line
