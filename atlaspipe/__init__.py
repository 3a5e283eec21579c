"""atlaspipe: a distributed H→ZZ*→4ℓ analysis of ATLAS Open Data.

``celery -A atlaspipe worker`` finds the Celery application as ``atlaspipe.app``; it is created on
first access, so ``atlaspipe run`` never pays for importing Celery.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "app"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from atlaspipe.taskapp import app

        return app
    raise AttributeError(f"module 'atlaspipe' has no attribute {name!r}")
