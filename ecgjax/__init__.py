"""ecgjax: self-supervised pretraining of ECG foundation models in JAX/Flax."""

__version__ = "0.1.0"
