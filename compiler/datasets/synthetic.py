"""A procedural visible/infrared person dataset, deterministic from a seed (no downloads).

Each identity has a body shape (height, shoulder and hip width, head size, leg length),
clothing (upper and lower colours, a texture each: plain, horizontal or vertical stripes,
checks or dots, with its own frequency), a carried item (none, backpack, side bag, hat) and a
thermal signature (how warm each garment and the item look). An image draws a pose (shift,
scale, body yaw, leg gap, mirror) around its camera's, the lighting and the scene's details.

The visible view renders colour. The infrared view keeps the shape and the textures but not
the colours: its intensities come from the thermal signature, which is independent of the
colours, and it has its own noise (sensor noise, column banding, blur) and a background
cooler than people.
So a cross-modality match has to rely on shape, texture, items and heat, not colour.

Cameras follow SYSU-MM01: visible 1, 2, 4, 5 (1, 2 indoor), infrared 3 (indoor) and 6, and
each is a fixed set of rendering conditions (cameras.py: CAMERAS, SCENES), identity
appearance unchanged:

  cam  modality  scene (family)    yaw  size, offset  lighting                          resolution
  1    visible   room-a (indoor)     0  1.00, 0       warm, 0.90                        1
  2    visible   room-b (indoor)    35  0.96, +0.02   warm, dim 0.80                    1
  3    infrared  room-b (indoor)    30  0.96, +0.02   gain 1, noise 0.04                1
  4    visible   street (outdoor)  -45  0.98, 0       cool, bright 1.10, gradient 0.3   1
  5    visible   square (outdoor)   15  0.90, +0.04   cool, 1.05, gradient 0.25         0.85
  6    infrared  yard (outdoor)    -20  0.92, +0.03   gain 0.85, offset 0.1, noise 0.05 0.75

- viewpoint: the body yaw (the camera's, plus N(0, 10) degrees per visit) narrows the body
  (a side view is DEPTH of the frontal width) and moves a carried item: a backpack shows
  beside the torso in a side view and hides behind it in a frontal one, a side bag hides
  behind the body when seen from the far side. Size and offset: far or high cameras see
  the person smaller and lower (plus the per-image jitter).
- lighting: visible cameras scale brightness and tint (indoor warm, outdoor cool with a
  brighter top); infrared ones map heat through a gain and offset and add their own sensor
  noise and column banding.
- background: rooms (wall, floor line, a rail or window, a door, a box on the floor) or
  outdoor places (sky, skyline, facades or trunks, pavement); each image mixes the scene's
  colours (heat) with a tone of its own, so the layout stays and the colours vary. Cameras 2
  and 3 watch the same room: same layout, and for the same person and k one visit (rng
  [seed, pid, VISIT + scene key, k]) fixes where the person walks, which way and how they
  turn, their stride, whether the door is open and where the box stands, so a cam-3 image
  shares its background and placement with a cam-2 image of the same person; hence
  SYSU-MM01's rule that cam-3 queries do not rank cam-2 images.
- resolution: cameras 5 and 6 render at that fraction of (h, w) and are upsampled (blurrier).
"""
from __future__ import annotations

import numpy as np

from reidc.compiler.ir import Modality

from .cameras import CAMERAS, SCENES, Camera, background, resize
from .pool import MULTI_SHOT, STANDARD_DRAWS, Pool, ReIDData, sysu_style_protocol

VISIBLE_CAMS, INFRARED_CAMS = (1, 2, 4, 5), (3, 6)
TEXTURES = ("plain", "hstripes", "vstripes", "checks", "dots")
ITEMS = ("none", "backpack", "sidebag", "hat")
DEPTH = 0.7       # body depth / width: a side view (yaw 90) is this narrow
VISIT = 1000      # visit seeds: [seed, pid, VISIT + scene key, k], apart from the cameras' [seed, pid, cam, k]


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


def _item(ident: dict, cx, torso_top, legs_top, top, H, scale, theta, x, y):
    """The carried item's signed distance and whether it is behind the body, seen at yaw theta:
    items sit in body coordinates (across, depth), a side view shows a backpack sticking out
    and hides a side bag on the far side; a frontal view hides the backpack."""
    item, c, s = ITEMS[ident["item"]], np.cos(theta), np.sin(theta)
    if item == "hat":
        return np.maximum(np.abs(x - cx) - ident["head"] * H * 1.3, np.abs(y - (top + 0.02 * H)) - 0.03 * H), False
    if item == "backpack":   # behind the torso: across 0, depth half the shoulders' plus a bit
        a, d, hw, hd = 0.0, DEPTH * ident["shoulder"] * scale / 2 + 0.05 * scale, 0.07, 0.05
        yc, hh = torso_top + 0.12 * H, 0.12 * H
    elif item == "sidebag":  # at the left hip
        a, d, hw, hd = -(ident["hip"] * scale / 2 + 0.06 * scale), 0.0, 0.03, 0.06
        yc, hh = legs_top + 0.02 * H, 0.06 * H
    else:
        return np.full_like(x, 1.0), False
    bx = cx + a * c + d * s
    half = (hw * abs(c) + hd * abs(s)) * scale
    return np.maximum(np.abs(x - bx) - half, np.abs(y - yc) - hh), (d * c - a * s) > 0


