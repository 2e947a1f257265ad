"""Model families (plain Keras 3: keras.layers / keras.ops only), the n-gram model, saved networks.

Every network maps int ids (B, T) (the first input of a stream is BOS_ID) to float32 logits
(B, T, V) and is strictly causal: logits[:, t] depend on ids[:, :t+1] only. What each family is,
and everything seqlab needs to know about it, is declared by its module (``family.py`` says what a
family declares, ``catalog.py`` finds it):

  * ``recurrent``: ``rnn``, ``lstm``, ``gru`` (hoisted fast path in ``fast_rnn``), scored as a stream;
  * ``conv``: WaveNet-style dilated causal convolution, scored with windows;
  * ``transformer``: decoder-only pre-LN GPT, key/value-cached stepper, scored with windows;
  * ``seq2seq``: the encoder-decoders of paired data (recurrent with additive attention, Transformer
    with cross-attention), scored with windows of whole examples;
  * ``pixelcnn``: the gated PixelCNN of image corpora (two stacks, no blind spot), built with the
    corpus's image layout, with cached sampling;
  * ``module:Name``: a family from the user's own code (README, "Add your own model").

The two functions below are the way the rest of seqlab builds a network and its stepper.
Importing this package does not import Keras.
"""
from __future__ import annotations

from pipeline.models.catalog import family_of


def build_model(cfg, vocab_size: int, max_len: int, marker_id: int | None = None, image: dict | None = None):
    """``cfg``'s family's Keras model: int32 ids (B, T) -> float32 logits (B, T, vocab_size).

    ``max_len`` is the training context; ``marker_id`` the id that ends each example's source in
    paired data (None otherwise), given to the families that read a source; ``image`` an image
    corpus's layout (``ImageLayout.model_config``, None for text), given to the families that
    model images in two dimensions. Under a mixed-precision global policy the body computes in
    low precision while the logits stay float32.
    """
    from pipeline.errors import SeqlabError
    family = family_of(cfg)
    if family.reads_image:
        if image is None:
            raise SeqlabError(f"family {family.name!r} models images in two dimensions: it needs an image corpus "
                              "(data.corpus: builtin:digits, builtin:mnist, a folder of PNG files or an .npy/.npz array)")
        return family.build(cfg, vocab_size, max_len, image=dict(image))
    if not family.reads_source:
        return family.build(cfg, vocab_size, max_len)
    if marker_id is None:
        raise SeqlabError(f"family {family.name!r} is an encoder-decoder: it reads a source, so it needs paired "
                          "data (data.examples: pairs, source<TAB>target lines)")
    return family.build(cfg, vocab_size, max_len, marker_id=int(marker_id))


def make_stepper(model, cfg, max_len: int):
    """A ``Stepper`` running ``model``'s layers (same weight objects) incrementally.

    ``max_context`` is None for the recurrent and conv steppers (a stream continues forever), the
    training context for windowed ones (the Transformer's key/value cache, a recomputed window).
    """
    return family_of(cfg).stepper(model, cfg, max_len)


def count_parameters(model) -> int:
    """Number of scalar weights (all variables; every one is trainable here)."""
    return int(model.count_params())
