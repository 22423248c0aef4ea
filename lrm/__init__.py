"""lrm: long-range sequence modelling in JAX/Flax NNX.

What does each way of mixing tokens (convolution, local/global/random/BigBird attention,
dynamic convolution) buy, at equal cost?
"""

__version__ = "0.1.0"
