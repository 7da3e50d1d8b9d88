#!/usr/bin/env bash
# `make run`: build the default index if none is current, then run the bot when a token is set,
# else a demonstration through the same engine: a voice note synthesized here, and a text search.
set -euo pipefail
cd "$(dirname "$0")/.."
E=.venv/bin/echovids
PY=.venv/bin/python

$E index build --if-missing

# Models: VGGish weights need the internet (291 MB); YAMNet (or a bundled copy) serves audio
# queries without them. Fetch only when neither is on disk; offline, say so and go on.
if ! $PY - <<'PYEOF'
import sys
from core.config import load_settings
s = load_settings()
sys.exit(0 if s.vggish_checkpoint().is_file() or s.yamnet_model().is_file() else 1)
PYEOF
then
  $E model fetch || echo "(model fetch failed: audio searches need a model; text and --like searches still work)"
fi

if $PY -c "import sys; from core.config import load_settings; sys.exit(0 if load_settings().discord_token else 1)"; then
  exec $E bot
fi

DATA_DIR=$($PY -c "from core.config import load_settings; print(load_settings().data_dir)")
DEMO="$DATA_DIR/demo"
mkdir -p "$DEMO"
NOTE="$DEMO/voice-note.ogg"
if command -v espeak-ng >/dev/null 2>&1; then
  espeak-ng -w "$DEMO/speech.wav" "Hello, this is a voice note for Echo Vids. Can you find videos that sound like me?"
  ffmpeg -loglevel error -y -i "$DEMO/speech.wav" -ac 1 -ar 48000 -c:a libopus -b:a 32k "$NOTE"
else  # a doorbell-like two-tone chime, so the demo works with ffmpeg alone
  ffmpeg -loglevel error -y -f lavfi -i "sine=frequency=660:duration=0.6" -f lavfi -i "sine=frequency=523:duration=1.2" \
    -filter_complex "[0][1]concat=n=2:v=0:a=1,aloop=loop=2:size=86400" -ac 1 -ar 48000 -c:a libopus "$NOTE"
fi

echo
echo "== No DISCORD_TOKEN set: a demonstration through the same engine the bot uses."
echo "== echovids search $NOTE --top 5        (a voice note synthesized just now)"
$E search "$NOTE" --top 5 || true
echo
echo "== echovids search --text \"dog barking\" --top 5"
$E search --text "dog barking" --top 5
echo
echo "To run the Discord bot, put DISCORD_TOKEN=... in .env (see .env.example and the README's"
echo "'Invite the bot' section), then run 'make run' again."
