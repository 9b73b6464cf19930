"""The command-line programs (pretrain, finetune, embed, probe, explain, report, tsne).

Installed as console scripts `ecgjax-<name>`; a checkout also runs them as `python pretrain/main.py`
and `python finetune/<name>.py`. They sit at the top of the stack: each may import any layer.
"""

from ecgjax.train import host_memory as _host_memory

# A program owns its process: cap glibc's arenas before JAX starts its threads (see
# ecgjax.train.host_memory for what it saves).
_host_memory.limit_arenas()
