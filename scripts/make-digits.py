"""Write the sample digit images that ship in testdata/digits/.

They are the first 200 images of LeNet-5's held-out split of the
scikit-learn digits set (8x8, 16 grey levels), as the zoo exports them
(32x32 uint8, models/lenet5/<v>/golden/digits_test_images.npy), saved as
grey PNGs, with labels.csv giving each file's true digit. make run feeds them
to the demo; the end-to-end tests check the daemon's answers against
labels.csv.

    .venv/bin/python scripts/make-digits.py models/lenet5/1/golden testdata/digits
"""
import csv
import pathlib
import sys

import numpy as np
from PIL import Image


def main(golden: str, out: str, count: int = 200) -> None:
    images = np.load(pathlib.Path(golden) / "digits_test_images.npy")
    labels = np.load(pathlib.Path(golden) / "digits_test_labels.npy")
    dest = pathlib.Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    with open(dest / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label"])
        for i in range(count):
            name = f"digit-{i:03d}.png"
            Image.fromarray(images[i].astype(np.uint8), mode="L").save(dest / name, optimize=True)
            w.writerow([name, int(labels[i])])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
