"""README.md: opens with the two commands, and its configuration reference is generated."""

from p13n.readme import README, render


def test_readme_opens_with_the_two_commands():
    text = README.read_text()
    commands = [line.strip().split("#")[0].strip() for line in text.splitlines() if line.startswith("    make ")]
    assert commands[:2] == ["make demo", "make test"]


def test_config_reference_in_readme_is_current():
    text = README.read_text()
    assert render(text) == text, "README.md is out of date: run `make readme`"
