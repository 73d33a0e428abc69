"""``array_file``: a user's table of numbers as rows for the point and regression families (offline).

``path`` is a ``.npy`` (an ``[N, d]`` or ``[N]`` array), ``.npz`` (the array ``key``, default its first), ``.csv``
or ``.parquet`` file (the numeric ``columns``, default every column but ``target``). Without ``target`` the rows
are points (``{"x": [C, n, d]}``: the ``gaussian`` and ``gmm`` families); with ``target`` (a column, or for
``.npz`` an array name) they are regression pairs (``{"x", "y"}``: the ``linear`` family). ``standardize``
centres and scales each column by the training split's mean and standard deviation. The rows are split once
(seeded by the run's seed) into the real pool and ``heldout`` held-out rows, as every finite source is.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from collapselab.data.base import SOURCES, FiniteSource, Source, SourceConfig
from collapselab.errors import ConfigError
from collapselab.seeding import SeedTree

ARRAY_SUFFIXES = (".npy", ".npz", ".csv", ".parquet")


class ArrayFileConfig(SourceConfig):
    """A user's array file (see the module docstring)."""

    source: Literal["array_file"] = "array_file"
    path: str = Field(min_length=1, description="a .npy, .npz, .csv or .parquet file")
    key: str | None = Field(None, min_length=1, description=".npz: the array of the rows (default: the first)")
    columns: list[str] | None = Field(None, min_length=1, description=".csv/.parquet: the columns of x")
    target: str | None = Field(None, min_length=1, description="the column (.npz: array) of y: regression rows")
    standardize: bool = Field(False, description="centre and scale every column by the training split")


def _table(path: Path) -> Any:
    import polars as pl

    try:
        return pl.read_csv(path) if path.suffix.lower() == ".csv" else pl.read_parquet(path)
    except Exception as e:
        raise ConfigError(f"data.path: cannot read {str(path)!r} as {path.suffix[1:]} ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})") from None


def _numeric(values: Any, what: str) -> np.ndarray:
    a = np.asarray(values)
    if np.issubdtype(a.dtype, np.complexfloating):
        raise ConfigError(f"{what}: holds complex numbers; allowed: real numbers")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise ConfigError(f"{what}: holds values that are not numbers ({a.dtype}); allowed: numeric columns")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ConfigError(f"{what}: holds NaN or infinite values; clean or drop those rows first")
    return a


def _table_column(frame: Any, name: str, what: str) -> np.ndarray:
    column = frame[name]
    if not (column.dtype.is_numeric() or str(column.dtype) == "Boolean"):
        raise ConfigError(f"{what}: column {name!r} holds {column.dtype} values, not numbers; allowed: numeric "
                          f"columns")
    return _numeric(column.to_numpy(), f"{what} ({name!r})")


def load_rows(config: ArrayFileConfig) -> dict[str, np.ndarray]:
    """``{"x": [N, d]}`` (or with ``"y": [N]``) from ``config``'s file (cached per process)."""
    return _load_rows(config.model_dump_json())


@lru_cache(maxsize=4)
def _load_rows(key: str) -> dict[str, np.ndarray]:  # keyed by the settings' JSON: ``columns`` is a list
    config = ArrayFileConfig.model_validate_json(key)
    path = Path(config.path).expanduser()
    if not path.is_file():
        raise ConfigError(f"data.path: {config.path!r} " + ("is not a file" if path.exists() else "does not exist"))
    suffix = path.suffix.lower()
    if suffix not in ARRAY_SUFFIXES:
        raise ConfigError(f"data.path: {config.path!r} is a {suffix or 'suffix-less'} file; allowed: "
                          f"{', '.join(ARRAY_SUFFIXES)}")
    y, col_names = None, None
    if suffix in (".npy", ".npz"):
        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            raise ConfigError(f"data.path: cannot read {config.path!r} as a NumPy {suffix} file (not written by "
                              f"numpy.save / numpy.savez, or an array of Python objects)") from None
        if suffix == ".npz":
            names = list(data.files)
            key = config.key or next((n for n in names if n != config.target), None)
            for k, what in ((key, "data.key"), (config.target, "data.target")):
                if k is not None and k not in names:
                    raise ConfigError(f"{what}: {k!r} is not an array of {config.path!r}; its arrays: "
                                      f"{', '.join(names)}")
            if key is None:
                raise ConfigError(f"data.path: {config.path!r} holds no array")
            x = _numeric(data[key], f"data.path ({key})")
            y = None if config.target is None else _numeric(data[config.target], "data.target")
        else:
            if config.target is not None:
                raise ConfigError("data.target: a .npy file holds one array; use .npz, .csv or .parquet for "
                                  "regression rows")
            x = _numeric(data, "data.path")
    else:
        frame = _table(path)
        cols = config.columns or [c for c in frame.columns if c != config.target]
        if config.target is not None and config.target in cols:
            raise ConfigError(f"data.columns: {config.target!r} is the target (data.target); a column is a feature "
                              f"or the target, not both")
        missing = [c for c in [*cols, *([config.target] if config.target else [])] if c not in frame.columns]
        if missing:
            raise ConfigError(f"data.{'columns' if missing[0] != config.target else 'target'}: {missing[0]!r} is "
                              f"not a column of {config.path!r}; its columns: {', '.join(frame.columns)}")
        if not cols:
            raise ConfigError(f"data.columns: {config.path!r} has no column besides the target")
        x = np.stack([_table_column(frame, c, "data.columns") for c in cols], axis=1)
        col_names = cols
        y = None if config.target is None else _table_column(frame, config.target, "data.target")
    x = x.reshape(len(x), -1) if x.ndim != 2 else x
    if len(x) < 2:
        raise ConfigError(f"data.path: {config.path!r} holds {len(x)} row(s); at least 2 are needed")
    if y is not None and y.reshape(len(y), -1).shape != (len(x), 1):
        raise ConfigError(f"data.target: {len(y)} values for {len(x)} rows (one number per row)")
    constant = np.flatnonzero(np.ptp(x, axis=0) == 0)
    if constant.size:
        which = ", ".join(repr(col_names[i]) if col_names else str(i) for i in constant.tolist()[:5])
        raise ConfigError(f"data.columns: column(s) {which} of {config.path!r} hold one value (no variance, no "
                          f"density to fit); drop them")
    return {"x": x} if y is None else {"x": x, "y": y.reshape(-1)}


@SOURCES.register
class ArrayFile(FiniteSource):
    """Rows of a user's array file as points (see the module docstring)."""

    name = "array_file"
    config_class = ArrayFileConfig
    kind = "points"
    config: ArrayFileConfig

    @classmethod
    def serving(cls, config: SourceConfig) -> type[Source]:
        return ArrayRegression if getattr(config, "target", None) else cls

    @property
    def spec(self) -> dict[str, Any]:
        return {"dim": int(load_rows(self.config)["x"].shape[1])}

    def load(self) -> dict[str, np.ndarray]:
        return load_rows(self.config)

    def _split(self, tree: SeedTree) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        train, held = super()._split(tree)
        if not self.config.standardize:
            return train, held
        out = []
        for part in (train, held):
            out.append({k: (v - train[k].mean(axis=0)) / np.where(train[k].std(axis=0) > 0, train[k].std(axis=0), 1)
                        for k, v in part.items()})
        return out[0], out[1]


class ArrayRegression(ArrayFile):
    """Rows of a user's array file as regression pairs ``(x, y)`` (``target`` set)."""

    kind = "regression"
