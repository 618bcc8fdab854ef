"""docs/api.md against the code: every public name, signature, CLI command and option is
documented as it is, the examples run, and the drift check catches each kind of drift in a
doctored copy of the document or of the code. Also: the GitHub Actions workflows run what
the Makefile runs."""

from __future__ import annotations

import importlib.util
import itertools
import re
import sys
import textwrap
from pathlib import Path

import click
import pytest

import apiref as _apiref

ROOT = Path(__file__).resolve().parent.parent
API_MD = ROOT / "docs" / "api.md"
WORKFLOWS = ROOT / ".github" / "workflows"


@pytest.fixture(scope="module")
def surface() -> dict[str, _apiref.Entry]:
    return _apiref.surface()


@pytest.fixture(scope="module")
def doc() -> str:
    return API_MD.read_text(encoding="utf-8")


# -- the real document --------------------------------------------------------------------


def test_the_reference_matches_the_code(doc: str, surface: dict[str, _apiref.Entry]) -> None:
    problems = _apiref.check(doc, surface)
    assert problems == [], "docs/api.md has drifted from the code:\n" + "\n".join(problems)


def test_the_surface_covers_what_users_get(surface: dict[str, _apiref.Entry]) -> None:
    import mmsb

    for name in mmsb.__all__:
        assert name in surface, name
    # reached through return annotations and attributes, not through __all__
    for key in ("Graph.add_edge", "GraphView.topo_order", "GCReport", "MemorySnapshot",
                "Invariants.run", "Snapshot.read", "Bus.derive", "Bus.read"):  # fmt: skip
        assert key in surface, key
    assert surface["Bus.closed"].kind == "property"
    assert surface["DeltaBatch.concat"].kind == "staticmethod"
    commands = {k for k, e in surface.items() if e.kind == "command"}
    assert {"mmsb", "mmsb validate", "mmsb verify", "mmsb log"} <= commands
    assert "--speed-advisory" in surface["mmsb validate"].flags
    assert "-t" in surface["mmsb validate"].flags


def test_every_entry_has_words_not_just_a_signature(doc: str) -> None:
    parsed = _apiref.parse_document(doc)
    sections = re.split(r"\n(?=#{3,4} `)", doc)
    assert len(parsed.entries) > 100
    for section in sections[1:]:
        heading, _, body = section.partition("\n")
        text = re.sub(r"```.*?```", "", body, flags=re.S)
        table = [line for line in text.splitlines() if line.startswith("|")]
        prose = [line for line in text.splitlines() if not line.startswith("|")]
        assert len(" ".join(prose).split()) >= 2 or table, f"{heading} has no description"


def test_the_examples_run(doc: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    examples = _apiref.parse_document(doc).examples
    assert len(examples) >= 15
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "api_md"}
    try:
        for line, code in examples:
            # each block is compiled with its line in api.md, so a failure points at it
            exec(compile("\n" * (line - 1) + code, str(API_MD), "exec"), namespace)
    finally:
        bus = namespace.get("bus")
        close = getattr(bus, "close", None)
        if close is not None:
            close()
    assert getattr(namespace["bus"], "closed", False)


def test_the_skeleton_round_trips(surface: dict[str, _apiref.Entry]) -> None:
    """The generator writes what the checker reads: a skeleton has no drift at all."""
    assert _apiref.check(_apiref.skeleton(surface), surface) == []


