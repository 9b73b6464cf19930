"""ST-MEM masked-autoencoder pretraining (SPEC.md section 1).

  python pretrain/main.py --config configs/stmem.py:variant=B/75 --workdir runs/stmem_b
  python pretrain/main.py --config configs/stmem.py:variant=mu,runlocal --workdir /tmp/stmem

Arguments after ':' (comma separated): variant=mu|S/75|B/75|L/75, runlocal (a laptop-size
run of a few minutes on the built-in synthetic data), corpus=synthetic|ptbxl250 (the shared
PTB-XL pretraining array beside the checkout, ../shared/data/ptbxl-pretrain-250hz).
Every key is declared once: the common ones in ecgjax/configs.py `pretraining`, the MAE's
(`config.mae.mask_ratio`, also `config.mask_ratio`) in ecgjax/objectives/masked_autoencoder.py,
the input contract's in ecgjax/contract.py; this file sets ST-MEM's values.
"""

import ml_collections

from ecgjax import configs


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The ST-MEM pretraining config."""
  arg = configs.parse_arg(arg, variant="B/75", runlocal=False, corpus="synthetic")
  c = configs.pretraining(arg.variant)
  configs.set_objective(c, "mae", model="st_mem")  # the full MAE (encoder + decoder)
  # The input: 250 Hz (FFT), a 9 s random crop = 30 patches of 75, 0.67-40 Hz, global z-score.
  c.input = configs.input_contract("st_mem")
  configs.use_corpus(c, arg.corpus)
  if arg.runlocal:
    configs.runlocal(c, batch_size=16, total_steps=300, warmup_steps=30,
                     base_lr=0.024,  # peak 1.5e-3 at batch 16: tiny models take larger steps
                     vis_every_steps=300)
    if arg.corpus == "synthetic":
      c.data = "synthetic:4000?seed=0&fs=250&seconds=10"
  return c
