"""Hugging Face datasets as a corpus source, offline: datasets the tests build themselves.

Skipped without the optional `datasets` package (CI installs only .[dev]; `pip install -e ".[hf]"`).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

datasets = pytest.importorskip("datasets", reason="the optional extra is not installed: pip install -e \".[hf]\"")

from attnmt.config import compose  # noqa: E402
from attnmt.data.corpus import read_lines  # noqa: E402
from attnmt.data.hf import HFDataset  # noqa: E402
from attnmt.errors import DataError  # noqa: E402

from conftest import TINY_SIZES, TINY_VOCAB_SIZE, WRITTEN_VOCAB_SIZE, _find_multi30k, make_tiny_datamodule  # noqa: E402
from test_train import TINY_MODEL  # noqa: E402

SPLITS = {"train": "train", "validation": "val", "test": "test"}  # dataset split -> tiny corpus file


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def tiny_rows(parallel_dir: Path, split: str) -> tuple[list[str], list[str]]:
    return read_lines(parallel_dir / f"{split}.en"), read_lines(parallel_dir / f"{split}.fr")


@pytest.fixture(scope="module")
def saved_dataset(tiny_parallel_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny corpus as a DatasetDict in the WMT layout ({"translation": {"en": .., "fr": ..}}), saved to disk;
    row 3 of train has an empty French side and row 5 a line break inside its English side."""
    folder = tmp_path_factory.mktemp("hf") / "tiny_wmt"
    parts = {}
    for hf_split, ours in SPLITS.items():
        en, fr = tiny_rows(tiny_parallel_dir, ours)
        if hf_split == "train":
            fr[2] = ""
            en[4] = en[4].replace(" ", "\n", 1)
        parts[hf_split] = datasets.Dataset.from_dict({"translation": [{"en": e, "fr": f} for e, f in zip(en, fr)]})
    datasets.DatasetDict(parts).save_to_disk(str(folder))
    return folder


def test_saved_dataset_dict_prepares_like_text_files(saved_dataset: Path, tiny_parallel_dir: Path, tmp_path: Path) -> None:
    corpus = HFDataset(str(saved_dataset), "en", "fr", export_dir=tmp_path / "export")
    assert corpus.splits == ["train", "val", "test"]
    src, tgt = corpus.files("train")
    en, fr = tiny_rows(tiny_parallel_dir, "train")
    assert len(read_lines(src)) == len(read_lines(tgt)) == TINY_SIZES["train"]  # one line per row, line breaks joined
    assert read_lines(src)[4] == en[4] and read_lines(tgt)[2] == ""
    assert corpus.files("train") == (src, tgt)  # exported once
    again = HFDataset(str(saved_dataset), "en", "fr", export_dir=tmp_path / "export")
    before = src.stat().st_mtime_ns
    assert again.files("train") == (src, tgt) and src.stat().st_mtime_ns == before  # reused by a new process

    dm = make_tiny_datamodule(tiny_parallel_dir, tmp_path / "cache")
    dm.corpus = corpus
    dm.setup("fit")
    meta = dm.dataset("train").meta
    assert meta["dropped_empty"] == 1
    assert len(dm.dataset("train")) + meta["dropped_long"] == TINY_SIZES["train"] - 1
    assert dm.references("val") == tiny_rows(tiny_parallel_dir, "val")[1]
    assert dm.sources("test") == tiny_rows(tiny_parallel_dir, "test")[0]


def test_local_parquet_files_with_one_column_per_language(tiny_parallel_dir: Path, tmp_path: Path) -> None:
    files = {}
    for hf_split, ours in SPLITS.items():
        en, fr = tiny_rows(tiny_parallel_dir, ours)
        files[hf_split] = str(tmp_path / f"{hf_split}.parquet")
        datasets.Dataset.from_dict({"english": en, "french": fr}).to_parquet(files[hf_split])
    corpus = HFDataset(None, "en", "fr", data_files=files, translation_key=None, src_key="english", tgt_key="french",
                       export_dir=tmp_path / "export", hf_cache_dir=tmp_path / "hf_cache")
    src, tgt = corpus.files("val")
    assert (read_lines(src), read_lines(tgt)) == tiny_rows(tiny_parallel_dir, "val")


