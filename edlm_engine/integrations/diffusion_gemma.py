"""DiffusionGemma (transformers' ``DiffusionGemmaForBlockDiffusion``) with edlm-engine doing each step's sampling.

    from edlm_engine.integrations import diffusion_gemma
    diffusion_gemma.apply(model, seed=0)     # patches this model instance only
    out = model.generate(input_ids=ids)      # transformers' own loop; the engine draws, scores and renoises
    diffusion_gemma.remove(model)            # back to the native step

transformers' denoising step reads the full ``[B, canvas, V]`` logits three times and more (a float32 softmax
copy for ``torch.multinomial``, an argmax, and ``Categorical(logits).entropy()``, another full log-softmax) and
takes its randomness from the global generator, so a sample depends on the batch it ran in.  With the engine
applied, one pass of ``ops.sample_scored`` over each canvas row (``mask_id=-1``: every position, nothing excluded)
gives the exact draw from the step's (temperature-scheduled) logits, its entropy and the argmax; the entropy-bound
acceptance is transformers' rule on those
entropies; canvases are initialized and renoised from the engine's Philox stream.  Sample ``i`` (counted over the
generate calls since ``apply``, or from ``first_index``) depends only on ``(seed, i)``, whatever the batch.
Everything else (encoder, cache, self-conditioning, stopping rules, streamer) stays transformers' own code.
"""

from __future__ import annotations

import types

import torch

from .. import ops

__all__ = ["apply", "remove"]

_PATCHED = ("generate", "_denoising_step", "_prepare_sampler")
_STRIDE = 4
_STEPS_PER_CANVAS = 1 << 12  # offsets of a canvas's steps: room for any max_denoising_steps below 4096
_DRAW, _INIT, _RENOISE = 0, 1, 2


class _Engine:
    """The randomness of one applied model: seed, the next sample index, the canvas in hand."""

    def __init__(self, seed: int, first_index: int):
        self.seed, self.next_index = ops._check_int("seed", seed, 0, 2**63), ops._check_int("first_index",
                                                                                            first_index, 0, 2**40)
        self.first, self.canvas, self.entropy = first_index, 0, None  # generate() restarts canvases at -1 + 1

    def offset(self, stream: int, step: int = 0) -> int:
        return _STRIDE * (self.canvas * _STEPS_PER_CANVAS + step) + stream

    def uniform_tokens(self, shape, vocab_size: int, stream: int, step: int, device) -> torch.Tensor:
        """Uniformly random token ids [B, canvas]: row b, column j is global row (first + b) * canvas + j."""
        u = ops.uniform(shape, seed=self.seed, offset=self.offset(stream, step), row_offset=self.first * shape[1],
                        device=device)
        return (u * vocab_size).long().clamp(max=vocab_size - 1)


def _sampler_class():
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import EntropyBoundSampler

    class EngineEntropyBoundSampler(EntropyBoundSampler):
        """transformers' entropy-bound sampler, fed the engine's entropies and the engine's random tokens."""

        def bind(self, engine):
            self.engine = engine
            return self

        def initialize_canvas(self, batch_size, device):
            self.engine.canvas += 1
            return self.engine.uniform_tokens((batch_size, self.canvas_length), self.vocab_size, _INIT, 0, device)

        def accept_canvas(self, current_canvas, denoiser_canvas, logits, cur_step):
            order = torch.sort(self.engine.entropy, dim=-1, stable=True)
            # the EB-Sampler rule, as transformers writes it: the run of lowest entropies whose sum minus its largest
            # entropy stays within the bound
            chosen = torch.cumsum(order.values, -1) - order.values <= self.entropy_bound
            self.accepted_token_mask = torch.zeros_like(chosen).scatter(-1, order.indices, chosen)
            return torch.where(self.accepted_token_mask, denoiser_canvas, current_canvas)

        def renoise_canvas(self, accepted_canvas, cur_step):
            noise = self.engine.uniform_tokens(accepted_canvas.shape, self.vocab_size, _RENOISE, int(cur_step),
                                               accepted_canvas.device)
            return torch.where(self.accepted_token_mask, accepted_canvas, noise)

    return EngineEntropyBoundSampler


