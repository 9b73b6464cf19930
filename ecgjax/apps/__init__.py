"""The command-line programs (pretrain, finetune, embed, probe, explain, report, tsne).

Installed as console scripts `ecgjax-<name>`; a checkout also runs them as `python pretrain/main.py`
and `python finetune/<name>.py`. They sit at the top of the stack: each may import any layer.
"""
