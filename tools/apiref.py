"""Keeps ``docs/api.md`` and the code in step: what must be documented, and what drifted.

Not imported by ``import mmsb``; it is a development tool, run by the test suite
(``tests/test_api_reference.py``) and by hand::

    python tools/apiref.py check [docs/api.md]   # list the drift; exit 1 if there is any
    python tools/apiref.py skeleton              # a stub for every entry, to start an entry

The public surface is: every name in ``mmsb.__all__`` and in the ``__all__`` of the modules
in :data:`MODULES`; every public method, property and attribute of each class found there,
inherited ones included; the classes that public methods return (``Bus.at`` -> ``Snapshot``,
``Bus.graph`` -> ``Graph``, ...), found through the return annotations; and every ``mmsb``
command with its options.

The document's rules (also stated at the top of ``docs/api.md``):

* An *entry heading* is a level 3 or 4 heading made only of backticked keys, separated by
  ``·``: ``Bus.write``, ``Bus.read · Snapshot.read``, ``semiring.SUM_PRODUCT``,
  ``mmsb log``. One heading may cover several keys that share a signature.
* The first fenced ``python`` block under an entry heading that holds only stubs (``def``
  or ``class`` whose bodies are ``...``, or ``name: type``) is its signature. It must match
  ``inspect.signature`` exactly: parameter names, kinds, order, annotations (as written in
  the source) and defaults (by value); decorators ``@property``, ``@classmethod``,
  ``@staticmethod``, ``@dataclass``; class bases; dataclass fields (with their types and
  defaults); the names of other public attributes. A module constant is checked by name.
* A command entry holds its usage line as ``click`` prints it (``Usage: mmsb log [OPTIONS]
  PATH``) in a fenced block, and a table whose first column names each option's flags.
* Every other fenced ``python`` block is an example; the tests run them in order.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
import sys
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

MODULES: tuple[tuple[str, str], ...] = (
    ("mmsb", ""),  # module, prefix of its keys in the document
    ("mmsb.semiring", "semiring."),
    ("mmsb.graph", "graph."),
)
# classes users get back from an attribute (no return annotation leads to them)
EXTRA_CLASSES: tuple[str, ...] = ("mmsb.monitor.invariants.Invariants",)
HELP_FLAGS = frozenset({"-h", "--help"})


@dataclass(frozen=True)
class Entry:
    """One documented thing: its key, what it is, and its normalised signature text."""

    key: str
    kind: str  # function, method, property, classmethod, staticmethod, class, constant, command
    text: str  # normalised signature (python) or usage line (command)
    flags: frozenset[str] = frozenset()  # a command's option flags


@dataclass
class DocEntry:
    keys: tuple[str, ...]
    line: int
    stub: str | None = None  # normalised signature from the document
    usage: str | None = None
    flags: set[str] = field(default_factory=set)


@dataclass
class Document:
    entries: list[DocEntry]
    examples: list[tuple[int, str]]  # (line of the first code line, code)
    problems: list[str]


# -- rendering: code and document to the same text --------------------------------------------

Param = tuple[str, str, str | None, str | None]  # kind, name, annotation, default


def _render(name: str, params: Sequence[Param], ret: str | None, decorators: Sequence[str]) -> str:
    parts: list[str] = []
    star_done = False
    for i, (kind, pname, ann, default) in enumerate(params):
        if kind == "KEYWORD_ONLY" and not star_done:
            parts.append("*")
        if kind in ("VAR_POSITIONAL", "KEYWORD_ONLY"):
            star_done = True
        text = {"VAR_POSITIONAL": "*", "VAR_KEYWORD": "**"}.get(kind, "") + pname
        if ann is not None:
            text += f": {ann}"
        if default is not None:
            text += f" = {default}" if ann is not None else f"={default}"
        parts.append(text)
        nxt = params[i + 1][0] if i + 1 < len(params) else None
        if kind == "POSITIONAL_ONLY" and nxt != "POSITIONAL_ONLY":
            parts.append("/")
    head = "".join(f"@{d}\n" for d in decorators)
    arrow = f" -> {ret}" if ret is not None else ""
    return f"{head}def {name}({', '.join(parts)}){arrow}"


def _annotation(ann: Any) -> str | None:
    if ann is inspect.Parameter.empty:
        return None
    return ann if isinstance(ann, str) else inspect.formatannotation(ann)


def _code_default(value: Any) -> str | None:
    if value is inspect.Parameter.empty:
        return None
    text = repr(value)
    # a dataclass ``__init__`` shows a default factory as the sentinel ``<factory>``
    return "field(default_factory=...)" if text == "<factory>" else text


def _code_function(name: str, fn: Any, decorators: Sequence[str]) -> str:
    sig = inspect.signature(fn)
    params: list[Param] = [
        (p.kind.name, p.name, _annotation(p.annotation), _code_default(p.default))
        for p in sig.parameters.values()
    ]
    return _render(name, params, _annotation(sig.return_annotation), decorators)


def _doc_default(node: ast.expr | None) -> str | None:
    if node is None:
        return None
    if isinstance(node, ast.Call) and ast.unparse(node.func) == "field":
        for kw in node.keywords:
            if kw.arg == "default_factory":
                return "field(default_factory=...)"
            if kw.arg == "default":
                return _doc_default(kw.value)
    try:
        return repr(ast.literal_eval(node))
    except ValueError:
        return ast.unparse(node)


def _doc_function(node: ast.FunctionDef) -> str:
    a = node.args
    params: list[Param] = []
    positional = [*a.posonlyargs, *a.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(a.defaults))
    defaults += a.defaults
    for i, arg in enumerate(positional):
        kind = "POSITIONAL_ONLY" if i < len(a.posonlyargs) else "POSITIONAL_OR_KEYWORD"
        params.append((kind, arg.arg, _doc_ann(arg.annotation), _doc_default(defaults[i])))
    if a.vararg is not None:
        params.append(("VAR_POSITIONAL", a.vararg.arg, _doc_ann(a.vararg.annotation), None))
    for arg, d in zip(a.kwonlyargs, a.kw_defaults, strict=True):
        params.append(("KEYWORD_ONLY", arg.arg, _doc_ann(arg.annotation), _doc_default(d)))
    if a.kwarg is not None:
        params.append(("VAR_KEYWORD", a.kwarg.arg, _doc_ann(a.kwarg.annotation), None))
    decorators = [ast.unparse(d) for d in node.decorator_list]
    return _render(node.name, params, _doc_ann(node.returns), decorators)


def _doc_ann(node: ast.expr | None) -> str | None:
    return None if node is None else ast.unparse(node)


def _dataclass_line(frozen: bool) -> str:
    return "@dataclass(frozen=True)" if frozen else "@dataclass"


def _code_class(cls: type) -> str:
    lines: list[str] = []
    if dataclasses.is_dataclass(cls):
        lines.append(_dataclass_line(cls.__dataclass_params__.frozen))  # type: ignore[attr-defined]
    bases = [b.__name__ for b in cls.__bases__ if b is not object]
    lines.append(f"class {cls.__name__}" + (f"({', '.join(bases)})" if bases else "") + ":")
    if dataclasses.is_dataclass(cls):
        for f in dataclasses.fields(cls):
            default = None
            if f.default is not dataclasses.MISSING:
                default = repr(f.default)
            elif f.default_factory is not dataclasses.MISSING:
                default = "field(default_factory=...)"
            ann = _annotation(f.type) or ""
            lines.append(f"    {f.name}: {ann}" + (f" = {default}" if default else ""))
    lines += [f"    {a}" for a in sorted(_attributes(cls))]
    if not dataclasses.is_dataclass(cls) and "__init__" in vars(cls):
        init = _code_function("__init__", vars(cls)["__init__"], [])
        lines.append(textwrap.indent(init, "    "))
    return "\n".join(lines)


def _doc_class(node: ast.ClassDef) -> str:
    lines: list[str] = []
    is_dc = False
    for d in node.decorator_list:
        name = ast.unparse(d.func if isinstance(d, ast.Call) else d)
        if name == "dataclass":
            is_dc = True
            frozen = isinstance(d, ast.Call) and any(
                k.arg == "frozen" and isinstance(k.value, ast.Constant) and k.value.value is True
                for k in d.keywords
            )
            lines.append(_dataclass_line(frozen))
        else:
            lines.append(f"@{ast.unparse(d)}")
    bases = [ast.unparse(b) for b in node.bases]
    lines.append(f"class {node.name}" + (f"({', '.join(bases)})" if bases else "") + ":")
    attrs: list[str] = []
    init: str | None = None
    for item in node.body:
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            if is_dc:
                default = _doc_default(item.value)
                ann = ast.unparse(item.annotation)
                lines.append(f"    {item.target.id}: {ann}" + (f" = {default}" if default else ""))
            else:
                attrs.append(item.target.id)
        elif isinstance(item, ast.FunctionDef) and item.name == "__init__":
            init = textwrap.indent(_doc_function(item), "    ")
    lines += [f"    {a}" for a in sorted(attrs)]
    if init is not None:
        lines.append(init)
    return "\n".join(lines)


# -- the public surface of the code ------------------------------------------------------------


def _attributes(cls: type) -> set[str]:
    """Public data attributes of ``cls`` that are not dataclass fields: slots, class-level
    values and ``self.name = ...`` assignments in the methods of ``cls`` and its mmsb bases."""
    fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    found: set[str] = set()
    for klass in cls.__mro__:
        if klass.__module__ == "builtins":
            continue
        slots = vars(klass).get("__slots__", ())
        found.update([slots] if isinstance(slots, str) else slots)
        for name, value in vars(klass).items():
            if not (callable(value) or isinstance(value, (property, classmethod, staticmethod))):
                found.add(name)
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        for node in ast.walk(tree):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AnnAssign):
                targets = [node.target]
            for t in targets:
                if isinstance(t, ast.Attribute) and ast.unparse(t.value) == "self":
                    found.add(t.attr)
    return {n for n in found if not n.startswith("_") and n not in fields}


def _members(cls: type) -> dict[str, tuple[str, Any]]:
    """Public methods and properties of ``cls`` (inherited from mmsb classes included)."""
    out: dict[str, tuple[str, Any]] = {}
    for name in dir(cls):
        if name.startswith("_"):
            continue
        owner = next((k for k in cls.__mro__ if name in vars(k)), None)
        if owner is None or owner.__module__ == "builtins":
            continue
        raw = vars(owner)[name]
        if isinstance(raw, property):
            out[name] = ("property", raw.fget)
        elif isinstance(raw, classmethod):
            out[name] = ("classmethod", raw.__func__)
        elif isinstance(raw, staticmethod):
            out[name] = ("staticmethod", raw.__func__)
        elif inspect.isfunction(raw):
            out[name] = ("method", raw)
    return out


def _returned_classes(fn: Any, known: dict[str, set[type]], package: str) -> list[type]:
    ret = getattr(fn, "__annotations__", {}).get("return")
    if not isinstance(ret, str):
        return []
    module = sys.modules.get(fn.__module__)
    found = []
    for ident in re.findall(r"[A-Za-z_]\w*", ret):
        cand = getattr(module, ident, None)
        if not (inspect.isclass(cand) and cand.__module__.startswith(package)):
            named = known.get(ident, set())
            cand = next(iter(named)) if len(named) == 1 else None
        if cand is not None:
            found.append(cand)
    return found


def _classes_by_name(package: str) -> dict[str, set[type]]:
    out: dict[str, set[type]] = {}
    for mod in list(sys.modules.values()):
        if getattr(mod, "__name__", "").startswith(package):
            for k, v in vars(mod).items():
                if inspect.isclass(v) and v.__module__.startswith(package):
                    out.setdefault(k, set()).add(v)
    return out


def python_surface(
    modules: Iterable[tuple[ModuleType, str]],
    extra_classes: Iterable[type] = (),
    package: str = "mmsb",
) -> dict[str, Entry]:
    """Every entry the document must hold for ``modules`` (each with its key prefix).

    Classes that public methods return are followed when they belong to ``package``.
    """
    entries: dict[str, Entry] = {}
    classes: list[type] = []
    for module, prefix in modules:
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj):
                if obj not in classes:
                    classes.append(obj)
            elif inspect.isfunction(obj):
                entries[prefix + name] = Entry(
                    prefix + name, "function", _code_function(name, obj, [])
                )
            elif not inspect.ismodule(obj):
                entries[prefix + name] = Entry(prefix + name, "constant", name)
    classes += [c for c in extra_classes if c not in classes]
    known = _classes_by_name(package)
    i = 0
    while i < len(classes):  # classes grows as return annotations lead to more
        cls = classes[i]
        i += 1
        entries[cls.__name__] = Entry(cls.__name__, "class", _code_class(cls))
        for name, (kind, fn) in sorted(_members(cls).items()):
            key = f"{cls.__name__}.{name}"
            decorators = [] if kind == "method" else [kind]
            entries[key] = Entry(key, kind, _code_function(name, fn, decorators))
            for found in _returned_classes(fn, known, package):
                if found not in classes:
                    classes.append(found)
    return entries


def cli_surface(group: Any, name: str = "mmsb") -> dict[str, Entry]:
    """The entries for a ``click`` command (group), its subcommands and their options."""
    import click

    entries: dict[str, Entry] = {}

    def walk(cmd: click.Command, path: str) -> None:
        ctx = click.Context(cmd, info_name=path)
        flags: set[str] = set()
        for p in cmd.params:
            if isinstance(p, click.Option):
                flags.update(p.opts, p.secondary_opts)
        usage = cmd.get_usage(ctx).strip()
        entries[path] = Entry(path, "command", usage, frozenset(flags - HELP_FLAGS))
        if isinstance(cmd, click.Group):
            for sub_name, sub in sorted(cmd.commands.items()):
                walk(sub, f"{path} {sub_name}")

    walk(group, name)
    return entries


def surface() -> dict[str, Entry]:
    """The real surface: the modules in :data:`MODULES`, the extra classes, the CLI."""
    from mmsb.cli import cli

    mods = [(importlib.import_module(m), prefix) for m, prefix in MODULES]
    extra = []
    for dotted in EXTRA_CLASSES:
        mod, _, name = dotted.rpartition(".")
        extra.append(getattr(importlib.import_module(mod), name))
    return {**python_surface(mods, extra), **cli_surface(cli)}


# -- reading the document ----------------------------------------------------------------------

ENTRY_HEADING = re.compile(r"#{3,4}\s+(`[^`]+`(?:\s*·\s*`[^`]+`)*)\s*")
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


def _stub(code: str) -> str | None:
    """The normalised signature if ``code`` holds only one stub, else None."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    if len(tree.body) != 1:
        return None
    node = tree.body[0]
    if isinstance(node, ast.FunctionDef) and _is_ellipsis_body(node.body):
        return _doc_function(node)
    if isinstance(node, ast.ClassDef) and all(
        isinstance(n, ast.AnnAssign)
        or (isinstance(n, ast.FunctionDef) and _is_ellipsis_body(n.body))
        or _is_ellipsis_body([n])
        for n in node.body
    ):
        return _doc_class(node)
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return node.target.id
    return None