def _engine_step(self, decoder_forward, current_canvas, argmax_canvas, input_ids, decoder_position_ids,
                 self_conditioning_logits, mask_mapping, cache, finished_denoising, cur_step, sampler,
                 logits_processor, diffusion_stopping_criteria, **model_kwargs):
    """One denoising step with the engine's sampling; the model call and the bookkeeping are transformers'."""
    engine = self._edlm_engine
    logits = decoder_forward(decoder_input_ids=current_canvas, self_conditioning_logits=self_conditioning_logits,
                             decoder_attention_mask=mask_mapping, cache=cache, decoder_position_ids=decoder_position_ids,
                             **model_kwargs).logits
    logits = logits_processor(input_ids, logits, cur_step=torch.full((), cur_step, device=logits.device))
    B, length = current_canvas.shape
    drawn, scores, new_argmax = ops.sample_scored(logits, torch.zeros_like(current_canvas), -1, seed=engine.seed,
                                                  offset=engine.offset(_DRAW, int(cur_step)),
                                                  row_offset=engine.first * length)
    engine.entropy = scores[3].to(torch.float32)
    accepted = sampler.accept_canvas(current_canvas, drawn, logits, cur_step)
    new_canvas = sampler.renoise_canvas(accepted, cur_step)
    if diffusion_stopping_criteria is not None:
        if bool(finished_denoising.any()):  # sequences that finished denoising keep what they had
            held = finished_denoising[:, None]
            new_argmax = torch.where(held, argmax_canvas, new_argmax)
            new_canvas = torch.where(held, current_canvas, new_canvas)
            rows = finished_denoising.nonzero().squeeze(1)  # in place: a where() would make a [B, canvas, V] copy
            logits[rows] = self_conditioning_logits[rows].to(logits.dtype)
        finished_denoising |= diffusion_stopping_criteria(new_argmax, logits)
    return new_canvas, new_argmax, logits.to(self.model.decoder.embed_tokens.weight.dtype), finished_denoising


def _engine_prepare_sampler(self, generation_config):
    native = type(self)._prepare_sampler(self, generation_config)
    engine_cls = _sampler_class()
    sampler = engine_cls.__new__(engine_cls)
    sampler.__dict__.update(native.__dict__)
    return sampler.bind(self._edlm_engine)


def _engine_generate(self, *args, **kwargs):
    engine = self._edlm_engine
    ids = kwargs.get("input_ids", args[0] if args else None)
    engine.first, engine.canvas = engine.next_index, -1
    out = type(self).generate(self, *args, **kwargs)
    engine.next_index += 1 if ids is None or ids.dim() == 1 else ids.shape[0]
    return out


def apply(model, seed: int = 0, first_index: int = 0):
    """Make ``model.generate`` sample each denoising step with the engine (this instance only).

    Parameters
    ----------
    model : transformers.DiffusionGemmaForBlockDiffusion
    seed : int
    first_index : int
        Global index of the first sample of the next ``generate`` call; later calls continue from there, so
        splitting a batch over calls gives the same samples.

    Returns
    -------
    The same model.

    Examples
    --------
    >>> from edlm_engine.integrations import diffusion_gemma
    >>> diffusion_gemma.apply(object())
    Traceback (most recent call last):
    ...
    TypeError: diffusion_gemma.apply needs a DiffusionGemmaForBlockDiffusion (transformers), got object
    """
    if not all(hasattr(model, name) for name in _PATCHED):
        raise TypeError(f"diffusion_gemma.apply needs a DiffusionGemmaForBlockDiffusion (transformers), got "
                        f"{type(model).__name__}")
    model._edlm_engine = _Engine(seed, first_index)
    for name, fn in (("generate", _engine_generate), ("_denoising_step", _engine_step),
                     ("_prepare_sampler", _engine_prepare_sampler)):
        setattr(model, name, types.MethodType(fn, model))
    return model


def remove(model):
    """Undo :func:`apply`: the model samples natively again."""
    for name in _PATCHED:
        model.__dict__.pop(name, None)
    model.__dict__.pop("_edlm_engine", None)
    return model
