#!/usr/bin/env bash
# Main job: set up (first run only), then run the driving pipeline on a sample sequence and leave
# class-id images and colour views in out/demo/. Extra arguments go to run_pipeline
# (e.g. --semantic-checkpoint model.pth, --source video.mp4, -p input_height:=256).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/bootstrap.sh"
set +u; source "$ROOT/env.sh"; set -u
SAMPLE="$ROOT/../shared/data/camvid_seq05vd/images"
if [[ -d "$SAMPLE" ]]; then SOURCE="$SAMPLE"; else SOURCE=synthetic; fi
# --source may be given once per camera: the sample is the default only when none is given.
DEFAULT_SOURCE=(--source "$SOURCE")
for argument in "$@"; do
  if [[ "$argument" == --source || "$argument" == --source=* ]]; then DEFAULT_SOURCE=(); fi
done
cd "$ROOT"
exec python -m seg_perception.bringup.runner "${DEFAULT_SOURCE[@]}" --output "$ROOT/out/demo" "$@"