def _is_ellipsis_body(body: list[ast.stmt]) -> bool:
    return all(
        isinstance(n, ast.Expr)
        and isinstance(n.value, ast.Constant)
        and (n.value.value is Ellipsis or isinstance(n.value.value, str))
        for n in body
    )


def parse_document(text: str) -> Document:
    """Entries (with their stub, usage line and option flags) and examples of a document."""
    doc = Document([], [], [])
    current: DocEntry | None = None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = FENCE.match(line)
        if fence:
            lang, start = fence.group(2), i + 1
            i += 1
            while i < len(lines) and not FENCE.match(lines[i]):
                i += 1
            code = textwrap.dedent("\n".join(lines[start:i]))
            i += 1
            if lang == "python":
                stub = _stub(code)
                if stub is None:
                    doc.examples.append((start + 1, code))
                elif current is None:
                    doc.problems.append(f"line {start}: a signature outside an entry")
                elif current.stub is not None:
                    doc.problems.append(f"line {start}: a second signature under one heading")
                else:
                    current.stub = stub
            elif current is not None:
                for u in code.splitlines():
                    if u.startswith("Usage: ") and current.usage is None:
                        current.usage = u.strip()
            continue
        if line.startswith("#"):
            m = ENTRY_HEADING.fullmatch(line)
            current = None
            if m:
                keys = tuple(
                    k.strip()
                    for token in re.findall(r"`([^`]+)`", m.group(1))
                    for k in token.split("·")
                )
                current = DocEntry(keys, i + 1)
                doc.entries.append(current)
        elif current is not None and line.startswith("|"):
            first = re.split(r"(?<!\\)\|", line.strip().strip("|"))[0]
            for token in re.findall(r"`([^`]+)`", first):
                current.flags.update(FLAG.findall(token))
        i += 1
    return doc


