"""The versions a result was made with, recorded in every activation file's metadata."""
from __future__ import annotations

import platform


def versions() -> dict:
    import numpy as np
    import torch

    from dnn_search import __version__
    return {"dnn_search": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}
