"""The synthetic dataset's cameras and scenes, as data (see synthetic.py's docstring).

A `Camera` is a fixed set of rendering conditions: viewpoint (typical body yaw, apparent
size and vertical placement), lighting (visible: brightness, colour cast, vertical gradient;
infrared: gain, offset, noise, column banding), the scene its background shows and the
resolution it renders at (then upsampled to the requested size). A `Scene` is a background
layout from one of two families: indoor rooms (wall, floor line, a door, a rail or window
band, a box on the floor) and outdoor places (sky, a skyline, facades or trunks, pavement).
Cameras that share a scene see the same room (SYSU-MM01's cameras 2 and 3): they share its
layout and, for the same person and visit (the `visit` generator), its state (door open or
shut, where the box stands) and the person's walk (synthetic.render).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Scene:
    key: int                     # seeds the visit state shared by the cameras that see this scene
    family: str                  # "indoor" | "outdoor"
    horizon: float               # floor line / pavement edge (image heights)
    top: tuple                   # wall (indoor) or sky (outdoor): RGB, heat
    middle: tuple                # indoor: the wall's lower part; outdoor: facades / foliage: RGB, heat
    bottom: tuple                # floor / pavement: RGB, heat
    band: tuple                  # (y0, y1, RGB, heat): picture rail, window, skyline
    posts: tuple                 # ((x, half width, RGB, heat), ...): door frame, pillar, trunk
    door: float | None = None    # x of a door (indoor) that a visit finds open or shut


@dataclass(frozen=True)
class Camera:
    cam: int
    infrared: bool
    scene: str
    yaw: float                   # typical body yaw in degrees (0 frontal, 90 side view)
    scale: float                 # apparent size (far or high: smaller)
    dy: float                    # vertical offset of the person (image heights; mounted high: lower)
    brightness: float = 1.0      # visible
    cast: tuple = (1.0, 1.0, 1.0)
    gradient: float = 0.0        # brightness factor 1 + gradient * (0.5 - y): outdoor light from above
    gain: float = 1.0            # infrared: intensity = gain * heat + offset
    offset: float = 0.0
    noise: float = 0.03          # sensor noise (std, intensity 0..1)
    banding: float = 0.0         # infrared column banding (std)
    resolution: float = 1.0      # far cameras: rendered at this fraction of (h, w), then upsampled


_C = lambda *v: np.array(v, np.float32)  # noqa: E731
SCENES = {   # heat stays below most garments' (0.2..0.8) and skin's (0.9): people are the warm things
    "room-a": Scene(1, "indoor", 0.72, (_C(0.78, 0.74, 0.66), 0.30), (_C(0.62, 0.58, 0.52), 0.27),
                    (_C(0.38, 0.30, 0.24), 0.20), (0.40, 0.44, _C(0.35, 0.25, 0.2), 0.24),
                    ((0.88, 0.05, _C(0.45, 0.42, 0.40), 0.26),), door=0.12),
    "room-b": Scene(2, "indoor", 0.58, (_C(0.70, 0.76, 0.70), 0.32), (_C(0.55, 0.60, 0.55), 0.28),
                    (_C(0.30, 0.28, 0.26), 0.18), (0.16, 0.30, _C(0.92, 0.94, 0.96), 0.08),
                    ((0.06, 0.04, _C(0.30, 0.28, 0.26), 0.40),), door=0.9),
    "street": Scene(3, "outdoor", 0.80, (_C(0.60, 0.75, 0.95), 0.04), (_C(0.62, 0.50, 0.42), 0.28),
                    (_C(0.50, 0.50, 0.52), 0.34), (0.10, 0.16, _C(0.35, 0.30, 0.28), 0.18),
                    ((0.08, 0.05, _C(0.40, 0.36, 0.34), 0.30), (0.93, 0.05, _C(0.40, 0.36, 0.34), 0.30))),
    "square": Scene(4, "outdoor", 0.66, (_C(0.70, 0.80, 0.92), 0.05), (_C(0.72, 0.70, 0.66), 0.26),
                    (_C(0.60, 0.58, 0.55), 0.36), (0.22, 0.26, _C(0.50, 0.50, 0.55), 0.16), ()),
    "yard": Scene(5, "outdoor", 0.74, (_C(0.65, 0.78, 0.90), 0.03), (_C(0.25, 0.45, 0.22), 0.20),
                  (_C(0.45, 0.42, 0.35), 0.34), (0.30, 0.34, _C(0.30, 0.40, 0.25), 0.14),
                  ((0.90, 0.04, _C(0.35, 0.25, 0.18), 0.28),)),
}

CAMERAS = {c.cam: c for c in (
    # indoor, visible: warm artificial light, near, frontal-ish
    Camera(1, False, "room-a", yaw=0, scale=1.0, dy=0.0, brightness=0.9, cast=(1.1, 1.0, 0.84)),
    # indoor, visible, the room infrared camera 3 also watches: dimmer, warm, seen from the side
    Camera(2, False, "room-b", yaw=35, scale=0.96, dy=0.02, brightness=0.8, cast=(1.06, 1.0, 0.88)),
    Camera(3, True, "room-b", yaw=30, scale=0.96, dy=0.02, gain=1.0, offset=0.0, noise=0.04, banding=0.02),
    # outdoor, visible: bright, cool daylight from above; camera 5 is far and mounted high
    Camera(4, False, "street", yaw=-45, scale=0.98, dy=0.0, brightness=1.1, cast=(0.94, 1.0, 1.08),
           gradient=0.3),
    Camera(5, False, "square", yaw=15, scale=0.9, dy=0.04, brightness=1.05, cast=(0.96, 1.0, 1.1),
           gradient=0.25, resolution=0.85),
    # outdoor, infrared, far: lower contrast, noisier, blurrier
    Camera(6, True, "yard", yaw=-20, scale=0.92, dy=0.03, gain=0.85, offset=0.1, noise=0.05, banding=0.04,
           resolution=0.75),
)}


def _layers(scene: Scene, y: np.ndarray, x: np.ndarray, rng: np.random.Generator, visit: np.random.Generator,
            infrared: bool):
    """(value, coverage) pairs that paint the scene, back to front."""
    # each surface's colour or heat: the scene's, mixed with a tone drawn per image (daylight,
    # weather, what is lying around), so the layout stays and the colours vary
    if infrared:
        base = rng.uniform(0.1, 0.35)
        pick = lambda e: base + 0.6 * (e[1] - 0.25) + rng.normal(0, 0.03)  # noqa: E731
    else:
        base = rng.uniform(0, 1, 3)
        pick = lambda e: 0.55 * base + 0.45 * e[0] * rng.uniform(0.85, 1.15, 3)  # noqa: E731
    j = rng.uniform(-0.015, 0.015)   # a little camera shake
    out = [(pick(scene.top), 1.0 + 0 * y)]
    mid_top = 0.35 if scene.family == "indoor" else 0.3
    out.append((pick(scene.middle), _step(y - mid_top - j)))
    y0, y1, rgb, heat = scene.band
    out.append((pick((rgb, heat)), _step(y - y0 - j) * _step(y1 + j - y)))
    for px, hw, rgb, heat in scene.posts:
        out.append((pick((rgb, heat)), _step(hw - np.abs(x - px - j))))
    out.append((pick(scene.bottom), _step(y - scene.horizon - j)))
    # a visit's state, shared by the cameras of the scene: a door open or shut, a box on the floor
    if scene.door is not None and visit.random() < 0.5:
        door = _step(0.08 - np.abs(x - scene.door)) * _step(scene.horizon - y) * _step(y - 0.15)
        out.append(((np.float32(0.12) if infrared else _C(0.1, 0.08, 0.07)), door))
    if scene.family == "indoor":
        bx, bw, bh = visit.uniform(0.05, 0.95), visit.uniform(0.04, 0.09), visit.uniform(0.06, 0.15)
        lum = visit.random()
        tint = visit.uniform(0.5, 1.5, 3).astype(np.float32)
        box = _step(bw - np.abs(x - bx)) * _step(y - scene.horizon + bh) * _step(scene.horizon + 0.08 - y)
        out.append(((np.float32(0.08 + 0.3 * lum) if infrared else np.clip(lum * tint, 0, 1)), box))
    return out


def _step(d: np.ndarray) -> np.ndarray:
    return (d > 0).astype(np.float32)


def background(scene: Scene, y: np.ndarray, x: np.ndarray, infrared: bool, rng: np.random.Generator,
               visit: np.random.Generator) -> np.ndarray:
    """The scene behind the person: (h, w) heat for infrared, (h, w, 3) colour for visible."""
    img = None
    for val, cov in _layers(scene, y, x, rng, visit, infrared):
        cov = cov if infrared else cov[..., None]
        img = val * cov if img is None else img * (1 - cov) + val * cov
    # faint stripes (wallpaper, paving, foliage)
    wave = np.sin(x * rng.uniform(3, 9) + rng.uniform(0, 6)) * np.sin(y * rng.uniform(2, 12))
    return img + (0.05 * wave if infrared else 0.08 * rng.uniform(-1, 1, 3) * wave[..., None])


def resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of a (H, W, ...) array (pixel centres aligned, edges clamped)."""
    def weights(n_in, n_out):
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(int)
        hi, f = np.minimum(lo + 1, n_in - 1), pos - lo
        m = np.zeros((n_out, n_in), np.float32)
        np.add.at(m, (np.arange(n_out), lo), 1 - f)
        np.add.at(m, (np.arange(n_out), hi), f)
        return m
    rows = np.einsum("cd,bd...->bc...", weights(img.shape[1], w), img)
    return np.einsum("ab,bc...->ac...", weights(img.shape[0], h), rows)
