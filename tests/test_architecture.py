"""Lasting architecture rules, checked by reading the source (no deepflow module is imported).

* The core names no built-in dataset entry: an entry is data (``datasets/<name>.yaml``), so the
  modules every entry shares (``src/deepflow/*.py``, ``src/deepflow/drift/``, ``src/deepflow/kinds/``)
  do not mention one, in code, comments or docstrings.
* The static import graph of ``deepflow.*`` (function-local imports included) has no cycle.
* A kind never imports a built-in entry's own code (``deepflow.usecases``).
* No module under ``src/`` or ``flows/`` is over :data:`MAX_LINES` lines unless its docstring says
  why in its first lines (a line starting ``Long because:``).

Each test fails with the full list of violations, one ``file:line`` each.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PKG = SRC / "deepflow"
MAX_LINES = 400
LONG_BECAUSE = "Long because:"
BUILTIN = {"fraud", "paysim", "nlp", "traffic", "sms", "spam"}  # the built-in entries and their subjects
WORD = re.compile(r"[A-Za-z0-9_]+")
PART = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")  # snake_case and CamelCase pieces


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def core_files() -> list[Path]:
    """The modules shared by every entry: ``src/deepflow/*.py``, ``drift/`` and ``kinds/``."""
    files = sorted(PKG.glob("*.py"))
    for sub in ("drift", "kinds"):
        if (PKG / sub).is_dir():
            files += sorted((PKG / sub).rglob("*.py"))
    return files


def builtin_names(line: str) -> list[str]:
    """The built-in entry names in ``line``: whole words, where ``_``, digits and a CamelCase
    hump also separate words (``TX_FRAUD``, ``FraudPrediction``, ``nlp-n300``; a plural counts)."""
    found = []
    for word in WORD.findall(line):
        for part in PART.findall(word):
            low = part.lower()
            if low in BUILTIN or (low.endswith("s") and low[:-1] in BUILTIN):
                found.append(word)
    return found


def test_the_core_names_no_builtin_entry() -> None:
    violations = [f"{rel(path)}:{number}: {', '.join(names)}"
                  for path in core_files()
                  for number, line in enumerate(path.read_text().splitlines(), 1)
                  if (names := builtin_names(line))]
    assert not violations, ("core modules name built-in entries (say 'the entry', 'the positive class', "
                            "...; entry-specific code belongs in deepflow/usecases/<name>/):\n  "
                            + "\n  ".join(violations))


def test_builtin_names_split_words() -> None:
    assert builtin_names("TX_FRAUD FraudPrediction nlp-n300 SMSSpamCollection frauds")
    assert not builtin_names("card_precision@100 fraudulent spammy nlpx trafficking positive_rate")


# --- the import graph ----------------------------------------------------------------------------


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _type_checking_only(tree: ast.Module) -> set[int]:
    """Ids of import nodes under ``if TYPE_CHECKING:`` (never run, so never part of a cycle)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def imports(name: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """(imported deepflow module, line) of every import statement in ``path``, function-local ones
    included, relative ones resolved; ``from pkg import sub`` counts as importing ``pkg.sub``."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_only(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "deepflow":
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "deepflow":
                continue
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
            if len(subs) < len(node.names):
                yield target, node.lineno
            for sub in subs:
                yield sub, node.lineno


def graph() -> dict[str, dict[str, int]]:
    """Module -> {imported module: first line}, over the modules of ``src/deepflow``."""
    known = modules()
    edges: dict[str, dict[str, int]] = {}
    for name, path in known.items():
        out = edges.setdefault(name, {})
        for target, line in imports(name, path, known):
            if target in known and target != name:
                out.setdefault(target, line)
    return edges


def cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle (``a -> b -> ... -> a``) per strongly connected component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(comp)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    found = []
    for comp in components:
        start = min(comp)
        path, seen = [start], {start}
        while True:  # walk inside the component until a module repeats
            nxt = min(w for w in edges[path[-1]] if w in comp)
            if nxt in seen:
                found.append(path[path.index(nxt):] + [nxt])
                break
            path.append(nxt)
            seen.add(nxt)
    return found


def describe(cycle: list[str], edges: dict[str, dict[str, int]], known: dict[str, Path]) -> str:
    return " -> ".join(f"{a} ({rel(known[a])}:{edges[a][b]})" for a, b in zip(cycle, cycle[1:], strict=False)) \
        + f" -> {cycle[-1]}"


def test_the_import_graph_has_no_cycle() -> None:
    edges, known = graph(), modules()
    found = [describe(c, edges, known) for c in cycles(edges)]
    assert not found, "import cycles (move what both need into one module, or pass it in):\n  " + "\n  ".join(found)


def test_cycle_finder_finds_a_cycle() -> None:
    edges = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1, "d": 1}, "d": {}}
    assert cycles(edges) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b": 1}, "b": {}}) == []


def test_kinds_never_import_builtin_entries() -> None:
    """No import of ``deepflow.usecases`` in ``deepflow.kinds``, nor a dotted name of one in a string
    (``importlib.import_module("deepflow.usecases...")``)."""
    known = modules()
    violations = []
    for name, path in known.items():
        if not name.startswith("deepflow.kinds"):
            continue
        for target, line in imports(name, path, known):
            if target.startswith("deepflow.usecases"):
                violations.append(f"{rel(path)}:{line}: imports {target}")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "deepflow.usecases" in node.value:
                violations.append(f"{rel(path)}:{node.lineno}: names {node.value!r}")
    assert not violations, "kinds import built-in entries' code:\n  " + "\n  ".join(sorted(set(violations)))


# --- module length -------------------------------------------------------------------------------


def long_reason(path: Path) -> bool:
    """Whether the module docstring's first five lines hold a line starting ``Long because:``."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return any(line.strip().startswith(LONG_BECAUSE) for line in doc.splitlines()[:5])


def test_modules_are_short_or_say_why() -> None:
    files = sorted([*SRC.rglob("*.py"), *(ROOT / "flows").rglob("*.py")])
    offenders = [f"{rel(p)}:1: {n} lines" for p in files
                 if (n := len(p.read_text().splitlines())) > MAX_LINES and not long_reason(p)]
    assert not offenders, (f"modules over {MAX_LINES} lines (split them, or give a reason in the docstring's "
                           f"first lines: '{LONG_BECAUSE} ...'):\n  " + "\n  ".join(offenders))
