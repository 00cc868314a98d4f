"""Shared test set-up: float64 JAX, a compilation cache shared by the xdist workers, and bounded memory."""

from __future__ import annotations

import os
from pathlib import Path

import jax
import pytest

import jaxvpp  # noqa: F401  (turns on float64)

_CACHE = os.environ.get("JAXVPP_TEST_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".cache" / "jax-tests"))
if _CACHE:
    jax.config.update("jax_compilation_cache_dir", _CACHE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop compiled programs after each test module: every distinct fleet shape compiles its own program,
    and XLA's CPU programs hold memory mappings (the kernel allows 65530 per process)."""
    yield
    jax.clear_caches()