# -- the drift check ---------------------------------------------------------------------------


def check(text: str, expected: dict[str, Entry]) -> list[str]:
    """Every difference between a document and the code's surface, one message each."""
    doc = parse_document(text)
    problems = list(doc.problems)
    seen: dict[str, int] = {}
    for e in doc.entries:
        for key in e.keys:
            if key in seen:
                problems.append(f"{key}: documented twice (lines {seen[key]} and {e.line})")
                continue
            seen[key] = e.line
            want = expected.get(key)
            if want is None:
                problems.append(f"{key}: documented (line {e.line}) but not in the code")
            elif want.kind == "command":
                problems += _check_command(key, e, want)
            elif e.stub is None:
                problems.append(f"{key}: no signature block under its heading (line {e.line})")
            elif e.stub != want.text:
                problems.append(
                    f"{key}: the documented signature (line {e.line}) differs from the code\n"
                    + _difference(e.stub, want.text)
                )
    for key in sorted(set(expected) - set(seen)):
        problems.append(f"{key}: in the code but not documented ({expected[key].kind})")
    return problems


def _check_command(key: str, e: DocEntry, want: Entry) -> list[str]:
    out = []
    if e.usage != want.text:
        out.append(f"{key}: usage differs\n  doc:  {e.usage}\n  code: {want.text}")
    for flag in sorted(want.flags - e.flags):
        out.append(f"{key}: option {flag} is in the code but not documented")
    for flag in sorted(e.flags - want.flags - HELP_FLAGS):
        out.append(f"{key}: option {flag} is documented but not in the code")
    return out


