"""Training: objectives (``losses``), the loop (``trainer``), ``checkpoint`` files, ``runlog`` and
``distributed`` (torchrun). Import from the submodules; this package imports nothing eagerly so that
inference code can read checkpoints without loading the trainer."""
