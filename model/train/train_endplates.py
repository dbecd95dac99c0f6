#!/usr/bin/env python3
"""Trains the endplate refinement CNN on samples exported by `vcfd dataset`, exports ONNX.

The keypoint network (train.py) regresses the six endplate points as offsets from a body's
centre. That finds every body, but it places endplates to about a millimetre and pulls a failed
endplate back towards the normal shape. This second, local stage looks only at a small patch
around one point (33 x 17 pixels of the same reformat, 1 mm each) and says where the endplate
boundary is relative to the patch centre. It sees no whole body, so it has no normal shape to
regress to.

The patch is defined once, identically here and in Rust (`vcfd_model::endplates::patch`):
centre = floor(row + 0.5), floor(col + 0.5); rows centre-16..centre+16, columns centre-8..
centre+8 of the normalised reformat (channel 0: the 10 mm slab the keypoint network reads;
channel 1: its central 2 mm, the body's mid-sagittal plane where a biconcave depression is
deepest); pixels outside the image read -1.5 (air); patches of lower endplate points are
flipped top to bottom so every patch shows the disc above and the body below; three constant
channels one-hot encode ventral / middle / dorsal. The target is the true point minus the
centre, in that (flipped) frame, in pixels.

Usage: train_endplates.py --data DIR [--data DIR2] --out model/weights [--epochs N] [--seed S]
"""

import argparse
import math
import os
import random
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from common import conv, quantize_convs, read_labels


PATCH_ROWS = 33
PATCH_COLS = 17
HALF_R = PATCH_ROWS // 2
HALF_C = PATCH_COLS // 2
PAD = -1.5
IMAGES = 2
CHANNELS = IMAGES + 3
MAX_LATERAL_MM = 6.0
FRACTURE_WEIGHT = 3.0
# How far from the truth the training patches are centred: the keypoint network's errors
# (sd ~1 mm, tails to 4-5 mm on failed endplates) and, for the second pass, this stage's own.
ROW_SD, ROW_SPAN = 1.2, 6.0
COL_SD, COL_SPAN = 0.8, 3.0


def load_samples(dirs):
    """(images [2, h, w]: wide and thin slab, vertebrae, seed) per study."""
    samples = []
    for d, rec in read_labels(dirs):
        h, w = rec["height"], rec["width"]
        imgs = [
            np.fromfile(os.path.join(d, rec[key]), dtype="<f4").reshape(h, w)
            for key in ("file", "thin_file")
        ]
        samples.append((np.stack(imgs), rec["vertebrae"], rec["seed"]))
    return samples


def patch(imgs, k, row, col):
    """The patch of keypoint k (0-2 upper, 3-5 lower) centred at the nearest pixel to
    (row, col) of the stacked images [2, h, w]. Returns (patch [5, R, C], centre (r, c))."""
    _, h, w = imgs.shape
    cr, cc = int(math.floor(row + 0.5)), int(math.floor(col + 0.5))
    x = np.zeros((CHANNELS, PATCH_ROWS, PATCH_COLS), np.float32)
    x[:IMAGES] = PAD
    r0, c0 = cr - HALF_R, cc - HALF_C
    rs, re = max(r0, 0), min(r0 + PATCH_ROWS, h)
    cs, ce = max(c0, 0), min(c0 + PATCH_COLS, w)
    if rs < re and cs < ce:
        x[:IMAGES, rs - r0 : re - r0, cs - c0 : ce - c0] = imgs[:, rs:re, cs:ce]
    if k >= 3:
        x[:IMAGES] = x[:IMAGES, ::-1].copy()
    x[IMAGES + k % 3] = 1.0
    return x, (cr, cc)


class EndplateNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            conv(CHANNELS, 32),
            conv(32, 32, 2),
            conv(32, 64),
            conv(64, 64, 2),
            conv(64, 64),
        )
        rows, cols = (PATCH_ROWS + 3) // 4, (PATCH_COLS + 3) // 4
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * rows * cols, 128),
            nn.ReLU(inplace=True),
            nn.Linear(128, 2),
        )

    def forward(self, x):
        return self.head(self.features(x))


