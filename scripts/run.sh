#!/usr/bin/env bash
# `make run`: build the default index if none is current, then run the bot when a token is set,
# else a demonstration search through the same engine.
set -euo pipefail
cd "$(dirname "$0")/.."
E=.venv/bin/echovids
$E index build --if-missing
if .venv/bin/python -c "import sys; from core.config import load_settings; sys.exit(0 if load_settings().discord_token else 1)"; then
  exec $E bot
fi
echo
echo "== No DISCORD_TOKEN set: running a demonstration search instead of the bot."
echo "== echovids search --text \"dog barking\" --top 5"
$E search --text "dog barking" --top 5
echo
echo "To run the Discord bot, put DISCORD_TOKEN=... in .env (see .env.example and the README's"
echo "'Invite the bot' section), then run 'make run' again."
