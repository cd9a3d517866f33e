"""Add languages a base has never seen, each in its own subspace, every old direction unchanged.

- `lslo.extend.tokenizer`: append a new language's SentencePiece pieces (only those that leave every old
  language's segmentation unchanged) and its language token; ids never move. Saved/loaded with the model.
- `lslo.extend.embeddings`: the math: embedding rows appended after the frozen base rows, an output head whose
  new columns take no probability mass when an old language is the target.
- `lslo.extend.model`: the surgery: put those modules into an M2M-100/NLLB model and give the new language its
  LSLo LoRA, the old ones frozen.
- `lslo.extend.stages`: the added rows in a model: installed, frozen per language, saved and loaded next to an
  adapter, folded into a merged direction (what `lslo.model` calls; it imports nothing from `lslo.model`).
- `lslo.extend.run`: what `lslo train` does with `new_languages` and `start_from`.
"""
