"""
The documentation cannot rot: README.md and docs/**/*.md are checked against the tree.

- every relative link (``[text](path)``, ``![alt](path)``) resolves to an existing file or folder,
  and a ``#anchor`` to a heading of the target page (GitHub's anchor rule);
- every repository path written as code (``tools/demo.py``, ``configs/...yaml``, ``gridclip/...py``)
  and every dotted ``gridclip.`` module name exists, so a moved or renamed file is caught also where
  it is named in a command rather than linked;
- the Layout of docs/DEVELOPING.md lists every file of the package, one row each;
- the "Bad inputs covered by tests" list of docs/ROBUSTNESS.md has as many entries as its text says;
- README.md stays at most 200 lines;
- no doc or comment in projects/, tools/, dev/, configs/, datasets/, docs/ or README.md cites an issue
  number (a reader of the repository cannot open it).

The tutorial's code blocks are run by tests/test_tutorial.py.
"""
import glob
import os
import re
import unicodedata

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE_ROOT = os.path.join(REPO, "projects", "GridCLIP")
README_MAX_LINES = 200

# Paths a page names that are not in the tree on purpose: what a command generates, or what the reader
# writes (the tutorial's own config and data).
GENERATED_PREFIXES = (
    "output/", "datasets/world/", "datasets/world_wide/", "dev/gpu_check/wheels",
    "configs/my.yaml", "data/my/",
)
REPO_DIRS = ("projects", "configs", "tools", "tests", "datasets", "benchmarks", "docs", "dev")
ISSUE_CITATION = re.compile(r"\bissues?\s*(?:no\.?\s*)?#?\d+\b|\bissue\b[^\n.]{0,20}#\d+", re.IGNORECASE)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_SRC = re.compile(r"<(?:img|a)\s[^>]*(?:src|href)=\"([^\"]+)\"", re.IGNORECASE)
CODE_SPAN = re.compile(r"`([^`\n]+)`")
REPO_PATH = re.compile(r"(?<![\w./-])((?:%s)/[\w./-]*[\w/])" % "|".join(REPO_DIRS))
PACKAGE_PATH = re.compile(r"(?<![\w./-])(gridclip/[\w./-]*[\w/])")
MODULE_NAME = re.compile(r"(?<![\w.])(gridclip(?:\.\w+)+)")


def doc_files():
    return [os.path.join(REPO, "README.md")] + sorted(glob.glob(os.path.join(REPO, "docs", "**", "*.md"),
                                                                recursive=True))


def rel(path):
    return os.path.relpath(path, REPO)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def split_fences(text):
    """(prose, code): the page with fenced code blocks blanked out, and the fenced blocks' text."""
    prose, code, in_fence = [], [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            prose.append("")
            continue
        (code if in_fence else prose).append(line)
        if in_fence:
            prose.append("")
    return "\n".join(prose), "\n".join(code)


def github_anchor(heading):
    """GitHub's anchor of a heading: lower case, markup and punctuation dropped, spaces -> '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links keep their text
    text = unicodedata.normalize("NFC", text.strip().lower())
    text = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return text.replace(" ", "-")


def anchors(path):
    """Every heading anchor of a markdown page, with GitHub's -1, -2 suffixes for repeats."""
    prose, _ = split_fences(read(path))
    seen, result = {}, set()
    for line in prose.splitlines():
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        anchor = github_anchor(match.group(1))
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        result.add(anchor if count == 0 else f"{anchor}-{count}")
    return result


def relative_links(path):
    prose, _ = split_fences(read(path))
    prose = CODE_SPAN.sub("", prose)
    targets = LINK.findall(prose) + HTML_SRC.findall(prose)
    return [t for t in targets if not re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", t)]  # http:, mailto:, ...


def broken_links(path):
    problems = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
        if not os.path.exists(resolved):
            problems.append(f"{rel(path)}: link to {target}: {rel(resolved)} does not exist")
        elif anchor and resolved.endswith(".md") and anchor not in anchors(resolved):
            problems.append(f"{rel(path)}: link to {target}: no heading with anchor #{anchor} in {rel(resolved)}")
    return problems


def named_paths(path):
    """Repository paths and gridclip module names a page writes as code (spans and fenced blocks)."""
    prose, code = split_fences(read(path))
    text = "\n".join(CODE_SPAN.findall(prose)) + "\n" + code
    text = re.sub(r"\S*[<>{}*$]\S*", " ", text)  # templates and globs: `benchmarks/<gpu>.json`, `T4-*`
    repo_paths = set(REPO_PATH.findall(text))
    package_paths = set(PACKAGE_PATH.findall(text))
    modules = set(MODULE_NAME.findall(text))
    return repo_paths, package_paths, modules


def module_exists(dotted):
    """`gridclip.a.b.c` names a module, package or an attribute of the last module that exists."""
    parts = dotted.split(".")
    base = os.path.join(PACKAGE_ROOT, parts[0])
    for i, part in enumerate(parts[1:], start=1):
        if os.path.isdir(os.path.join(base, part)):
            base = os.path.join(base, part)
            continue
        if os.path.isfile(os.path.join(base, part + ".py")):
            return True  # what follows is an attribute of that module
        init = os.path.join(base, "__init__.py")
        # an attribute of the package: it must at least be named in its __init__.py
        return i == len(parts) - 1 and os.path.isfile(init) and re.search(rf"\b{part}\b", read(init)) is not None
    return True


def missing_named_paths(path):
    repo_paths, package_paths, modules = named_paths(path)
    problems = []
    for name in sorted(repo_paths):
        if name.startswith(GENERATED_PREFIXES):
            continue
        if not os.path.exists(os.path.join(REPO, name)):
            problems.append(f"{rel(path)}: names {name}, which does not exist")
    for name in sorted(package_paths):
        if not os.path.exists(os.path.join(PACKAGE_ROOT, name)):
            problems.append(f"{rel(path)}: names {name}, which does not exist under projects/GridCLIP/")
    for name in sorted(modules):
        if not module_exists(name):
            problems.append(f"{rel(path)}: names the module {name}, which does not exist")
    return problems


@pytest.mark.parametrize("path", doc_files(), ids=rel)
def test_relative_links_resolve(path):
    assert not broken_links(path)


@pytest.mark.parametrize("path", doc_files(), ids=rel)
def test_named_files_and_modules_exist(path):
    assert not missing_named_paths(path)


def test_every_doc_page_is_reachable_from_the_readme():
    reachable, todo = set(), [os.path.join(REPO, "README.md")]
    while todo:
        page = todo.pop()
        if page in reachable:
            continue
        reachable.add(page)
        for target in relative_links(page):
            target = os.path.normpath(os.path.join(os.path.dirname(page), target.partition("#")[0]))
            if target.endswith(".md") and target.startswith(os.path.join(REPO, "docs")) and os.path.isfile(target):
                todo.append(target)
    assert sorted(rel(p) for p in set(doc_files()) - reachable) == []


def test_readme_is_short():
    lines = read(os.path.join(REPO, "README.md")).splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"
    assert "make demo" in "\n".join(lines[:15]) and "make test" in "\n".join(lines[:15])


def test_layout_lists_every_package_file():
    """docs/DEVELOPING.md's Layout has one row per file of the package, and no row for a file that is gone."""
    text = read(os.path.join(REPO, "docs", "DEVELOPING.md"))
    section = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"\]\(\.\./projects/GridCLIP/gridclip/([^)#\s]+)\)", section))
    package = os.path.join(PACKAGE_ROOT, "gridclip")
    present = set()
    for folder, dirs, files in os.walk(package):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        present |= {os.path.relpath(os.path.join(folder, f), package).replace(os.sep, "/")
                    for f in files if f.endswith((".py", ".json"))}
    assert sorted(present - listed) == [], "package files missing from the Layout of docs/DEVELOPING.md"
    assert sorted(listed - present) == [], "Layout rows for files that no longer exist"


