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
cd "$ROOT"
exec python -m seg_perception.bringup.runner --source "$SOURCE" --output "$ROOT/out/demo" "$@"