def render(ident: dict, h: int, w: int, infrared: bool, rng: np.random.Generator, camera: Camera | None = None,
           visit: np.random.Generator | None = None) -> np.ndarray:
    """One (h, w, 3) uint8 image of an identity seen by `camera` (default: one of the modality's
    cameras, drawn from rng). `visit`: draws shared by the cameras of one scene for one visit
    (where the person walks and which way, the scene's state); default: rng."""
    cam = camera if camera is not None else CAMERAS[int(rng.choice(INFRARED_CAMS if infrared else VISIBLE_CAMS))]
    visit = rng if visit is None else visit
    out_h, out_w = h, w
    h, w = max(8, round(h * cam.resolution)), max(4, round(w * cam.resolution))   # far cameras: fewer pixels
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    y, x = (y + 0.5) / h, (x + 0.5) / w
    cx = 0.5 + visit.uniform(-0.06, 0.06)    # where the person walks, which way, how they turn, their stride
    mirror = visit.random() < 0.5
    theta = np.radians(cam.yaw + visit.normal(0, 10))
    gap = visit.uniform(0.01, 0.05)
    scale = cam.scale * rng.uniform(0.9, 1.04)
    width = float(np.hypot(np.cos(theta), DEPTH * np.sin(theta)))   # apparent width: side views narrower
    top = 0.5 - scale * ident["height"] / 2 + cam.dy + rng.uniform(-0.03, 0.03)
    H = scale * ident["height"]
    px = 1.0 / w
    bg = background(SCENES[cam.scene], y, x, infrared, rng, visit)
    if mirror:
        x = 1.0 - x
    # body parts as signed distances in image units (x scaled by aspect 2:1)
    head_c = top + ident["head"] * H * 1.1
    head = np.hypot(x - cx, y - head_c) - ident["head"] * H
    torso_top, legs_top = top + 2.1 * ident["head"] * H, top + (1 - ident["legs"]) * H
    frac = np.clip((y - torso_top) / max(legs_top - torso_top, 1e-3), 0, 1)
    half_w = (ident["shoulder"] * (1 - frac) + ident["hip"] * frac) * scale * width / 2
    torso = np.maximum(np.abs(x - cx) - half_w, np.maximum(torso_top - y, y - legs_top) / 2)
    gap = gap * scale * width
    leg_w = ident["hip"] * scale * width / 2 - gap / 2
    leg_dx = np.abs(np.abs(x - cx) - (gap / 2 + leg_w / 2)) - leg_w / 2
    legs = np.maximum(leg_dx, np.maximum(legs_top - y, y - (top + H)) / 2)
    u_up = (x - cx) / max(ident["shoulder"] * scale * width, 1e-3)
    v_up = (y - torso_top) / max(H, 1e-3)
    tex_up = _texture(ident["upper_tex"], ident["upper_freq"], u_up, v_up)
    tex_lo = _texture(ident["lower_tex"], ident["lower_freq"], u_up, (y - legs_top) / max(H, 1e-3))
    item_d, behind = _item(ident, cx, torso_top, legs_top, top, H, scale, theta, x, y)

    cover = {k: _soft(d, px) for k, d in (("head", head), ("upper", torso), ("lower", legs), ("item", item_d))}
    order = ["item", "head", "upper", "lower"] if behind else ["head", "upper", "lower", "item"]
    if infrared:
        val = {"head": 0.9 + 0 * x, "upper": ident["heat_upper"] + 0.25 * (tex_up - 0.5),
               "lower": ident["heat_lower"] + 0.25 * (tex_lo - 0.5), "item": ident["heat_item"] + 0 * x}
        img = bg + rng.uniform(-0.08, 0.08)   # the scene's temperature varies
        for k in order:
            img = img * (1 - cover[k]) + val[k] * cover[k]
        img = cam.gain * img + cam.offset
        img = img + rng.normal(0, cam.noise, img.shape) + rng.normal(0, cam.banding, (1, w))   # sensor + columns
        img = (img + np.roll(img, 1, 0) + np.roll(img, 1, 1)) / 3                               # optics blur
        img = np.repeat(np.clip(img, 0, 1)[..., None], 3, axis=2)
    else:
        up = ident["upper"] * (1 - tex_up[..., None]) + ident["upper_tex_colour"] * tex_up[..., None]
        lo = ident["lower"] * (1 - tex_lo[..., None]) + ident["lower_tex_colour"] * tex_lo[..., None]
        val = {"head": ident["skin"] + 0 * x[..., None], "upper": up, "lower": lo,
               "item": ident["item_colour"] + 0 * x[..., None]}
        img = bg
        for k in order:
            img = img * (1 - cover[k][..., None]) + val[k] * cover[k][..., None]
        light = cam.brightness * np.asarray(cam.cast) * (1 + cam.gradient * (0.5 - y))[..., None]
        img = img * light * rng.uniform(0.85, 1.1) * rng.uniform(0.92, 1.08, 3) + rng.normal(0, cam.noise, img.shape)
    img = np.clip(img, 0, 1)
    if (h, w) != (out_h, out_w):
        img = resize(img, out_h, out_w)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def make_pool(idents: dict[int, dict], per_cam: int, h: int, w: int, seed: int) -> Pool:
    images, pids, cams, mods = [], [], [], []
    for pid, ident in idents.items():
        for cam in VISIBLE_CAMS + INFRARED_CAMS:
            ir = cam in INFRARED_CAMS
            for k in range(per_cam):
                rng = np.random.default_rng([seed, pid, cam, k])
                visit = np.random.default_rng([seed, pid, VISIT + SCENES[CAMERAS[cam].scene].key, k])
                images.append(render(ident, h, w, ir, rng, CAMERAS[cam], visit))
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
