"""``image_folder``: a user's own images as an image source (offline).

``path`` is a folder of PNG / JPEG images, one subfolder per class (``labels: folders``, the default; classes in
sorted subfolder order) or any layout without labels (``labels: none``). Each image is converted to greyscale and
resized to ``size`` x ``size`` with Pillow's bilinear filter (what torchvision's ``ImageFolder`` + ``Resize``
would give), pixels byte / 255. A seeded split (``split_seed``; stratified by class when labelled) gives the
train / validation / test parts; the real pools are class-balanced when labelled (``balanced``), as for MNIST.

Files that cannot be decoded are skipped with one warning giving their count; a folder where none decodes, or a
labelled folder with one class, is a one-line error naming ``data.path``. Metrics that need the reference
classifier (trained on the source's own labels) are refused at validation for ``labels: none``.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from collapselab.data.base import SOURCES
from collapselab.data.files import find_files
from collapselab.data.images import ImageSource, ImageSourceConfig, Splits
from collapselab.dataspec import DataSpec
from collapselab.errors import ConfigError
from collapselab.settings import SettingContext

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: metrics computed with the reference classifier, which trains on the source's labels
CLASSIFIER_METRICS = ("frechet_cnn", "precision", "recall", "density", "coverage", "class_coverage",
                      "class_entropy", "label_accuracy")


class ImageFolderConfig(ImageSourceConfig):
    """A user's image folder (see the module docstring)."""

    source: Literal["image_folder"] = "image_folder"
    path: str = Field(min_length=1, description="a folder of PNG/JPEG images (one subfolder per class)")
    labels: Literal["folders", "none"] = "folders"
    size: int = Field(28, ge=4, le=512, description="images are resized to size x size pixels")
    validation: float = Field(0.1, gt=0.0, lt=0.5, description="share of each class held out for validation")
    test: float = Field(0.2, gt=0.0, lt=0.5, description="share of each class held out for testing")
    split_seed: int = Field(0, ge=0, description="seed of the train / validation / test split")

    def check(self, ctx: SettingContext) -> str | None:
        if self.labels == "none":
            bad = [m for m in ctx.metrics if m in CLASSIFIER_METRICS]
            if bad:
                return (f"metrics: {', '.join(bad)} need(s) class labels (a reference classifier trains on them); "
                        f"data.labels is none: use latent_std, test_nelbo, test_recon, test_kl")
            if getattr(ctx.arm.family, "conditional", False):
                return "family.conditional: a conditional model needs class labels; data.labels is none"
        return None


def to_grey(image: Any, size: int) -> np.ndarray | None:
    """A PIL image or an array as greyscale ``[size, size]`` float32 in [0, 1] (Pillow's bilinear resize), or
    ``None`` when it cannot be read. 16-bit images keep their range (scaled, not clipped to 8 bits); float arrays
    are taken as [0, 1] intensities when they lie there, else as 0-255."""
    from PIL import Image

    try:
        if not isinstance(image, Image.Image):
            a = np.asarray(image)
            if a.ndim not in (2, 3) or a.dtype == object or not np.issubdtype(a.dtype, np.number):
                return None
            if np.issubdtype(a.dtype, np.floating):
                a = a * 255.0 if a.size and float(a.max()) <= 1.0 else a
                a = np.clip(a, 0, 255)
            image = Image.fromarray(a.astype(np.uint8))
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            a = np.asarray(image, dtype=np.float32)
            top = 65535.0 if image.mode.startswith("I;16") or a.max() > 255 else 255.0
            image = Image.fromarray(a * (255.0 / top), mode="F")
            return np.clip(np.asarray(image.resize((size, size), Image.Resampling.BILINEAR)) / 255.0, 0, 1) \
                .astype(np.float32)
        image = image.convert("L").resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.float32) / 255.0
    except (OSError, ValueError, TypeError, IndexError, Image.DecompressionBombError):
        return None


def _decode(path: Path, size: int) -> np.ndarray | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return to_grey(im, size)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None


