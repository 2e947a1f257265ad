"""``python -m pipeline.generate MODEL --prompt TEXT``: generate text from any seqlab model.

A model of paired data also decodes sources: ``--source TEXT`` (repeatable) prints one
``source<TAB>output`` line each, decoded by beam search (``--beam-width``, 1: greedy). A model of
an image corpus draws one image per prompt (the prompt names its class, or is empty), prints its
levels row by row and, with ``--png PATH``, writes them side by side as one PNG.

MODEL is a registered model (``models:/seqlab-lstm@champion``, ``models:/seqlab-gru/3``), a run's
generator (``runs:/<run id>/generator``), a logged model folder (one holding ``MLmodel``), or a
folder a ``make run`` leaves (``models/<arch>``, with the vocabulary of ``--vocab``). The text is
streamed to stdout as it is generated (one prompt) or printed per prompt (several, decoded in one
batch). The settings and their limits are the served model's (``pipeline.generation.requests``).
The tracking store is ``$MLFLOW_TRACKING_URI``, else this repository's ``mlflow.db``.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from pipeline.paths import PREPARED
    from pipeline.generation.requests import MAX_TOKENS

    ap = argparse.ArgumentParser(prog="python -m pipeline.generate", description=__doc__.splitlines()[0])
    ap.add_argument("model", help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/generator or a folder")
    ap.add_argument("--prompt", action="append", help="repeatable; default: standard input, one prompt")
    ap.add_argument("--source", action="append", help="repeatable: decode this source to its output (a model of "
                                                      "paired data: data.examples: pairs)")
    ap.add_argument("--beam-width", type=int, help="sources: beams per source (1: greedy, the default)")
    ap.add_argument("--length-penalty", type=float, help="sources: GNMT's alpha (default 0.6)")
    ap.add_argument("--max-tokens", type=int, help=f"new tokens per prompt (at most {MAX_TOKENS}; "
                                                  "default: the model's logged default)")
    ap.add_argument("--temperature", type=float, help="0 is greedy")
    ap.add_argument("--top-k", type=int, help="0: off")
    ap.add_argument("--top-p", type=float, help="1: off")
    ap.add_argument("--seed", type=int, help="-1: fresh randomness")
    ap.add_argument("--stop", help="the text ends before this string")
    ap.add_argument("--png", type=Path, help="a model of images: write the images drawn to this PNG file")
    ap.add_argument("--vocab", type=Path, default=PREPARED / "vocab.json",
                    help="the vocabulary of a models/<arch> folder (default: %(default)s)")
    args = ap.parse_args(argv)

    from pipeline.stage import quiet_tensorflow
    quiet_tensorflow(os.environ)
    from pipeline.errors import SeqlabError
    from pipeline.tracking.pyfunc import DEFAULTS, open_text_generator
    from pipeline.generation.requests import RequestError, parse_requests

    if args.source is not None and args.prompt is not None:
        ap.error("give --prompt or --source, not both")
    params = {k: getattr(args, k) for k in ("max_tokens", "temperature", "top_k", "top_p", "seed", "stop",
                                            "beam_width", "length_penalty") if getattr(args, k) is not None}
    if args.source is not None:
        return _transduce(args, params)
    prompts = args.prompt if args.prompt is not None else [sys.stdin.read()]
    try:
        parse_requests(prompts, params, DEFAULTS)                # refuse a bad request before loading anything
        generator = open_text_generator(args.model, args.vocab)
        parse_requests(prompts, params, generator.defaults)      # and with the model's defaults, before any output
        if generator.image_layout is not None:
            return _images(generator, prompts, params, args.png)
        if args.png is not None:
            raise SeqlabError(f"--png: {args.model} is a model of text, not of images")
        if len(prompts) == 1:
            sys.stdout.write(prompts[0])
            for piece in generator.predict_stream(None, prompts[0], params):
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n")
        else:
            texts = generator.predict(None, prompts, params)["text"]
            for prompt, text in zip(prompts, texts):
                sys.stdout.write(f"=== prompt: {prompt!r}\n{prompt}{text}\n")
    except (SeqlabError, RequestError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _images(generator, prompts: list[str], params: dict, png: Path | None) -> int:
    """An image model: each prompt's image as rows of levels, and all of them in one PNG row."""
    import numpy as np

    from pipeline.generation.images import write_grid_png
    layout = generator.image_layout
    images = np.asarray(list(generator.predict(None, prompts, params)["image"]))
    for prompt, image in zip(prompts, images):
        sys.stdout.write(f"=== prompt: {prompt!r} ({layout.height}x{layout.width}, {layout.levels} levels)\n"
                         + "".join(" ".join(str(v) for v in row) + "\n" for row in image))
    if png is not None:
        write_grid_png(png, images[None], layout.levels)
        sys.stdout.write(f"wrote {png}\n")
    return 0


def _transduce(args, params: dict) -> int:
    """``--source``: each source and its output, one ``source<TAB>output`` line each."""
    from pipeline.errors import SeqlabError
    from pipeline.generation.requests import RequestError, parse_requests
    from pipeline.tracking.pyfunc import DEFAULTS, open_text_generator
    request = {"source": args.source}
    try:
        parse_requests(request, params, DEFAULTS)                # refuse a bad request before loading anything
        generator = open_text_generator(args.model, args.vocab)
        for source, text in zip(args.source, generator.predict(None, request, params)["text"]):
            sys.stdout.write(f"{source}\t{text}\n")
    except (SeqlabError, RequestError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
