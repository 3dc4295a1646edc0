"""Iterative magnitude pruning with weight rewinding: lottery tickets (Frankle et al. 2019/2020; SNNs: Kim et
al., ECCV 2022)."""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from typing import Any

import torch
from torch import nn

from snnprune.methods.base import KeywordError, Pruner, check_steps, check_target_sparsity, register_method
from snnprune.threshold.parametrization import MagnitudeMask

__all__ = ["IMPPruner"]


@register_method("imp")
class IMPPruner(Pruner):
    """IMP: ``rounds`` equal rounds of training; between two rounds, a global magnitude cut and a rewind.

    The run's ``total_steps`` are cut into ``rounds`` rounds of :attr:`cycle_steps` steps each. At step
    :attr:`rewind_step` ``= floor(rewind_fraction * cycle_steps)`` of the first round the raw weights
    :math:`\\theta` of the pruned layers are saved. Before the first step of round :math:`r \\geq 1`
    (:meth:`before_epoch`) the mask :math:`M` (bool buffer, as ``gmp``'s, with the saved weights beside it)
    keeps the :math:`\\lceil (1 - s_r) N \\rceil` largest :math:`|\\theta \\odot M|` over all pruned layers
    together (the authors' global scope; :math:`N` weights in all), with

    .. math::
        s_r = 1 - (1 - s_f)^{r / (R - 1)},

    so each cut removes the same fraction of the surviving weights and the last round trains at
    ``target_sparsity`` :math:`s_f`; the surviving :math:`\\theta` are then set back to their saved values,
    the optimizer's state (momentum) is cleared and the lr scheduler restarts from its state at
    :meth:`bind`, so each round replays the lr plan (a training engine plans it over :attr:`cycle_steps`,
    see :meth:`schedule_epochs`). The rounds done are in :meth:`state_dict`, the mask and the saved
    weights in the model's: a run resumed at any epoch continues bit for bit.

    With ``search_T`` the run is an early-time ticket (Kim et al.): the search rounds (all but the last)
    run the model at ``model.T = search_T`` time steps, the cuts are made on weights trained at that T, and
    the last cut, which leaves the ticket, sets ``model.T`` back to the model's own T, at which the last round
    trains it. ``model.T`` follows :attr:`rounds_done` (restored with the state), so a resumed or reloaded
    run runs at the T of its round.

    Args:
        target_sparsity: final sparsity :math:`s_f` in [0, 1) (required), reached in the last round.
        rounds: rounds of training, R >= 2 (R - 1 cuts); ``total_steps`` (the epochs) must be a multiple.
        rewind_fraction: where in the first round the weights every later round restarts from are
            saved, as a fraction f in [0, 1) of a round (default 1/15: the authors' epoch 20 of 300; 0: the
            initialization).
        total_steps: optimizer steps of the whole run (required).
        start_step: must be 0 (the rounds span the whole run).
        search_T: time steps of the search rounds (the early-time ticket), 1 <= search_T < the model's
            ``T`` (an int attribute, as the SEW ResNets and spiking transformers have); None: every round
            at the model's T.

    Raises:
        ValueError: ``target_sparsity`` outside [0, 1), ``rounds < 2`` or not dividing ``total_steps``,
            ``rewind_fraction`` outside [0, 1), ``start_step != 0``, ``search_T`` below 1 or not below the
            model's ``T``, or a model without an int ``T``.
    """

    def __init__(
        self,
        *,
        target_sparsity: float | None = None,
        rounds: int = 4,
        rewind_fraction: float = 1 / 15,
        total_steps: int | None = None,
        start_step: int = 0,
        search_T: int | None = None,
    ) -> None:
        super().__init__(total_steps=total_steps, start_step=start_step)
        target_sparsity = check_target_sparsity(target_sparsity, "imp")
        if check_steps(rounds, "rounds", "imp") < 2 or self.total_steps % rounds:
            raise KeywordError(
                "rounds",
                f"rounds must be >= 2 and divide total_steps={self.total_steps} (rounds of whole epochs), got "
                f"{rounds}; pass a number of rounds that divides the epochs",
            )
        if self.start_step:
            raise ValueError(f"imp rounds span the whole run: start_step must be 0, got {self.start_step}")
        self.target_sparsity = target_sparsity
        self.rounds = int(rounds)
        self.cycle_steps = self.total_steps // self.rounds
        if not 0.0 <= rewind_fraction < 1.0:
            raise KeywordError(
                "rewind_fraction",
                f"rewind_fraction must be in [0, 1) (a point of the first round), got {rewind_fraction}; pass "
                "e.g. 0.0667",
            )
        self.rewind_fraction = float(rewind_fraction)
        self.rewind_step = math.floor(self.rewind_fraction * self.cycle_steps)
        if search_T is not None and check_steps(search_T, "search_T", "imp") < 1:
            raise KeywordError(
                "search_T",
                f"search_T must be >= 1 (time steps of the search rounds), got {search_T}; pass e.g. 1",
            )
        self.search_T = search_T
        self._full_T: int | None = None  # the model's own T, read by prepare
        self.rounds_done = 0  # cuts made so far
        self._scheduler_start: Any = None
        self._lr_start: list[float] = []

    def make_parametrization(self, name: str, module: nn.Module) -> nn.Module:
        """A :class:`~snnprune.threshold.MagnitudeMask` of the weight's shape (all ones) that also holds the
        saved weights (buffer ``rewind``, in the model's ``state_dict``)."""
        mask = MagnitudeMask(module.weight.shape)
        mask.register_buffer("rewind", module.weight.detach().clone())
        return mask

    def _on_prepare(self) -> None:
        if self.search_T is not None:
            full = getattr(self.model, "T", None)
            if isinstance(full, bool) or not isinstance(full, int):
                raise ValueError(
                    f"imp: search_T needs a model whose time steps are an int attribute T, but "
                    f"{type(self.model).__name__}.T is {full!r}; leave search_T out for this model"
                )
            if self.search_T >= full:
                raise KeywordError(
                    "search_T",
                    f"search_T must be below the model's T={full} (fewer time steps for the search), got "
                    f"{self.search_T}; pass a smaller search_T or leave it out",
                )
            self._full_T = full
            self._set_T()
        if self.rewind_step == 0:
            self._save_rewind()

    def _set_T(self) -> None:
        """``model.T``: ``search_T`` until the last cut, the model's own T after it."""
        if self.search_T is not None:
            self.model.T = self._full_T if self.rounds_done >= self.rounds - 1 else self.search_T

    def bind(
        self, optimizer: torch.optim.Optimizer, lr_scheduler: Any = None, steps_per_epoch: int | None = None
    ) -> Pruner:
        """As :meth:`Pruner.bind`; also records the scheduler's and the learning rates' starting state.

        Raises:
            ValueError: with ``steps_per_epoch``, a round that is not a whole number of epochs.
        """
        super().bind(optimizer, lr_scheduler, steps_per_epoch)
        if steps_per_epoch is not None and self.cycle_steps % steps_per_epoch:
            raise ValueError(
                f"a round of {self.cycle_steps} steps is not a whole number of epochs of {steps_per_epoch} "
                "steps; pass a number of rounds that divides the epochs"
            )
        self._scheduler_start = None if lr_scheduler is None else copy.deepcopy(lr_scheduler.state_dict())
        self._lr_start = [g["lr"] for g in optimizer.param_groups]
        return self

    def schedule_epochs(self, epochs: int) -> int:
        """The lr plan of one round: ``epochs / rounds`` epochs (the scheduler restarts every round)."""
        return epochs // self.rounds

    @property
    def current_round(self) -> int:
        """The round of the next step (0-based)."""
        return min(self.step_count // self.cycle_steps, self.rounds - 1)

    def level(self, r: int) -> float:
        """:math:`s_r`, the sparsity of round ``r``."""
        return 1.0 - (1.0 - self.target_sparsity) ** (r / (self.rounds - 1))

    @torch.no_grad()
    def _save_rewind(self) -> None:
        for module in self.layers.values():
            module.parametrizations.weight[0].rewind.copy_(module.parametrizations.weight.original)

    def _update(self) -> None:
        if self.step_count == self.rewind_step and self.rounds_done == 0:
            self._save_rewind()

    def before_epoch(self) -> None:
        """Start the next round when the next step begins one: cut, rewind, restart the optimizer and the
        scheduler (nothing otherwise). A training loop calls it before every epoch."""
        self._check_usable()
        r = self.step_count // self.cycle_steps
        if self.step_count % self.cycle_steps or not 0 < r < self.rounds or self.rounds_done >= r:
            return
        self._cut(self.level(r))
        with torch.no_grad():
            for module in self.layers.values():
                module.parametrizations.weight.original.copy_(module.parametrizations.weight[0].rewind)
        if self.optimizer is not None:
            self.optimizer.state = defaultdict(dict)  # a fresh optimizer, as the authors build per round
            for group, lr in zip(self.optimizer.param_groups, self._lr_start, strict=True):
                group["lr"] = lr
        if self.lr_scheduler is not None and self._scheduler_start is not None:
            self.lr_scheduler.load_state_dict(copy.deepcopy(self._scheduler_start))
        self.rounds_done = r
        self._set_T()

    @torch.no_grad()
    def _cut(self, s: float) -> None:
        masks = {n: m.parametrizations.weight[0].mask for n, m in self.layers.items()}
        mags = torch.cat(
            [(m.parametrizations.weight.original.abs() * masks[n]).flatten() for n, m in self.layers.items()]
        )
        keep = mags.numel() - math.floor(s * mags.numel() + 1e-6)  # ceil((1 - s) N)
        new = torch.zeros_like(mags, dtype=torch.bool)
        new[torch.topk(mags, keep, sorted=False).indices] = True
        start = 0
        for mask in masks.values():
            mask.copy_(new[start : start + mask.numel()].view_as(mask))
            start += mask.numel()

    def _extra_state(self) -> dict[str, Any]:
        return {"rounds_done": self.rounds_done}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.rounds_done = int(state["rounds_done"])
        self._set_T()
