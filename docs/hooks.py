"""mkdocs hooks of the jaxvpp documentation (``hooks:`` in ``mkdocs.yml``).

* **Result pages.** Every ``benchmarks/results/*.md`` present at build time becomes the page
  ``results/NAME.md``, and every ``experiments/results/*.md`` the page ``results/experiments/NAME.md``; the
  other files of those folders (figures, the JSON twins) are copied next to them. Nothing is copied into
  ``docs/`` by hand, and the build passes whether or not any results file exists.
* **Markers** in the docs' Markdown, replaced at build time:

  * ``<!-- results: NAME -->`` (or ``experiments/NAME``): a link to that result page, or a note that this
    build has none; ``<!-- results-if-present: NAME -->``: the link, or nothing;
  * ``<!-- results-index -->``: a table of every result page with its date and commit;
  * ``<!-- init-config -->``: the output of ``jaxvpp init-config`` (the commented default configuration);
  * ``<!-- cli-help: COMMAND -->``: the output of ``jaxvpp COMMAND --help``.

* **Docstring roles.** The docstrings use Sphinx roles (``:func:`solve_batteries```); mkdocstrings renders
  Markdown, so the API reference pages would show them literally. They become cross-references to the
  rendered object when there is one (resolved from the enclosing object outwards), plain code otherwise.
"""

from __future__ import annotations

import contextlib
import html
import io
import logging
import os
import posixpath
import re
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files, InclusionLevel
from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parent.parent
LOG = logging.getLogger("mkdocs.hooks.jaxvpp")

#: (folder of result files, where its pages go in the site)
RESULT_DIRS = ((ROOT / "benchmarks" / "results", "results"), (ROOT / "experiments" / "results", "results/experiments"))

_MARKER = re.compile(r"<!--\s*(results-if-present|results-index|results|init-config|cli-help)\s*:?\s*([\w./-]*)\s*-->")
_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)(\s+\"[^\"]*\")?\)")
_ROLE = re.compile(r":(?:mod|func|class|meth|attr|data|obj|exc|const):<code>(~?)([\w.]+?)(\(\))?</code>")
_HEADING_ID = re.compile(r"<h[1-6][^>]*\bid=\"(jaxvpp[\w.]*)\"")


def _result_files() -> list[tuple[Path, str]]:
    """Every file of the result folders, with its path in the site."""
    out = []
    for folder, dest in RESULT_DIRS:
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if path.is_file() and not path.name.startswith("."):
                    out.append((path, f"{dest}/{path.name}"))
    return out


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the result files as generated pages (not in the nav: ``benchmarks.md`` links them)."""
    for path, uri in _result_files():
        if files.get_file_from_path(uri) is None:
            inclusion = InclusionLevel.NOT_IN_NAV if uri.endswith(".md") else InclusionLevel.UNDEFINED
            files.append(File.generated(config, uri, abs_src_path=str(path), inclusion=inclusion))
    return files


def _title_and_provenance(path: Path) -> tuple[str, str, str]:
    """A result file's title (first ``# `` line), date and commit (from its provenance block)."""
    title, date, commit = path.stem, "", ""
    for line in path.read_text(encoding="utf-8").splitlines()[:40]:
        if line.startswith("# ") and title == path.stem:
            title = line[2:].strip()
        elif line.startswith("- date (UTC):"):
            date = line.split(":", 1)[1].strip()
        elif line.startswith("- commit:"):
            commit = line.split(":", 1)[1].strip()
    return title, date, commit


def _rel(uri: str, page: Page) -> str:
    return posixpath.relpath(uri, posixpath.dirname(page.file.src_uri) or ".")


def _result_link(name: str, page: Page, files: Files, *, optional: bool = False) -> str:
    uri = f"results/{name}.md"
    file = files.get_file_from_path(uri)
    if file is None or file.abs_src_path is None:
        if optional:
            return ""
        folder = "experiments/results" if name.startswith("experiments/") else "benchmarks/results"
        base = name.split("/")[-1]
        return f"*No `{folder}/{base}.md` in this build: run the script to produce it.*"
    title, date, _ = _title_and_provenance(Path(file.abs_src_path))
    when = f" ({date})" if date else ""
    return f"Results: [{title}]({_rel(uri, page)}){when}."


