"""A procedural visible/infrared person dataset, deterministic from a seed (no downloads).

Each identity has a body shape (height, shoulder and hip width, head size, leg length),
clothing (upper and lower colours, a texture each: plain, horizontal or vertical stripes,
checks or dots, with its own frequency), a carried item (none, backpack, side bag, hat) and a
thermal signature (how warm each garment and the item look). An image draws a pose (shift,
scale, leg gap, mirror), a background, the lighting and a colour cast.

The visible view renders colour. The infrared view keeps the shape and the textures but not
the colours: its intensities come from the thermal signature, which is independent of the
colours, and it has its own noise (sensor noise, column banding, blur, a warm background).
So a cross-modality match has to rely on shape, texture, items and heat, not colour.
Cameras follow SYSU-MM01: visible 1, 2, 4, 5 (1, 2 indoor), infrared 3, 6.
"""
from __future__ import annotations

import numpy as np

from reidc.compiler.ir import Modality

from .pool import MULTI_SHOT, STANDARD_DRAWS, Pool, ReIDData, sysu_style_protocol

VISIBLE_CAMS, INFRARED_CAMS = (1, 2, 4, 5), (3, 6)
TEXTURES = ("plain", "hstripes", "vstripes", "checks", "dots")
ITEMS = ("none", "backpack", "sidebag", "hat")


def _identity(rng: np.random.Generator) -> dict:
    return {
        "height": rng.uniform(0.78, 0.94), "shoulder": rng.uniform(0.26, 0.42), "hip": rng.uniform(0.2, 0.34),
        "head": rng.uniform(0.085, 0.12), "legs": rng.uniform(0.42, 0.52), "skin": rng.uniform(0.35, 0.95, 3),
        "upper": rng.uniform(0, 1, 3), "lower": rng.uniform(0, 1, 3),
        "upper_tex": int(rng.integers(len(TEXTURES))), "lower_tex": int(rng.integers(len(TEXTURES))),
        "upper_freq": rng.uniform(3, 9), "lower_freq": rng.uniform(3, 9),
        "upper_tex_colour": rng.uniform(0, 1, 3), "lower_tex_colour": rng.uniform(0, 1, 3),
        "item": int(rng.integers(len(ITEMS))), "item_colour": rng.uniform(0, 1, 3),
        # thermal signature, drawn independently of the colours
        "heat_upper": rng.uniform(0.2, 0.8), "heat_lower": rng.uniform(0.2, 0.8), "heat_item": rng.uniform(0.05, 0.5),
    }


