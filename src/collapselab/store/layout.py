"""The names in a run directory: formats, file names and patterns, and what is kept."""

from __future__ import annotations

import re
from pathlib import Path

#: 2: families draw from named sub-streams (results differ from format 1's), exhibits in checkpoints; a run of an
#: older format is refused by resume and report (one line naming both formats)
RUN_FORMAT = "collapselab-run/2"
CHECKPOINT_FORMAT = "collapselab-checkpoint/2"
MANIFEST = "run.json"
EXPERIMENT = "experiment.yaml"
LOCK = ".collapselab.lock"
CHAINS = "chains"
FIGURES = "figures"
#: regime-state files are kept for this many of the newest checkpoints (so resume can fall back one).
KEEP_REGIME = 2

#: model folders (a family's standard export, e.g. a Hugging Face folder) kept besides the newest checkpoints.
KEEP_MODELS = 2

_RECORD = re.compile(r"^g(\d{5,})\.json$")
_CHECKPOINT_FILE = re.compile(r"^g(\d{5,})(\.regime)?\.(safetensors|json)$")
_MODEL_DIR = re.compile(r"^g(\d{5,})\.model$")
_TEMP = re.compile(r"^\..+\.[0-9a-f]+\.tmp$")
_BATCH = re.compile(r"^b\d{4,}$")




def chain_folder(run_dir: Path, arm: str, batch: int) -> Path:
    """Where the checkpoints of ``arm``'s chain batch ``batch`` live."""
    return Path(run_dir) / CHAINS / arm / f"b{batch:04d}"
