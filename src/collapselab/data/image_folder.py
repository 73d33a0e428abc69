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
from typing import Literal

import numpy as np
from pydantic import Field

from collapselab.data.base import SOURCES
from collapselab.data.files import find_files
from collapselab.data.images import ImageSource, ImageSourceConfig, Splits
from collapselab.errors import ConfigError
from collapselab.families.base import DataSpec
from collapselab.registry import SettingContext

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


def _decode(path: Path, size: int) -> np.ndarray | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("L").resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError):
        return None


@lru_cache(maxsize=4)
def load_folder(config: ImageFolderConfig) -> tuple[Splits, tuple[str, ...]]:
    """The train / validation / test splits of ``config``'s folder and its class names (cached per process)."""
    root = Path(config.path).expanduser()
    if not root.is_dir():
        raise ConfigError(f"data.path: {config.path!r} is not a folder" if root.exists() else
                          f"data.path: {config.path!r} does not exist")
    files = find_files(config.path, IMAGE_SUFFIXES)
    if config.labels == "folders":
        files = [f for f in files if f.parent != root]
        names = tuple(sorted({f.relative_to(root).parts[0] for f in files}))
        if len(names) < 2:
            found = f"found {len(names)} ({names[0]!r})" if names else "found none"
            raise ConfigError(f"data.path: a labelled image folder needs at least 2 class subfolders, {found}; for "
                              f"unlabelled images set data.labels: none")
        labels = [names.index(f.relative_to(root).parts[0]) for f in files]
    else:
        names, labels = ("all",), [0] * len(files)
    images, kept = [], []
    for f, y in zip(files, labels, strict=True):
        x = _decode(f, config.size)
        if x is not None:
            images.append(x)
            kept.append(y)
    if not images:
        raise ConfigError(f"data.path: none of the {len(files)} image files in {config.path!r} could be decoded")
    if len(images) < len(files):
        warnings.warn(f"data.path: {len(files) - len(images)} of {len(files)} image files in {config.path!r} could "
                      f"not be decoded and are skipped", stacklevel=2)
    x = np.stack(images)[:, None]
    y = np.asarray(kept, dtype=np.int64)
    rng = np.random.default_rng(config.split_seed)
    parts: dict[str, list[int]] = {"train": [], "validation": [], "test": []}
    for c in range(len(names)):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val, n_test = round(len(idx) * config.validation), round(len(idx) * config.test)
        parts["validation"] += idx[:n_val].tolist()
        parts["test"] += idx[n_val:n_val + n_test].tolist()
        parts["train"] += idx[n_val + n_test:].tolist()
    for part, idx in parts.items():
        if not idx:
            raise ConfigError(f"data.path: {len(y)} images leave the {part} split empty; add images or change "
                              f"data.validation / data.test")
    return {k: (x[np.sort(v)], y[np.sort(v)]) for k, v in parts.items()}, names


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
