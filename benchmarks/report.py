"""benchmarks/RESULTS.md: one section per benchmark, replaced by each run of that benchmark.

>>> text = replace_section("# Results\\n", "features", "new body\\n")
>>> replace_section(text, "features", "newer\\n").count("newer")
1
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["RESULTS_MD", "replace_section", "update_results", "markdown_table", "machine_line"]

RESULTS_MD = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# Benchmark results\n\nEvery section is written by the benchmark named in it (`p13n bench …`); nothing here is typed by hand.\n"


def replace_section(text: str, name: str, body: str) -> str:
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        head, _, rest = text.partition(start)
        _, _, tail = rest.partition(end)
        return f"{head}{block}{tail}"
    return f"{text.rstrip()}\n\n{block}\n"


def update_results(name: str, body: str, path: Path = RESULTS_MD) -> Path:
    text = path.read_text() if path.exists() else HEADER
    path.write_text(replace_section(text, name, body))
    return path


def machine_line(result: dict) -> str:
    """The line under each section's title: where and when it was measured.

    >>> machine_line({"machine": {"cores": 2, "cpu": "X", "time": "T"}, "quick": True})
    'Machine: 2 cores, X; T — quick run'
    """
    machine = result.get("machine", {})
    quick = " — quick run" if result.get("quick") else ""
    return f"Machine: {machine.get('cores')} cores, {machine.get('cpu')}; {machine.get('time')}{quick}"


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    """
    >>> print(markdown_table(["a", "b"], [[1, 2]]))
    | a | b |
    |---|---|
    | 1 | 2 |
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
