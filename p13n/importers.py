"""Public ratings datasets converted to p13n's contracts (``p13n import movielens DIR OUT/``).

A MovieLens directory (``movies.csv``, ``ratings.csv``; the layout of ml-latest-small,
ml-25m, ml-32m) becomes two JSONL files any user can replay (``p13n produce``, ``p13n eval``):

* ``items.jsonl`` — one catalog record per movie: ``item_id`` = ``movieId``, ``text``
  ``"Title (year) | Genre, Genre"`` (the title alone when the movie has no genres listed),
  ``attributes`` ``{"genres": [...]}``;
* ``events.jsonl`` — one ``rating`` event per rating: ``value`` the stars (0.5–5),
  ``timestamp`` epoch milliseconds (MovieLens gives seconds), ``user_id`` = ``userId``,
  ``event_id`` ``ml-<userId>-<movieId>-<seconds>`` (stable: importing twice gives the same ids,
  so a replay of both is applied once), ``tenant`` as given (default ``default``).
  Events are written in time order (then user, then movie).

``tags.csv`` is not imported: the event contract has no tag type, and a tag is neither a
rating nor something the user said to an assistant (a ``message``); turning it into a ``like``
would invent a signal the dataset does not give.

Every output record is checked with the parser the consumer uses (:func:`~features.core.events.parse_event`
with the default bounds, :func:`~features.core.events.parse_item`), so what is written is what a
consumer accepts. A row that cannot be converted is reported as ``(file, line number, reason)``
and the rows around it are still written.

>>> movie_text("Toy Story (1995)", "Adventure|Animation")
('Toy Story (1995) | Adventure, Animation', ['Adventure', 'Animation'])
>>> movie_text("Pirates of Silicon Valley (1999)", "(no genres listed)")
('Pirates of Silicon Valley (1999)', [])
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from features.core.events import ItemRecord, Rejection, parse_event, parse_item
from p13n.clock import now_ms as clock_now_ms
from p13n.errors import InputError, open_input

__all__ = ["ImportReport", "import_movielens", "movie_text", "NO_GENRES"]

#: MovieLens' marker of a movie without genres.
NO_GENRES = "(no genres listed)"
_MOVIE_COLUMNS = ("movieId", "title", "genres")
_RATING_COLUMNS = ("userId", "movieId", "rating", "timestamp")


@dataclass
class ImportReport:
    """What an import wrote, and the rows it could not convert: ``(file name, line number, reason)``."""

    items: int = 0
    events: int = 0
    users: int = 0
    bad_rows: list[tuple[str, int, str]] = field(default_factory=list)
    seconds: float = 0.0


def movie_text(title: str, genres: str) -> tuple[str, list[str]]:
    """The item text ``"Title (year) | Genre, Genre"`` and the genre list of one ``movies.csv`` row."""
    names = [g.strip() for g in genres.split("|") if g.strip() and g.strip() != NO_GENRES]
    title = title.strip()
    return (f"{title} | {', '.join(names)}" if names else title), names


def _rows(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of a CSV file with the header ``columns``; raises :class:`InputError` if
    the file is missing or its header is not that."""
    fh = io.TextIOWrapper(open_input(path, what="CSV file"), newline="", encoding="utf-8")
    with fh:
        reader = csv.reader(fh)
        try:
            header = next(reader, None)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise InputError(f"{path}:1: not a CSV header: {exc}") from exc
        if header is None or [h.strip().lstrip("\ufeff") for h in header] != list(columns):
            raise InputError(f"{path}:1: expected the header {','.join(columns)}, got {','.join(header or []) or 'nothing'}")
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except (csv.Error, UnicodeDecodeError) as exc:
                yield reader.line_num, [f"\0{exc}"]  # reported as a bad row by the caller
                continue
            if cells:
                yield reader.line_num, cells


def _check(cells: list[str], columns: tuple[str, ...]) -> str | None:
    if cells and cells[0].startswith("\0"):
        return f"unreadable CSV: {cells[0][1:]}"
    if len(cells) != len(columns):
        return f"expected {len(columns)} columns ({','.join(columns)}), got {len(cells)}"
    return None


