"""A person at the terminal sees only Echo-Vids' own lines on stderr (issue 11): the real ``echovids``
process, with nothing quieted by the caller, on the small real index.

Without ``bot.quiet`` these runs print LiteRT's "Created TensorFlow Lite XNNPACK delegate" (YAMNet),
libmpg123's "Note: Illegal Audio-MPEG-Header" (a text file named ``.mp3``) and, on big builds,
absl/ScaNN lines: all written by native code straight to fd 2. Each test also looks in the debug
log, so it proves the chatter was moved there, not that it happened not to occur.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.media import make_voice_note

ROOT = Path(__file__).resolve().parent.parent


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ECHOVIDS_", "VGGISH_", "YAMNET_", "TF_CPP_", "GLOG_"))}
    env.update(PYTHONPATH=str(ROOT), **extra)
    return env


def echovids(*args: str, env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=240)


@pytest.fixture()
def data_dir(small_index_dir: Path, tmp_path: Path) -> Path:
    """The shared small index seen through a fresh data directory, so each test reads its own debug log."""
    data = tmp_path / "data"
    data.mkdir()
    for entry in small_index_dir.iterdir():
        if entry.name != "logs":
            (data / entry.name).symlink_to(entry)
    return data


def _debug_log(data: Path) -> str:
    return (data / "logs" / "debug.log").read_text(errors="replace")


def test_text_search_prints_nothing_but_the_answer(data_dir: Path, audioset_meta: Path):
    p = echovids("search", "--text", "dog barking", "--json", "--no-live-check", "--index", str(data_dir),
                 env=_env(ECHOVIDS_AUDIOSET_META=str(audioset_meta)))
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["results"]
    assert p.stderr == ""


def test_audio_search_through_yamnet_prints_nothing_on_stderr(data_dir: Path, audioset_meta: Path,
                                                               yamnet_model_path: Path, tmp_path: Path):
    note = make_voice_note(tmp_path / "note.ogg", seconds=4.0, kind="speech")
    env = _env(ECHOVIDS_AUDIOSET_META=str(audioset_meta), YAMNET_MODEL=str(yamnet_model_path),
               VGGISH_CHECKPOINT=str(tmp_path / "no-vggish.ckpt"))
    p = echovids("search", str(note), "--json", "--no-live-check", "--index", str(data_dir), env=env)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["query"]["model"] == "yamnet"
    assert p.stderr == ""
    assert "XNNPACK" in _debug_log(data_dir)  # LiteRT did speak: into the debug log

    human = echovids("search", str(note), "--no-live-check", "--index", str(data_dir), env=env)
    assert human.returncode == 0, human.stderr
    lines = human.stderr.splitlines()
    assert len(lines) == 1 and "indexed seconds" in lines[0], human.stderr


def test_a_text_file_named_mp3_is_exactly_one_line(data_dir: Path, audioset_meta: Path,
                                                    yamnet_model_path: Path, tmp_path: Path):
    fake = tmp_path / "x.mp3"
    fake.write_text("this is not audio\n" * 20)
    p = echovids("search", str(fake), "--no-live-check", "--index", str(data_dir),
                 env=_env(ECHOVIDS_AUDIOSET_META=str(audioset_meta), YAMNET_MODEL=str(yamnet_model_path)))
    assert p.returncode == 1
    assert p.stderr.splitlines() == [
        "echovids: the file is not audio or video that can be decoded (corrupt or unsupported)"], p.stderr
    assert p.stdout == ""


def test_a_missing_data_directory_is_one_line(tmp_path: Path):
    p = echovids("search", "--text", "dog", "--index", str(tmp_path / "nowhere"), env=_env())
    assert p.returncode == 1
    assert len(p.stderr.splitlines()) == 1 and p.stderr.startswith("echovids: no index in"), p.stderr


_PLUGIN = '''
import os, sys, warnings, logging

def run(args, settings):
    os.write(2, b"I0000 00:00:1 native.cc:1] chatter from C code\\n")
    warnings.warn("a library warning", UserWarning)
    logging.getLogger("somelib").warning("a library log record")
    logging.getLogger("echovids.test").warning("a warning of ours")
    if os.environ.get("PLUGIN_CRASH"):
        {}[os.environ["PLUGIN_CRASH"]]
    print("answer")
    return 0
'''

_RUNNER = ("import sys, bot.cli as cli; cli.HANDLERS[('search', None)] = 'quiet_plugin'; "
           "sys.argv = ['echovids', 'search', '--text', 'x', '--index', sys.argv[1]]; sys.exit(cli.main())")


def _run_plugin(tmp_path: Path, **extra: str) -> subprocess.CompletedProcess:
    (tmp_path / "quiet_plugin.py").write_text(_PLUGIN)
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    env = _env(**extra)
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{tmp_path}"
    return subprocess.run([sys.executable, "-c", _RUNNER, str(data)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def test_native_writes_warnings_and_library_logs_go_to_the_debug_log(tmp_path: Path):
    p = _run_plugin(tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "answer\n"
    assert p.stderr.splitlines() == ["echovids: a warning of ours"]
    log = _debug_log(tmp_path / "data")
    assert "chatter from C code" in log and "a library warning" in log and "a library log record" in log


def test_a_real_bug_still_shows_its_traceback(tmp_path: Path):
    p = _run_plugin(tmp_path, PLUGIN_CRASH="no-such-key")
    assert p.returncode == 1
    assert "Traceback (most recent call last)" in p.stderr and "KeyError: 'no-such-key'" in p.stderr
    assert "chatter from C code" not in p.stderr


def test_echovids_debug_leaves_stderr_alone(tmp_path: Path):
    p = _run_plugin(tmp_path, ECHOVIDS_DEBUG="1")
    assert p.returncode == 0, p.stderr
    assert "chatter from C code" in p.stderr and "a library warning" in p.stderr
    assert not (tmp_path / "data" / "logs").exists()