def test_layout_mistakes_name_the_key_and_row(tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    rows = [{"en": "A dog.", "de": "Ein Hund."}, {"en": "A cat.", "de": None}]
    part = datasets.Dataset.from_dict({"translation": rows, "number": [1, 2]})
    datasets.DatasetDict({"train": part, "validation": part}).save_to_disk(str(folder))
    with pytest.raises(DataError, match=r"'translation' has no language key 'fr' \(data.corpus.tgt_key\); it has: en, de"):
        HFDataset(str(folder), "en", "fr", test=None, export_dir=tmp_path / "x").files("train")
    with pytest.raises(DataError, match=r"no column 'text' \(data.corpus.translation_key\); columns: translation, number"):
        HFDataset(str(folder), "en", "fr", test=None, translation_key="text", export_dir=tmp_path / "x").files("val")
    with pytest.raises(DataError, match=r"split 'validation', row 1: 'number' is a int, not text"):
        HFDataset(str(folder), "en", "fr", test=None, translation_key=None, src_key="number", tgt_key="number",
                  export_dir=tmp_path / "x").files("val")
    with pytest.raises(DataError, match=r"has no split 'test' .*it has: train, validation"):
        HFDataset(str(folder), "en", "de", export_dir=tmp_path / "x").files("test")
    assert not list((tmp_path / "x").rglob("*.part"))  # nothing half-written left behind
    src, tgt = HFDataset(str(folder), "en", "de", test=None, export_dir=tmp_path / "x").files("train")
    assert read_lines(tgt) == ["Ein Hund.", ""]  # a missing side is an empty line: dropped and counted when read


@pytest.mark.slow
def test_hf_config_trains_and_evaluates_offline(saved_dataset: Path, tmp_path: Path) -> None:
    """data=hf end to end: prepare, train a few steps, evaluate the test split (beam 1)."""
    from attnmt.evaluate import evaluate
    from attnmt.train import train

    run = tmp_path / "run"
    vocab = TINY_VOCAB_SIZE if _find_multi30k() is not None else WRITTEN_VOCAB_SIZE
    overrides = [
        "model=transformer", *TINY_MODEL["transformer"], "trainer=cpu", "data=hf", f"data.corpus.path={saved_dataset}",
        f"data.corpus.export_dir={tmp_path / 'export'}", f"data.cache_dir={tmp_path / 'cache'}",
        f"data.tokenizer.vocab_size={vocab}", "data.max_tokens=512", "data.num_workers=0", "data.num_proc=1",
        f"paths.output_dir={run}", "decode.validation.max_len_b=5", "trainer.enable_model_summary=false",
        "debug=limit", "trainer.max_epochs=1", "trainer.limit_train_batches=3", "logger=none",
    ]
    cfg = compose(overrides)
    metrics = train(cfg)
    assert metrics["global_step"] == 3
    (run / ".hydra").mkdir()
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    summary = evaluate(run, splits=["test"], beam_sizes=(1,), max_len_a=0.5, max_len_b=4, device="cpu")
    hyps = read_lines(next((run / "eval").glob("test.*.hyp")))
    assert len(hyps) == TINY_SIZES["test"]
    assert summary["results"]


@pytest.mark.parametrize("data", ["wmt14_en_de", "wmt14_en_fr"])
def test_wmt14_config_prepares_and_steps_on_a_local_copy(data: str, saved_dataset: Path, tmp_path: Path) -> None:
    """The WMT14 data configs (BPE, byte fallback, max_len 250, hub layout) with the hub dataset
    replaced by a local copy in the same layout, and the Transformer-base preset narrowed: 2 steps."""
    from attnmt.train import train

    from test_presets import NARROW

    overrides = [
        f"data={data}", f"data.corpus.path={saved_dataset}", "data.corpus.name=null", "data.corpus.tgt_lang=fr",
        f"data.corpus.export_dir={tmp_path / 'export'}", f"data.cache_dir={tmp_path / 'cache'}",
        "data.tokenizer.vocab_size=400", "data.max_tokens=512", "data.num_workers=0",
        "model=transformer_base", *NARROW["transformer_base"], "trainer=cpu", f"paths.output_dir={tmp_path / 'run'}",
        "decode.validation.max_len_b=5", "trainer.enable_model_summary=false", "debug=limit", "trainer.max_epochs=1",
        "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "logger=none",
    ]
    cfg = compose(overrides)
    assert cfg.data.tokenizer.model_type == "bpe" and cfg.data.tokenizer.byte_fallback and cfg.data.max_len == 250
    metrics = train(cfg)
    assert metrics["global_step"] == 2 and math.isfinite(metrics["train/loss"])
