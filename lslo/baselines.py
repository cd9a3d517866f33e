"""The baselines LSLo is measured against, behind the same `TranslationModel` interface.

- `FullFineTune`: every weight of the model trains.
- `SharedLoRA`: one LoRA shared by all languages on the same linears as LSLo, built with Hugging Face peft.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from lslo.config import LSLoConfig
from lslo.io import atomic_dir
from lslo.translation import TranslationModel, require_m2m100

METHOD_FILE = "lslo_method.json"


def _base_params(model: nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)


class FullFineTune(TranslationModel):
    """Full fine-tuning: the whole model trains."""

    method = "full"

    def __init__(self, model: nn.Module, lang_token_ids: dict[str, int]) -> None:
        require_m2m100(model, "FullFineTune")
        super().__init__(model, list(lang_token_ids), lang_token_ids)
        model.requires_grad_(True)

    def save_pretrained(self, directory: str | Path) -> None:
        with atomic_dir(directory) as tmp:
            if self.method == "lora":  # added rows travel as peft's trainable tokens, not as the whole resized matrix
                self.base_model.save_pretrained(tmp, save_embedding_layers=False)
            else:
                self.base_model.save_pretrained(tmp)
            meta = {"method": self.method, "lang_token_ids": self.lang_token_ids,
                    "vocab_size": int(self.base_model.get_input_embeddings().weight.shape[0])}  # fmt: skip
            (tmp / METHOD_FILE).write_text(json.dumps(meta))

    def parameter_report(self) -> dict[str, Any]:
        n = sum(p.numel() for p in self.parameters() if p.requires_grad)
        base = _base_params(self.base_model)
        return {"total": n, "base_params": base, "percent_of_base": 100 * n / base}


class SharedLoRA(FullFineTune):
    """One LoRA of rank `r` shared by all languages, on the positions/layers that `placement` names.

    `placement` is an LSLoConfig whose module and layer choices are reused (its languages are ignored), so
    the baseline adapts exactly the linears that LSLo adapts. alpha=None means no scaling, as for LSLo.
    `trainable_tokens`: embedding rows that train too (peft's `trainable_token_indices`; the rows of added
    languages, `lslo.extend.run.lora_model`).
    """

    method = "lora"

    def __init__(
        self,
        model: nn.Module,
        lang_token_ids: dict[str, int],
        r: int = 8,
        placement: LSLoConfig | None = None,
        alpha: float | None = None,
        dropout: float = 0.0,
        trainable_tokens: list[int] | None = None,
    ) -> None:
        require_m2m100(model, "SharedLoRA")
        placement = placement or LSLoConfig(languages=dict.fromkeys(lang_token_ids, "high"))
        names = [name for name, _ in placement.targets(len(model.model.encoder.layers), len(model.model.decoder.layers))]
        peft_config = LoraConfig(r=r, lora_alpha=alpha if alpha is not None else r, lora_dropout=dropout, target_modules=names,
                                 trainable_token_indices=list(trainable_tokens) if trainable_tokens else None)  # fmt: skip
        TranslationModel.__init__(self, get_peft_model(model, peft_config), list(lang_token_ids), lang_token_ids)
        self.r = r

    @classmethod
    def from_pretrained(cls, model: nn.Module, directory: str | Path) -> SharedLoRA:
        meta = json.loads((Path(directory) / METHOD_FILE).read_text())
        rows = meta.get("vocab_size")
        if rows and rows != model.get_input_embeddings().weight.shape[0]:  # added languages: their rows are in the adapter
            model.resize_token_embeddings(rows, mean_resizing=False)
        self = cls.__new__(cls)
        TranslationModel.__init__(self, PeftModel.from_pretrained(model, str(directory)), list(meta["lang_token_ids"]), meta["lang_token_ids"])
        return self
