"""README.md: opens with the two commands, and its configuration reference is generated."""

from p13n.readme import README, render


def test_readme_opens_with_the_two_commands():
    text = README.read_text()
    commands = [line.strip().split("#")[0].strip() for line in text.splitlines() if line.startswith("    make ")]
    assert commands[:2] == ["make demo", "make test"]


def test_config_reference_in_readme_is_current():
    text = README.read_text()
    assert render(text) == text, "README.md is out of date: run `make readme`"


def test_every_guarantee_names_tests_that_exist():
    """The Guarantees table cites `file::test` (or `::test` in the same file as the previous citation, or a
    whole file); each must exist, so the table cannot promise what no test holds."""
    import re

    from tests.conftest import REPO

    text = README.read_text()
    table = text.split("## Guarantees", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith(("| promise", "|---"))]
    assert len(rows) >= 10
    for row in rows:
        cited = re.findall(r"`((?:tests/[\w/]+\.py)?(?:::\w+)?)`", row.rsplit("|", 2)[1])
        assert cited, row
        current = None
        for ref in cited:
            path, _, name = ref.partition("::")
            current = path or current
            source = (REPO / current).read_text()
            assert not name or re.search(rf"^(async )?def {name}\(", source, re.M), f"{ref} not found ({row[:40]})"
