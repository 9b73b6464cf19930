"""ecgjax: self-supervised pretraining of ECG foundation models in JAX/Flax."""

__version__ = "0.1.0"


def __getattr__(name: str):
  """`ecgjax.from_pretrained` / `ecgjax.push_to_hub` (ecgjax.hub), imported on first use so
  `import ecgjax` stays light."""
  if name in ("from_pretrained", "push_to_hub"):
    from ecgjax import hub  # pylint: disable=g-import-not-at-top
    return getattr(hub, name)
  raise AttributeError(f"module 'ecgjax' has no attribute {name!r}")
