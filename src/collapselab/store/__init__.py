"""The run store: the one package that writes (and verifies) a run directory.

- :mod:`~collapselab.store.files`: atomic, checksummed files; :mod:`~collapselab.store.lock`: the run lock;
  :mod:`~collapselab.store.checkpoints`: chain checkpoints; :mod:`~collapselab.store.run`: the run directory;
  :mod:`~collapselab.store.layout`: the names in it. ``from collapselab.store import ...`` gives all of them.

Layout of a run directory::

    run.json               manifest: format, the resolved experiment and its sha256, the outputs' sha256
    experiment.yaml        the resolved experiment (edit ``generations`` and ``resume`` to extend a run)
    .collapselab.lock      held (fcntl) by the process using the run; holds its pid
    chains/<arm>/bNNNN/    one folder per chain batch; per checkpoint at generation g:
        gNNNNN.safetensors         model state (``model.*``) + the metric values of the generations since
                                   the previous checkpoint (``metrics [k, metrics, chains]``, float64)
        gNNNNN.regime.safetensors  the regime's state (kept for the newest two checkpoints)
        gNNNNN.json                the commit record, written last: generation, first generation and the
                                   sha256 and size of each file above
    metrics.parquet, metrics.csv, summary.json, report.html, figures/

Rules: every write is atomic (temp file in the same folder, fsync, rename, fsync of the folder) and creates
files with the user's umask; a checkpoint exists once its record exists, and is used only after every file
it lists matches its sha256; ``--overwrite`` removes only files this module wrote and refuses a folder that
holds anything else; one process at a time holds a run (``flock``; a killed holder's lock is free again).
No pickle is ever loaded.
"""

from collapselab.store.checkpoints import ChainScan, ChainStore, Writer
from collapselab.store.files import (
    Damaged,
    dumps_json,
    read_utf8,
    read_verified,
    remove_temps,
    sha256_bytes,
    tensors_bytes,
    write_atomic,
)
from collapselab.store.layout import (
    CHAINS,
    CHECKPOINT_FORMAT,
    EXPERIMENT,
    FIGURES,
    KEEP_MODELS,
    KEEP_REGIME,
    LOCK,
    MANIFEST,
    RUN_FORMAT,
    chain_folder,
)
from collapselab.store.lock import RunLock
from collapselab.store.run import OutputSink, RunStore

__all__ = ["CHAINS", "CHECKPOINT_FORMAT", "EXPERIMENT", "FIGURES", "KEEP_MODELS", "KEEP_REGIME", "LOCK", "MANIFEST",
           "RUN_FORMAT", "ChainScan", "ChainStore", "Damaged", "OutputSink", "RunLock", "RunStore", "Writer",
           "chain_folder", "dumps_json", "read_utf8", "read_verified", "remove_temps", "sha256_bytes",
           "tensors_bytes", "write_atomic"]
