"""Images out: samples and lower-half completions of an image model as PNG grids, and their metrics.

What a user of an image corpus looks at instead of text samples (PixelRNN's figures): a grid of
images drawn from the model (one row per class when the corpus is labelled, the row's prompt
naming the class), and test images whose lower half the model completes from the upper half
(each row: the original, then completions with different seeds). Every image is drawn at
temperature 1 with nothing cut (top-k 0, top-p 1): samples of the distribution that was scored.
Any sampler with ``stream(prompts, max_tokens, *, temperature, top_k, top_p, seeds)`` serves (the
compiled decoder of a network, the n-gram's host sampler).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pipeline.data.image_layout import ImageLayout
from pipeline.io import atomic_write

SAMPLES_PER_ROW = 8
COMPLETIONS = 3          # per test image, beside the original
COMPLETION_ROWS = 6      # test images completed
MIN_CELL_PIXELS = 56     # an image is scaled up (nearest) to at least this many screen pixels wide


def draw(sampler, layout: ImageLayout, prompts: list[np.ndarray], seeds, temperature=1.0, top_k=0,
         top_p=1.0) -> np.ndarray:
    """uint8 (len(prompts), H, W): each prompt (:meth:`ImageLayout.prompt`) continued to a whole
    image, row i with ``seeds[i]`` (the settings: one value, or one per row)."""
    new = [[] for _ in prompts]
    given = layout.prefix - 1                      # a prompt's label and separator (the sampler adds <bos>)
    budgets = [layout.pixels - (len(p) - given) for p in prompts]
    for chunk in sampler.stream(prompts, budgets, temperature=temperature, top_k=top_k, top_p=top_p,
                                seeds=list(seeds)):
        for i, ids in enumerate(chunk):
            new[i].extend(int(t) for t in ids)
    return np.stack([layout.image(np.concatenate([np.asarray(p[given:], np.int64), np.asarray(n, np.int64)]))
                     for p, n in zip(prompts, new)])


def sample_grid(sampler, layout: ImageLayout, seed: int) -> tuple[np.ndarray, list[str]]:
    """(images (rows, cols, H, W), row names): one row per class, or 8 rows of unconditioned samples."""
    classes = list(layout.labels) or [""] * SAMPLES_PER_ROW
    prompts = [layout.prompt(c if c else None) for c in classes for _ in range(SAMPLES_PER_ROW)]
    images = draw(sampler, layout, prompts, [seed + i for i in range(len(prompts))])
    return images.reshape(len(classes), SAMPLES_PER_ROW, layout.height, layout.width), classes


def completion_grid(sampler, layout: ImageLayout, test_images: np.ndarray, test_labels, seed: int) -> np.ndarray:
    """(rows, 1 + COMPLETIONS, H, W): each test image, then its upper half completed COMPLETIONS times."""
    top = layout.height // 2
    rows = []
    for k, image in enumerate(test_images[:COMPLETION_ROWS]):
        label = None if test_labels is None else int(test_labels[k])
        prompts = [layout.prompt(label, image[:top])] * COMPLETIONS
        seeds = [seed + COMPLETIONS * k + i for i in range(COMPLETIONS)]
        rows.append(np.concatenate([image[None], draw(sampler, layout, prompts, seeds)]))
    return np.stack(rows)


def write_grid_png(path: Path, grid: np.ndarray, levels: int, split_after: int | None = None) -> None:
    """A (rows, cols, H, W) grid of level images as one grayscale PNG (white ink on black, as the
    data is), each image scaled up to at least :data:`MIN_CELL_PIXELS` and framed by a grey line;
    ``split_after``: a row index after which a grey rule marks the upper half (completions)."""
    from PIL import Image
    rows, cols, h, w = grid.shape
    scale = max(1, math.ceil(MIN_CELL_PIXELS / w))
    cell = np.kron(grid.astype(np.float64) * (255.0 / max(levels - 1, 1)), np.ones((scale, scale)))
    pad = 2
    canvas = np.full((rows * (h * scale + pad) + pad, cols * (w * scale + pad) + pad), 128, np.uint8)
    for r in range(rows):
        for c in range(cols):
            y, x = pad + r * (h * scale + pad), pad + c * (w * scale + pad)
            canvas[y:y + h * scale, x:x + w * scale] = np.clip(np.rint(cell[r, c]), 0, 255)
            if split_after is not None and c > 0:       # the completions' given upper half, marked
                canvas[y + split_after * scale, x:x + w * scale] = 128
    atomic_write(path, lambda t: Image.fromarray(canvas, mode="L").save(t, format="PNG"))


def images_of_split(data, split: str = "test") -> tuple[np.ndarray, np.ndarray | None]:
    """A split's images (levels) and labels, read back from its ids."""
    layout = data.image
    ids = np.asarray(data.ids[split]).reshape(-1, layout.example_tokens)
    pixels = ids[:, layout.prefix - 1:layout.prefix - 1 + layout.pixels]
    images = np.stack([layout.image(row) for row in pixels])
    labels = (ids[:, 0] - layout.label_offset) if layout.labels else None
    return images, labels


def image_metrics(per_split: dict[str, dict], layout: ImageLayout) -> dict:
    """Bits per dimension (the protocol's bits per character: its characters are pixels) and nats
    per image of every split: ``{split}_bpd``, ``{split}_nats_per_image``."""
    return {k: v for split, m in per_split.items() for k, v in (
        (f"{split}_bpd", m["bpc"]), (f"{split}_nats_per_image", m["bpc"] * math.log(2) * layout.pixels))}


def image_results(sampler, data, per_split: dict, seed: int, folder: Path) -> tuple[dict, str, list[Path]]:
    """(metrics, the samples file's section, the PNG files written) of an image corpus; ({}, "", [])
    for text. Writes ``<folder>/samples.png`` and ``<folder>/completions.png``."""
    layout = data.image
    if layout is None:
        return {}, "", []
    metrics = image_metrics(per_split, layout)
    grid, classes = sample_grid(sampler, layout, seed)
    images, labels = images_of_split(data)
    completed = completion_grid(sampler, layout, images, labels, seed)
    paths = [folder / "samples.png", folder / "completions.png"]
    write_grid_png(paths[0], grid, layout.levels)
    write_grid_png(paths[1], completed, layout.levels, split_after=layout.height // 2)
    rows = ", one row per class" if layout.labels else ""
    section = (f"\n=== images: {layout.height}x{layout.width}, {layout.levels} levels; test "
               f"{metrics['test_bpd']:.4f} bits/dim, {metrics['test_nats_per_image']:.2f} nats/image\n"
               f"samples: {paths[0]} ({grid.shape[0]}x{grid.shape[1]}{rows}, temperature 1, seed {seed} + index)\n"
               f"completions: {paths[1]} (each row a test image, then {COMPLETIONS} completions of its "
               f"lower half from its upper {layout.height // 2} rows)\n")
    return metrics, section, paths
