"""Image corpora: sources, the pixel layout, the prepared folder, bits per dimension and the PNG grids."""
import math

import numpy as np
import pytest
from PIL import Image

from pipeline.data.image_layout import END_ID, LEVEL_OFFSET, SEPARATOR_ID, ImageLayout, layout_of
from pipeline.data.images import is_image_corpus, load_images, quantise, shuffled_splits
from pipeline.data.prepare_images import pixel_baseline, prepare_images
from pipeline.data.prepared import load_prepared
from pipeline.data.vocab_layout import BOS_ID
from pipeline.errors import SeqlabError
from pipeline.generation.images import image_metrics, images_of_split, write_grid_png
from pipeline.reporting import comparison_markdown
from pipeline.scoring.protocol import split_scores


def _png(path, array, mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8), mode=mode).save(path)


def test_an_image_round_trips_through_tokens_unchanged(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 5, size=(40, 3, 4))
    labels = rng.integers(0, 3, size=40)
    np.savez(tmp_path / "a.npz", images=images, labels=labels)
    stats = prepare_images(str(tmp_path / "a.npz"), tmp_path / "p", labels=True, split=[0.5, 0.25, 0.25])
    data = load_prepared(tmp_path / "p")
    layout = data.image
    assert layout == ImageLayout(3, 4, 5, ("0", "1", "2")) and stats["image"]["levels"] == 5
    back, back_labels = images_of_split(data)
    # the test split's images are some of the originals, in the shuffled order, each unchanged
    originals = {(images[i].tobytes(), int(labels[i])) for i in range(40)}
    assert len(back) == 10 and all((b.astype(images.dtype).tobytes(), int(c)) in originals
                                   for b, c in zip(back, back_labels))
    # one example: label, separator, 12 pixels in raster order, end of image; text form and back
    ids = np.asarray(data.ids["test"][:layout.example_tokens])
    assert ids[1] == SEPARATOR_ID and ids[-1] == END_ID and ids[0] == layout.label_offset + back_labels[0]
    assert np.array_equal(ids[2:-1] - LEVEL_OFFSET, back[0].reshape(-1))
    text = data.tokenizer.decode(ids)
    assert text.startswith(f"label:{back_labels[0]}\t") and text.endswith("\n")
    assert np.array_equal(data.tokenizer.encode(text), ids)
    plain = ImageLayout(3, 4, 5)
    assert np.array_equal(plain.image(plain.example_ids(back[:1])[:-1]), back[0])


def test_the_loss_mask_covers_the_pixels_only_and_examples_start_at_each_image(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(24 * 4).reshape(24, 2, 2) % 3)
    prepare_images(str(tmp_path / "a.npy"), tmp_path / "p", split=[0.5, 0.25, 0.25])
    data = load_prepared(tmp_path / "p")
    assert data.examples == "lines" and data.boundary_id == END_ID
    assert list(data.starts("train")) == [0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55]
    assert list(data.mask("valid")[:10]) == [1, 1, 1, 1, 0] * 2
    assert data.chars("test") == 6 * 4      # bits per character are bits per pixel
    assert layout_of(data.tokenizer).prefix == 1


def test_bits_per_dimension_of_a_known_distribution():
    """Pixels drawn independently, pixel j ~ Bernoulli(p_j): the independent-pixel baseline's bits per
    dimension approach the mean binary entropy, and a model that knows p scores exactly its
    cross-entropy under the protocol's arithmetic."""
    rng = np.random.default_rng(1)
    p = np.linspace(0.05, 0.95, 16).reshape(4, 4)
    entropy = float(np.mean(-(p * np.log2(p) + (1 - p) * np.log2(1 - p))))
    train, test = ((rng.random((n, 4, 4)) < p).astype(np.int64) for n in (20000, 20000))
    assert pixel_baseline(train, {"test": test}, 2)["test_bpd"] == pytest.approx(entropy, abs=0.01)
    # the true model's log-probs, scored as a split whose "characters" are its pixels
    lp = np.where(test == 1, np.log(p), np.log(1 - p)).reshape(-1)
    scores = split_scores([lp], chars=test.size)
    exact = -lp.sum() / math.log(2) / test.size
    assert scores["bpc"] == pytest.approx(exact, rel=1e-12) and scores["bpc"] == pytest.approx(entropy, abs=0.01)
    m = image_metrics({"test": scores}, ImageLayout(4, 4, 2))
    assert m["test_bpd"] == scores["bpc"]
    assert m["test_nats_per_image"] == pytest.approx(-lp.sum() / len(test), rel=1e-9)


def test_builtins_are_read_offline_with_their_shapes_levels_and_classes():
    digits, levels = load_images("builtin:digits")
    assert digits.images.shape == (1797, 8, 8) and levels == 17 and digits.images.max() == 16
    assert np.bincount(digits.labels).min() > 170 and digits.label_names == tuple("0123456789")
    mnist, levels = load_images("builtin:mnist")
    assert mnist.images.shape == (5000, 28, 28) and mnist.native_levels == 256 and levels == 2
    binary = quantise(mnist.images, 256, 2)
    assert set(np.unique(binary)) == {0, 1} and np.array_equal(binary, mnist.images >= 128)
    assert quantise(mnist.images, 256, 256).max() == 255
    assert is_image_corpus("builtin:digits") and not is_image_corpus("builtin:dates")


