"""Training: objectives (``losses``), the loop (``trainer``), resume, the feature cache and
``distributed`` (torchrun). Import from the submodules; this package imports nothing eagerly so that
inference code can read checkpoints without loading the trainer."""
