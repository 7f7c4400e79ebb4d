"""A folder of images as a batch, preprocessed as the artifact's manifest states (`preprocess`:
RGB, resized to the network's H x W, scaled to [0, 1], normalised per channel), for `reidc run`
on image files. Needs Pillow (in reidc[compile]; `pip install pillow` on a runtime-only host)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base.errors import InputError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def image_files(folder: Path) -> list[Path]:
    files = sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)
    if not files:
        raise InputError(f"{folder}: no images ({', '.join(EXTENSIONS)}) in this folder")
    return files


def read_images(files: list[Path], preprocess: dict | None) -> np.ndarray:
    """The float32 (N, 3, H, W) batch of these image files, preprocessed as stated."""
    if not preprocess:
        raise InputError("the artifact states no image preprocessing (a torch.export program): pass the "
                         "preprocessed images as a .npy (N, C, H, W) float32 array instead of a folder")
    try:
        from PIL import Image, UnidentifiedImageError
    except ModuleNotFoundError:
        raise InputError("reading image files needs Pillow: pip install pillow (or pass a .npy)") from None
    h, w = preprocess["resize"]
    filters = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}
    mean = np.asarray(preprocess["mean"], np.float32).reshape(3, 1, 1)
    std = np.asarray(preprocess["std"], np.float32).reshape(3, 1, 1)
    batch = np.empty((len(files), 3, h, w), np.float32)
    for k, f in enumerate(files):
        try:
            with Image.open(f) as im:
                rgb = im.convert("RGB").resize((w, h), filters[preprocess.get("interpolation", "bilinear")])
        except (UnidentifiedImageError, OSError) as e:
            raise InputError(f"{f}: not a readable image ({e})") from None
        x = np.asarray(rgb, np.float32).transpose(2, 0, 1) * np.float32(preprocess["scale"])
        batch[k] = (x - mean) / std
    return batch
