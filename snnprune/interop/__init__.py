"""Exchange with other frameworks: NIR export (:func:`export_nir`) and its round-trip check (:func:`verify_nir`).

Importing this package imports ``nir``; ``import snnprune`` does not (its names load lazily).
"""

from .nir_export import NIRExportError, export_nir, fold_batchnorm, model_nonzeros, nir_nonzeros
from .nir_verify import FRAMEWORKS, PUBLIC, format_rows, verify_nir

__all__ = [
    "FRAMEWORKS",
    "PUBLIC",
    "NIRExportError",
    "export_nir",
    "fold_batchnorm",
    "format_rows",
    "model_nonzeros",
    "nir_nonzeros",
    "verify_nir",
]
