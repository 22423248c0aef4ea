"""Autoregressive generation from a causal language model, with or without decoding caches.

  ids = generate(model, prompt_ids, max_new_tokens=200, temperature=0.8, top_k=40, seed=0)

``cache=True`` runs the prompt once through ``Encoder.prefill`` and then one token per step
through ``Encoder.decode_step`` (each mixer keeps only what its receptive field needs: see
``lrm/mixers/base.py``). ``cache=False`` is the reference: every step runs the parallel
forward over the whole sequence so far (a fixed-size buffer, so it compiles once; the model
is causal, so the unfilled tail cannot change the positions read). Both size the sequence as
``context_len``: the model's ``max_len`` (its training length), or more when a model
without a position table (rotary, none) is asked for more tokens. Hyena's implicit filter is
a function of that length (``lrm/mixers/hyena.py``), so its generations follow training's.
Both paths draw token i with ``jax.random.fold_in(key(seed), i)``, so a seed gives the same
sample in both.
Temperature 0 is greedy; ``top_k > 0`` keeps the k most likely tokens before sampling.

Decoding runs in eval mode (dropout off). The library prints nothing.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lrm.heads import LanguageModel
from lrm.mixers.base import DecodeError
from lrm.model import Cache


def check_model(model: nnx.Module) -> LanguageModel:
  """``model`` if it is a causal language model; a one-line ``DecodeError`` otherwise."""
  if not isinstance(model, LanguageModel):
    raise DecodeError(
      f"generation needs a causal language model (a run of a causal task such as lm); "
      f"got a {type(model).__name__}"
    )
  return model


@functools.partial(nnx.jit, donate_argnums=(2,))  # the cache is updated in place
def prefill_logits(
  model: LanguageModel, tokens: jax.Array, cache: Cache
) -> tuple[jax.Array, Cache]:
  """Prompt ``tokens [B, P]`` -> (logits ``[B, P, V]`` float32, filled caches)."""
  h, cache = model.encoder.prefill(tokens, cache)  # [B, P, D]
  return model.logits(h).astype(jnp.float32), cache


@functools.partial(nnx.jit, donate_argnums=(2,))  # the cache is updated in place
def step_logits(
  model: LanguageModel, tokens: jax.Array, cache: Cache, pos: jax.Array
) -> tuple[jax.Array, Cache]:
  """One token per sequence ``tokens [B]`` at position ``pos`` -> (logits ``[B, V]``, caches)."""
  h, cache = model.encoder.decode_step(tokens, cache, pos)  # [B, D]
  return model.logits(h).astype(jnp.float32), cache


@nnx.jit
def full_logits(model: LanguageModel, tokens: jax.Array, index: jax.Array) -> jax.Array:
  """The parallel forward over ``tokens [B, L]``; logits ``[B, V]`` at position ``index``."""
  logits = model(tokens)  # [B, L, V]
  return jax.lax.dynamic_index_in_dim(logits, index, axis=1, keepdims=False).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("temperature", "top_k"))
def sample(logits: jax.Array, key: jax.Array, *, temperature: float, top_k: int) -> jax.Array:
  """Next tokens ``[B]`` from ``logits [B, V]``: argmax at temperature 0, else a draw from
  ``softmax(logits / temperature)`` restricted to the ``top_k`` largest (0 = all)."""
  if temperature == 0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / temperature
  if 0 < top_k < logits.shape[-1]:
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]  # [B, 1]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def positions_needed(prompt_len: int, max_new_tokens: int) -> int:
  """Positions the model reads: the prompt and every generated token but the last."""
  return prompt_len + max(max_new_tokens - 1, 0)


def context_len(model: LanguageModel, prompt_len: int, max_new_tokens: int) -> int:
  """The sequence length both paths compute over (see the module docstring)."""
  return max(positions_needed(prompt_len, max_new_tokens), model.encoder.max_len)


def check_lengths(model: LanguageModel, prompt_len: int, max_new_tokens: int) -> None:
  """A one-line ``DecodeError`` if the prompt is empty or the tokens exceed ``max_len``."""
  if prompt_len < 1:
    raise DecodeError("the prompt is empty; give at least one token")
  if max_new_tokens < 0:
    raise DecodeError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
  enc, need = model.encoder, positions_needed(prompt_len, max_new_tokens)
  if enc.pos is not None and need > enc.max_len:
    raise DecodeError(
      f"prompt ({prompt_len} tokens) + max_new_tokens ({max_new_tokens}) needs {need} "
      f"positions but the model was trained with max_len {enc.max_len} ({enc.positions} "
      f"positions); shorten the prompt or lower max_new_tokens to {enc.max_len - prompt_len + 1}"
    )


def generate(
  model: nnx.Module,
  prompt_ids: np.ndarray | jax.Array,
  max_new_tokens: int,
  *,
  temperature: float = 0.0,
  top_k: int = 0,
  seed: int = 0,
  cache: bool = True,
) -> np.ndarray:
  """Continue ``prompt_ids`` (``[P]`` or ``[B, P]``) by ``max_new_tokens`` tokens.

  ``model`` is a ``LanguageModel`` (or a ``lrm.run.Run``'s loaded model). Returns the new ids
  only, ``[max_new_tokens]`` or ``[B, max_new_tokens]`` as the prompt's rank.
  """
  lm = check_model(model)
  prompt = np.asarray(prompt_ids, np.int32)
  single = prompt.ndim == 1
  prompt = prompt[None] if single else prompt  # [B, P]
  B, P = prompt.shape
  check_lengths(lm, P, max_new_tokens)
  if not lm.encoder.causal:
    raise lm.encoder.blocks[0].mixer.decode_error()
  lm = nnx.view(lm, deterministic=True)  # eval mode without changing the caller's model
  key = jax.random.key(seed)
  draw = functools.partial(sample, temperature=float(temperature), top_k=int(top_k))
  out = np.zeros((B, max_new_tokens), np.int32)
  if max_new_tokens == 0:
    return out[0] if single else out
  if cache:
    caches = lm.encoder.init_cache(B, context_len(lm, P, max_new_tokens))
    logits, caches = prefill_logits(lm, jnp.asarray(prompt), caches)
    logits = logits[:, -1]  # [B, V]
    for i in range(max_new_tokens):
      tok = draw(logits, jax.random.fold_in(key, i))  # [B]
      out[:, i] = np.asarray(tok)
      if i + 1 < max_new_tokens:
        logits, caches = step_logits(lm, tok, caches, jnp.int32(P + i))
  else:
    buf = np.zeros((B, context_len(lm, P, max_new_tokens)), np.int32)  # [B, L]
    buf[:, :P] = prompt
    for i in range(max_new_tokens):
      logits = full_logits(lm, jnp.asarray(buf), jnp.int32(P + i - 1))  # [B, V]
      out[:, i] = np.asarray(draw(logits, jax.random.fold_in(key, i)))
      if i + 1 < max_new_tokens:
        buf[:, P + i] = out[:, i]
  return out[0] if single else out