def test_the_command_line_tool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _apiref.main(["check", str(API_MD)]) == 0
    assert "0 difference(s)" in capsys.readouterr().out
    bad = tmp_path / "api.md"
    bad.write_text(API_MD.read_text(encoding="utf-8").replace("`mmsb compact`", "`mmsb pack`"))
    assert _apiref.main(["check", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "mmsb pack: documented" in out and "mmsb compact: in the code" in out
    assert _apiref.main(["bogus"]) == 2


# -- a doctored document ------------------------------------------------------------------


def drop_section(doc: str, heading: str) -> str:
    start = doc.index(heading)
    end = doc.index("\n#", start + len(heading))
    return doc[:start] + doc[end + 1 :]


def edit_in_section(doc: str, heading: str, old: str, new: str) -> str:
    start = doc.index(heading)
    at = doc.index(old, start)
    return doc[:at] + new + doc[at + len(old) :]


DOC_EDITS = [
    # (a) a name removed from the document, or one the code does not have
    pytest.param(
        lambda d: drop_section(d, "#### `Bus.write`"),
        "Bus.write: in the code but not documented",
        id="method-missing",
    ),
    pytest.param(
        lambda d: drop_section(d, "#### `CycleError`"),
        "CycleError: in the code but not documented",
        id="exception-missing",
    ),
    pytest.param(
        lambda d: (
            d + "\n#### `Bus.frobnicate`\n\n```python\ndef frobnicate(self) -> None: ...\n```\n"
        ),
        "Bus.frobnicate: documented (line",
        id="method-invented",
    ),
    pytest.param(
        lambda d: d.replace("#### `Bus.history`", "#### `Bus.past`"),
        "Bus.past: documented",
        id="method-renamed",
    ),
    # (b) a signature that differs from inspect.signature
    pytest.param(
        lambda d: edit_in_section(d, "#### `Bus.write`", "offset: int = 0", "at: int = 0"),
        "Bus.write: the documented signature",
        id="parameter-renamed",
    ),
    pytest.param(
        lambda d: edit_in_section(
            d, "#### `Bus`", "readonly: bool = False", "readonly: bool = True"
        ),
        "Bus: the documented signature",
        id="default-changed",
    ),
    pytest.param(
        lambda d: edit_in_section(d, "#### `Bus.apply_batch`", "*, workers", "workers"),
        "Bus.apply_batch: the documented signature",
        id="keyword-only-lost",
    ),
    pytest.param(
        lambda d: edit_in_section(d, "#### `Bus.at`", "-> Snapshot", "-> Bus"),
        "Bus.at: the documented signature",
        id="return-annotation",
    ),
    pytest.param(
        lambda d: edit_in_section(d, "#### `Bus.closed`", "@property\n", ""),
        "Bus.closed: the documented signature",
        id="property-decorator",
    ),
    pytest.param(
        lambda d: edit_in_section(d, "#### `Commit`", "    count: int\n", ""),
        "Commit: the documented signature",
        id="dataclass-field",
    ),
    pytest.param(
        lambda d: edit_in_section(d, "#### `ReadOnlyError`", "PermissionError)", "ValueError)"),
        "ReadOnlyError: the documented signature",
        id="exception-base",
    ),
    pytest.param(
        lambda d: edit_in_section(d, "#### `Snapshot`", "    timestamp: int\n", ""),
        "Snapshot: the documented signature",
        id="attribute-missing",
    ),
    pytest.param(
        lambda d: edit_in_section(d, "#### `Bus.tick`", "```python\ndef tick", "```text\ndef tick"),
        "Bus.tick: no signature block",
        id="signature-block-missing",
    ),
    # (c) commands and options
    pytest.param(
        lambda d: drop_section(d, "#### `mmsb verify`"),
        "mmsb verify: in the code but not documented",
        id="command-missing",
    ),
    pytest.param(
        lambda d: edit_in_section(d, "#### `mmsb log`", "| `--deltas` |", "| `--frames` |"),
        "mmsb log: option --deltas is in the code but not documented",
        id="option-renamed",
    ),
    pytest.param(
        lambda d: edit_in_section(d, "#### `mmsb log`", "| `--deltas` |", "| `--frames` |"),
        "mmsb log: option --frames is documented but not in the code",
        id="option-invented",
    ),
    pytest.param(
        lambda d: edit_in_section(
            d, "#### `mmsb crashtest`", "`-n, --iterations N`", "`--iterations N`"
        ),
        "mmsb crashtest: option -n is in the code",
        id="short-flag-missing",
    ),
    pytest.param(
        lambda d: edit_in_section(d, "#### `mmsb history`", "PATH PAGE", "PATH"),
        "mmsb history: usage differs",
        id="argument-missing",
    ),
]


@pytest.mark.parametrize(("edit", "expected"), DOC_EDITS)
def test_a_doctored_document_is_caught(
    doc: str, surface: dict[str, _apiref.Entry], edit, expected: str
) -> None:
    doctored = edit(doc)
    assert doctored != doc
    problems = _apiref.check(doctored, surface)
    assert any(expected in p for p in problems), problems


def test_an_entry_documented_twice_is_caught(doc: str, surface: dict[str, _apiref.Entry]) -> None:
    twice = doc + "\n#### `Bus.lsn`\n\n```python\n@property\ndef lsn(self) -> int: ...\n```\n"
    assert any("Bus.lsn: documented twice" in p for p in _apiref.check(twice, surface))


def test_stray_signatures_are_caught(doc: str, surface: dict[str, _apiref.Entry]) -> None:
    stub = "\n```python\ndef nowhere() -> None: ...\n```\n"
    outside = doc.replace("## 1. Opening a bus\n", "## 1. Opening a bus\n" + stub, 1)
    assert any("a signature outside an entry" in p for p in _apiref.check(outside, surface))
    second = edit_in_section(doc, "#### `Bus.closed`", "Whether `close()`", stub + "Whether")
    assert any("a second signature" in p for p in _apiref.check(second, surface))


# -- doctored code ------------------------------------------------------------------------

FAKE_CODE = """
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Record", "Store", "StoreError", "open_store"]


class StoreError(ValueError):
    def __init__(self, message: str, key: str = "") -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class Record:
    key: str
    size: int = 0
    tags: list[str] = field(default_factory=list)


class Store:
    def __init__(self, path: str) -> None:
        self.path = path

    def get(self, key: str, default: int | None = None) -> Record:
        raise StoreError(key)

    def view(self) -> View:
        return View()

    @property
    def size(self) -> int:
        return 0


class View:
    def keys(self, *, limit: int = 10) -> list[str]:
        return []


def open_store(path: str, *, create: bool = True) -> Store:
    return Store(path)
"""

FAKE_DOC = """
# Fake store

#### `open_store`

```python
def open_store(path: str, *, create: bool = True) -> Store: ...
```

Opens a store.

#### `Store`

```python
class Store:
    path: str
    def __init__(self, path: str) -> None: ...
```

A store.

#### `Store.get`

```python
def get(self, key: str, default: int | None = None) -> Record: ...
```

Looks a key up.

#### `Store.view`

```python
def view(self) -> View: ...
```

#### `Store.size`

```python
@property
def size(self) -> int: ...
```

#### `View`

```python
class View: ...
```

#### `View.keys`

```python
def keys(self, *, limit: int = 10) -> list[str]: ...
```

#### `Record`

```python
@dataclass(frozen=True)
class Record:
    key: str
    size: int = 0
    tags: list[str] = field(default_factory=list)
```

#### `StoreError`

```python
class StoreError(ValueError):
    key: str

    def __init__(self, message: str, key: str = "") -> None: ...
```
"""

_counter = itertools.count()


def fake_surface(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: str
) -> dict[str, _apiref.Entry]:
    """The surface of ``code`` imported as a fresh module (inspect needs it in sys.modules)."""
    name = f"fakeapi{next(_counter)}"
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(code))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return _apiref.python_surface([(module, "")], package=name)


def test_the_fake_module_and_its_document_agree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = fake_surface(tmp_path, monkeypatch, FAKE_CODE)
    assert set(expected) == {"open_store", "Store", "Store.get", "Store.view", "Store.size",
                             "View", "View.keys", "Record", "StoreError"}  # fmt: skip
    assert _apiref.check(FAKE_DOC, expected) == []


CODE_EDITS = [
    pytest.param(
        (
            "    @property\n",
            "    def put(self, record: Record) -> None:\n        pass\n\n    @property\n",
        ),
        "Store.put: in the code but not documented",
        id="method-added",
    ),
    pytest.param(
        ("def get(self, key: str,", "def get(self, name: str,"),
        "Store.get: the documented signature",
        id="parameter-renamed",
    ),
    pytest.param(
        ("default: int | None = None", "default: int | None = None, strict: bool = False"),
        "Store.get: the documented signature",
        id="parameter-added",
    ),
    pytest.param(
        ("default: int | None = None", "default: int | None = 0"),
        "Store.get: the documented signature",
        id="default-changed",
    ),
    pytest.param(
        ("def get(self, key: str, default", "def get(self, key: str, /, default"),
        "Store.get: the documented signature",
        id="positional-only",
    ),
    pytest.param(
        (
            '"open_store"]',
            '"open_store", "close_store"]\n\n\ndef close_store() -> None:\n    pass\n',
        ),
        "close_store: in the code but not documented",
        id="function-added",
    ),
    pytest.param(
        ('"Store", "StoreError", "open_store"]', '"Store", "StoreError"]'),
        "open_store: documented",
        id="function-unexported",
    ),
    pytest.param(
        ("    def keys(self, *, limit", "    def items(self, *, limit"),
        "View.items: in the code but not documented",
        id="returned-class-method-renamed",
    ),
    pytest.param(
        ("    size: int = 0\n", "    size: int = 0\n    owner: str = ''\n"),
        "Record: the documented signature",
        id="field-added",
    ),
    pytest.param(
        ("        self.key = key\n", "        self.key = key\n        self.hint = ''\n"),
        "StoreError: the documented signature",
        id="attribute-added",
    ),
    pytest.param(
        ("class StoreError(ValueError)", "class StoreError(KeyError)"),
        "StoreError: the documented signature",
        id="base-changed",
    ),
    pytest.param(
        ("    @property\n    def size", "    def size"),
        "Store.size: the documented signature",
        id="property-became-method",
    ),
]


@pytest.mark.parametrize(("change", "expected"), CODE_EDITS)
def test_doctored_code_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: tuple[str, str], expected: str
) -> None:
    old, new = change
    assert old in FAKE_CODE
    problems = _apiref.check(
        FAKE_DOC, fake_surface(tmp_path, monkeypatch, FAKE_CODE.replace(old, new))
    )
    assert any(expected in p for p in problems), problems


