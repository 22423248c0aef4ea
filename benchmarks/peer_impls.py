"""The contestants of ``benchmarks/peers.py``: lrm's mixers and the same computation by others.

Every builder takes the weights of an lrm mixer (``Weights``: one ``[D, 3D]`` QKV projection
split into q, k, v and heads as ``AttentionBase.project`` does, and the output projection),
the input ``x [1, L, D]`` and a fixed cotangent ``ct``, and returns an ``Entry``: a forward
that gives ``y [1, L, D]`` as numpy, and ``step``, one timed call (forward+backward with
respect to the input and every weight, or the forward alone) that returns when it is done.
A builder raises ``Skip`` (with the reason) when its peer is not installed or cannot run.

Peers (``pip install -e ".[peers]"``; transformers separately, see ``hf_bigbird``):

* ``dpa_local``: ``jax.nn.dot_product_attention(local_window_size=(w, w))`` inside the same
  projections (``benchmarks/baselines.py``); XLA masks a full L x L matrix.
* ``lucidrains``: ``local_attention.LocalAttention`` (github.com/lucidrains/local-attention)
  with ``window_size=w``, one block of look-back and look-ahead, ``exact_windowsize=True``
  (keys ``|i - j| <= w``), no rotary embedding; PyTorch autograd for the backward.
* ``flex``: PyTorch FlexAttention with a sliding-window block mask under ``torch.compile``,
  forward only: its CPU backward raises ``NotImplementedError``.
* ``hf_bigbird``: HuggingFace ``FlaxBigBirdBlockSparseAttention`` (ITC: 2 global blocks,
  3 window blocks, r random blocks), fed lrm's fixed random-block table so that both compute
  the same pattern (HF draws its own table per head when not deterministic, and uses block 0
  for every random block when deterministic).
* ``recurrentgemma``: Google DeepMind's ``recurrentgemma.jax.modules.RecurrentBlock`` (Griffin's
  recurrent block; ``pip install -e ".[rglru-peer]"``, then ``pip install --no-deps
  recurrentgemma==1.0.1``) with a causal lrm ``rglru`` mixer's weights (``recurrentgemma_block``,
  shared with ``tests/test_rglru.py``); its default scan (``ScanType.AUTO``: ``lax.scan`` off
  TPU, a Pallas kernel on TPU) and jaxtyping/typeguard checks at trace time only. Causal only:
  the block has no bidirectional form.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


class Skip(Exception):
  """A peer that cannot be measured here; the message says why."""


@dataclass
class Weights:
  qkv_w: np.ndarray  # [D, 3D], columns (q|k|v, head, head dim)
  qkv_b: np.ndarray  # [3D]
  out_w: np.ndarray  # [D, D]
  out_b: np.ndarray  # [D]

  @classmethod
  def of(cls, mixer: nnx.Module) -> Weights:
    get = lambda p: np.asarray(p[...], np.float32)  # noqa: E731
    return cls(
      get(mixer.qkv.kernel), get(mixer.qkv.bias), get(mixer.out.kernel), get(mixer.out.bias)
    )


@dataclass
class Entry:
  name: str
  group: str  # the lrm mixer it is compared with: "local", "bigbird" or "rglru"
  framework: str
  version: str
  mode: str  # "fwdbwd" or "fwd"
  forward: Callable[[], np.ndarray]
  step: Callable[[], object]
  grad_x: Callable[[], np.ndarray] | None = None
  flops_fwd: int | None = None  # analytic FLOPs the kernel executes (lrm mixers)
  xla_bytes: int | None = None
  causal: bool = False


def version(package: str) -> str:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return "?"


# ----------------------------------------------------------------------------- JAX


def _jax_entry(
  name, group, framework, ver, apply, params, x, ct, mode, mem_cap, flops=None, causal=False
):
  """``apply(params, x) -> y``: a jitted forward, and the timed step (fwd or fwd+bwd)."""
  x, ct = jnp.asarray(x), jnp.asarray(ct)  # on the device once, not copied in every call
  fwd = jax.jit(apply)
  grad = jax.jit(jax.grad(lambda p, x: jnp.sum(apply(p, x) * ct), argnums=(0, 1)))
  timed = fwd if mode == "fwd" else grad
  compiled = timed.lower(params, x).compile()
  mem = compiled.memory_analysis()
  need = mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
  if mem_cap and need > mem_cap:
    raise Skip(f"XLA needs {need / 2**30:.1f} GiB > cap {mem_cap / 2**30:.1f} GiB")
  return Entry(
    name,
    group,
    framework,
    ver,
    mode,
    forward=lambda: np.asarray(fwd(params, x)),
    step=lambda: jax.block_until_ready(compiled(params, x)),
    grad_x=lambda: np.asarray(grad(params, x)[1]),
    flops_fwd=flops,
    xla_bytes=int(need),
    causal=causal,
  )


def lrm_entry(name: str, mixer: nnx.Module, x, ct, mode: str, mem_cap: int = 0) -> Entry:
  graph, params, rest = nnx.split(mixer, nnx.Param, ...)
  apply = lambda p, x: nnx.merge(graph, p, rest)(x)  # noqa: E731
  group, ver = mixer.mixer_name(), jax.__version__
  flops = mixer.flops(x.shape[1])
  causal = bool(mixer.causal)
  return _jax_entry(name, group, "jax", ver, apply, params, x, ct, mode, mem_cap, flops, causal)


def dpa_local(local: nnx.Module, x, ct, mode: str, mem_cap: int) -> Entry:
  from benchmarks import baselines  # here, not at the top: importing this file registers nothing

  dpa = baselines.LocalDotProductAttention(
    local.dim, causal=False, rngs=nnx.Rngs(0), window=local.window, num_heads=local.num_heads
  )
  nnx.update(dpa, nnx.state(local, nnx.Param))  # the same qkv/out parameter paths
  graph, params, rest = nnx.split(dpa, nnx.Param, ...)
  apply = lambda p, x: nnx.merge(graph, p, rest)(x)  # noqa: E731
  ver = jax.__version__
  return _jax_entry(
    "jax dot_product_attention", "local", "jax", ver, apply, params, x, ct, mode, mem_cap
  )


def _import_hf_bigbird():
  """transformers 4.x (the last with Flax models); its import-time check wants
  huggingface-hub < 1.0 while datasets 5 (an lrm dependency) needs >= 1.31. BigBird's Flax
  attention uses nothing of the hub, so on that one error the check is skipped."""
  name = "transformers.models.big_bird.modeling_flax_big_bird"
  try:
    return importlib.import_module(name)
  except ImportError as e:
    if "huggingface-hub" not in str(e):
      raise
  for mod in [m for m in sys.modules if m == "transformers" or m.startswith("transformers.")]:
    del sys.modules[mod]
  stub = types.ModuleType("transformers.dependency_versions_check")
  stub.dep_version_check = lambda pkg, hint=None: None
  sys.modules["transformers.dependency_versions_check"] = stub
  return importlib.import_module(name)


def hf_bigbird(bird: nnx.Module, w: Weights, x, ct, mode: str, mem_cap: int) -> Entry:
  try:
    hf = _import_hf_bigbird()
    from transformers import BigBirdConfig
  except ImportError as e:
    msg = f"transformers with Flax BigBird not importable ({e}); pip install 'transformers<5'"
    raise Skip(msg) from e
  L, D = x.shape[1], x.shape[2]
  T, W = bird.geometry(L)
  if L % T or bird.window_blocks != 3 or bird.global_blocks != 2:
    raise Skip("HF BigBird needs L a multiple of the block, 3 window blocks and 2 global blocks")
  idx, ok = bird.pattern(W)
  if not np.asarray(ok)[1 : W - 1].all():
    raise Skip("lrm's table has rows with fewer random blocks than HF expects")
  table = jnp.asarray(np.asarray(idx)[1 : W - 1], jnp.int32)  # rows of query blocks 1..W-2

  class FixedTable(hf.FlaxBigBirdBlockSparseAttention):
    def _bigbird_block_rand_mask(self, *args, **kwargs):
      return table

    def _bigbird_block_rand_mask_with_head(self, *args, num_heads, **kwargs):
      return [table] * num_heads

  cfg = BigBirdConfig(
    hidden_size=D,
    num_attention_heads=bird.num_heads,
    block_size=T,
    num_random_blocks=bird.num_random,
    attention_type="block_sparse",
    max_position_embeddings=max(L, 4096),
    attention_probs_dropout_prob=0.0,
    use_bias=True,
  )
  module = FixedTable(cfg)
  dense = lambda i: {
    "kernel": w.qkv_w[:, i * D : (i + 1) * D],
    "bias": w.qkv_b[i * D : (i + 1) * D],
  }  # noqa: E731
  params = {"hf": {"params": {n: dense(i) for i, n in enumerate(("query", "key", "value"))}}}
  params |= {"out_w": w.out_w, "out_b": w.out_b}
  params = jax.tree.map(jnp.asarray, params)
  mask = jnp.ones((1, L), jnp.int32)

  def apply(p, x):
    (h,) = module.apply(p["hf"], x, mask, deterministic=True)  # [1, L, D]
    return h @ p["out_w"] + p["out_b"]

  ver = version("transformers")
  return _jax_entry("HF FlaxBigBird", "bigbird", "jax", ver, apply, params, x, ct, mode, mem_cap)


RECURRENTGEMMA_INSTALL = (
  'pip install -e ".[rglru-peer]", then pip install --no-deps recurrentgemma==1.0.1 (its pins '
  "of absl-py<2 and numpy<2.4 clash with lrm's; it runs with lrm's versions)"
)


def recurrentgemma_block(rglru: nnx.Module, batch: int, length: int):
  """recurrentgemma's ``RecurrentBlock`` shaped as the causal lrm ``rglru`` mixer and its
  weights: ``(block, variables, segment_pos [batch, length])``, for ``block.apply(variables,
  x, segment_pos)`` with ``x [batch, length, D]``. Raises ``Skip`` when recurrentgemma is not
  importable or cannot compute the same thing, ``ValueError`` when a weight is left uncopied."""
  try:
    rg = importlib.import_module("recurrentgemma.jax")
  except ImportError as e:
    raise Skip(f"recurrentgemma not importable ({e}); {RECURRENTGEMMA_INSTALL}") from e
  if rglru.reverse_branch is not None:
    raise Skip("recurrentgemma's RecurrentBlock is causal only; build rglru with causal=True")
  block = rg.modules.RecurrentBlock(
    width=rglru.dim,
    num_heads=rglru.num_heads,
    lru_width=rglru.width,
    conv1d_temporal_width=rglru.conv_width,
  )
  # segment_pos from 1: no document starts inside, so recurrentgemma's reset (which skips the
  # sqrt(1 - a**2) factor at a document's first token) never fires; h_{-1} = 0 as in lrm
  pos = jnp.broadcast_to(jnp.arange(1, length + 1), (batch, length))  # [B, L]
  br = rglru.forward_branch
  dense = lambda layer: {"kernel": layer.kernel[...], "bias": layer.bias[...]}  # noqa: E731
  params = {
    "linear_y": dense(rglru.in_y),
    "linear_x": dense(rglru.in_x),
    "linear_out": dense(rglru.out),
    "conv_1d": {"w": br.conv[...], "b": br.conv_bias[...]},
    "rg_lru": {
      "a_param": -br.a_logit[...],  # recurrentgemma's a = exp(-softplus(a_param)) = sigmoid(-it)
      "input_gate": {"w": br.gate_x[...], "b": br.gate_x_bias[...]},
      "a_gate": {"w": br.gate_a[...], "b": br.gate_a_bias[...]},
    },
  }
  x = jax.ShapeDtypeStruct((batch, length, rglru.dim), jnp.float32)
  init = jax.eval_shape(block.init, jax.random.key(0), x, pos)["params"]  # shapes, no compute
  want, got = jax.tree.map(jnp.shape, init), jax.tree.map(jnp.shape, params)
  if want != got:
    raise ValueError(f"recurrentgemma's RecurrentBlock has parameters {want}, copied {got}")
  return block, {"params": params}, pos


def recurrentgemma(rglru: nnx.Module, x, ct, mode: str, mem_cap: int) -> Entry:
  """recurrentgemma's ``RecurrentBlock`` with the weights of the causal lrm ``rglru``."""
  block, variables, pos = recurrentgemma_block(rglru, *x.shape[:2])
  apply = lambda p, x: block.apply(p, x, pos, return_cache=False)[0]  # noqa: E731
  ver = version("recurrentgemma")
  name = "recurrentgemma RecurrentBlock"
  return _jax_entry(name, "rglru", "jax", ver, apply, variables, x, ct, mode, mem_cap, causal=True)


