"""atlaspipe: a distributed H→ZZ*→4ℓ analysis of ATLAS Open Data.

The public API, imported lazily so that ``import atlaspipe`` and the command line start fast::

    import atlaspipe
    outcome = atlaspipe.run()                 # the embedded sample, in this process
    outcome.results.samples["ggH125_ZZ4lep"].m4l.to_hist(outcome.results.bin_edges)
    handle = atlaspipe.submit(inputs=[...])   # on the Celery workers; handle.wait()

``celery -A atlaspipe worker`` finds the Celery application as ``atlaspipe.app``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "run": "atlaspipe.api", "submit": "atlaspipe.api", "RunOutcome": "atlaspipe.api", "RunHandle": "atlaspipe.api",
    "AnalysisSettings": "atlaspipe.config", "AnalysisConfig": "atlaspipe.config",
    "Chunk": "atlaspipe.model", "RunPlan": "atlaspipe.model", "RunResults": "atlaspipe.model",
    "RunStatus": "atlaspipe.model", "RunState": "atlaspipe.model", "Manifest": "atlaspipe.model",
    "Histogram": "atlaspipe.model", "AtlaspipeError": "atlaspipe.errors", "app": "atlaspipe.pipeline.celery.app",
}
__all__ = [
    "AnalysisConfig", "AnalysisSettings", "AtlaspipeError", "Chunk", "Histogram", "Manifest", "RunHandle",
    "RunOutcome", "RunPlan", "RunResults", "RunState", "RunStatus", "__version__", "app", "run", "submit",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'atlaspipe' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
