"""Shared fixtures: the public reference data beside the project (../shared/reference)."""

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = Path(os.environ.get("SQZDSE_REFERENCE", ROOT.parent / "shared" / "reference"))


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """Tests build the same small configurations again and again: compile each once per session."""
    import jax

    cache = str(tmp_path_factory.mktemp("jax-cache"))
    # The environment reaches the worker processes the sweep tests start.
    os.environ.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture(scope="session")
def reference() -> Path:
    if not REFERENCE.is_dir():
        pytest.fail(f"reference data not found at {REFERENCE}; set SQZDSE_REFERENCE to shared/reference")
    return REFERENCE


@pytest.fixture(scope="session")
def paper_numbers(reference) -> dict:
    return json.loads((reference / "paper_numbers.json").read_text())


@pytest.fixture(scope="session")
def caffe_layers(reference) -> dict:
    return json.loads((reference / "caffe" / "derived_layer_table.json").read_text())["versions"]