def _difference(doc: str, code: str) -> str:
    """The lines that differ (a class lists fields, attributes and ``__init__`` one a line);
    the whole text when the difference is in the order only."""
    doc_lines, code_lines = doc.splitlines(), code.splitlines()
    only_doc = [line for line in doc_lines if line not in code_lines]
    only_code = [line for line in code_lines if line not in doc_lines]
    if not only_doc and not only_code:
        only_doc, only_code = doc_lines, code_lines
    out = [f"  doc:  {line.strip()}" for line in only_doc]
    out += [f"  code: {line.strip()}" for line in only_code]
    return "\n".join(out)


def _split_top(text: str) -> list[str]:
    """``text`` split at the commas that are not inside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def _stub_lines(line: str, width: int = 96) -> list[str]:
    """One rendered line as stub source: ``def`` gets ``: ...``, wrapped one parameter per
    line when it is wider than ``width``; a bare attribute name gets ``: Any``."""
    indent = line[: len(line) - len(line.lstrip())]
    body = line.strip()
    if body.startswith("def "):
        if len(line) + 5 <= width:
            return [f"{line}: ..."]
        head, _, rest = body.partition("(")
        params, _, ret = rest.rpartition(")")
        out = [f"{indent}{head}("]
        out += [f"{indent}    {p}," for p in _split_top(params)]
        return [*out, f"{indent}){ret}: ..."]
    if indent and ":" not in body and not body.startswith("@"):
        return [f"{line}: Any"]
    return [line]


def skeleton(expected: dict[str, Entry]) -> str:
    """A heading and signature block (or usage line) for every entry, in surface order."""
    out = []
    for e in expected.values():
        out.append(f"#### `{e.key}`\n")
        if e.kind == "command":
            out.append(f"```text\n{e.text}\n```\n")
            out += ["| Option | Meaning |", "|---|---|"]
            out += [f"| `{f}` | |" for f in sorted(e.flags)]
            out.append("")
            continue
        lines = [x for line in e.text.splitlines() for x in _stub_lines(line)]
        if e.kind == "constant":
            lines = [f"{e.text}: Any"]
        elif e.kind == "class" and len(lines) == 1 + lines[0].startswith("@"):
            lines.append("    ...")
        out.append("```python\n" + "\n".join(lines) + "\n```\n")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    expected = surface()
    if args[:1] == ["skeleton"]:
        print(skeleton(expected))
        return 0
    if args[:1] == ["check"]:
        path = Path(args[1] if len(args) > 1 else "docs/api.md")
        problems = check(path.read_text(encoding="utf-8"), expected)
        for p in problems:
            print(p)
        print(f"{len(problems)} difference(s) between {path} and the code")
        return 1 if problems else 0
    print("usage: python tools/apiref.py check [PATH] | skeleton", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
