"""No process pool in Echo-Vids forks (issue 11 #1).

A pool *forked* from the bot's multithreaded process inherited its asyncio signal wake-up fd; when
the pool stopped its workers, the bot's own loop saw SIGTERM and shut down. Every pool must be
started with ``spawn`` (or ``forkserver``). The static check reads every module of ``core/`` and
``bot/`` so a new pool cannot slip in with the platform default (fork on Linux); the behavioural
check looks at the real worker processes of the builder's shard parsing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SAFE = {"spawn", "forkserver"}


def _str(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def fork_uses(source: str, filename: str) -> list[str]:
    """Places in ``source`` that start processes by fork (explicitly or by the platform default)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
        where = f"{filename}:{node.lineno}"
        kwargs = {k.arg: k.value for k in node.keywords}
        if name in ("fork", "forkpty") and owner == "os":
            found.append(f"{where} os.{name}()")
        elif name in ("get_context", "set_start_method"):
            method = _str(node.args[0]) if node.args else _str(kwargs.get("method"))
            if method not in SAFE:
                found.append(f"{where} {name}({method!r}): use 'spawn' or 'forkserver'")
        elif name == "ProcessPoolExecutor" and "mp_context" not in kwargs:
            found.append(f"{where} ProcessPoolExecutor without mp_context (forks on Linux)")
        elif name in ("Pool", "Process") and owner in ("multiprocessing", "mp"):
            found.append(f"{where} {owner}.{name}() uses the default start method (fork on Linux); "
                         "use multiprocessing.get_context('spawn')")
    return found


def test_the_static_check_catches_each_form_of_fork():
    bad = """
import os, multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
os.fork()
mp.get_context("fork")
mp.get_context()
mp.set_start_method("fork")
ProcessPoolExecutor(4)
mp.Pool(2)
"""
    assert len(fork_uses(bad, "bad.py")) == 6
    good = """
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
ctx = mp.get_context("spawn")
ctx.Pool(2)
ProcessPoolExecutor(2, mp_context=mp.get_context("forkserver"))
"""
    assert fork_uses(good, "good.py") == []


def test_no_code_path_in_core_or_bot_forks():
    problems: list[str] = []
    for folder in ("core", "bot"):
        for path in sorted((PROJECT_ROOT / folder).rglob("*.py")):
            problems += fork_uses(path.read_text(encoding="utf-8"), str(path.relative_to(PROJECT_ROOT)))
    assert problems == []


@pytest.mark.slow
def test_shard_parsing_workers_are_spawned_not_forked(bal_train_dir: Path):
    """The workers of the builder's pool run spawn_main (a fresh interpreter), not a copy of us."""
    import multiprocessing as mp

    from core.index.builder import _read_shards

    shards = sorted(bal_train_dir.glob("*.tfrecord"))[:210]  # enough for the pool to be used
    results = _read_shards(shards)
    next(results)
    workers = mp.active_children()
    cmdlines = [Path(f"/proc/{w.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode() for w in workers]
    rest = list(results)
    assert len(rest) == len(shards) - 1
    assert cmdlines and all("spawn_main" in c or "forkserver" in c for c in cmdlines), cmdlines
