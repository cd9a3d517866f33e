"""Parallel data: the multi-way corpus, format readers and the bible12 builder."""

from lslo.data.bible import build_bible12
from lslo.data.corpus import MultiwayCorpus, load_multiway, write_multiway
from lslo.data.readers import read_corpus

__all__ = ["MultiwayCorpus", "build_bible12", "load_multiway", "read_corpus", "write_multiway"]
