"""Language identification for `source: auto`, restricted to the model's languages.

py3langid ships its model (97 languages, ISO 639-1 labels) inside its wheel: nothing is downloaded. The
identifier is restricted to the model's languages that it knows; the model's other languages cannot be
detected (they are listed in `undetectable`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from lslo.languages import lookup


class LanguageDetector:
    """Ranks the model's languages for a text: [(model code, confidence 0..1), ...], best first."""

    def __init__(self, model_codes: Sequence[str]) -> None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        self._identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        known = set(self._identifier.nb_classes)
        self.by_label: dict[str, str] = {}
        self.undetectable: list[str] = []
        for code in model_codes:
            lang = lookup(code)
            label = lang.m2m if lang is not None else None
            if label in known:
                self.by_label[label] = code
            else:
                self.undetectable.append(code)
        self._lock = threading.Lock()
        if self.by_label:
            self._identifier.set_languages(sorted(self.by_label))

    @property
    def available(self) -> bool:
        return bool(self.by_label)

    def rank(self, text: str) -> list[tuple[str, float]]:
        if not self.by_label:
            return []
        with self._lock:
            ranked = self._identifier.rank(text)
        return [(self.by_label[label], float(p)) for label, p in ranked if label in self.by_label]