# ----------------------------------------------------------------------------- PyTorch


def _torch():
  try:
    import torch
  except ImportError as e:
    raise Skip(f"torch not installed ({e}); pip install -e '.[peers]'") from e
  torch.set_num_threads(len(os.sched_getaffinity(0)))
  return torch


def _torch_projections(torch, w: Weights):
  D = w.out_w.shape[0]
  qkv, out = torch.nn.Linear(D, 3 * D), torch.nn.Linear(D, D)
  with torch.no_grad():
    for lin, wt, b in ((qkv, w.qkv_w, w.qkv_b), (out, w.out_w, w.out_b)):
      lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(wt.T)))
      lin.bias.copy_(torch.from_numpy(b.copy()))
  return qkv, out


def _torch_entry(name, ver, mode, model, x, ct) -> Entry:
  torch = _torch()
  xt = torch.from_numpy(np.array(x)).requires_grad_(mode == "fwdbwd")
  ctt = torch.from_numpy(np.array(ct))
  params = [p for p in model.parameters() if p.requires_grad]

  def forward():
    with torch.no_grad():
      return model(xt).numpy()

  def step():
    if mode == "fwd":
      with torch.inference_mode():
        return model(xt)
    return torch.autograd.grad((model(xt) * ctt).sum(), [xt, *params])

  def grad_x():
    return step()[0].numpy()

  return Entry(name, "local", "torch", ver, mode, forward, step, grad_x if mode != "fwd" else None)


