"""Exports the model zoo into a model repository.

    python -m tfmodels.zoo.export --variant tiny --out models [name ...]

With no names, every model in REGISTRY is exported.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

# model name -> module in this package exposing build_<name>(variant) or build(variant)
REGISTRY = {
    "lenet5": "lenet5",
    "alexnet": "alexnet",
    "vgg16": "vgg16",
    "vgg16_fcn": "vgg16",
    "googlenet": "googlenet",
    "resnet50": "resnet50",
    "facenet": "facenet",
    "siamese": "siamese",
    "yolov3": "yolov3",
    "anchorfree": "anchorfree",
    "faster_rcnn": "faster_rcnn",
    "mask_rcnn": "mask_rcnn",
    "fcn32s": "fcn",
    "fcn16s": "fcn",
    "fcn8s": "fcn",
    "unet": "unet",
    "video_lstm": "video_lstm",
}


def build(name: str, variant: str):
    """Builds the Exportable for a registered model name."""
    mod = importlib.import_module(f"tfmodels.zoo.{REGISTRY[name]}")
    fn = getattr(mod, f"build_{name}", None) or getattr(mod, "build")
    return fn(variant)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", choices=["tiny", "full"], default="tiny")
    ap.add_argument("--out", default="models")
    ap.add_argument("--version", type=int, default=1)
    ap.add_argument("--golden", default="true", choices=["true", "false"])
    ap.add_argument("names", nargs="*")
    args = ap.parse_args(argv)
    names = args.names or list(REGISTRY)
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; known: {sorted(REGISTRY)}")
    from tfmodels.zoo.common import export

    os.makedirs(args.out, exist_ok=True)
    for n in names:
        t = time.time()
        m = build(n, args.variant)
        path = export(m, args.out, version=args.version, golden=args.golden == "true")
        print(f"exported {n} ({args.variant}) -> {path} in {time.time() - t:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