def fake_cli(extra_option: bool = False, extra_command: bool = False, arg: str = "path"):
    @click.group()
    @click.version_option("1.0")
    def tool() -> None:
        """A tool."""

    @tool.command()
    @click.argument(arg)
    @click.option("--json", "as_json", is_flag=True)
    @click.option("-n", "--count", type=int, default=1)
    def show(**kwargs: object) -> None:
        """Show."""

    if extra_option:
        show = click.option("--all", is_flag=True)(show)

    if extra_command:

        @tool.command()
        def drop() -> None:
            """Drop."""

    return tool


FAKE_CLI_DOC = """
#### `tool`

```text
Usage: tool [OPTIONS] COMMAND [ARGS]...
```

| Option | Meaning |
|---|---|
| `--version` | The version. |

#### `tool show`

```text
Usage: tool show [OPTIONS] PATH
```

| Option | Meaning |
|---|---|
| `--json` | JSON. |
| `-n, --count N` | How many. |
"""


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, None),
        ({"extra_option": True}, "tool show: option --all is in the code but not documented"),
        ({"extra_command": True}, "tool drop: in the code but not documented"),
        ({"arg": "where"}, "tool show: usage differs"),
    ],
    ids=["agree", "option-added", "command-added", "argument-renamed"],
)
def test_doctored_commands_are_caught(kwargs: dict[str, object], expected: str | None) -> None:
    problems = _apiref.check(FAKE_CLI_DOC, _apiref.cli_surface(fake_cli(**kwargs), "tool"))
    if expected is None:
        assert problems == []
    else:
        assert any(expected in p for p in problems), problems