def lucidrains(heads: int, window: int, w: Weights, x, ct, mode: str, mem_cap: int) -> Entry:
  torch = _torch()
  try:
    from local_attention import LocalAttention
  except ImportError as e:
    raise Skip(f"local-attention not installed ({e}); pip install -e '.[peers]'") from e
  qkv, out = _torch_projections(torch, w)
  D = w.out_w.shape[0]
  attn = LocalAttention(
    window_size=window,
    causal=False,
    look_backward=1,
    look_forward=1,
    exact_windowsize=True,
    autopad=True,
    dim=D // heads,
    use_rotary_pos_emb=False,
  )

  class Model(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.qkv, self.out, self.attn = qkv, out, attn

    def forward(self, x):
      B, L, _ = x.shape
      q, k, v = self.qkv(x).reshape(B, L, 3, heads, D // heads).permute(2, 0, 3, 1, 4)
      o = self.attn(q, k, v)  # [B, N, L, H]
      return self.out(o.transpose(1, 2).reshape(B, L, D))

  ver = version("local-attention")
  return _torch_entry("lucidrains local-attention", ver, mode, Model(), x, ct)


def flex(heads: int, window: int, w: Weights, x, ct, mode: str, mem_cap: int) -> Entry:
  torch = _torch()
  if mode != "fwd":
    raise Skip("FlexAttention has no CPU backward (NotImplementedError); timed forward only")
  try:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
  except ImportError as e:
    raise Skip(f"this torch has no FlexAttention ({e})") from e
  qkv, out = _torch_projections(torch, w)
  L, D = x.shape[1], w.out_w.shape[0]
  band = lambda b, h, q, k: (q - k <= window) & (k - q <= window)  # noqa: E731
  mask = create_block_mask(band, None, None, L, L, device="cpu", BLOCK_SIZE=128)

  class Model(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.qkv, self.out = qkv, out

    def forward(self, x):
      B, L, _ = x.shape
      q, k, v = self.qkv(x).reshape(B, L, 3, heads, D // heads).permute(2, 0, 3, 1, 4)
      o = flex_attention(q.contiguous(), k.contiguous(), v.contiguous(), block_mask=mask)
      return self.out(o.transpose(1, 2).reshape(B, L, D))

  model = torch.compile(Model())
  return _torch_entry("PyTorch FlexAttention (compiled)", torch.__version__, mode, model, x, ct)
