"""The training engine: config schema, distributed helpers, checkpoints, logging, LR schedule, the loop.

It imports nothing from ``models/`` or ``data/``: a task (``tasks/``) brings the model and the data.
Modules: ``config``, ``distributed``, ``checkpoint``, ``logger``, ``schedule``, ``skips``,
``preemption``, ``task`` (the contract), ``loop`` (``Trainer``), ``cli`` (the scripts' shared CLI).
"""
