"""Declared model builders: the only callables a run folder may name.

A run records how its model was built as ``{"_target_": "<dotted name>", **kwargs}`` in ``config.json``;
:func:`snnprune.load_run` calls ``_target_`` only when installed code has declared that name with
:func:`model_builder`, and only after :func:`check_kwargs` has checked every keyword against the builder's
signature and annotations. A run folder is data: it cannot make ``load_run`` import a module or call
anything else. ``snnprune`` itself declares nothing (it never imports ``models``); a model package
declares its builders when it is imported, e.g. ``models.create_model`` is declared by ``import models``.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["check_kwargs", "declared", "declared_builder", "model_builder"]

_BUILDERS: dict[str, Callable[..., Any]] = {}


def model_builder(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a callable as the model builder that a run's builder record names as ``_target_ = name``.

    Args:
        name: the dotted name records use (e.g. ``"models.create_model"``).

    Returns:
        A decorator that registers its function under ``name`` and returns it unchanged.

    Raises:
        ValueError: ``name`` is already declared by another callable.
    """

    def declare(fn: Callable[..., Any]) -> Callable[..., Any]:
        if _BUILDERS.get(name, fn) is not fn:
            raise ValueError(f"model_builder: {name!r} is already declared; give the builder another name")
        _BUILDERS[name] = fn
        return fn

    return declare


def declared() -> list[str]:
    """The declared builder names, sorted."""
    return sorted(_BUILDERS)


def declared_builder(target: Any, where: str) -> Callable[..., Any]:
    """The builder declared as ``target``; a :class:`LookupError` line naming ``where`` otherwise (nothing is
    imported or called)."""
    if isinstance(target, str) and target in _BUILDERS:
        return _BUILDERS[target]
    shown = repr(target) if len(repr(target)) <= 80 else repr(target)[:77] + "..."
    names = ", ".join(declared()) or "none yet"
    raise LookupError(
        f"{where}: '_target_' {shown} is not a declared model builder (declared: {names}); import the "
        "package that declares it first (e.g. import models), or pass builder="
    )


def _matches(value: Any, annotation: Any) -> bool:
    """Whether a JSON-like ``value`` fits ``annotation`` (unknown annotations accept anything)."""
    if annotation in (inspect.Parameter.empty, Any, object):
        return True
    if annotation is None or annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if isinstance(origin, type):
        return isinstance(value, origin)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_kwargs(fn: Callable[..., Any], kwargs: Mapping[str, Any], where: str) -> None:
    """Check ``kwargs`` against ``fn``'s signature and annotations before ``fn(**kwargs)`` is called.

    Args:
        fn: a builder (a function, class or :func:`functools.partial`).
        kwargs: the keyword arguments it would get.
        where: what the message names first (e.g. ``"model 'sew_resnet18'"``).

    Raises:
        TypeError: one line naming the first keyword ``fn`` does not take (with the accepted ones), a
            missing required one, or a value whose type differs from its annotation.
    """
    try:
        params = inspect.signature(fn, eval_str=True).parameters
    except NameError:  # an annotation that cannot be evaluated here: check the names only
        params = inspect.signature(fn).parameters
    named = {n: p for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(named))
        if unknown:
            raise TypeError(
                f"{where} got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
                f"accepted: {', '.join(named)}"
            )
    for name, p in named.items():
        if name not in kwargs:
            if p.default is p.empty:
                raise TypeError(f"{where} needs the keyword argument {name!r}; add it")
            continue
        if not _matches(kwargs[name], p.annotation):
            shown = getattr(p.annotation, "__name__", None) or str(p.annotation)
            raise TypeError(
                f"{where}: keyword argument {name!r} must be {shown}, got {_short(kwargs[name])}; pass a value "
                f"of type {shown}"
            )
