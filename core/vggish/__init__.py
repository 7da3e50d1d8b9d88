"""VGGish: log-mel front end, the network, the official checkpoint, and AudioSet post-processing.

Split like the reference implementation (params / input / slim model / postprocess) so each part
can be checked on its own against the reference formulas.
"""

from __future__ import annotations

from core.vggish.embedder import VGGishEmbedder, check_model_files, clear_cache, load_embedder
from core.vggish.postprocess import Postprocessor

__all__ = ["VGGishEmbedder", "Postprocessor", "load_embedder", "check_model_files", "clear_cache"]
