"""Noise schedules of masked diffusion: alpha(t) = probability that a token is still clean at time t."""

from __future__ import annotations

import torch

__all__ = ["Schedule", "LogLinearSchedule", "LinearSchedule", "get_schedule"]

class Schedule:
    """A monotone schedule with alpha(0) = 1; subclasses give alpha, sigma and the inverse of alpha."""

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Total noise -log alpha(t): what time-conditioned (MDLM-style) denoisers take as ``timesteps``."""
        return -torch.log(self.alpha(t))

    def alpha_inv(self, a: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def finite_at_one(self) -> bool:
        """Whether sigma(1) is finite, as a time-conditioned denoiser needs at the first step."""
        return bool(torch.isfinite(self.sigma(torch.tensor(1.0, dtype=torch.float64))))

    def p_unmask(self, t: float, s: float) -> float:
        """Probability that a position masked at time t is clean at s < t: (alpha_s - alpha_t) / (1 - alpha_t)."""
        a_t = float(self.alpha(torch.tensor(t, dtype=torch.float64)))
        a_s = float(self.alpha(torch.tensor(s, dtype=torch.float64)))
        return min(1.0, max(0.0, (a_s - a_t) / (1.0 - a_t))) if a_t < 1.0 else 1.0

class LogLinearSchedule(Schedule):
    """MDLM's log-linear schedule: alpha(t) = 1 - (1 - eps) t, sigma(t) = -log(1 - (1 - eps) t).

    Parameters
    ----------
    eps : float
        Keeps alpha(1) = eps > 0 so sigma stays finite; 1e-3 as in MDLM.

    Examples
    --------
    >>> import torch
    >>> s = LogLinearSchedule()
    >>> float(s.alpha_inv(s.alpha(torch.tensor(0.3, dtype=torch.float64))))
    0.3
    """

    def __init__(self, eps: float = 1e-3):
        if not (0.0 <= eps < 1.0):
            raise ValueError(f"eps must be in [0, 1), got {eps}")
        self.eps = float(eps)

    def alpha(self, t):
        return 1.0 - (1.0 - self.eps) * t

    def sigma(self, t):
        return -torch.log1p(-(1.0 - self.eps) * t)

    def alpha_inv(self, a):
        return (1.0 - a) / (1.0 - self.eps)

    def __repr__(self):
        return f"LogLinearSchedule(eps={self.eps})"

class LinearSchedule(LogLinearSchedule):
    """alpha(t) = 1 - t (sigma is infinite at t = 1)."""

    def __init__(self):
        super().__init__(eps=0.0)

    def __repr__(self):
        return "LinearSchedule()"

def get_schedule(schedule="loglinear", eps: float = 1e-3) -> Schedule:
    """A schedule from an instance or a name: "loglinear" (with floor ``eps``) or "linear"."""
    if isinstance(schedule, Schedule):
        return schedule
    if schedule in (None, "loglinear", "log-linear"):
        return LogLinearSchedule(eps)
    if schedule == "linear":
        return LinearSchedule()
    raise ValueError(f"schedule must be a Schedule, 'loglinear' or 'linear', got {schedule!r}")
