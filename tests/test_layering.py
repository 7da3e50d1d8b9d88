"""The import layering of docs/architecture.md, read from the source with ``ast``.

Every ``import`` and ``from ... import`` counts, including the lazy ones inside functions (the
code imports heavy stages late on purpose, and a late import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent


def _modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _is_module(dotted: str, root: Path) -> bool:
    path = root.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(path: Path, root: Path = ROOT) -> set[str]:
    """Dotted module names a file imports. ``from a.b import c`` yields ``a.b``, and ``a.b.c`` when
    ``c`` is a module, so a rule on ``core.engine`` also catches ``from core import engine``."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import: resolve against this file's package
                parts = package.split(".")
                base = ".".join(p for p in (*parts[: len(parts) - (node.level - 1)], base) if p)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if _is_module(f"{base}.{a.name}", root))
    return found


def _is(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _breaks(folders: list[str], forbidden: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for folder in folders:
        for path in _modules(folder):
            bad = sorted(n for n in _imports(path) if any(_is(n, f) for f in forbidden))
            if bad:
                out[str(path.relative_to(ROOT))] = bad
    return out


def test_the_reader_sees_lazy_relative_and_from_imports(tmp_path: Path):
    for name in ("core/__init__.py", "core/engine.py", "pkg/__init__.py", "pkg/sub/__init__.py",
                 "pkg/sub/sibling.py", "bot/__init__.py", "bot/render.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("", encoding="utf-8")
    probe = tmp_path / "pkg" / "sub" / "probe.py"
    probe.write_text("import os\nfrom core import engine, __version__\n\ndef f():\n    from . import sibling\n"
                     "    import bot.render\n", encoding="utf-8")
    assert _imports(probe, tmp_path) == {"os", "core", "core.engine", "pkg.sub", "pkg.sub.sibling", "bot.render"}


def test_core_never_imports_bot():
    assert _breaks(["core"], ["bot"]) == {}


def test_storage_and_liveness_never_import_the_facades():
    """Arrows point down: the facades drive storage and liveness (the admin service orchestrates
    check → rebuild → swap), never the other way round."""
    assert _breaks(["core/index", "core/liveness"], ["core.engine", "core.admin"]) == {}


#: Project modules a benchmark may use besides ``core``: the inputs the tests also use (fakes,
#: generated media, a random-weight checkpoint), the program's terminal quieting (so a bench shows its own
#: lines, not ScaNN's or LiteRT's), and the bot itself for the bench that measures it.
BENCH_HELPERS = ["tests.fakes", "tests.media", "tests.vggish_checkpoint", "bot.quiet"]
BENCH_EXTRA = {
    "bench/bot.py": ["bot.client"],            # measures the real bot against the fake Discord
    "bench/yamnet.py": ["tests.test_yamnet"],  # borrows the test's chord list (belongs in tests/media.py)
    # the ops work's soak test of refresh beside a serving bot (lands with that branch)
    "bench/refresh_soak.py": ["bench.bot", "bot.client", "bot.refresh_process"],
}


def test_bench_imports_only_core():
    project = ("bot", "tests", "bench")
    out: dict[str, list[str]] = {}
    for path in _modules("bench"):
        rel = str(path.relative_to(ROOT))
        allowed = BENCH_HELPERS + BENCH_EXTRA.get(rel, [])
        bad = sorted(n for n in _imports(path)
                     if any(_is(n, p) for p in project) and n not in project and not any(_is(n, a) for a in allowed))
        if bad:
            out[rel] = bad
    assert out == {}


#: What the front ends may import from core: the two facades, and the shared vocabulary.
FRONT_END_MAY_IMPORT = {
    "core",           # the package itself (``__version__``)
    "core.engine",    # the query facade (it also makes the liveness checker a front end hands it)
    "core.admin",     # the admin facade: build, status, refresh, embed, model fetch
    "core.evaluate",  # held-out quality, a facade-level service beside the engine
    "core.config", "core.errors", "core.results", "core.progress",
    "core.youtube",   # how YouTube links are read and written (replies show them)
}


def _front_end_breaks(root: Path = ROOT) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for path in sorted((root / "bot").rglob("*.py")):
        bad = sorted(n for n in _imports(path, root) if _is(n, "core") and n not in FRONT_END_MAY_IMPORT)
        if bad:
            out[str(path.relative_to(root))] = bad
    return out


def test_the_front_end_rule_catches_a_stage_import(tmp_path: Path):
    """The rule below must be able to fail: a lazy stage import in a cog is named, a facade import is not."""
    for name in ("core/__init__.py", "core/admin/__init__.py", "core/index/__init__.py", "core/index/store.py",
                 "bot/__init__.py", "bot/cogs/__init__.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("", encoding="utf-8")
    (tmp_path / "bot/cogs/probe.py").write_text(
        "from core.admin import Admin\n\ndef f():\n    from core.index import store\n", encoding="utf-8")
    assert _front_end_breaks(tmp_path) == {"bot/cogs/probe.py": ["core.index", "core.index.store"]}


def test_front_ends_reach_stages_only_through_the_engine_and_the_admin_service():
    assert _front_end_breaks() == {}
