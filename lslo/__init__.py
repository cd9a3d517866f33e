"""lslo: fine-tune multilingual NMT models inside language-specific LoRA subspaces (Cao et al., EMNLP 2024)."""

from lslo.config import LSLoConfig
from lslo.encoding import encode_sources
from lslo.errors import LsloError
from lslo.model import LSLoModel, add_lslo, load_lslo

__all__ = ["LSLoConfig", "LSLoModel", "LsloError", "add_lslo", "encode_sources", "load_lslo"]
__version__ = "0.1.0"
