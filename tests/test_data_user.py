"""A user's own data: text_files, image_folder, array_file and hf_dataset on files the tests make: each passes the
conformance kit, reads what it should (known answers), and refuses bad input with one line naming the field."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from collapselab import testing as T
from collapselab.data import make_source, source_class
from collapselab.data.corpora import wikipedia_articles
from collapselab.data.image_folder import ImageFolderConfig
from collapselab.data.text_files import TextFilesConfig, read_articles
from collapselab.errors import ConfigError
from collapselab.metrics.kr import source_items
from collapselab.seeding import SeedTree

from .helpers import make_experiment

TEXT = {"tokenizer": "tiny", "vocab": 1000, "window": 16}


@pytest.fixture(scope="module")
def articles():
    return wikipedia_articles()[:20]


@pytest.fixture(scope="module")
def text_folder(tmp_path_factory, articles):
    folder = tmp_path_factory.mktemp("texts")
    for i, d in enumerate(articles):
        (folder / f"{i:02d}.txt").write_text(d.text, encoding="utf-8")
    (folder / "notes.csv").write_text("ignored,file\n")  # other suffixes are not read
    return folder


# -- text_files ------------------------------------------------------------------------------------------
def test_text_files_reads_one_article_per_file_and_conforms(text_folder, articles):
    cfg = TextFilesConfig(path=str(text_folder), **TEXT)
    assert sorted(d.text for d in read_articles(cfg)) == sorted(d.text.strip() for d in articles)
    source = make_source(cfg, 40, 40)
    T.check_source(source)
    parts = source.documents
    assert sum(len(v) for v in parts.values()) == 20 and len(parts["pool"]) == 10  # 3/5/1/1 of each 10
    # the KR probe builds items from the user's articles
    assert len(source_items(source, SeedTree(0), 0)) > 0


def test_jsonl_parquet_and_separator_give_the_same_articles(tmp_path, text_folder, articles):
    import polars as pl

    texts = [d.text for d in articles]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps({"body": t, "id": i}) for i, t in enumerate(texts)))
    pl.DataFrame({"body": texts}).write_parquet(tmp_path / "a.parquet")
    (tmp_path / "all.txt").write_text("\n\n\n".join(texts))
    want = sorted(t.strip() for t in texts)
    for path, extra in ((tmp_path / "a.jsonl", {"field": "body"}), (tmp_path / "a.parquet", {"field": "body"}),
                        (tmp_path / "all.txt", {"separator": "\n\n\n"})):
        got = read_articles(TextFilesConfig(path=str(path), **TEXT, **extra))
        assert sorted(d.text for d in got) == want, path.name
    glob = read_articles(TextFilesConfig(path=str(text_folder / "1*.txt"), **TEXT))
    assert len(glob) == 10


@pytest.mark.parametrize(("make", "settings", "message"), [
    (None, {"path": "nowhere"}, r"^data\.path: '.*nowhere' does not exist$"),
    ("empty", {}, r"^data\.path: the folder '.*' holds no \.txt, \.md, \.jsonl, \.parquet file$"),
    ("short", {}, r"^data\.path: '.*' holds no article of at least 8 words$"),
    ("jsonl", {"field": "text"}, r"^data\.field: 'text' is not a field of line 1 of '.*'; its fields: body$"),
    ("latin1", {}, r"^data\.path: '.*' is not UTF-8 text \(byte 3\)$"),
    ("few", {}, r"holds 1 article\(s\); the split into pretraining / pool / validation / test needs at least 4"),
])
def test_text_files_bad_input_names_the_field(tmp_path, make, settings, message):
    folder = tmp_path / "d"
    folder.mkdir()
    if make == "short":
        (folder / "a.txt").write_text("too short")
    elif make == "jsonl":
        (folder / "a.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    elif make == "latin1":
        (folder / "a.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    elif make == "few":
        (folder / "a.txt").write_text("one article of enough words to be kept by the reader here")
    cfg = TextFilesConfig(**{"path": str(folder), **TEXT, **settings})
    with pytest.raises(ConfigError, match=message):
        source_class(cfg).corpus(cfg)


# -- image_folder -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory):
    """120 of scikit-learn's 8x8 digits of classes 0-2 as PNGs, one subfolder per class, and one broken file."""
    from PIL import Image
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("images")
    d = load_digits()
    pixels = np.round(d.images / 16.0 * 255).astype(np.uint8)
    kept = {}
    for i in np.flatnonzero(d.target < 3)[:120]:
        (root / f"c{d.target[i]}").mkdir(exist_ok=True)
        name = root / f"c{d.target[i]}" / f"{i}.png"
        Image.fromarray(pixels[i]).save(name)
        kept[name.name] = pixels[i]
    (root / "c0" / "broken.png").write_bytes(b"not an image")
    return root, kept


