"""captionlab: image-captioning research toolkit.

``load_checkpoint(path).caption(images)`` captions images with a trained model; ``captionlab.training.trainer.train``
trains one from a ``RunConfig``; ``captionlab.decoding`` is the decoding engine every model shares.
"""

from .captioner import Captioner, load_checkpoint
from .config import RunConfig, load_config
from .training import objectives as _objectives  # noqa: F401  (registers the losses and rewards configs name)

__version__ = "0.1.0"
__all__ = ["Captioner", "load_checkpoint", "RunConfig", "load_config", "__version__"]
