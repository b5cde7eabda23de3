"""The image input of an imported model (key, size, batch, normalisation) and
the validation samples fed to it: images from --samples, or random pixels."""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from .errors import ImportFailed

IMAGES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
RANDOM_SAMPLES = 2


def _floats(text: str, flag: str, channels: int) -> list[float]:
    try:
        v = [float(x) for x in text.split(",")]
    except ValueError:
        raise ImportFailed(f"{flag} {text!r}: want numbers separated by commas")
    if len(v) == 1:
        v = v * channels
    if len(v) != channels:
        raise ImportFailed(f"{flag} has {len(v)} values, the input has {channels} channels")
    return v


@dataclasses.dataclass
class InputSpec:
    key: str
    batch: int  # 0: any
    height: int
    width: int
    channels: int
    scale: float
    mean: list[float]
    std: list[float]

    @classmethod
    def of(cls, src, a) -> "InputSpec":
        if len(src.inputs) != 1:
            raise ImportFailed(f"{src.path}: {len(src.inputs)} inputs ({', '.join(src.inputs)}); edgeinfer feeds one image: "
                               "name it with --input KEY=TENSOR")
        key, t = next(iter(src.inputs.items()))
        if t.dtype.name != "float32":
            raise ImportFailed(f"{src.path}: input {key} ({t.name}) is {t.dtype.name}; edgeinfer feeds float32 images")
        if t.shape is None or len(t.shape) != 4 or t.shape[3] not in (1, 3):
            raise ImportFailed(f"{src.path}: input {key} ({t.name}) has shape {t.shape}; edgeinfer feeds NHWC images "
                               "[batch, height, width, 1 or 3]")
        h, w = t.shape[1], t.shape[2]
        if a.size:
            try:
                sh, sw = (int(x) for x in a.size.lower().split("x"))
            except ValueError:
                raise ImportFailed(f"--size {a.size!r}: want HxW, e.g. 224x224")
            if (h > 0 and h != sh) or (w > 0 and w != sw):
                raise ImportFailed(f"--size {a.size}: input {key} is fixed at {h}x{w}")
            h, w = sh, sw
        if h <= 0 or w <= 0:
            raise ImportFailed(f"{src.path}: input {key} takes any size ({t.shape}); give the size to feed with --size HxW")
        c = t.shape[3]
        return cls(key, max(t.shape[0], 0), h, w, c, a.scale,
                   _floats(a.mean, "--mean", c), _floats(a.std, "--std", c))

    def normalise(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [..., h, w, c] -> the model's float32 input, as the plugins compute it."""
        x = pixels.astype(np.float32) * np.float32(self.scale)
        return ((x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)).astype(np.float32)


def names(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        raise ImportFailed(f"--samples {folder}: no such folder")
    out = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGES))
    if not out:
        raise ImportFailed(f"--samples {folder}: no images ({', '.join(IMAGES)})")
    return out


def load(path: str, spec: InputSpec) -> np.ndarray:
    """One image as uint8 [h, w, c]: converted to gray or RGB and stretched to
    the input size (bilinear), as the plugins do."""
    from PIL import Image
    try:
        img = Image.open(path)
        img = img.convert("L" if spec.channels == 1 else "RGB")
    except OSError as e:
        raise ImportFailed(f"{path}: not an image Pillow reads: {e}")
    if img.size != (spec.width, spec.height):
        img = img.resize((spec.width, spec.height), Image.BILINEAR)
    a = np.asarray(img, np.uint8)
    return a.reshape(spec.height, spec.width, spec.channels)


def feeds(src, spec: InputSpec, folder: str | None) -> dict[str, np.ndarray]:
    if folder:
        pixels = np.stack([load(os.path.join(folder, n), spec) for n in names(folder)])
    else:
        rng = np.random.default_rng(0)
        pixels = rng.integers(0, 256, (RANDOM_SAMPLES, spec.height, spec.width, spec.channels), dtype=np.uint8)
    return {spec.key: spec.normalise(pixels)}