def import_movielens(
    directory: Path,
    out: Path,
    *,
    tenant: str = "default",
    now_ms: int | None = None,
    progress: Callable[[str, int, int], None] = lambda step, done, total: None,
) -> ImportReport:
    """Convert the MovieLens ``directory`` into ``out/items.jsonl`` and ``out/events.jsonl``.

    ``progress(step, done, total)`` is called as rows are converted (``total`` in lines of
    the input file, an estimate). Raises :class:`InputError` when ``movies.csv`` or
    ``ratings.csv`` is missing or has another header; bad rows are returned, not raised.
    """
    started = time.perf_counter()
    now_ms = clock_now_ms() if now_ms is None else now_ms
    movies_path, ratings_path = directory / "movies.csv", directory / "ratings.csv"
    for path in (movies_path, ratings_path):
        if not path.is_file():
            problem = "is not a file" if path.exists() else "does not exist"
            raise InputError(f"{path} {problem} (expected a MovieLens directory with movies.csv and ratings.csv)")
    report = ImportReport()
    out.mkdir(parents=True, exist_ok=True)
    _import_movies(movies_path, out / "items.jsonl", tenant, report, progress)
    _import_ratings(ratings_path, out / "events.jsonl", tenant, now_ms, report, progress)
    report.seconds = time.perf_counter() - started
    return report


def _import_movies(movies_path: Path, items_path: Path, tenant: str, report: ImportReport,
                   progress: Callable[[str, int, int], None]) -> None:  # fmt: skip
    """Write one catalog record per ``movies.csv`` row to ``items_path``; count them and the bad rows in ``report``."""
    items: list[bytes] = []
    total = _count_lines(movies_path)
    for number, cells in _rows(movies_path, _MOVIE_COLUMNS):
        problem = _check(cells, _MOVIE_COLUMNS)
        if problem is None:
            movie_id, title, genres = cells
            text, names = movie_text(title, genres)
            record = {"item_id": movie_id.strip(), "text": text, "attributes": {"genres": names}, "tenant": tenant}
            line = json.dumps(record, ensure_ascii=False).encode()
            parsed = parse_item(line)
            if isinstance(parsed, ItemRecord):
                items.append(line)
            else:
                problem = f"{parsed.reason}: {parsed.detail}"
        if problem is not None:
            report.bad_rows.append((movies_path.name, number, problem))
        if number % 1000 == 0:
            progress("movies", number, total)
    items_path.write_bytes(b"".join(line + b"\n" for line in items))
    report.items = len(items)


def _import_ratings(ratings_path: Path, events_path: Path, tenant: str, now_ms: int, report: ImportReport,
                    progress: Callable[[str, int, int], None]) -> None:  # fmt: skip
    """Write one ``rating`` event per ``ratings.csv`` row to ``events_path``, in time order (then user, then
    movie); count them, their users and the bad rows in ``report``."""
    events: list[tuple[int, int, int, bytes]] = []
    users: set[str] = set()
    total = _count_lines(ratings_path)
    for number, cells in _rows(ratings_path, _RATING_COLUMNS):
        problem = _check(cells, _RATING_COLUMNS)
        if problem is None:
            converted = _rating_event(cells, tenant, now_ms)
            if isinstance(converted, str):
                problem = converted
            else:
                events.append(converted)
                users.add(cells[0].strip())
        if problem is not None:
            report.bad_rows.append((ratings_path.name, number, problem))
        if number % 10_000 == 0:
            progress("ratings", number, total)
    events.sort()
    with events_path.open("wb") as fh:
        fh.writelines(line + b"\n" for *_, line in events)
    report.events, report.users = len(events), len(users)


def _rating_event(cells: list[str], tenant: str, now_ms: int) -> tuple[int, int, int, bytes] | str:
    """(ts, user, movie, JSON line) of one ``ratings.csv`` row, or why it cannot be an event."""
    user, movie, rating, stamp = (c.strip() for c in cells)
    try:
        value = float(rating)
    except ValueError:
        return f"rating {rating!r} is not a number"
    try:
        seconds = int(stamp)
    except ValueError:
        return f"timestamp {stamp!r} is not an integer (epoch seconds)"
    record = {"event_id": f"ml-{user}-{movie}-{seconds}", "user_id": user, "type": "rating", "item_id": movie,
              "value": value, "timestamp": seconds * 1000, "tenant": tenant}  # fmt: skip
    line = json.dumps(record, ensure_ascii=False).encode()
    parsed = parse_event(line, now_ms=now_ms)
    if isinstance(parsed, Rejection):
        return f"{parsed.reason}: {parsed.detail}"
    return seconds, _sort_key(user), _sort_key(movie), line


def _sort_key(text: str) -> int:
    return int(text) if text.isdigit() else -1


def _count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(buf.count(b"\n") for buf in iter(lambda: fh.read(1 << 20), b""))
