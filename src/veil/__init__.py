"""veil: keep secrets secret in infrastructure-as-code programs."""

from __future__ import annotations

from .errors import *  # noqa: F403
from .errors import __all__ as _errors_all
from .secret import MASK, Secret, is_secret, reveal

__version__ = "0.1.0"

__all__ = ["MASK", "Secret", "__version__", "is_secret", "reveal", *_errors_all]