def test_a_png_folder_with_class_folders_gives_labels_and_a_fixed_split(tmp_path):
    for c in ("cat", "dog"):
        for i in range(5):
            _png(tmp_path / "imgs" / c / f"{i}.png", np.full((3, 2), 40 * i))
    s, levels = load_images("imgs", tmp_path)
    assert levels == 256 and s.label_names == ("cat", "dog") and list(s.labels) == [0] * 5 + [1] * 5
    assert s.keys[0] == "cat/0.png"
    parts = shuffled_splits(s.keys, [0.6, 0.2, 0.2], "imgs")
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(10))
    assert [len(v) for v in parts.values()] == [6, 2, 2]
    assert np.array_equal(parts["test"], shuffled_splits(s.keys, [0.6, 0.2, 0.2], "imgs")["test"])
    stats = prepare_images("imgs", tmp_path / "p", levels=4, labels=True, split=[0.6, 0.2, 0.2], root=tmp_path)
    assert stats["image"]["labels"] == ["cat", "dog"] and stats["image"]["levels"] == 4


@pytest.mark.parametrize("case, message", [
    ("shapes", r"b\.png: a 3x3 image; the images before it are 2x2"),
    ("colour", r"a\.png: a RGB image; expected a grayscale PNG"),
    ("garbage", r"a\.png: not a readable PNG image"),
    ("level", r"a\.npy: level 7 out of range: expected 0\.\.3"),
    ("dtype", r"a\.npy: images of shape \(2, 2\) and dtype float64; expected integer levels"),
    ("npz", r"a\.npz: no 'images' array"),
    ("labels", r"has no class labels"),
])
def test_bad_images_get_one_clear_error_naming_the_file(tmp_path, case, message):
    spec, kwargs = "imgs", {}
    if case == "shapes":
        _png(tmp_path / "imgs" / "a.png", np.zeros((2, 2)))
        _png(tmp_path / "imgs" / "b.png", np.zeros((3, 3)))
    elif case == "colour":
        _png(tmp_path / "imgs" / "a.png", np.zeros((2, 2, 3)), mode="RGB")
    elif case == "garbage":
        (tmp_path / "imgs").mkdir()
        (tmp_path / "imgs" / "a.png").write_bytes(b"not a png")
    elif case == "level":
        spec, kwargs = "a.npy", {"levels": 4}
        np.save(tmp_path / "a.npy", np.array([[[0, 7]]]))
    elif case == "dtype":
        spec = "a.npy"
        np.save(tmp_path / "a.npy", np.zeros((2, 2)))
    elif case == "npz":
        spec = "a.npz"
        np.savez(tmp_path / "a.npz", x=np.zeros((1, 2, 2), np.int64))
    elif case == "labels":
        spec, kwargs = "a.npy", {"labels": True}
        np.save(tmp_path / "a.npy", np.zeros((30, 2, 2), np.int64))
    with pytest.raises(SeqlabError, match=message):
        prepare_images(spec, tmp_path / "p", root=tmp_path, **kwargs)
    assert not (tmp_path / "p").exists()      # nothing half-written


def test_prompts_and_samples_read_back_as_images():
    layout = ImageLayout(2, 3, 4, ("a", "b"))
    assert list(layout.prompt("b")) == [layout.label_offset + 1, SEPARATOR_ID]      # the sampler adds <bos>
    assert list(layout.prompt(0, np.array([[1, 2, 3]]))) == [layout.label_offset, SEPARATOR_ID, 5, 6, 7]
    assert list(ImageLayout(2, 3, 4).prompt()) == []
    with pytest.raises(SeqlabError, match="unknown class label 'c'"):
        layout.prompt("c")
    # a sampled id that is not a level reads as 0; a short sample is filled with 0
    assert layout.image([5, END_ID, 7]).tolist() == [[1, 0, 3], [0, 0, 0]]
    with pytest.raises(SeqlabError, match="no class labels"):
        ImageLayout(2, 2, 2).prompt("a")


def test_png_grid_and_the_report_of_an_image_corpus(tmp_path):
    grid = np.zeros((2, 3, 4, 4), np.uint8)
    grid[1, 2] = 16
    write_grid_png(tmp_path / "g.png", grid, levels=17)
    with Image.open(tmp_path / "g.png") as im:
        assert im.mode == "L" and im.size == (3 * (4 * 14 + 2) + 2, 2 * (4 * 14 + 2) + 2)
        pixels = np.asarray(im)
    assert pixels.max() == 255 and pixels[2, 2] == 0 and pixels[1, 1] == 128
    stats = {"source": "builtin:digits", "tokenizer": "pixels", "vocab_size": 21, "data_hash": "h",
             "image": {"height": 8, "width": 8, "levels": 17, "labels": [],
                       "baseline": {"valid_bpd": 2.4, "test_bpd": 2.5}}}
    table = comparison_markdown([{"model": "m", "test_bpc": 1.0, "valid_bpd": 1.1, "test_bpd": 1.0,
                                  "test_nats_per_image": 44.36}], stats)
    assert "test bits/dim" in table and "test bpc" not in table and "| 44.36 |" in table
    assert f"test 2.5000 bits/dim ({2.5 * math.log(2) * 64:.2f} nats/image)" in table


