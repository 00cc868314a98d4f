"""The documentation: the site builds with ``mkdocs build --strict``, the README stays short and free of
development history, every relative link leads to a file, and CI runs the README's test command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))

#: inline Markdown links and images: [text](target) / ![alt](target "title")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
#: a token that looks like a commit hash: 7-40 hex digits with at least one digit and one letter
COMMIT = re.compile(r"\b(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b")


def _prose(text: str) -> str:
    """The Markdown without fenced code blocks and inline code (links there are not links)."""
    text = re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def _relative_links(path: Path) -> list[str]:
    targets = LINK.findall(_prose(path.read_text(encoding="utf-8")))
    return [t for t in targets if not re.match(r"^([a-z][a-z0-9+.-]*:|#|//)", t)]


def test_site_builds_strict(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    site = tmp_path / "site"
    for page in ("index.html", "cli.html", "benchmarks.html", "reference/battery.html", "reference/edge.html"):
        assert (site / page).is_file(), page
    # the API reference is generated from the docstrings, and the CLI page from the parser
    assert 'id="jaxvpp.battery.solution.solve_batteries"' in (site / "reference" / "battery.html").read_text()
    assert "usage: jaxvpp coordinate" in (site / "cli.html").read_text()


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 260, f"README.md has {len(lines)} lines; move reference material to docs/"


@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_no_development_history(path):
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"\bsessions?\b", text, re.I), f"{path.name} mentions a session"
    assert not COMMIT.findall(text), f"{path.name} quotes commit hashes: {COMMIT.findall(text)}"
    assert "../shared" not in text, f"{path.name} links outside the repository"


@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_files(path):
    missing = []
    for target in _relative_links(path):
        file = target.split("#", 1)[0].split("?", 1)[0]
        if file and not (path.parent / file).resolve().is_file():
            missing.append(target)
        if file and not (path.parent / file).resolve().is_relative_to(ROOT):
            missing.append(f"{target} (outside the repository)")
    assert not missing, f"{path.name}: links to missing files: {missing}"


def test_link_check_sees_links():
    """The link pattern finds the README's links to docs/ (so the test above cannot pass vacuously)."""
    targets = _relative_links(README)
    assert "docs/cli.md" in targets and "docs/img/run_schedule.png" in targets


def test_ci_runs_the_readme_test_command():
    readme = README.read_text(encoding="utf-8")
    block = re.search(r"# set up \./\.venv and run the tests[^\n]*\n([^\n]+)", readme)
    assert block, "README.md lost its test command"
    command = block.group(1).strip()
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert any(line.startswith(command) for line in ci), f".ci/run does not run {command!r}"