# -- GitHub Actions workflows -------------------------------------------------------------
# PyYAML is not a dependency, so these read the workflow files as text.


def workflow(name: str) -> str:
    return (WORKFLOWS / name).read_text(encoding="utf-8")


def test_the_test_workflow_runs_make_test_on_push() -> None:
    text = workflow("test.yml")
    assert re.search(r"(?m)^on:\n(?:  .*\n)*  push:", text)
    assert re.search(r"(?m)^  pull_request:", text)
    assert re.search(r"(?m)^\s+runs-on: ubuntu-latest$", text)
    assert re.search(r"python-version: \"3\.11\"", text)
    assert re.search(r"(?m)^\s+cache: pip$", text)
    assert re.search(r"(?m)^\s+run: make test$", text)


def test_the_validate_workflow_keeps_the_json_results() -> None:
    text = workflow("validate.yml")
    assert re.search(r"(?m)^  schedule:\n    - cron: \"[^\"]+\"", text)
    assert re.search(r"(?m)^  workflow_dispatch:", text)
    assert re.search(r"(?m)^\s+timeout-minutes: 120$", text)
    assert re.search(r"(?m)^\s+run: make venv$", text)
    run = re.search(r"(?m)^\s+run: (\.venv/bin/mmsb validate .*)$", text)
    assert run is not None
    args = run.group(1).split()
    assert "--full" in args and args[args.index("--json") + 1] == "validate-full.json"
    assert "uses: actions/upload-artifact@v4" in text
    upload = text[text.index("uses: actions/upload-artifact@v4") :]
    assert "validate-full.json" in upload and ".mmsb-history/validate.jsonl" in upload
    # every option the workflow passes exists on the command
    from mmsb.cli import cli

    flags = _apiref.cli_surface(cli)["mmsb validate"].flags
    assert {a for a in args if a.startswith("-")} <= flags
