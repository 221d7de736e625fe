"""The README and docs/ stay true to the code: every run-config key and `cbp-fed` flag is documented, every
relative link and anchor resolves, the README stays short and names no work items."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from cbp_fed.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CONFIGURATION = ROOT / "docs" / "configuration.md"


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", page.read_text(), flags=re.S), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return [target for target in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+://", target)]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_and_anchor_resolves(page):
    for target in links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name}: link to {target} (no such file)"
        if anchor and file.suffix == ".md":
            assert anchor in anchors(file), f"{page.name}: link to {target} (no such heading)"


def test_no_page_names_a_work_item():
    for page in PAGES:
        assert not re.search(r"issue [0-9]+", page.read_text()), f"{page.name} names a work item"


def test_the_readme_stays_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def test_every_run_config_key_is_documented():
    keys = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    documented = CONFIGURATION.read_text()
    assert not [key for key in keys if f"`{key}`" not in documented]


def test_every_cbp_fed_flag_is_documented():
    documented = CONFIGURATION.read_text()
    commands = build_parser()._subparsers._group_actions[0].choices  # argparse keeps subcommands there
    missing = [
        f"{name} {flag}"
        for name, command in commands.items()
        for action in command._actions
        for flag in action.option_strings
        if flag.startswith("--") and flag != "--help" and f"`{flag}" not in documented
    ]
    assert not missing, f"undocumented in docs/configuration.md: {missing}"
    assert all(f"### `cbp-fed {name}`" in documented for name in commands)