def test_bad_input_count_matches_the_list():
    text = read(os.path.join(REPO, "docs", "ROBUSTNESS.md"))
    (stated,) = re.findall(r"\*\*(\d+) distinct bad inputs\*\*", text)
    section = text.split("## Bad inputs covered by tests", 1)[1].split("\n## ", 1)[0]
    numbers = [int(n) for n in re.findall(r"^(\d+)\. ", section, flags=re.M)]
    assert numbers == list(range(1, len(numbers) + 1)), "the list's numbering has gaps or repeats"
    assert int(stated) == len(numbers)


def issue_citations(root_files):
    problems = []
    for path in root_files:
        try:
            text = read(path)
        except (UnicodeDecodeError, IsADirectoryError):
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            if ISSUE_CITATION.search(line):
                problems.append(f"{rel(path)}:{number}: {line.strip()}")
    return problems


def cited_files():
    files = [os.path.join(REPO, "README.md")]
    for top in ("projects", "tools", "dev", "configs", "datasets", "docs"):
        for ext in ("py", "md", "yaml", "yml", "txt", "json"):
            files += glob.glob(os.path.join(REPO, top, "**", f"*.{ext}"), recursive=True)
    return sorted(f for f in set(files) if os.sep + "wheels" + os.sep not in f)


def test_no_issue_numbers_cited():
    assert issue_citations(cited_files()) == []


def test_the_checks_catch_rot(tmp_path, monkeypatch):
    """Each check fails on a page with the fault it looks for."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "demo.py").write_text("")
    (docs / "A.md").write_text("# Title\n\n## Some section: `x`\n\nSee [B](B.md#some-section-x).\n")
    (docs / "B.md").write_text(
        "# B\n\n## Some section: `x`\n\n[ok](A.md#some-section-x) [gone](../tools/old.py) "
        "![pic](img/missing.png) [bad anchor](A.md#nope)\n\nRun `python tools/demo.py` or "
        "`python tools/moved.py`.\n\n```bash\npython tools/renamed.py\n```\n")
    monkeypatch.setitem(globals(), "REPO", str(tmp_path))
    assert broken_links(str(docs / "A.md")) == []
    problems = broken_links(str(docs / "B.md"))
    assert len(problems) == 3 and "tools/old.py" in problems[0] and "missing.png" in problems[1]
    assert "#nope" in problems[2]
    missing = missing_named_paths(str(docs / "B.md"))
    assert [m.split("names ")[1].split(",")[0] for m in missing] == ["tools/moved.py", "tools/renamed.py"]
    (tmp_path / "x.py").write_text("# fixed in issue 12\n# see Issue #7\n# an issue with 3 parts\n")
    assert len(issue_citations([str(tmp_path / "x.py")])) == 2
