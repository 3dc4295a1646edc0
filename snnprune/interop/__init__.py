"""Exchange with other frameworks: NIR export (:func:`export_nir`), its round-trip check (:func:`verify_nir`)
and the constraints of a chip the model breaks (:func:`check_target`); NeuroBench's own benchmark on a
SpikingJelly model: :func:`snnprune.interop.neurobench.benchmark`.

Importing this package imports ``nir``; ``import snnprune`` does not (its names load lazily).
"""

from .nir_export import NIRExportError, export_nir, fold_batchnorm, model_nonzeros, nir_nonzeros
from .nir_verify import FRAMEWORKS, PUBLIC, format_rows, verify_nir
from .targets import TARGETS, check_target

__all__ = [
    "FRAMEWORKS",
    "PUBLIC",
    "TARGETS",
    "NIRExportError",
    "check_target",
    "export_nir",
    "fold_batchnorm",
    "format_rows",
    "model_nonzeros",
    "nir_nonzeros",
    "verify_nir",
]
