"""Per-model optimizers of a population (zooprobe.zoo.population): one update rule with per-model
coefficients over the flat [M, D] parameters, equal to torch.optim's SGD, Adam, AdamW, NAdam, RMSprop and
Adagrad."""

from __future__ import annotations

import math

import torch

from zooprobe.zoo.population import Population


class PopulationOptimizer:
    """Per-model SGD (plain, momentum, Nesterov)/Adam/AdamW/NAdam/RMSprop/Adagrad over a population's flat
    ``[M, D]`` parameters.

    The update rules are one rule with per-model coefficients, so a step is a dozen whole-matrix operations
    whatever the mix of optimizers::

        g  = grad + l2 * p                     (L2 weight decay: all but AdamW)
        p *= 1 - lr_t * decoupled              (decoupled weight decay: AdamW)
        m  = a * m + b * g                     (SGD: a=momentum, b=1; Adam: a=beta1, b=1-beta1; RMSprop and
                                                Adagrad: m=g)
        v  = c * v + d * g^2                   (Adam: beta2, 1-beta2; RMSprop: alpha, 1-alpha; Adagrad: 1, 1;
                                                SGD: unused)
        u  = g + a * m if nesterov else m      (NAdam: u = k1_t * g + k2_t * m, its momentum-decay weights)
        p -= lr_t * u / (e_t * sqrt(v) + eps)  (SGD: e=0, eps=1; Adam: bias corrections in lr_t, e_t;
                                                NAdam: lr_t = lr, the correction of v in e_t)

    ``lr_t`` is the run's learning rate times its schedule's factor at this step (`step`'s ``lr_scale``).
    This reproduces ``torch.optim`` with default hyperparameters (Adam betas (0.9, 0.999), eps 1e-8;
    RMSprop alpha 0.99, eps 1e-8, no momentum; Adagrad eps 1e-10, no lr decay; NAdam momentum decay 4e-3,
    L2 weight decay; SGD dampening 0) up to
    float rounding. Gradient clipping (`clip_gradients`) follows ``torch.nn.utils.clip_grad_norm_``.
    """

    BETA1, BETA2, ADAM_EPS = 0.9, 0.999, 1e-8
    RMS_ALPHA, RMS_EPS = 0.99, 1e-8
    ADAGRAD_EPS = 1e-10
    NADAM_PSI = 4e-3
    KINDS = ("sgd", "plain_sgd", "nesterov", "adam", "adamw", "rmsprop", "adagrad", "nadam")

    def __init__(self, pop: Population) -> None:
        self.pop = pop
        self.t = 0
        kinds = [s.optimizer for s in pop.specs]
        unknown = set(kinds) - set(self.KINDS)
        if unknown:
            raise ValueError(f"unknown optimizer(s) {sorted(unknown)}")

        def col(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32).unsqueeze(1)

        def per_kind(table: dict[str, float], default: float) -> torch.Tensor:
            return col([table.get(k, default) for k in kinds])

        sgd = {"sgd": 1.0, "plain_sgd": 1.0, "nesterov": 1.0}
        specs = pop.specs
        self.is_adam = col([k in ("adam", "adamw") for k in kinds])
        self.is_nadam = col([k == "nadam" for k in kinds])
        self.mu_product = 1.0
        self.lr = col([s.learning_rate for s in specs])
        self.l2 = col([0.0 if s.optimizer == "adamw" else s.weight_decay for s in specs])
        self.decoupled = col([s.weight_decay if s.optimizer == "adamw" else 0.0 for s in specs])
        self.a = col(
            [
                s.momentum
                if s.optimizer in sgd
                else {"rmsprop": 0.0, "adagrad": 0.0}.get(s.optimizer, self.BETA1)
                for s in specs
            ]
        )
        self.b = per_kind(sgd | {"rmsprop": 1.0, "adagrad": 1.0}, 1 - self.BETA1)
        self.c = per_kind({k: 0.0 for k in sgd} | {"rmsprop": self.RMS_ALPHA, "adagrad": 1.0}, self.BETA2)
        self.d = per_kind(
            {k: 0.0 for k in sgd} | {"rmsprop": 1 - self.RMS_ALPHA, "adagrad": 1.0}, 1 - self.BETA2
        )
        self.eps = per_kind(sgd | {"rmsprop": self.RMS_EPS, "adagrad": self.ADAGRAD_EPS}, self.ADAM_EPS)
        self.uses_v = col([k not in sgd for k in kinds])
        self.nesterov = col([k == "nesterov" for k in kinds])
        self.clip = col([s.grad_clip if s.grad_clip > 0 else math.inf for s in specs])
        self.exp_avg = torch.zeros(pop.flat.shape)
        self.exp_avg_sq = torch.zeros(pop.flat.shape)
        self._derived()

    def _derived(self) -> None:
        """Per-model columns that are constant over the steps (a step then needs no extra small ops)."""
        self.not_adam = 1.0 - self.is_adam
        corrected_v = self.is_adam + self.is_nadam  # v divided by 1 - beta2^t
        self.uses_v_not_adam = self.uses_v - corrected_v
        self.corrected_v = corrected_v
        self.any_nadam = bool((self.is_nadam > 0).any())
        self.decay = 1 - self.lr * self.decoupled
        self.any_decoupled = bool((self.decoupled > 0).any())
        self.any_nesterov = bool((self.nesterov > 0).any())
        self.any_clip = bool(torch.isfinite(self.clip).any())
        self.nesterov_a = self.nesterov * self.a

    @torch.no_grad()
    def clip_gradients(self) -> None:
        """Scale each clipping model's gradient to norm at most its ``grad_clip`` (as ``clip_grad_norm_``)."""
        grad = self.pop.flat.grad
        if grad is None or not self.any_clip:
            return
        norm = torch.linalg.vector_norm(grad, dim=1, keepdim=True)
        grad.mul_(torch.clamp(self.clip / (norm + 1e-6), max=1.0))

    @torch.no_grad()
    def step(self, lr_scale: torch.Tensor | None = None) -> None:
        """One update of every model, in place on the population's flat parameters; ``lr_scale`` ``[M, 1]``:
        each model's schedule factor at this step (None: 1)."""
        p, grad = self.pop.flat, self.pop.flat.grad
        if grad is None:
            return
        self.t += 1
        lr = self.lr if lr_scale is None else self.lr * lr_scale
        # Adam's bias corrections depend on the step only; other optimizers use 1.
        bc1 = 1 - self.BETA1**self.t
        bc2 = 1 - self.BETA2**self.t
        lr_t = lr * torch.add(self.not_adam, self.is_adam, alpha=1.0 / bc1)
        e_t = torch.add(self.uses_v_not_adam, self.corrected_v, alpha=1.0 / math.sqrt(bc2))
        g = torch.addcmul(grad, self.l2, p)
        if self.any_decoupled:
            p.mul_(self.decay if lr_scale is None else 1 - lr * self.decoupled)
        m, v = self.exp_avg, self.exp_avg_sq
        m.mul_(self.a).addcmul_(g, self.b)
        v.mul_(self.c).addcmul_(g * g, self.d)
        denom = v.sqrt().mul_(e_t).add_(self.eps)
        u = m
        if self.any_nesterov:  # g + momentum * m for the Nesterov rows, m elsewhere
            u = torch.addcmul(m, self.nesterov, g - m).addcmul_(self.nesterov_a, m)
        if self.any_nadam:
            u = torch.addcmul(u, self.is_nadam, self._nadam_direction(g, m) - u)
        p.addcdiv_(u * lr_t, denom, value=-1.0)

    def _nadam_direction(self, g: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """NAdam's ``k1_t * g + k2_t * m`` at step ``t`` (torch.optim.NAdam's momentum-decay schedule)."""
        mu = self.BETA1 * (1.0 - 0.5 * 0.96 ** (self.t * self.NADAM_PSI))
        mu_next = self.BETA1 * (1.0 - 0.5 * 0.96 ** ((self.t + 1) * self.NADAM_PSI))
        self.mu_product *= mu
        k1 = (1.0 - mu) / (1.0 - self.mu_product)
        k2 = mu_next / (1.0 - self.mu_product * mu_next)
        return torch.add(g * k1, m, alpha=k2)

    def keep(self, rows: list[int]) -> None:
        """Follow `Population.keep`: drop the per-model state of every model not in ``rows``."""
        idx = torch.tensor(rows, dtype=torch.long)
        for name in (
            "is_adam",
            "is_nadam",
            "lr",
            "l2",
            "decoupled",
            "a",
            "b",
            "c",
            "d",
            "eps",
            "uses_v",
            "nesterov",
            "clip",
        ):
            setattr(self, name, getattr(self, name)[idx])
        self.exp_avg = self.exp_avg[idx]
        self.exp_avg_sq = self.exp_avg_sq[idx]
        self._derived()
