"""The run directory of tests/test_legacy_run.py, made by lrm before the concepts regroup.

A tiny recall run whose model uses rotary positions (which the encoder used to inject into
attention specs), a seeded BigBird pattern, local attention, hyena and a conv, so resuming it
checks that the regrouped mixers load old checkpoints and compute the same function.
"""

from lrm.config import base_config, parse_arg, set_mixer


def get_config(arg=None):
  v = parse_arg(arg, steps=6)
  c = base_config()
  c.seed = 3
  c.task = "recall"
  c.data.path = ""
  c.data.num_pairs = 4
  c.data.vocab_size = 32
  c.data.seq_len = 32
  c.data.distance_buckets = (4, 16)
  c.data.num_train = 128
  c.data.num_val = 32
  c.data.num_test = 32
  c.model.dim = 32
  c.model.depth = 4
  c.model.positions = "rotary"
  mixer = [
    dict(name="local", window=4, num_heads=2),
    dict(
      name="bigbird", block_size=4, window_blocks=3, global_blocks=1, random_blocks=1, num_heads=2
    ),
    dict(name="hyena"),
    dict(name="conv", kernel_size=5),
  ]
  set_mixer(c.model, mixer)
  c.train.steps = v.steps
  c.train.batch_size = 8
  c.train.eval_batch_size = 32
  c.train.log_every = 2
  c.train.eval_every = 3
  c.train.checkpoint_every = 3
  c.train.keep_checkpoints = 2
  c.optim.lr = 3e-3
  c.optim.warmup_steps = 2
  return c
