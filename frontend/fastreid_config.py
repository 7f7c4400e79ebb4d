"""fast-reid's configuration (the yacs `config.yaml` a training run dumps beside its checkpoint,
or a config file with `_BASE_` parents) read as data into a `FastReIDSpec`: the keys that
decide the inference network, each checked. A value reidc does not support is a one-line error
naming the key and the value. Nothing of fast-reid is imported: YAML is parsed with
`yaml.safe_load` (plain data only)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from reidc.compiler.base.errors import ArchError

#: fast-reid 1.4's defaults (fastreid/config/defaults.py) for every key reidc reads
DEFAULTS = {
    "MODEL.META_ARCHITECTURE": "Baseline",
    "MODEL.PIXEL_MEAN": [0.485 * 255, 0.456 * 255, 0.406 * 255],
    "MODEL.PIXEL_STD": [0.229 * 255, 0.224 * 255, 0.225 * 255],
    "MODEL.BACKBONE.NAME": "build_resnet_backbone",
    "MODEL.BACKBONE.DEPTH": "50x",
    "MODEL.BACKBONE.LAST_STRIDE": 1,
    "MODEL.BACKBONE.NORM": "BN",
    "MODEL.BACKBONE.WITH_IBN": False,
    "MODEL.BACKBONE.WITH_SE": False,
    "MODEL.BACKBONE.WITH_NL": False,
    "MODEL.BACKBONE.FEAT_DIM": 2048,
    "MODEL.HEADS.NAME": "EmbeddingHead",
    "MODEL.HEADS.NORM": "BN",
    "MODEL.HEADS.WITH_BNNECK": False,
    "MODEL.HEADS.EMBEDDING_DIM": 0,
    "MODEL.HEADS.POOL_LAYER": "GlobalAvgPool",
    "MODEL.HEADS.NECK_FEAT": "before",
    "INPUT.SIZE_TEST": [256, 128],
}

DEPTHS = {"18x": 18, "34x": 34, "50x": 50, "101x": 101}
#: fast-reid's backbone builders reidc builds, and the DEPTH values each takes
BACKBONES = {"build_resnet_backbone": "resnet", "build_osnet_backbone": "osnet",
             "build_mobilenetv2_backbone": "mobilenetv2"}
OSNET_DEPTHS = {"x1_0": 512, "x0_75": 384, "x0_5": 256, "x0_25": 128}
MOBILENET_DEPTHS = {"1.0x": 1.0, "0.75x": 0.75, "0.5x": 0.5, "0.35x": 0.35, "0.25x": 0.25, "0.1x": 0.1}
#: normalisation layers whose inference is a BatchNorm with running statistics
BN_NORMS = ("BN", "syncBN", "GhostBN", "FrozenBN")
#: fast-reid's pooling layer name -> reidc's (what `EmbeddingHead` pools with)
POOLS = {"GlobalAvgPool": "avg", "FastGlobalAvgPool": "avg", "GlobalMaxPool": "max",
         "GeneralizedMeanPooling": "gem", "GeneralizedMeanPoolingP": "gem_learned", "AdaptiveAvgMaxPool": "avgmax"}
SPEC_FORMAT = "reidc-fastreid-spec"


@dataclass(frozen=True)
class FastReIDSpec:
    """The inference network of a fast-reid `Baseline`: a ResNet (`depth`), OSNet or MobileNetV2
    (`width`: their DEPTH value, x1_0 or 1.0x) backbone and an EmbeddingHead."""

    depth: int = 50
    backbone: str = "resnet"       # resnet | osnet | mobilenetv2
    width: str = ""                # osnet: x1_0 | x0_75 | x0_5 | x0_25; mobilenetv2: 1.0x ... 0.1x
    last_stride: int = 1
    with_ibn: bool = False
    with_se: bool = False
    with_nl: bool = False          # non-local blocks after the last blocks of stages 2 and 3 (ResNet-50/101)
    pool: str = "avg"              # avg | max | gem (p = 3) | gem_learned (p from the checkpoint) | avgmax
    embedding_dim: int = 0         # > 0: a 1x1 conv to this many channels after the pooling
    with_bnneck: bool = False
    pixel_mean: tuple[float, float, float] = tuple(DEFAULTS["MODEL.PIXEL_MEAN"])
    pixel_std: tuple[float, float, float] = tuple(DEFAULTS["MODEL.PIXEL_STD"])
    input_size: tuple[int, int] = (256, 128)
    neck_feat: str = "before"      # training only: at inference fast-reid returns the neck's output

    @property
    def name(self) -> str:
        if self.backbone == "osnet":
            return f"fastreid-osnet_{self.width}" + ("-ibn" if self.with_ibn else "")
        if self.backbone == "mobilenetv2":
            return f"fastreid-mobilenetv2_{self.width}"
        return f"fastreid-r{self.depth}" + "".join(f"-{k}" for k, on in (
            ("ibn", self.with_ibn), ("se", self.with_se), ("nl", self.with_nl)) if on)

    @property
    def feat_dim(self) -> int:
        if self.backbone == "osnet":
            return OSNET_DEPTHS[self.width]
        if self.backbone == "mobilenetv2":   # fast-reid keeps 1280 unless the width is above 1
            return 1280
        return 512 if self.depth in (18, 34) else 2048

    def to_json(self) -> dict:
        return {"format": SPEC_FORMAT, **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}}

    @classmethod
    def from_json(cls, d: dict) -> "FastReIDSpec":
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k != "format"}
        return cls(**d)


def _merged(path: Path, seen: tuple = ()) -> dict:
    """The config as nested dicts, `_BASE_` parents merged under it (as fast-reid's CfgNode)."""
    if path in seen or len(seen) > 8:
        raise ArchError(f"{path}: _BASE_ files form a cycle or nest too deep")
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ArchError(f"{path}: no such fast-reid config") from None
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as e:
        raise ArchError(f"{path}: not a fast-reid config (YAML: {str(e).splitlines()[0]})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ArchError(f"{path}: not a fast-reid config (a YAML {type(data).__name__}, not a mapping)")
    base = data.pop("_BASE_", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ArchError(f"{path}: _BASE_ must be a path, is {base!r}")
    return _deep_merge(_merged((path.parent / base).resolve(), seen + (path,)), data)


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _get(cfg: dict, key: str):
    node = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return DEFAULTS[key]
        node = node[part]
    return node


def read_fastreid_config(path: str | Path) -> FastReIDSpec:
    """The spec a fast-reid config describes (or a spec reidc wrote, JSON with `format`)."""
    path = Path(path)
    cfg = _merged(path.resolve())
    if cfg.get("format") == SPEC_FORMAT:
        try:
            return FastReIDSpec.from_json(cfg)
        except TypeError as e:
            raise ArchError(f"{path}: malformed reidc fast-reid spec ({e})") from None

    def refuse(key, why):
        return ArchError(f"{path}: {key}: {_get(cfg, key)!r} is not supported ({why})")

    def choice(key, allowed):
        v = _get(cfg, key)
        if v not in allowed:
            raise refuse(key, "reidc supports " + ", ".join(map(str, allowed)))
        return v

    def flag(key):
        v = _get(cfg, key)
        if not isinstance(v, bool):
            raise refuse(key, "expected True or False")
        return v

    choice("MODEL.META_ARCHITECTURE", ("Baseline",))
    backbone = BACKBONES[choice("MODEL.BACKBONE.NAME", tuple(BACKBONES))]
    depth, width = 50, ""
    if backbone == "resnet":
        depth = DEPTHS[choice("MODEL.BACKBONE.DEPTH", tuple(DEPTHS))]
    else:   # fast-reid's osnet and mobilenetv2 builders read DEPTH as a width
        width = choice("MODEL.BACKBONE.DEPTH", tuple(OSNET_DEPTHS if backbone == "osnet" else MOBILENET_DEPTHS))
    choice("MODEL.BACKBONE.NORM", BN_NORMS)
    choice("MODEL.HEADS.NORM", BN_NORMS)
    choice("MODEL.HEADS.NAME", ("EmbeddingHead",))
    pool = POOLS[choice("MODEL.HEADS.POOL_LAYER", tuple(POOLS))]
    last_stride = choice("MODEL.BACKBONE.LAST_STRIDE", (1, 2))
    neck_feat = choice("MODEL.HEADS.NECK_FEAT", ("before", "after"))
    embedding = _get(cfg, "MODEL.HEADS.EMBEDDING_DIM")
    if not isinstance(embedding, int) or isinstance(embedding, bool) or embedding < 0:
        raise refuse("MODEL.HEADS.EMBEDDING_DIM", "expected an integer >= 0")
    resnet = backbone == "resnet"   # fast-reid's other builders ignore LAST_STRIDE, SE and NL (and MobileNet IBN)
    ibn, se, nl = flag("MODEL.BACKBONE.WITH_IBN"), flag("MODEL.BACKBONE.WITH_SE"), flag("MODEL.BACKBONE.WITH_NL")
    spec = FastReIDSpec(depth=depth, backbone=backbone, width=width, last_stride=last_stride if resnet else 1,
                        with_ibn=ibn and backbone != "mobilenetv2", with_se=se and resnet, with_nl=nl and resnet,
                        pool=pool, embedding_dim=embedding,
                        with_bnneck=flag("MODEL.HEADS.WITH_BNNECK"),
                        pixel_mean=_triple(cfg, "MODEL.PIXEL_MEAN", refuse), pixel_std=_triple(cfg, "MODEL.PIXEL_STD", refuse),
                        input_size=_size(cfg, refuse), neck_feat=neck_feat)
    feat = _get(cfg, "MODEL.BACKBONE.FEAT_DIM")
    if feat != spec.feat_dim:
        what = f"a ResNet-{depth}" if resnet else f"fast-reid's {backbone} at DEPTH {width}"
        raise refuse("MODEL.BACKBONE.FEAT_DIM", f"{what} ends in {spec.feat_dim} channels")
    return spec


def _triple(cfg, key, refuse) -> tuple[float, float, float]:
    v = _get(cfg, key)
    if not (isinstance(v, (list, tuple)) and len(v) == 3 and all(isinstance(t, (int, float)) for t in v)):
        raise refuse(key, "expected three numbers, one per RGB channel")
    if key.endswith("STD") and not all(t > 0 for t in v):
        raise refuse(key, "every std must be > 0")
    return tuple(float(t) for t in v)


def _size(cfg, refuse) -> tuple[int, int]:
    v = _get(cfg, "INPUT.SIZE_TEST")
    if not (isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(t, int) and t >= 32 for t in v)):
        raise refuse("INPUT.SIZE_TEST", "expected [H, W], each at least 32")
    return tuple(v)

