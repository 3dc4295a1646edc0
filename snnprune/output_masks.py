"""Output masks on spiking neurons: a neuron whose mask is 0 sends nothing downstream.

The contract (what :func:`snnprune.analyze`, :func:`snnprune.finalize` and :func:`snnprune.export_nir` read;
no method is named here):

* a neuron module ``n`` carries its mask as the submodule ``n.output_mask``, attached with
  :func:`attach_output_mask`; a forward hook replaces the neuron's output ``s`` by
  ``n.output_mask(s, lead)``, ``lead`` the leading (time, batch) dimensions of ``s`` (2 for a multi-step
  SpikingJelly neuron, else 1);
* ``n.output_mask.keep()`` is the hard 0/1 mask over one sample's neurons at one step (the shape of
  ``s`` without its ``lead`` dimensions; None before the shape is known), the mask in force in eval mode;
* :func:`fix_output_masks` replaces every mask by a :class:`FixedOutputMask` of its ``keep()`` (what
  :func:`snnprune.finalize` does), :func:`remove_output_mask` takes it off;
* a finalized model's ``state_dict`` holds each fixed mask as ``<neuron>.output_mask.keep_mask``:
  :func:`attach_fixed_masks` gives a fresh model those masks, so that the state dict loads strictly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "FixedOutputMask",
    "attach_fixed_masks",
    "attach_output_mask",
    "fix_output_masks",
    "has_output_mask",
    "output_keep",
    "remove_output_mask",
]

_ATTR = "output_mask"


def _lead(neuron: nn.Module, output: Tensor) -> int:
    return 2 if getattr(neuron, "step_mode", "s") == "m" and output.dim() >= 2 else 1


def _apply_output_mask(neuron: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
    """Forward hook of a masked neuron (a module-level function, so ``copy.deepcopy`` keeps it right)."""
    mask = neuron._modules.get(_ATTR)
    if mask is None or not isinstance(output, Tensor):
        return None
    return mask(output, _lead(neuron, output))


def has_output_mask(neuron: nn.Module) -> bool:
    """Whether ``neuron`` carries an output mask."""
    return isinstance(neuron._modules.get(_ATTR), nn.Module)


def output_keep(neuron: nn.Module) -> Tensor | None:
    """The hard 0/1 mask of ``neuron``'s outputs over one sample and step (None: no mask, or its shape is not
    known before the neuron's first forward)."""
    mask = neuron._modules.get(_ATTR)
    return None if mask is None else mask.keep()


def attach_output_mask(neuron: nn.Module, mask: nn.Module) -> None:
    """Attach ``mask`` as ``neuron.output_mask`` and the forward hook that applies it.

    Args:
        neuron: a spiking neuron module.
        mask: a module called as ``mask(output, lead)`` returning the masked output, with a ``keep()``
            method (see the module docstring).

    Raises:
        ValueError: ``neuron`` already has an output mask.
    """
    if has_output_mask(neuron):
        raise ValueError(f"{type(neuron).__name__} already has an output mask; remove it first")
    neuron.add_module(_ATTR, mask)
    neuron.register_forward_hook(_apply_output_mask)


def remove_output_mask(neuron: nn.Module) -> None:
    """Take ``neuron``'s output mask and its hook off (the neuron is as before :func:`attach_output_mask`).

    Raises:
        ValueError: ``neuron`` has no output mask.
    """
    if not has_output_mask(neuron):
        raise ValueError(f"{type(neuron).__name__} has no output mask to remove")
    del neuron._modules[_ATTR]
    for key, hook in list(neuron._forward_hooks.items()):
        if hook is _apply_output_mask:
            del neuron._forward_hooks[key]


class FixedOutputMask(nn.Module):
    """A fixed 0/1 output mask: ``where(keep, s, 0)`` (``keep`` a bool buffer over one sample's neurons)."""

    def __init__(self, keep: Tensor) -> None:
        super().__init__()
        self.register_buffer("keep_mask", keep.detach().to(torch.bool).clone())

    def forward(self, output: Tensor, lead: int) -> Tensor:
        """The output with the masked neurons at exact zeros."""
        return torch.where(self.keep_mask, output, torch.zeros((), dtype=output.dtype, device=output.device))

    def keep(self) -> Tensor:
        """The mask as 0/1 floats."""
        return self.keep_mask.to(torch.float32)


def fix_output_masks(model: nn.Module) -> nn.Module:
    """Replace every neuron's output mask by a :class:`FixedOutputMask` of its ``keep()`` (in place).

    A mask whose shape is not known yet (its neuron never ran) is removed: it masks nothing.

    Returns:
        ``model``.
    """
    for module in list(model.modules()):
        mask = module._modules.get(_ATTR)
        if mask is None or isinstance(mask, FixedOutputMask):
            continue
        keep = mask.keep()
        release = getattr(mask, "release", None)
        if release is not None:
            release()
        if keep is None:
            remove_output_mask(module)
        else:
            module._modules[_ATTR] = FixedOutputMask(keep > 0)
    return model


def attach_fixed_masks(model: nn.Module, state_dict: dict[str, Any]) -> nn.Module:
    """Attach a :class:`FixedOutputMask` to each neuron of ``model`` that ``state_dict`` (of a finalized
    model, e.g. a run's ``model_sparse.pth``) masks, so that ``model.load_state_dict(state_dict)`` then
    loads the masks with the weights.

    Returns:
        ``model``.

    Raises:
        KeyError: a ``<neuron>.output_mask.keep_mask`` key names no module of ``model``.
        ValueError: that module has an output mask already.
    """
    suffix = f".{_ATTR}.keep_mask"
    modules = dict(model.named_modules())
    for key, keep in state_dict.items():
        if not key.endswith(suffix):
            continue
        name = key[: -len(suffix)]
        if name not in modules:
            raise KeyError(f"{key!r}: the model has no module {name!r}; use the model the state dict is of")
        attach_output_mask(modules[name], FixedOutputMask(keep))
    return model
