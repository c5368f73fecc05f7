"""The names of the scores captionlab reports, in the order its tables show them: one list that the
config (``train.select_metric``), the metrics module, the trainer's console line and the report read."""

from __future__ import annotations

BLEU_KEYS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4")
KEY_ORDER = (*BLEU_KEYS, "METEOR", "ROUGE_L", "CIDEr", "SPICE")  # pycocoevalcap's scores
VAL_KEYS = (*BLEU_KEYS, "ROUGE_L", "CIDEr")  # what each epoch's validation computes (no Java: no METEOR)
SELECT_METRICS = (*VAL_KEYS, "mean_recall")  # what can pick best.pt (mean_recall: pre-training)
PLOTTED = ("Bleu_4", "ROUGE_L", "CIDEr")  # viz.plot_training_curves' validation panel, by default
SHOWN = (*PLOTTED, "i2t_R@1", "t2i_R@1", "mean_recall")  # the per-epoch console line
CURVE_KEYS = ("CIDEr", "Bleu_4", "ROUGE_L", "METEOR")  # the report's training curves, after the losses
