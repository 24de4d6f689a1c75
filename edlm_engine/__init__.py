"""edlm-engine: exact, fast sampling for masked diffusion language models with energy-based rescoring.

>>> import torch, edlm_engine
>>> tokens, logp = edlm_engine.ops.categorical(torch.randn(2, 10), num_samples=3, seed=0)
>>> tokens.shape
torch.Size([2, 3])
"""

from . import ops
from .config import SampleConfig
from .models import AREnergy, CausalLMEnergy, Denoiser, Energy, LogLikelihoodEnergy, as_denoiser, as_energy
from .ops import build_info
from .sampler import SampleOutput, sample
from .samplers import SAMPLERS, Sampler, register_sampler
from .speculative import SpeculativeSampler
from .schedules import LinearSchedule, LogLinearSchedule, Schedule

__version__ = build_info()["version"]

__all__ = [
    "sample",
    "SampleConfig",
    "SampleOutput",
    "Sampler",
    "SAMPLERS",
    "register_sampler",
    "SpeculativeSampler",
    "ops",
    "Energy",
    "LogLikelihoodEnergy",
    "AREnergy",
    "CausalLMEnergy",
    "Denoiser",
    "as_denoiser",
    "as_energy",
    "Schedule",
    "LogLinearSchedule",
    "LinearSchedule",
    "build_info",
    "__version__",
]