def test_image_contexts_keep_the_image_origin_and_blank_or_shuffle_older_pixels():
    from pipeline.scoring.diagnostics import ImageContexts, context_losses
    layout = ImageLayout(2, 3, 4)
    images = np.array([[[1, 2, 3], [3, 2, 1]], [[0, 1, 2], [2, 1, 0]]])
    stream = np.concatenate([[BOS_ID], layout.example_ids(images)])
    stream[layout.example_tokens] = BOS_ID          # the second image's <bos> (as BosStream reads it)
    targets = np.array([5, 7 + 5])                  # pixel 4 of each image
    view = ImageContexts(np.array([0, 7]), layout.prefix, LEVEL_OFFSET, layout.width, layout.pixels)
    full, lengths = view.full(stream, targets)
    assert lengths.tolist() == [5, 5] and full[0].tolist() == [BOS_ID, 5, 6, 7, 7]
    assert view.blanked(full, lengths, 3)[0].tolist() == [BOS_ID, 4, 6, 7, 7]       # pixel 0 blanked
    assert view.blanked(full, lengths, 9)[1].tolist() == full[1].tolist()
    shuffled = view.shuffled(full, lengths, 1, seed=3)
    assert shuffled[:, :1].tolist() == [[BOS_ID]] * 2 and shuffled[:, -1].tolist() == full[:, -1].tolist()
    assert sorted(shuffled[0].tolist()) == sorted(full[0].tolist())
    seen = []

    def score(ctx, lens, y):                        # records what a model is shown
        seen.append((ctx.copy(), lens.copy()))
        return np.zeros(len(ctx))
    context_losses(score, stream, targets, [1, 3], view)
    ctx, lens = seen[0]
    assert lens.tolist() == [5, 5, 5, 5] and ctx[0].tolist() == [BOS_ID, 4, 4, 4, 7]


def test_the_generate_command_draws_images_and_writes_a_png(tmp_path, capsys):
    """``python -m pipeline.generate models/<arch> --prompt CLASS --png F``: an image per prompt,
    printed as rows of levels and written side by side; a text model refuses --png."""
    from pipeline.data.image_layout import PIXELS
    from pipeline.data.tokenizers import Tokenizer, learn_tokenizer
    from pipeline.generate import main
    from pipeline.models import build_model
    from pipeline.models.catalog import parse_model
    from pipeline.models.network import save_network
    layout = ImageLayout(3, 4, 2, ("a", "b"))
    Tokenizer(PIXELS, layout.tokens(), layout.options()).save(tmp_path / "vocab.json")
    cfg = parse_model({"family": "pixelcnn", "embed_dim": 4, "units": 8, "layers": 2, "kernel_size": 3,
                       "first_kernel": 3}, "model")
    v = len(layout.tokens())
    save_network(tmp_path / "net", build_model(cfg, v, 16, image=layout.model_config()), cfg, 16, v)
    png = tmp_path / "out.png"
    assert main([str(tmp_path / "net"), "--vocab", str(tmp_path / "vocab.json"), "--prompt", "a", "--prompt", "b",
                 "--seed", "3", "--png", str(png)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "=== prompt: 'a' (3x4, 2 levels)" and out[4] == "=== prompt: 'b' (3x4, 2 levels)"
    assert all(len(line.split()) == 4 and set(line.split()) <= {"0", "1"} for line in out[1:4] + out[5:8])
    with Image.open(png) as im:
        assert im.size == (2 * (4 * 14 + 2) + 2, 3 * 14 + 4)
    assert main([str(tmp_path / "net"), "--vocab", str(tmp_path / "vocab.json"), "--prompt", "zebra"]) == 2
    assert "prompt: unknown class label 'zebra'" in capsys.readouterr().err
    text_cfg = parse_model({"family": "gru", "embed_dim": 4, "units": 8}, "model")
    tok = learn_tokenizer("char", "abc\n", 10)
    tok.save(tmp_path / "text.json")
    save_network(tmp_path / "gru", build_model(text_cfg, tok.vocab_size, 16), text_cfg, 16, tok.vocab_size)
    assert main([str(tmp_path / "gru"), "--vocab", str(tmp_path / "text.json"), "--prompt", "a",
                 "--png", str(tmp_path / "x.png")]) == 2
    assert "is a model of text, not of images" in capsys.readouterr().err and not (tmp_path / "x.png").exists()
