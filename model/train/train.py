#!/usr/bin/env python3
"""Trains the vertebral keypoint CNN on samples exported by `vcfd dataset`, exports ONNX.

The network is anchor-free (CenterNet style): at stride 4 it predicts a heatmap of vertebral
body centres, a sub-pixel centre offset, and the six keypoints as offsets from the centre, so
keypoints are grouped into vertebrae by construction. It is small and dense (3x3 convolutions,
16-64 channels) because tract runs exactly that fastest on a 2-core CPU.

Preprocessing is NOT done here: images arrive normalised by the Rust code that also feeds the
network at inference (`vcfd_model::dataset::normalize`). This script only crops, augments,
trains and exports.

Usage: train.py --data DIR [--data DIR2] --out model/weights [--epochs N] [--seed S]
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

STRIDE = 4
CROP_H = 256
WIDTH = 96
# Offsets are regressed in units of 10 px so targets stay near 1.
OFFSET_SCALE = 10.0
MAX_LATERAL_MM = 6.0
# Regression weight of a fractured vertebra, sampling weight of a study that has one, and the
# chance that a crop is placed on a fracture.
FRACTURE_WEIGHT = 3.0
FRACTURE_SAMPLING = 3.0
FRACTURE_CROP = 0.5


def load_samples(dirs):
    samples = []
    for d, rec in read_labels(dirs):
        img = np.fromfile(os.path.join(d, rec["file"]), dtype="<f4")
        img = img.reshape(rec["height"], rec["width"])[:, :WIDTH]
        samples.append((img, rec["vertebrae"], rec["seed"]))
    return samples


def fractured(v):
    return v["complete"] and v["genant_grade"] >= 1


class KeypointNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.s2 = nn.Sequential(conv(1, 16, 2), conv(16, 16))
        self.s4 = nn.Sequential(conv(16, 32, 2), conv(32, 32))
        self.s8 = nn.Sequential(conv(32, 64, 2), conv(64, 64), conv(64, 64))
        self.s16 = nn.Sequential(conv(64, 64, 2), conv(64, 64))
        self.up8 = conv(128, 64)
        self.up4 = conv(96, 48)
        self.head = nn.Sequential(conv(48, 48), nn.Conv2d(48, 1 + 2 + 12, 1))
        # Start the heatmap at p ~ 0.1 everywhere (CenterNet): stable focal-loss training.
        with torch.no_grad():
            self.head[-1].bias[0] = -2.19

    def forward(self, x):
        x2 = self.s2(x)
        x4 = self.s4(x2)
        x8 = self.s8(x4)
        x16 = self.s16(x8)
        y8 = self.up8(torch.cat([x8, F.interpolate(x16, scale_factor=2.0, mode="nearest")], 1))
        y4 = self.up4(torch.cat([x4, F.interpolate(y8, scale_factor=2.0, mode="nearest")], 1))
        out = self.head(y4)
        # Heatmap logits stay logits: the Rust decoder applies the threshold in logit space.
        return out


def make_targets(verts, top, h, w):
    """Heatmap (gaussian), centre offset and keypoint offsets at stride 4."""
    oh, ow = h // STRIDE, w // STRIDE
    heat = np.zeros((oh, ow), np.float32)
    reg = np.zeros((14, oh, ow), np.float32)
    mask = np.zeros((oh, ow), np.float32)
    ignore = np.zeros((oh, ow), np.float32)
    ys, xs = np.mgrid[0:oh, 0:ow]
    for v in verts:
        cx, cy = v["center"][0] / STRIDE, (v["center"][1] - top) / STRIDE
        if not (0 <= cx < ow and 0 <= cy < oh):
            continue
        usable = v["complete"] and v["max_lateral_mm"] <= MAX_LATERAL_MM
        sigma = 1.5
        g = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma * sigma))
        if not usable:
            # Neither positive nor negative: the network is not punished either way.
            ignore = np.maximum(ignore, (g > 0.05).astype(np.float32))
            continue
        heat = np.maximum(heat, g)
        ix, iy = int(cx), int(cy)
        reg[0, iy, ix] = cx - ix
        reg[1, iy, ix] = cy - iy
        for k, (kx, ky) in enumerate(v["keypoints"]):
            reg[2 + 2 * k, iy, ix] = (kx - v["center"][0]) / OFFSET_SCALE
            reg[3 + 2 * k, iy, ix] = (ky - v["center"][1]) / OFFSET_SCALE
        # Fractured bodies are about 3 % of all: without extra weight the regression learns
        # the normal shape and pulls a crushed endplate back toward it.
        mask[iy, ix] = FRACTURE_WEIGHT if fractured(v) else 1.0
    return heat, reg, mask, ignore


def augment(img, rng):
    """Domain randomisation: window/contrast, noise, blur (isotropic, or along the spine only
    as thick slices do), intensity offset."""
    img = img.copy()
    img = img * rng.uniform(0.85, 1.15) + rng.uniform(-0.1, 0.1)
    r = rng.random()
    if r < 0.35:
        k = int(rng.choice([3, 5]))
        t = torch.from_numpy(img)[None, None]
        img = F.avg_pool2d(F.pad(t, (k // 2,) * 4, mode="replicate"), k, stride=1)[0, 0].numpy()
    elif r < 0.55:
        k = int(rng.choice([3, 5]))
        t = torch.from_numpy(img)[None, None]
        img = F.avg_pool2d(
            F.pad(t, (0, 0, k // 2, k // 2), mode="replicate"), (k, 1), stride=1
        )[0, 0].numpy()
    img = img + rng.normal(0, rng.uniform(0.0, 0.08), img.shape).astype(np.float32)
    return img


def shift_columns(img, verts, dx):
    """Moves the image sideways by dx pixels (edge-padded): a centreline a few mm off."""
    if dx == 0:
        return img, verts
    out = np.empty_like(img)
    if dx > 0:
        out[:, dx:] = img[:, :-dx]
        out[:, :dx] = img[:, :1]
    else:
        out[:, :dx] = img[:, -dx:]
        out[:, dx:] = img[:, -1:]
    moved = []
    for v in verts:
        v = dict(v)
        v["center"] = [v["center"][0] + dx, v["center"][1]]
        v["keypoints"] = [[k[0] + dx, k[1]] for k in v["keypoints"]]
        moved.append(v)
    return out, moved


def batches(samples, batch, rng):
    # Studies with a fracture are drawn more often (with replacement, one epoch's worth).
    weights = [FRACTURE_SAMPLING if any(fractured(v) for v in s[1]) else 1.0 for s in samples]
    idx = rng.choices(range(len(samples)), weights=weights, k=len(samples))
    for i in range(0, len(idx), batch):
        xs, hs, rs, ms, igs = [], [], [], [], []
        for j in idx[i : i + batch]:
            img, verts, _ = samples[j]
            h = img.shape[0]
            frac = [v for v in verts if fractured(v)]
            if h >= CROP_H and frac and rng.random() < FRACTURE_CROP:
                # A crop that holds a fracture somewhere inside it (not always centred).
                cy = rng.choice(frac)["center"][1]
                lo = int(min(max(cy - CROP_H + 40, 0), h - CROP_H))
                hi = int(min(max(cy - 40, lo), h - CROP_H))
                top = rng.randint(lo, hi)
                crop = img[top : top + CROP_H]
            elif h >= CROP_H:
                top = rng.randint(0, h - CROP_H)
                crop = img[top : top + CROP_H]
            else:
                top = 0
                crop = np.full((CROP_H, WIDTH), -1.5, np.float32)
                crop[:h] = img
            crop = augment(crop, np.random.default_rng(rng.randint(0, 2**31)))
            crop, verts = shift_columns(crop, verts, rng.randint(-6, 6))
            heat, reg, mask, ign = make_targets(verts, top, CROP_H, WIDTH)
            xs.append(crop[None])
            hs.append(heat[None])
            rs.append(reg)
            ms.append(mask[None])
            igs.append(ign[None])
        yield tuple(torch.from_numpy(np.stack(a)) for a in (xs, hs, rs, ms, igs))


def loss_fn(out, heat, reg, mask, ign):
    logit = out[:, :1]
    p = torch.sigmoid(logit).clamp(1e-4, 1 - 1e-4)
    pos = (heat > 0.99).float()
    neg = (1 - pos) * (1 - ign)
    # CenterNet focal loss.
    pos_loss = -((1 - p) ** 2 * torch.log(p) * pos).sum()
    neg_loss = -(((1 - heat) ** 4) * p**2 * torch.log(1 - p) * neg).sum()
    n = pos.sum().clamp(min=1)
    l_heat = (pos_loss + neg_loss) / n
    l_reg = (F.l1_loss(out[:, 1:], reg, reduction="none") * mask).sum() / (n * 14)
    # The heights are what the product measures: supervise the three upper-to-lower vectors
    # directly as well, so an error that shortens a body costs more than one that shifts it.
    p_kp, t_kp = out[:, 3:15], reg[:, 2:14]
    l_h = (F.l1_loss(p_kp[:, 6:] - p_kp[:, :6], t_kp[:, 6:] - t_kp[:, :6], reduction="none") * mask).sum() / (n * 6)
    return l_heat + 2.0 * l_reg + 2.0 * l_h, l_heat.item(), l_reg.item() + l_h.item()


def export(model, path):
    model.eval()
    dummy = torch.zeros(1, 1, CROP_H, WIDTH)
    torch.onnx.export(
        model,
        dummy,
        path,
        input_names=["image"],
        output_names=["maps"],
        dynamic_axes={"image": {2: "height"}, "maps": {2: "height4"}},
        opset_version=17,
        dynamo=False,
    )


def quantize(f32_path, int8_path, samples):
    """Static int8 quantisation, calibrated on 64 training crops."""
    quantize_convs(
        f32_path,
        int8_path,
        [
            {"image": s[0][None, None, :CROP_H, :WIDTH].astype(np.float32)}
            for s in samples[:64]
            if s[0].shape[0] >= CROP_H
        ],
    )


REF_H = 128


def write_reference(out_dir, samples):
    """Stores a real reformat crop and onnxruntime's raw outputs for both shipped models, so
    the Rust tests can check that tract computes the same maps (and the same keypoints)."""
    import onnxruntime as ort

    img = next(s[0] for s in samples if s[0].shape[0] >= REF_H)[:REF_H, :WIDTH]
    x = np.ascontiguousarray(img[None, None], dtype=np.float32)
    x.astype("<f4").tofile(os.path.join(out_dir, "reference_input.f32"))
    for name in ("f32", "int8"):
        sess = ort.InferenceSession(
            os.path.join(out_dir, f"keypoints_{name}.onnx"), providers=["CPUExecutionProvider"]
        )
        y = sess.run(None, {"image": x})[0]
        y.astype("<f4").tofile(os.path.join(out_dir, f"reference_{name}.f32"))
        print(f"reference {name}: output {y.shape}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument(
        "--quantize-only",
        action="store_true",
        help="re-quantise OUT/keypoints_f32.onnx and rewrite the references; no training",
    )
    args = ap.parse_args()

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    samples = load_samples(args.data)
    print(f"{len(samples)} samples on {device}")
    if args.quantize_only:
        f32 = os.path.join(args.out, "keypoints_f32.onnx")
        quantize(f32, os.path.join(args.out, "keypoints_int8.onnx"), samples)
        write_reference(args.out, samples)
        return
    model = KeypointNet().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * math.ceil(len(samples) / args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=max(steps, 1))
    rng = random.Random(args.seed)
    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        tot = [0.0, 0.0, 0]
        for x, heat, reg, mask, ign in batches(samples, args.batch, rng):
            x, heat, reg, mask, ign = (t.to(device) for t in (x, heat, reg, mask, ign))
            loss, lh, lr_ = loss_fn(model(x), heat, reg, mask, ign)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot[0] += lh
            tot[1] += lr_
            tot[2] += 1
        n = max(tot[2], 1)
        print(f"epoch {epoch + 1}/{args.epochs} heat {tot[0] / n:.4f} reg {tot[1] / n:.4f} {time.time() - t0:.0f}s", flush=True)

    os.makedirs(args.out, exist_ok=True)
    model.cpu()
    f32 = os.path.join(args.out, "keypoints_f32.onnx")
    int8 = os.path.join(args.out, "keypoints_int8.onnx")
    torch.save(model.state_dict(), os.path.join(args.out, "keypoints.pt"))
    export(model, f32)
    quantize(f32, int8, samples)
    write_reference(args.out, samples)
    print(f"wrote {f32} and {int8}")


if __name__ == "__main__":
    main()