def stratified_split(y: np.ndarray, validation: float, test: float, seed: int, where: str) -> dict[str, np.ndarray]:
    """Positions of the train / validation / test parts: per class, a seeded ``validation`` and ``test`` share;
    an empty part is a :class:`ConfigError` naming ``where``."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {"train": [], "validation": [], "test": []}
    for c in np.unique(y).tolist():
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val, n_test = round(len(idx) * validation), round(len(idx) * test)
        parts["validation"] += idx[:n_val].tolist()
        parts["test"] += idx[n_val:n_val + n_test].tolist()
        parts["train"] += idx[n_val + n_test:].tolist()
    for part, idx in parts.items():
        if not idx:
            raise ConfigError(f"{where}: {len(y)} images leave the {part} split empty; add images or change the "
                              f"validation / test shares")
    return {k: np.sort(np.asarray(v, dtype=np.int64)) for k, v in parts.items()}


def decoded_classes(images: list[np.ndarray | None], labels: list[int], names: tuple[str, ...], what: str,
                    where: str, labelled: bool) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """``(x [N, 1, H, W], y [N], class names)`` of the decodable images; classes left without one are dropped (and
    the labels renumbered); fewer than 2 classes with images, when labelled, or none at all, is a ConfigError
    naming ``where`` (``what``: what the images are, e.g. ``image files in 'x'``)."""
    total = len(images)
    kept = [(x, y) for x, y in zip(images, labels, strict=True) if x is not None]
    if not kept:
        raise ConfigError(f"{where}: none of the {total} {what} could be decoded")
    if len(kept) < total:
        warnings.warn(f"{where}: {total - len(kept)} of {total} {what} could not be decoded and are skipped",
                      stacklevel=3)
    x = np.stack([k[0] for k in kept])[:, None]
    raw = np.asarray([k[1] for k in kept], dtype=np.int64)
    present = np.unique(raw)
    if labelled and len(present) < 2:
        found = ", ".join(repr(names[i]) for i in present.tolist())
        raise ConfigError(f"{where}: a labelled image source needs at least 2 classes with decodable images, found "
                          f"{len(present)} ({found}); for unlabelled images set data.labels: none")
    if labelled and len(present) < len(names):
        empty = [names[i] for i in range(len(names)) if i not in set(present.tolist())]
        warnings.warn(f"{where}: classes without a decodable image are dropped: {', '.join(map(str, empty))}",
                      stacklevel=3)
    y = np.searchsorted(present, raw)
    return x, y, tuple(names[i] for i in present.tolist())


@lru_cache(maxsize=4)
def load_folder(config: ImageFolderConfig) -> tuple[Splits, tuple[str, ...]]:
    """The train / validation / test splits of ``config``'s folder and its class names (cached per process)."""
    root = Path(config.path).expanduser()
    if not root.is_dir():
        raise ConfigError(f"data.path: {config.path!r} is not a folder" if root.exists() else
                          f"data.path: {config.path!r} does not exist")
    files = find_files(config.path, IMAGE_SUFFIXES)
    if config.labels == "folders":
        loose = [f for f in files if f.parent == root]
        if loose:
            warnings.warn(f"data.path: {len(loose)} images directly in {config.path!r} are in no class subfolder and "
                          f"are skipped", stacklevel=2)
        files = [f for f in files if f.parent != root]
        names = tuple(sorted({f.relative_to(root).parts[0] for f in files}))
        if len(names) < 2:
            found = f"found {len(names)} ({names[0]!r})" if names else "found none"
            raise ConfigError(f"data.path: a labelled image folder needs at least 2 class subfolders, {found}; for "
                              f"unlabelled images set data.labels: none")
        labels = [names.index(f.relative_to(root).parts[0]) for f in files]
    else:
        names, labels = ("all",), [0] * len(files)
    images = [_decode(f, config.size) for f in files]
    x, y, names = decoded_classes(images, labels, names, f"image files in {config.path!r}", "data.path",
                                  config.labels == "folders")
    parts = stratified_split(y, config.validation, config.test, config.split_seed, "data.path")
    return {k: (x[v], y[v]) for k, v in parts.items()}, names


@SOURCES.register
class ImageFolder(ImageSource):
    """A user's images (see the module docstring)."""

    name = "image_folder"
    config_class = ImageFolderConfig
    config: ImageFolderConfig

    def splits(self) -> Splits:  # type: ignore[override]
        return load_folder(self.config)[0]

    @property
    def classes(self) -> int:  # type: ignore[override]
        return len(load_folder(self.config)[1]) if self.config.labels == "folders" else 0

    @property
    def class_names(self) -> tuple[str, ...]:
        """The class (subfolder) names, in label order."""
        return load_folder(self.config)[1]

    @property
    def spec(self) -> DataSpec:
        return super().spec.with_values(classes=self.classes)
