#!/bin/sh
# First start on an empty /data volume: fetch the models (needs internet; not fatal, the YAMNet
# bridge or a mounted model may serve) and build the default index, then run the command.
set -e
if [ ! -f "${ECHOVIDS_DATA_DIR:-/data}/models/vggish_model.ckpt" ] && [ -z "${VGGISH_CHECKPOINT:-}" ]; then
  echovids model fetch || echo "echo-vids: model fetch failed; continuing (set VGGISH_CHECKPOINT or mount models into /data/models)" >&2
fi
echovids index build --if-missing
exec "$@"
