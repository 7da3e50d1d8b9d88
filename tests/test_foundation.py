"""The foundation: configuration, the CLI skeleton, and the packaging files."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import build_parser, main
from core.config import VARIABLES, Settings, load_settings
from core.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_need_no_environment():
    s = load_settings({}, dotenv=False)
    assert s.discord_token is None
    assert s.data_dir == Path("index_data")
    assert s.results == 5 and s.workers == 2 and s.live_budget_s == 1.5
    assert s.max_attachment_bytes == 25 * 1024 * 1024
    assert s.vggish_checkpoint() == Path("index_data/models/vggish_model.ckpt")


def test_flag_beats_environment_beats_data_dir(tmp_path):
    env = {"VGGISH_CHECKPOINT": "/env/ckpt", "ECHOVIDS_DATA_DIR": "/data", "ECHOVIDS_TEST_DATA": str(tmp_path)}
    s = load_settings(env, dotenv=False)
    assert s.vggish_checkpoint("/flag/ckpt") == Path("/flag/ckpt")
    assert s.vggish_checkpoint() == Path("/env/ckpt")
    assert s.vggish_pca_params() == Path("/data/models/vggish_pca_params.npz")


@pytest.mark.parametrize(
    "name,value",
    [
        ("ECHOVIDS_WORKERS", "two"),
        ("ECHOVIDS_RESULTS", "11"),
        ("ECHOVIDS_LIVE_BUDGET_S", "-1"),
        ("ECHOVIDS_LISTEN_CHANNELS", "123,abc"),
        ("ECHOVIDS_MODERATOR_ROLE", "mods"),
        ("DISCORD_API_BASE", "discord.com/api"),
        ("DISCORD_GATEWAY_URL", "http://gateway"),
    ],
)
def test_malformed_value_names_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value}, dotenv=False)


def test_bundled_models_are_the_last_resort(tmp_path):
    shared = tmp_path / "shared"
    (shared / "yamnet").mkdir(parents=True)
    (shared / "yamnet" / "yamnet.tflite").write_bytes(b"x")
    data = tmp_path / "data"
    env = {"ECHOVIDS_TEST_DATA": str(shared), "ECHOVIDS_DATA_DIR": str(data)}
    s = load_settings(env, dotenv=False)
    assert s.yamnet_model() == shared / "yamnet" / "yamnet.tflite"          # nothing else: bundled
    assert s.vggish_checkpoint() == data / "models" / "vggish_model.ckpt"  # none bundled: the default path
    (data / "models").mkdir(parents=True)
    (data / "models" / "yamnet.tflite").write_bytes(b"y")
    assert s.yamnet_model() == data / "models" / "yamnet.tflite"            # a fetched copy wins
    assert load_settings({**env, "YAMNET_MODEL": "/env/y"}, dotenv=False).yamnet_model() == Path("/env/y")
    assert Settings().bundled_models == {}  # settings built in code never reach outside


def test_listen_channels_parse():
    s = load_settings({"ECHOVIDS_LISTEN_CHANNELS": "1, 22,333"}, dotenv=False)
    assert s.listen_channels == frozenset({1, 22, 333})


def test_env_example_lists_every_variable_with_its_default():
    text = (ROOT / ".env.example").read_text()
    for name, (default, _meaning) in VARIABLES.items():
        m = re.search(rf"^#?\s*{name}=(.*)$", text, re.M)
        assert m, f"{name} missing from .env.example"
        assert m.group(1).strip() == default, name


def test_readme_documents_every_variable_and_both_commands():
    readme = (ROOT / "README.md").read_text()
    for name in VARIABLES:
        assert f"`{name}`" in readme, name
    assert "make run" in readme and "make test" in readme


def test_cli_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("model", "index", "search", "embed", "bot"):
        assert command in out


def test_cli_version():
    out = subprocess.run([sys.executable, "-m", "bot", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.startswith("echovids ")


def test_bad_config_is_one_line_not_a_traceback(monkeypatch, capsys):
    monkeypatch.setenv("ECHOVIDS_WORKERS", "lots")
    assert main(["index", "status"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["echovids: ECHOVIDS_WORKERS must be a whole number, got 'lots'"]


def test_core_never_imports_bot():
    for path in (ROOT / "core").rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(from|import)\s+bot\b", text, re.M), path


def test_dockerfile_references_files_that_exist():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    assert re.search(r"^USER\s+\S+", text, re.M), "image must run as a non-root user"
    assert "VOLUME" in text and "ffmpeg" in text
    for line in text.splitlines():
        m = re.match(r"^COPY\s+(?!--from)(.+)\s+\S+$", line.strip())
        if m:
            for src in m.group(1).split():
                if not src.startswith("--"):
                    assert (ROOT / src).exists(), f"Dockerfile copies missing {src}"
    assert re.search(r'^CMD\s+\["echovids",\s*"bot"\]', text, re.M)
    ignore = (ROOT / ".dockerignore").read_text()
    assert ".venv" in ignore and "index_data" in ignore


def test_no_shared_data_tracked_in_git():
    out = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=ROOT).stdout.split()
    bad = [f for f in out if re.search(r"\.(tfrecord|ckpt|tflite|h5|npz|npy|pb)$", f)]
    assert bad == []