def points(samples):
    """Every usable keypoint: (sample index, k, true row, true col, weight)."""
    out = []
    for i, (img, verts, _) in enumerate(samples):
        for v in verts:
            if not v["complete"] or v["max_lateral_mm"] > MAX_LATERAL_MM:
                continue
            w = FRACTURE_WEIGHT if v["genant_grade"] >= 1 else 1.0
            for k, (c, r) in enumerate(v["keypoints"]):
                out.append((i, k, r, c, w))
    return out


def augment(x, rng):
    """Domain randomisation of both slabs in place, as one scanner would change them: one
    window/contrast change and one blur (isotropic, or along the spine only as thick slices
    do) for both, independent noise, stronger in the thin slab (it averages 3 samples, the
    wide one 11)."""
    imgs = torch.from_numpy(x[:IMAGES].copy())[None]
    imgs = imgs * rng.uniform(0.85, 1.15) + rng.uniform(-0.1, 0.1)
    r = rng.random()
    if r < 0.35:
        k = int(rng.choice([3, 5]))
        imgs = F.avg_pool2d(F.pad(imgs, (k // 2,) * 4, mode="replicate"), k, stride=1)
    elif r < 0.55:
        k = int(rng.choice([3, 5]))
        imgs = F.avg_pool2d(F.pad(imgs, (0, 0, k // 2, k // 2), mode="replicate"), (k, 1), stride=1)
    out = imgs[0].numpy()
    sd = rng.uniform(0.0, 0.08)
    out[0] += rng.normal(0, sd, out[0].shape).astype(np.float32)
    out[1] += rng.normal(0, 1.9 * sd, out[1].shape).astype(np.float32)
    x[:IMAGES] = out


def jitter(rng, sd, span):
    return rng.gauss(0.0, sd) if rng.random() < 0.6 else rng.uniform(-span, span)


def batches(samples, pts, batch, rng):
    order = list(range(len(pts)))
    rng.shuffle(order)
    for i in range(0, len(order), batch):
        xs, ys, ws = [], [], []
        for j in order[i : i + batch]:
            si, k, r, c, w = pts[j]
            img = samples[si][0]
            pr, pc = r + jitter(rng, ROW_SD, ROW_SPAN), c + jitter(rng, COL_SD, COL_SPAN)
            x, (cr, cc) = patch(img, k, pr, pc)
            augment(x, np.random.default_rng(rng.randint(0, 2**31)))
            dr, dc = r - cr, c - cc
            if k >= 3:
                dr = -dr
            xs.append(x)
            ys.append((dr, dc))
            ws.append(w)
        yield (
            torch.from_numpy(np.stack(xs)),
            torch.tensor(ys, dtype=torch.float32),
            torch.tensor(ws, dtype=torch.float32),
        )


def loss_fn(pred, y, w):
    # Rows (heights) matter most; columns only move a point along a sloping endplate.
    l = F.smooth_l1_loss(pred, y, reduction="none", beta=0.5)
    return ((2.0 * l[:, 0] + 0.5 * l[:, 1]) * w).sum() / w.sum()


def export(model, path):
    model.eval()
    dummy = torch.zeros(8, CHANNELS, PATCH_ROWS, PATCH_COLS)
    torch.onnx.export(
        model,
        dummy,
        path,
        input_names=["patches"],
        output_names=["offsets"],
        dynamic_axes={"patches": {0: "n"}, "offsets": {0: "n"}},
        opset_version=17,
        dynamo=False,
    )


def quantize(f32_path, int8_path, samples, pts):
    """Static int8 quantisation, calibrated on 512 training patches, jittered as in training."""
    rng = random.Random(7)
    calib = [pts[i] for i in rng.sample(range(len(pts)), min(512, len(pts)))]
    xs = [patch(samples[si][0], k, r + jitter(rng, ROW_SD, ROW_SPAN), c)[0] for si, k, r, c, _ in calib]
    batches = [{"patches": np.stack(xs[i : i + 64])} for i in range(0, len(xs), 64)]
    quantize_convs(f32_path, int8_path, batches, fixed_batch=True)


def write_reference(out_dir, samples, pts):
    """A fixed batch of real patches and onnxruntime's outputs for both models, so the Rust
    tests check that tract (and the Rust patch extraction) computes the same offsets."""
    import onnxruntime as ort

    rng = random.Random(3)
    chosen = [pts[i] for i in rng.sample(range(len(pts)), 16)]
    xs = [patch(samples[si][0], k, r + 1.3, c - 0.6)[0] for si, k, r, c, _ in chosen]
    x = np.ascontiguousarray(np.stack(xs), dtype=np.float32)
    x.astype("<f4").tofile(os.path.join(out_dir, "endplates_reference_input.f32"))
    for name in ("f32", "int8"):
        sess = ort.InferenceSession(
            os.path.join(out_dir, f"endplates_{name}.onnx"), providers=["CPUExecutionProvider"]
        )
        y = sess.run(None, {"patches": x})[0]
        y.astype("<f4").tofile(os.path.join(out_dir, f"endplates_reference_{name}.f32"))
        print(f"endplates reference {name}: output {y.shape}")


def evaluate(model, samples, pts, rng, passes=2):
    """Mean absolute row error (px) after each pass, from jittered starts, held-out points."""
    model.eval()
    errs = [[] for _ in range(passes + 1)]
    with torch.no_grad():
        for si, k, r, c, _ in pts:
            pr, pc = r + jitter(rng, ROW_SD, ROW_SPAN), c + jitter(rng, COL_SD, COL_SPAN)
            errs[0].append(abs(pr - r))
            for p in range(passes):
                x, (cr, cc) = patch(samples[si][0], k, pr, pc)
                d = model(torch.from_numpy(x[None]))[0].numpy()
                dr = -d[0] if k >= 3 else d[0]
                pr, pc = cr + dr, cc + d[1]
                errs[p + 1].append(abs(pr - r))
    return [float(np.mean(e)) for e in errs]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)

    samples = load_samples(args.data)
    # Keep every 20th study out of training to report the refinement's own error.
    held = [i for i in range(len(samples)) if i % 20 == 0]
    pts_all = points(samples)
    pts = [p for p in pts_all if p[0] % 20 != 0]
    pts_held = [p for p in pts_all if p[0] % 20 == 0]
    print(f"{len(samples)} studies ({len(held)} held out), {len(pts)} training points")

    model = EndplateNet()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * math.ceil(len(pts) / args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=max(steps, 1))
    rng = random.Random(args.seed)
    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        tot, n = 0.0, 0
        for x, y, w in batches(samples, pts, args.batch, rng):
            loss = loss_fn(model(x), y, w)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item()
            n += 1
        held_err = evaluate(model, samples, pts_held[:3000], random.Random(5))
        print(
            f"epoch {epoch + 1}/{args.epochs} loss {tot / max(n, 1):.4f} held-out row MAE px "
            + " -> ".join(f"{e:.3f}" for e in held_err)
            + f" {time.time() - t0:.0f}s",
            flush=True,
        )

    os.makedirs(args.out, exist_ok=True)
    f32 = os.path.join(args.out, "endplates_f32.onnx")
    int8 = os.path.join(args.out, "endplates_int8.onnx")
    torch.save(model.state_dict(), os.path.join(args.out, "endplates.pt"))
    export(model, f32)
    quantize(f32, int8, samples, pts)
    write_reference(args.out, samples, pts)
    print(f"wrote {f32} and {int8}")


if __name__ == "__main__":
    main()