def test_image_folder_reads_labels_pixels_and_conforms(digit_folder):
    root, kept = digit_folder
    cfg = ImageFolderConfig(path=str(root), size=8)
    with pytest.warns(UserWarning, match=r"1 of 121 image files .* could not be decoded and are skipped"):
        source = make_source(cfg, 20, 20)
        splits = source.splits()
    T.check_source(source)
    assert source.classes == 3 and source.class_names == ("c0", "c1", "c2")
    assert source.spec["shape"] == (1, 8, 8)
    x = np.concatenate([splits[p][0] for p in splits])
    assert len(x) == 120
    # pixels come back as byte / 255, exactly (size 8: no resampling)
    want = np.sort(np.stack(list(kept.values())).reshape(120, -1) / 255.0, axis=0)
    np.testing.assert_array_equal(np.sort(x.reshape(120, -1), axis=0), want.astype(np.float32))
    # stratified: every split holds every class
    assert all(set(splits[p][1].tolist()) == {0, 1, 2} for p in splits)
    with pytest.warns(UserWarning, match="could not be decoded"):
        assert make_source(ImageFolderConfig(path=str(root), size=28), 20, 20).spec["shape"] == (1, 28, 28)


def test_image_folder_refusals(tmp_path, digit_folder):
    root, _ = digit_folder
    one = tmp_path / "one" / "only"
    one.mkdir(parents=True)
    (one / "a.png").write_bytes((root / "c1" / next(iter((root / "c1").iterdir())).name).read_bytes())
    with pytest.raises(ConfigError, match=r"^data\.path: a labelled image folder needs at least 2 class subfolders, "
                                          r"found 1 \('only'\); for unlabelled images set data\.labels: none$"):
        make_source(ImageFolderConfig(path=str(tmp_path / "one")), 1, 1).splits()
    bad = tmp_path / "bad" / "x"
    bad.mkdir(parents=True)
    (bad / "a.png").write_bytes(b"no")
    with pytest.raises(ConfigError, match=r"^data\.path: none of the 1 image files in '.*' could be decoded$"):
        make_source(ImageFolderConfig(path=str(tmp_path / "bad"), labels="none"), 1, 1).splits()
    # without labels the classifier metrics are refused at validation (no I/O)
    with pytest.raises(ValueError, match=r"^metrics: class_entropy need\(s\) class labels"):
        make_experiment(family={"name": "vae", "hidden": 16, "latent": 2, "max_epochs": 1},
                        data={"source": "image_folder", "path": "/nowhere", "labels": "none"}, n=10,
                        metrics=["test_nelbo", "class_entropy"])


