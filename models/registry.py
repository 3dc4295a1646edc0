"""Model registry (timm-style): ``@register_model`` entrypoints, :func:`create_model`, :func:`list_models`.

Every architecture file defines small builder functions decorated with :func:`register_model`; the
builder's own keyword arguments (with their defaults) are the model's public options. :func:`create_model`
checks the keyword arguments against the builder's signature before calling it, so a typo fails with the
model name and the accepted options instead of deep inside a constructor.
"""

from __future__ import annotations

import fnmatch
import functools
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from snnprune.methods import closest
from snnprune.model_builders import check_kwargs, model_builder

__all__ = ["create_model", "list_models", "model_kwargs", "register_model", "register_variant"]

_model_entrypoints: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a model builder under its function name.

    Args:
        fn: builder taking keyword-only options and returning an ``nn.Module``.

    Returns:
        ``fn`` unchanged (decorator).

    Raises:
        ValueError: if a model with the same name is already registered.
    """
    name = fn.__name__
    if name in _model_entrypoints and _model_entrypoints[name] is not fn:
        raise ValueError(f"model {name!r} is already registered; give the builder function another name")
    _model_entrypoints[name] = fn
    return fn


def register_variant(
    name: str, cls: Callable[..., nn.Module], *args: Any, doc: str, **defaults: Any
) -> Callable[..., nn.Module]:
    """Register ``functools.partial(cls, *args, **defaults)`` as model ``name`` (e.g. a ResNet class with
    its block type and stage depths bound); its options are the remaining keyword arguments of ``cls``,
    defaults included, so they are written once, in the class (``defaults`` replace a variant's defaults
    and stay options, e.g. a transformer's depth and width).

    Args:
        name: model name.
        cls: model class (or any builder).
        *args: leading positional arguments bound for this variant.
        doc: one-line description shown by ``help``.
        **defaults: keyword arguments of ``cls`` given this variant's default.

    Returns:
        The registered builder.
    """
    builder = functools.partial(cls, *args, **defaults)
    builder.__name__ = name
    builder.__doc__ = f"{doc}\n\nOptions: the keyword arguments of :class:`{cls.__name__}`."
    return register_model(builder)


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of the registered models.

    Args:
        pattern: fnmatch glob on the name (e.g. ``"sew_*"``).

    Returns:
        The matching model names, sorted.
    """
    return sorted(n for n in _model_entrypoints if fnmatch.fnmatch(n, pattern))


def model_kwargs(name: str) -> dict[str, Any]:
    """Accepted keyword arguments of a registered model and their defaults.

    Args:
        name: registered model name.

    Returns:
        ``{kwarg: default}`` in signature order.
    """
    fn = _get(name)
    return {p.name: p.default for p in inspect.signature(fn).parameters.values()}


def _get(name: str) -> Callable[..., nn.Module]:
    if name not in _model_entrypoints:
        near = closest(name, list_models())
        fix = f"did you mean {near!r}? " if near else ""
        raise ValueError(f"unknown model {name!r}; {fix}available models: {', '.join(list_models())}")
    return _model_entrypoints[name]


@model_builder("models.create_model")  # the builder that run folders name (snnprune.load_run)
def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model.

    Keyword arguments whose value is ``None`` are dropped so the model's defaults apply (handy when a CLI
    passes every option, set or not).

    Args:
        name: registered model name (see :func:`list_models`).
        **kwargs: model options (see :func:`model_kwargs`).

    Returns:
        The constructed model.

    Raises:
        ValueError: unknown model name (the message lists the available ones).
        TypeError: a keyword argument the model does not accept (the message names it, the model and the
            accepted options), or one whose type differs from the builder's annotation.
    """
    fn = _get(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    check_kwargs(fn, kwargs, f"model {name!r}")
    return fn(**kwargs)
