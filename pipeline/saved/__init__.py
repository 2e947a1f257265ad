"""Every trained model behind one interface, the n-gram included.

A model folder says what it holds in ``kind.json`` (``{"kind": "network"}``, written by whatever
saved it); :func:`load_saved` loads it with its kind's class from :data:`KINDS`. Every loaded
model offers what the stages, the served generator and the diagnostics ask of a model, so none of
them asks which model it is:

- ``vocab_size``;
- :meth:`sampler`: what ``pipeline.generation.text`` streams text from (``stream(prompts, ...)``);
- :meth:`transducer`: what decodes a paired corpus's sources to their outputs (``decode(prompts)``:
  beam search of a width, or greedy; None where a model has no beam search);
- :meth:`context_limits` and :meth:`context_scorer`: the diagnostics' view of the model (the
  longest context it can use, and a scorer of targets after truncated contexts);
- :meth:`probes`: the diagnostics that read the model's insides (gradients, attention), ``{}``
  where none apply; :meth:`alignments`: an encoder-decoder's attention over the source of given
  examples, ``[]`` for every other model.

This package sits above ``models``, ``generation`` and ``scoring`` (it puts them together) and
below ``tracking`` and the stages; a new kind of model (an encoder-decoder, a pixel model) is one
more entry in :data:`KINDS` (the encoder-decoders are networks: no kind of their own).
"""
from __future__ import annotations

import importlib
from pathlib import Path

from pipeline.errors import SeqlabError
from pipeline.io import read_json
from pipeline.paths import KIND_FILE

KINDS = {"network": "pipeline.saved.network:SavedNetwork",   # pipeline.models.network.save_network
         "ngram": "pipeline.saved.ngram:SavedNgram"}         # the ngram stage


def load_saved(folder: Path):
    """The model saved in ``folder``, loaded behind the interface above."""
    marker = Path(folder) / KIND_FILE
    if not marker.is_file():
        raise SeqlabError(f"{marker}: not found: {folder} holds no saved seqlab model (run `make run`)")
    kind = read_json(marker).get("kind")
    if kind not in KINDS:
        raise SeqlabError(f"{marker}: kind {kind!r} is not one of {', '.join(sorted(KINDS))}")
    module, _, name = KINDS[kind].partition(":")
    return getattr(importlib.import_module(module), name).load(Path(folder))