# -- array_file -------------------------------------------------------------------------------------------
def test_array_files_of_every_format_give_the_same_rows(tmp_path):
    import polars as pl

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3)) * [1.0, 2.0, 3.0] + [5.0, 0.0, -1.0]
    y = x @ [1.0, -2.0, 0.5] + rng.normal(size=300)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "xy.npz", x=x, y=y)
    frame = pl.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": y})
    frame.write_csv(tmp_path / "xy.csv")
    frame.write_parquet(tmp_path / "xy.parquet")
    tree = SeedTree(1)
    rows = []
    for name, extra in (("x.npy", {}), ("xy.npz", {"key": "x"}), ("xy.csv", {"columns": ["a", "b", "c"]}),
                        ("xy.parquet", {"columns": ["a", "b", "c"]})):
        s = make_source(make_experiment(family={"name": "gaussian"}, n=50, metrics=["w1"],
                                        data={"source": "array_file", "path": str(tmp_path / name), **extra}).data,
                        100, 50)
        T.check_source(s)
        assert s.kind == "points" and s.spec == {"dim": 3} and s.pool_size == 200
        rows.append(s.take(tree, 0, 2, 0, 50)["x"])
    for r in rows[1:]:
        np.testing.assert_allclose(r, rows[0], rtol=1e-15)  # csv round-trips doubles exactly
    reg = make_experiment(family={"name": "linear"}, n=50, metrics=["heldout_nll"],
                          data={"source": "array_file", "path": str(tmp_path / "xy.parquet"), "target": "y",
                                "standardize": True})
    s = make_source(reg.data, 100, 50)
    assert s.kind == "regression" and source_class(reg.data).__name__ == "ArrayRegression"
    T.check_source(s)
    train = s._split(tree)[0]
    np.testing.assert_allclose(train["x"].mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(train["x"].std(axis=0), 1, atol=1e-12)


@pytest.mark.parametrize(("content", "settings", "message"), [
    ("a,b\n1,2\n3,x\n", {}, r"^data\.columns: column 'b' holds String values, not numbers; allowed: numeric"),
    ("a,b\n1,2\n3,4\n", {"columns": ["a", "z"]}, r"^data\.columns: 'z' is not a column of '.*'; its columns: a, b$"),
    ("a,b\n1,2\n3,4\n", {"target": "q"}, r"^data\.target: 'q' is not a column"),
    ("a,b\n1,2\n3,NaN\n", {}, r"^data\.columns \('b'\): holds NaN or infinite values"),
    ("a,b\n1,2\n3,2\n", {"columns": ["a", "b"]}, r"^data\.columns: column\(s\) 'b' of '.*' hold one value"),
    ("a,y\n1,2\n3,4\n", {"columns": ["a", "y"], "target": "y"}, r"^data\.columns: 'y' is the target"),
])
def test_array_file_bad_input_names_the_field(tmp_path, content, settings, message):
    """Strings, NaN, a constant column, the target among the features: one line naming the field."""
    from collapselab.data.array_file import ArrayFileConfig, load_rows

    (tmp_path / "t.csv").write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_rows(ArrayFileConfig(path=str(tmp_path / "t.csv"), **settings))


# -- hf_dataset -------------------------------------------------------------------------------------------
def test_hf_dataset_text_and_images_from_disk(tmp_path, articles):
    datasets = pytest.importorskip("datasets")
    from PIL import Image
    from sklearn.datasets import load_digits

    texts = [d.text for d in articles]
    datasets.Dataset.from_dict({"article": texts}).save_to_disk(str(tmp_path / "saved"))
    (tmp_path / "js").mkdir()
    (tmp_path / "js" / "part.jsonl").write_text("\n".join(json.dumps({"article": t}) for t in texts))
    for path in (tmp_path / "saved", tmp_path / "js"):
        cfg = {"source": "hf_dataset", "path": str(path), "text": "article", **TEXT}
        exp = make_experiment(family={"name": "causal_lm", "model": "tiny"}, data=cfg, n=40, metrics=["distinct_2"])
        s = make_source(exp.data, 40, 40)
        assert s.kind == "text" and sorted(d.text for d in s.corpus(exp.data)) == sorted(t.strip() for t in texts)
        T.check_source(s)
    d = load_digits()
    pick = np.flatnonzero(d.target < 3)[:90]
    imgs = [Image.fromarray(np.round(d.images[i] / 16 * 255).astype(np.uint8)) for i in pick]
    datasets.Dataset.from_dict({"img": imgs, "y": d.target[pick].tolist()}).save_to_disk(str(tmp_path / "im"))
    exp = make_experiment(family={"name": "vae", "hidden": 16, "latent": 2, "max_epochs": 1}, n=20,
                          data={"source": "hf_dataset", "path": str(tmp_path / "im"), "image": "img", "label": "y",
                                "size": 8}, metrics=["test_nelbo"])
    s = make_source(exp.data, 10, 20)
    assert s.kind == "images" and s.classes == 3 and s.spec["shape"] == (1, 8, 8)
    T.check_source(s)
    from collapselab.data.hf_dataset import HFDatasetConfig, load_records

    with pytest.raises(ConfigError, match=r"^data\.text: 'body' is not a column of '.*'; its columns: article$"):
        load_records(HFDatasetConfig(path=str(tmp_path / "saved"), text="body"))


# -- through the CLI: one line, exit 2, nothing written ---------------------------------------------------
def test_missing_user_data_is_one_line_exit_2(tmp_path):
    exp = tmp_path / "e.yaml"
    exp.write_text(yaml.safe_dump({"name": "mine", "family": {"name": "gaussian"}, "n": 50, "generations": 1,
                                   "seeds": 1, "metrics": ["w1"],
                                   "data": {"source": "array_file", "path": "rows.npy"}}))
    done = subprocess.run([sys.executable, "-m", "collapselab", "run", str(exp), "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert f"data.path: '{tmp_path / 'rows.npy'}' does not exist" in done.stderr  # relative to the experiment file
    assert not (tmp_path / "out").exists()


def test_text_files_of_wikipedia_in_corpus_order_reproduce_the_wikipedia_source(tmp_path):
    """Wikipedia's articles written one per file, read with ``split_seed: null``: the same split, tokenizer,
    whole-article chunks, probe items and held-out windows as the wikipedia source, so a run on them gives
    quickstart-text's numbers (the README's example)."""
    from collapselab.data.text import WikipediaConfig

    for i, doc in enumerate(wikipedia_articles()):
        (tmp_path / f"{i:03d}.txt").write_text(doc.text, encoding="utf-8")
    common = {"tokenizer": "tiny", "vocab": 1000, "window": 16, "chunks": 2}
    wiki = make_source(WikipediaConfig(**common), 64, 80)
    mine = make_source(TextFilesConfig(path=str(tmp_path), split_seed=None, **common), 64, 80)
    assert {p: [d.text for d in v] for p, v in mine.documents.items()} == \
        {p: [d.text for d in v] for p, v in wiki.documents.items()}
    assert mine.tokenizer_folder == wiki.tokenizer_folder  # the cached tokenizer (and pretraining) are reused
    for batch in (0, 1):
        tree = SeedTree(3)
        np.testing.assert_array_equal(mine.layout(tree, batch).windows, wiki.layout(tree, batch).windows)
        np.testing.assert_array_equal(mine.heldout(tree, batch)["x"], wiki.heldout(tree, batch)["x"])
        assert source_items(mine, tree, batch) == source_items(wiki, tree, batch)


def test_array_file_refuses_complex_garbage_and_string_columns(tmp_path):
    import polars as pl

    from collapselab.data.array_file import ArrayFileConfig, load_rows

    np.save(tmp_path / "c.npy", np.ones((5, 2)) + 1j)
    (tmp_path / "g.npy").write_bytes(b"not numpy at all")
    pl.DataFrame({"a": ["1.5", "2.5"], "b": [1.0, 2.0]}).write_parquet(tmp_path / "s.parquet")
    for name, message in (("c.npy", r"^data\.path: holds complex numbers"),
                          ("g.npy", r"^data\.path: cannot read '.*g\.npy' as a NumPy \.npy file"),
                          ("s.parquet", r"^data\.columns: column 'a' holds String values, not numbers")):
        with pytest.raises(ConfigError, match=message):
            load_rows(ArrayFileConfig(path=str(tmp_path / name)))


def test_image_decoding_edge_cases(tmp_path, monkeypatch):
    """16-bit images keep their range; float arrays in [0, 1] are intensities; a decompression bomb, a None or an
    int is undecodable (skipped), not a crash; images directly in a labelled folder are skipped with a warning; a
    class whose images all fail is dropped; an existing path with glob characters is taken literally."""
    from PIL import Image

    from collapselab.data import image_folder as F

    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as im:
        assert im.mode.startswith("I")
        got = F.to_grey(im, 8)
    np.testing.assert_allclose(got, ramp / 65535.0, atol=2e-3)
    np.testing.assert_allclose(F.to_grey(np.full((4, 4), 0.5), 4), 0.5, atol=2.5e-3)
    assert F.to_grey(3, 4) is None and F.to_grey(None, 4) is None
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 8)  # 8 x 8 = 64 > 2 x 8: a "bomb"
    assert F._decode(tmp_path / "deep.png", 8) is None
    monkeypatch.undo()
    root = tmp_path / "odd[1]"
    for cls, n in (("a", 12), ("b", 12), ("c", 3)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            if cls == "c":
                (root / cls / f"{i}.png").write_bytes(b"broken")
            else:
                Image.fromarray(np.full((8, 8), 40 * i % 255, np.uint8)).save(root / cls / f"{i}.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "loose.png")
    with pytest.warns(UserWarning) as caught:
        splits, names = F.load_folder(ImageFolderConfig(path=str(root), size=8))
    text = " ".join(str(w.message) for w in caught)
    assert "1 images directly in" in text and "3 of 27 image files" in text and "dropped: c" in text
    assert names == ("a", "b") and sum(len(v[1]) for v in splits.values()) == 24


def test_hf_labels_must_be_integers_and_are_renumbered(tmp_path):
    datasets = pytest.importorskip("datasets")
    from collapselab.data.hf_dataset import HFDatasetConfig, hf_images

    img = [np.full((8, 8), 30 * (i % 8), np.uint8) for i in range(60)]
    must = r"^data\.label: 'y' must hold integer class labels; found "
    for name, labels, message in (("none", [None] + [0, 5] * 29 + [5], must + "None"),
                                  ("str", ["cat", "dog"] * 30, must + "'cat'"),
                                  ("float", [0.5, 1.5] * 30, must + r"0\.5")):
        datasets.Dataset.from_dict({"img": img, "y": labels}).save_to_disk(str(tmp_path / name))
        with pytest.raises(ConfigError, match=message):
            hf_images(HFDatasetConfig(path=str(tmp_path / name), image="img", label="y"))
    datasets.Dataset.from_dict({"img": img, "y": [0, 45] * 30}).save_to_disk(str(tmp_path / "sparse"))
    splits, classes = hf_images(HFDatasetConfig(path=str(tmp_path / "sparse"), image="img", label="y", size=8))
    assert classes == 2 and set(splits["train"][1].tolist()) == {0, 1}
    datasets.Dataset.from_dict({"img": img, "y": [0, 1] * 30}).save_to_disk(str(tmp_path / "ints"))
    with pytest.raises(ConfigError, match=r"^data\.image: none of the 60 records of '.*' could be decoded"):
        hf_images(HFDatasetConfig(path=str(tmp_path / "ints"), image="y", label="y"))
