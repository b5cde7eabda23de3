"""Exact dense-CRF mean field, the reference crf_test.go checks Refine against.

Written from Krähenbühl & Koltun, "Efficient Inference in Fully Connected
CRFs with Gaussian Edge Potentials" (NIPS 2011), Algorithm 1, with every
pair of pixels i != j summed explicitly (O(N^2), tiny images only):

    unary_i(l)  = -log(max(prob_i(l), 1e-8))
    k1_ij       = exp(-|p_i-p_j|^2 / 2 ApprXY^2 - |I_i-I_j|^2 / 2 ApprRGB^2)
    k2_ij       = exp(-|p_i-p_j|^2 / 2 SmoothXY^2)
    K_i         = 1 + sum_{j != i} k_ij          (the kernel's mass at i, k_ii = 1)
    Qt_i(l)     = sum_m w_m sum_{j != i} k_m,ij Q_j(l) / K_m,i
    Qhat_i(l)   = sum_{l'} mu(l, l') Qt_i(l'),   mu = 1 - I (Potts)
    Q_i(l)      = exp(-unary_i(l) - Qhat_i(l)) / Z_i

starting from Q_i = softmax(-unary_i). Each kernel is divided by the
pixel's mass K_i as in the authors' code (see the package comment of
crf.go); the rest is the paper's algorithm as printed.

stdin: a JSON list of cases {w, h, n, prob (h*w*n), rgb (h*w*3), params
{iterations, smooth_xy, smooth_w, appr_xy, appr_rgb, appr_w} (crf.Params as JSON)}; stdout: a JSON
list of the refined probabilities (h*w*n each).
"""
import json
import sys

import numpy as np


def softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def refine(case):
    w, h, n, p = case["w"], case["h"], case["n"], case["params"]
    prob = np.asarray(case["prob"], dtype=np.float64).reshape(h * w, n)
    rgb = np.asarray(case["rgb"], dtype=np.float64).reshape(h * w, 3)
    ys, xs = np.mgrid[0:h, 0:w]
    pos = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)

    def sqdist(f):
        return ((f[:, None, :] - f[None, :, :]) ** 2).sum(axis=2)

    dpos, dcol = sqdist(pos), sqdist(rgb)
    kernels = [
        (p["appr_w"], np.exp(-dpos / (2 * p["appr_xy"] ** 2) - dcol / (2 * p["appr_rgb"] ** 2))),
        (p["smooth_w"], np.exp(-dpos / (2 * p["smooth_xy"] ** 2))),
    ]
    for _, k in kernels:
        np.fill_diagonal(k, 0.0)  # j != i
    mu = 1.0 - np.eye(n)

    unary = -np.log(np.maximum(prob, 1e-8))
    q = softmax(-unary)
    for _ in range(p["iterations"]):
        qt = sum(wm * (k @ q) / (1.0 + k.sum(axis=1, keepdims=True)) for wm, k in kernels)
        q = softmax(-unary - qt @ mu)
    return q.ravel().tolist()


def main():
    cases = json.load(sys.stdin)
    json.dump([refine(c) for c in cases], sys.stdout)


if __name__ == "__main__":
    main()
