"""Model zoo of snnprune: SEW ResNets (SpikingJelly), their ANN twins, ResNet-50 and MobileNet-V1.

Build models by name through the registry::

    import models

    net = models.create_model("sew_resnet18", num_classes=10, in_channels=1, stem="small", width=16, T=4)
    models.list_models()  # ['ann_resnet18', ..., 'sew_resnet50']
"""

from __future__ import annotations

from . import ann_resnet, mobilenet_v1, resnet, sew_resnet, spiking_transformer  # noqa: F401  (registers the builders)
from .registry import create_model, list_models, model_kwargs, register_model, register_variant

__all__ = ["create_model", "list_models", "model_kwargs", "register_model", "register_variant"]
