"""The tidy results table (``arm, seed, generation, metric, value``) as parquet and CSV, built vectorized.

Written with polars rather than pyarrow: polars' CSV writer formats doubles (shortest round-trip form, so
values read back bit for bit) several times faster than pyarrow's (the README's benchmark section), and its
parquet files are plain Arrow-compatible parquet (``arm`` and ``metric`` dictionary-encoded) that pyarrow, pandas
and DuckDB read.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

COLUMNS = ("arm", "seed", "generation", "metric", "value")


def tidy_frame(arms: Sequence[str], metrics: Sequence[str], values: np.ndarray, first_arm: int = 0):
    """A polars DataFrame of ``values [arms, seeds, generations + 1, metrics]`` in arm, seed, generation,
    metric order (the order of the nested loops, without one). ``values`` may hold a block of the arms,
    starting at ``first_arm``; the frames of consecutive blocks concatenate to the whole table."""
    import polars as pl

    a, s, g, m = values.shape
    arm_enum, metric_enum = pl.Enum(list(arms)), pl.Enum(list(metrics))
    frame = pl.DataFrame({
        "arm": pl.Series(np.repeat(np.arange(first_arm, first_arm + a, dtype=np.uint32), s * g * m)),
        "seed": np.tile(np.repeat(np.arange(s, dtype=np.int32), g * m), a),
        "generation": np.tile(np.repeat(np.arange(g, dtype=np.int32), m), a * s),
        "metric": pl.Series(np.tile(np.arange(m, dtype=np.uint32), a * s * g)),
        "value": np.ascontiguousarray(values, dtype=np.float64).reshape(-1),
    })
    return frame.with_columns(
        pl.col("arm").replace_strict(list(range(len(arms))), list(arms), return_dtype=arm_enum),
        pl.col("metric").replace_strict(list(range(m)), list(metrics), return_dtype=metric_enum))


def csv_bytes(frame, header: bool = True) -> bytes:
    """``metrics.csv``: header + one row per value; floats in shortest round-trip form, ``inf``/``NaN``."""
    buf = io.BytesIO()
    frame.write_csv(buf, include_header=header)
    return buf.getvalue()


def parquet_bytes(frame) -> bytes:
    """``metrics.parquet`` (snappy; no column statistics, which the tidy table never needs)."""
    buf = io.BytesIO()
    frame.write_parquet(buf, compression="snappy", statistics=False)
    return buf.getvalue()


def read_values(path, arms: Sequence[str], metrics: Sequence[str], seeds: int, generations: int) -> np.ndarray:
    """``values [arms, seeds, generations + 1, metrics]`` from a ``metrics.parquet`` or ``metrics.csv`` file
    (NaN where a row is missing)."""
    import polars as pl

    path = str(path)
    frame = pl.read_parquet(path) if path.endswith(".parquet") else pl.read_csv(
        path, schema_overrides={"arm": pl.String, "metric": pl.String, "value": pl.Float64})
    out = np.full((len(arms), seeds, generations + 1, len(metrics)), np.nan)
    a = frame["arm"].cast(pl.String).replace_strict(list(arms), list(range(len(arms))), return_dtype=pl.Int64)
    k = frame["metric"].cast(pl.String).replace_strict(list(metrics), list(range(len(metrics))),
                                                        return_dtype=pl.Int64)
    out[a.to_numpy(), frame["seed"].to_numpy(), frame["generation"].to_numpy(), k.to_numpy()] = \
        frame["value"].to_numpy()
    return out