def _texture(kind: int, freq: float, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """0/1 pattern over body-relative coordinates u (across) and v (down)."""
    name = TEXTURES[kind]
    if name == "plain":
        return np.zeros_like(u)
    if name == "hstripes":
        return (np.sin(v * freq * 2 * np.pi) > 0).astype(np.float32)
    if name == "vstripes":
        return (np.sin(u * freq * 2 * np.pi) > 0).astype(np.float32)
    if name == "checks":
        return ((np.sin(u * freq * 2 * np.pi) > 0) ^ (np.sin(v * freq * 2 * np.pi) > 0)).astype(np.float32)
    return ((np.sin(u * freq * 2 * np.pi) * np.sin(v * freq * 2 * np.pi)) > 0.5).astype(np.float32)


def _soft(d: np.ndarray, px: float) -> np.ndarray:
    """Coverage from a signed distance (negative inside), anti-aliased over about a pixel."""
    return np.clip(0.5 - d / px, 0.0, 1.0)


def render(ident: dict, h: int, w: int, infrared: bool, rng: np.random.Generator) -> np.ndarray:
    """One (h, w, 3) uint8 image of an identity."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    y, x = (y + 0.5) / h, (x + 0.5) / w
    scale = rng.uniform(0.9, 1.04)
    cx = 0.5 + rng.uniform(-0.06, 0.06)
    mirror = rng.random() < 0.5
    if mirror:
        x = 1.0 - x
    top = 0.5 - scale * ident["height"] / 2 + rng.uniform(-0.03, 0.03)
    H = scale * ident["height"]
    px = 1.0 / w
    # body parts as signed distances in image units (x scaled by aspect 2:1)
    ax = 0.5
    head_c = top + ident["head"] * H * 1.1
    head = np.hypot((x - cx) * ax * 2, y - head_c) - ident["head"] * H
    torso_top, legs_top = top + 2.1 * ident["head"] * H, top + (1 - ident["legs"]) * H
    frac = np.clip((y - torso_top) / max(legs_top - torso_top, 1e-3), 0, 1)
    half_w = (ident["shoulder"] * (1 - frac) + ident["hip"] * frac) * scale / 2
    torso = np.maximum(np.abs(x - cx) - half_w, np.maximum(torso_top - y, y - legs_top) / 2)
    gap = rng.uniform(0.01, 0.05) * scale
    leg_w = ident["hip"] * scale / 2 - gap / 2
    leg_dx = np.abs(np.abs(x - cx) - (gap / 2 + leg_w / 2)) - leg_w / 2
    legs = np.maximum(leg_dx, np.maximum(legs_top - y, y - (top + H)) / 2)
    u_up = (x - cx) / max(ident["shoulder"] * scale, 1e-3)
    v_up = (y - torso_top) / max(H, 1e-3)
    tex_up = _texture(ident["upper_tex"], ident["upper_freq"], u_up, v_up)
    tex_lo = _texture(ident["lower_tex"], ident["lower_freq"], u_up, (y - legs_top) / max(H, 1e-3))
    item = ITEMS[ident["item"]]
    item_d = np.full_like(x, 1.0)
    if item == "backpack":   # sticks out on one side of the torso
        bx = cx + half_w + 0.05 * scale
        item_d = np.maximum(np.abs(x - bx) - 0.07 * scale, np.abs(y - (torso_top + 0.12 * H)) - 0.12 * H)
    elif item == "sidebag":
        bx = cx - ident["hip"] * scale / 2 - 0.06 * scale
        item_d = np.maximum(np.abs(x - bx) - 0.06 * scale, np.abs(y - (legs_top + 0.02 * H)) - 0.06 * H)
    elif item == "hat":
        item_d = np.maximum(np.abs(x - cx) - ident["head"] * H * 1.3, np.abs(y - (top + 0.02 * H)) - 0.03 * H)

    cover = {k: _soft(d, px) for k, d in (("head", head), ("upper", torso), ("lower", legs), ("item", item_d))}
    if infrared:
        bg = rng.uniform(0.1, 0.35) + 0.08 * np.sin(y * rng.uniform(2, 6) + rng.uniform(0, 6))
        layers = [("head", 0.9 + 0 * x), ("upper", ident["heat_upper"] + 0.25 * (tex_up - 0.5)),
                  ("lower", ident["heat_lower"] + 0.25 * (tex_lo - 0.5)), ("item", ident["heat_item"] + 0 * x)]
        img = bg
        for k, val in layers:
            img = img * (1 - cover[k]) + val * cover[k]
        img = img + rng.normal(0, 0.05, img.shape) + rng.normal(0, 0.04, (1, w))   # sensor + column noise
        img = (img + np.roll(img, 1, 0) + np.roll(img, 1, 1)) / 3                   # optics blur
        img = np.repeat(np.clip(img, 0, 1)[..., None], 3, axis=2)
    else:
        base = rng.uniform(0, 1, 3)
        bg = base[None, None, :] * (0.6 + 0.4 * y[..., None]) + 0.15 * rng.uniform(-1, 1, 3) * np.sin(
            x * rng.uniform(3, 9))[..., None]
        up = ident["upper"] * (1 - tex_up[..., None]) + ident["upper_tex_colour"] * tex_up[..., None]
        lo = ident["lower"] * (1 - tex_lo[..., None]) + ident["lower_tex_colour"] * tex_lo[..., None]
        layers = [("head", ident["skin"] + 0 * x[..., None]), ("upper", up), ("lower", lo),
                  ("item", ident["item_colour"] + 0 * x[..., None])]
        img = bg
        for k, val in layers:
            img = img * (1 - cover[k][..., None]) + val * cover[k][..., None]
        img = img * rng.uniform(0.7, 1.15) * rng.uniform(0.85, 1.15, 3) + rng.normal(0, 0.03, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def make_pool(idents: dict[int, dict], per_cam: int, h: int, w: int, seed: int) -> Pool:
    images, pids, cams, mods = [], [], [], []
    for pid, ident in idents.items():
        for cam in VISIBLE_CAMS + INFRARED_CAMS:
            ir = cam in INFRARED_CAMS
            for k in range(per_cam):
                rng = np.random.default_rng([seed, pid, cam, k])
                images.append(render(ident, h, w, ir, rng))
                pids.append(pid), cams.append(cam), mods.append((Modality.INFRARED if ir else Modality.VISIBLE).code)
    return Pool(np.stack(images), np.array(pids, np.int64), np.array(cams, np.int64), np.array(mods, np.int64))


def synthetic(input_size=(64, 32), train_ids: int = 96, val_ids: int = 24, test_ids: int = 32, per_cam: int = 3,
              trials: int = 3, seed: int = 0) -> ReIDData:
    """Train, validation and test identities are disjoint; validation and test follow SYSU-MM01's
    all-search and indoor-search protocols with `trials` random single-shot galleries (test also
    multi-shot: up to 10 per identity and camera, i.e. all `per_cam`). The validation draws are
    seeded by `seed`, the test draws as the standard's (trial t seeded with t: pool.py)."""
    h, w = input_size
    rng = np.random.default_rng(seed)
    n = train_ids + val_ids + test_ids
    idents = {pid: _identity(rng) for pid in range(n)}
    split = {"train": range(train_ids), "val": range(train_ids, train_ids + val_ids),
             "test": range(train_ids + val_ids, n)}
    pools = {k: make_pool({p: idents[p] for p in r}, per_cam, h, w, seed) for k, r in split.items()}
    settings = {"all-search": VISIBLE_CAMS, "indoor-search": (1, 2)}
    return ReIDData(
        name=f"synthetic(seed={seed}, {train_ids}/{val_ids}/{test_ids} ids)", train=pools["train"],
        val=sysu_style_protocol("val", pools["val"], {"all-search": VISIBLE_CAMS}, INFRARED_CAMS, trials, seed),
        test=sysu_style_protocol("test", pools["test"], settings, INFRARED_CAMS, trials, STANDARD_DRAWS),
        test_multi_shot=sysu_style_protocol("test (multi-shot)", pools["test"], settings, INFRARED_CAMS, trials,
                                            STANDARD_DRAWS, MULTI_SHOT),
        input_size=(h, w))
