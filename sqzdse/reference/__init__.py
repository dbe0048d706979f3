"""The reference data sqzdse ships: the released Caffe models and the paper's numbers (README.md here).

Found with ``importlib.resources``, so a pip install has it too; ``$SQZDSE_REFERENCE`` points at another
copy of the same layout instead. Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

RELEASED = "released"  # what `export`, `compress` and `predict --weights` accept for the bundled v1.0
RELEASED_NET = ("caffe", "SqueezeNet_compressed", "compressed_SqueezeNet.net")


def root() -> Path:
    """The reference folder: $SQZDSE_REFERENCE if set, else the copy inside the package."""
    env = os.environ.get("SQZDSE_REFERENCE")
    # A plain install unpacks package data to files, so the traversable is a real path.
    return Path(env) if env else Path(str(resources.files(__name__)))


def path(*parts: str) -> Path:
    """A file of the reference data; FileNotFoundError (one line, naming where it looked) if it is missing."""
    p = root().joinpath(*parts)
    if not p.is_file():
        where = "$SQZDSE_REFERENCE" if os.environ.get("SQZDSE_REFERENCE") else "the installed package"
        raise FileNotFoundError(f"{p}: not found in the reference data ({where})")
    return p


def load_json(*parts: str) -> dict:
    return json.loads(path(*parts).read_text())


def paper_numbers() -> dict:
    """paper_numbers.json: every number tagged text / web / derived / recall (recall is never a test target)."""
    return load_json("paper_numbers.json")


def weights_path(arg: str | os.PathLike) -> Path:
    """`released` is the bundled Deep-Compression v1.0 file; anything else is a path."""
    return path(*RELEASED_NET) if str(arg) == RELEASED else Path(arg)