def _results_index(page: Page, files: Files) -> str:
    rows = []
    for path, uri in _result_files():
        if uri.endswith(".md"):
            title, date, commit = _title_and_provenance(path)
            rows.append(f"| [{title}]({_rel(uri, page)}) | `{uri[len('results/') :]}` | {date} | {commit} |")
    if not rows:
        return "*No result files in this build: run a benchmark to produce them.*"
    return "\n".join(["| results | page | date (UTC) | commit |", "|---|---|---|---|", *rows])


def _init_config() -> str:
    from jaxvpp.config import default_config_text

    return "```toml\n" + default_config_text().rstrip() + "\n```"


def _cli_help(command: str) -> str:
    from jaxvpp.cli import build_parser

    out, columns = io.StringIO(), os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "110"  # argparse wraps the help text to the terminal width
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            build_parser().parse_args([command, "--help"])
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns
    return "```text\n" + out.getvalue().rstrip() + "\n```"


def _strip_dead_links(markdown: str, page: Page, files: Files) -> str:
    """In a generated result page, turn relative links that lead nowhere in the site into plain text."""

    def fix(m: re.Match) -> str:
        bang, text, target = m.group(1), m.group(2), m.group(3)
        if re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", target):
            return m.group(0)
        path = target.split("#", 1)[0]
        uri = posixpath.normpath(posixpath.join(posixpath.dirname(page.file.src_uri), path))
        if path and files.get_file_from_path(uri) is not None:
            return m.group(0)
        return f"({text})" if bang else text

    return _LINK.sub(fix, markdown)


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Replace the markers; clean the links of generated result pages."""

    def fill(m: re.Match) -> str:
        kind, arg = m.group(1), m.group(2)
        if kind in ("results", "results-if-present"):
            return _result_link(arg, page, files, optional=kind == "results-if-present")
        if kind == "results-index":
            return _results_index(page, files)
        if kind == "cli-help":
            return _cli_help(arg)
        return _init_config()

    markdown = _MARKER.sub(fill, markdown)
    if page.file.src_uri.startswith("results/"):
        markdown = _strip_dead_links(markdown, page, files)
    return markdown


def _resolve_roles(content: str, known: set[str]) -> str:
    """Sphinx roles in rendered docstrings -> autorefs cross-references (or plain code)."""
    out, pos, current = [], 0, ""
    events = sorted(
        [(m.start(), "id", m) for m in _HEADING_ID.finditer(content)]
        + [(m.start(), "role", m) for m in _ROLE.finditer(content)],
        key=lambda e: e[0],
    )
    for start, kind, m in events:
        if kind == "id":
            current = m.group(1)
            continue
        tilde, name, call = m.group(1), m.group(2), m.group(3) or ""
        shown = (name.rsplit(".", 1)[-1] if tilde else name) + call
        parts = current.split(".") if current else []
        candidates = [name] + [".".join(parts[:i] + [name]) for i in range(len(parts), 0, -1)]
        target = next((c for c in candidates if c in known), None)
        if target is None:  # a bare name, or a name re-exported by a package: the one object it can be
            package, _, last = name.rpartition(".")
            matches = [k for k in known if k.endswith("." + last) and k.startswith(package)]
            target = matches[0] if len(matches) == 1 else None
        if target is None:
            LOG.debug("docstring role not resolved: %s (in %s)", name, current)
        code = f"<code>{html.escape(shown)}</code>"
        out.append(content[pos:start])
        out.append(f'<autoref identifier="{target}" optional>{code}</autoref>' if target else code)
        pos = m.end()
    out.append(content[pos:])
    return "".join(out)


def on_env(env, config: MkDocsConfig, files: Files):
    """Resolve the docstring roles of the API reference (before autorefs applies its cross-references)."""
    pages = [f.page for f in files.documentation_pages() if f.page is not None and f.page.content]
    known = {i for p in pages for i in _HEADING_ID.findall(p.content)}
    for p in pages:
        if p.file.src_uri.startswith("reference/"):
            p.content = _resolve_roles(p.content, known)
    return env
