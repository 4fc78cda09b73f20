"""TranslationDataModule: caching across builds, filtering, alignment with references, Hydra, Lightning."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from attnmt.config import compose
from attnmt.data.batch import Batch
from attnmt.data.vocab import EOS_ID
from attnmt.data.corpus import ParallelText
from attnmt.data import datamodule as datamodule_module
from attnmt.data.datamodule import TranslationDataModule
from attnmt.data.multi30k import Multi30k
from attnmt.errors import ConfigError, DataError

def normalise(text: str) -> str:
    """sentencepiece's default normalisation of plain text (NFKC + squeezed whitespace)."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def cache_state(cache: Path) -> dict[str, int]:
    return {str(p.relative_to(cache)): p.stat().st_mtime_ns for p in sorted(cache.rglob("*")) if p.is_file()}


def test_tiny_datamodule_is_ready(tiny_datamodule: TranslationDataModule) -> None:
    dm = tiny_datamodule
    assert dm.splits == ["train", "val", "test"]
    assert dm.joint_vocab and dm.src_vocab_size == dm.tgt_vocab_size == dm.tokenizer.src_vocab_size
    assert [len(dm.references(split)) for split in ("val", "test")] == [20, 20]
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, Batch)
    assert batch.src.max() < dm.src_vocab_size and batch.tgt_out.max() < dm.tgt_vocab_size
    assert len(dm.test_dataloader()) == 1


def test_batches_align_with_sources_and_references(tiny_datamodule: TranslationDataModule) -> None:
    dm = tiny_datamodule
    for split, shuffle in (("train", True), ("val", False)):
        sources, references = dm.sources(split), dm.references(split)
        seen = []
        for batch in dm.dataloader(split, shuffle=shuffle):
            assert batch.src.numel() <= (dm.max_tokens if shuffle else dm.eval_max_tokens)
            for row, index in enumerate(batch.index.tolist()):
                assert dm.tokenizer.decode_tgt([batch.tgt_out[row]])[0] == normalise(references[index])
                src = batch.src[row][batch.src_mask[row]].tolist()
                assert src == dm.tokenizer.encode_src([sources[index]])[0] + [EOS_ID]
            seen += batch.index.tolist()
        assert sorted(seen) == list(range(len(references)))


def test_second_build_hits_every_cache(tiny_datamodule_factory, tmp_path: Path) -> None:
    cold = tiny_datamodule_factory(tmp_path)
    cold.prepare_data()
    built = cache_state(tmp_path)
    cold.setup("fit")  # after prepare_data: nothing more to do (a rebuild would find hits)
    assert cold.cache_hits == {"tokenizer": False, "ids/train": False, "ids/val": False, "ids/test": False}
    assert cache_state(tmp_path) == built
    assert len(list(tmp_path.glob("spm-*"))) == 1 and len(list(tmp_path.glob("ids-*"))) == 3

    warm = tiny_datamodule_factory(tmp_path)
    warm.setup("fit")  # without prepare_data, as outside a Trainer
    assert warm.cache_hits == {"tokenizer": True, "ids/train": True, "ids/val": True, "ids/test": True}
    assert cache_state(tmp_path) == built  # nothing rewritten
    assert warm.tokenizer.fingerprint == cold.tokenizer.fingerprint
    assert [b.index.tolist() for b in warm.train_dataloader()] == [b.index.tolist() for b in cold.train_dataloader()]


def test_setting_changes_rebuild_only_what_depends_on_them(tiny_datamodule_factory, tmp_path: Path) -> None:
    tiny_datamodule_factory(tmp_path).setup()
    shorter = tiny_datamodule_factory(tmp_path, max_len=63)
    shorter.setup()
    assert shorter.cache_hits == {"tokenizer": True, "ids/train": False, "ids/val": True, "ids/test": True}
    bpe = tiny_datamodule_factory(tmp_path, tokenizer={"model_type": "bpe", "vocab_size": 200})
    bpe.setup()
    assert set(bpe.cache_hits.values()) == {False}


def test_max_len_filters_training_only(tiny_datamodule: TranslationDataModule, tiny_datamodule_factory,
                                       tmp_path: Path) -> None:
    full = tiny_datamodule.dataset("train")
    widths = np.maximum(full.src_lengths, full.tgt_lengths) + 1  # + EOS / BOS
    max_len = int(np.median(widths))
    dm = tiny_datamodule_factory(tmp_path, max_len=max_len)
    dm.setup()
    train = dm.dataset("train")
    assert len(train) == int((widths <= max_len).sum()) < len(full)
    assert max(train.src_lengths.max(), train.tgt_lengths.max()) + 1 <= max_len
    assert len(dm.dataset("val")) == 20  # evaluation never drops sentences
    assert len(dm.references("train")) == len(train)
    for batch in dm.train_dataloader():
        assert batch.src.size(1) <= max_len and batch.tgt_in.size(1) <= max_len
    with pytest.raises(ConfigError, match="data.max_len=2 drops every training pair"):
        tiny_datamodule_factory(tmp_path, max_len=2).setup()


def test_unknown_split_names_the_available_ones(tiny_datamodule: TranslationDataModule) -> None:
    with pytest.raises(DataError, match="unknown split 'nope'; available: train, val, test"):
        tiny_datamodule.dataloader("nope")


def test_another_sampling_of_the_text_trains_another_tokenizer(tiny_datamodule_factory, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """How the sample is drawn is part of the tokenizer's key: a cache built by another sampling
    is never taken for this one's. (The tiny text fits the sample whole: the same model comes out,
    so the token caches, keyed by its fingerprint, are reused.)"""
    first = tiny_datamodule_factory(tmp_path)
    first.setup("fit")
    monkeypatch.setattr(datamodule_module, "SAMPLE_FORMAT", "sample-pairs-v0-test")
    second = tiny_datamodule_factory(tmp_path)
    second.setup("fit")
    assert second.cache_hits["tokenizer"] is False and second.cache_hits["ids/train"] is True
    assert second.tokenizer.fingerprint == first.tokenizer.fingerprint
    assert len(list(tmp_path.glob("spm-*"))) == 2


def test_worker_processes_read_the_cache_files(tiny_datamodule_factory, tmp_path: Path) -> None:
    dm = tiny_datamodule_factory(tmp_path, num_workers=1)
    indices = sorted(i for batch in dm.val_dataloader() for i in batch.index.tolist())
    assert indices == list(range(20))


class _IndexRecorder(L.LightningModule):
    """The smallest module that trains: records which training pairs each epoch saw."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.epochs: list[list[int]] = []

    def on_train_epoch_start(self) -> None:
        self.epochs.append([])

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        self.epochs[-1] += batch.index.tolist()
        return (self.weight * batch.src_mask.sum()).square()

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_lightning_trainer_reshuffles_every_epoch(tiny_datamodule_factory, tmp_path: Path) -> None:
    dm = tiny_datamodule_factory(tmp_path)  # own instance: fit() attaches the trainer to it
    model = _IndexRecorder()
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=1, use_distributed_sampler=False, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    size = len(dm.dataset("train"))
    assert [sorted(epoch) for epoch in model.epochs] == [list(range(size))] * 2
    assert model.epochs[0] != model.epochs[1]  # set_epoch reached the sampler


def _compose(name: str, data_dir: Path, *overrides: str):
    """The project's config with data=<name>, as train.py composes it (the data configs share base.yaml)."""
    return compose([f"data={name}", f"paths.data_dir={data_dir}", "seed=5", "paths.output_dir=unused", *overrides])


@pytest.mark.parametrize("name", ["multi30k_en_fr", "multi30k_en_de"])
def test_multi30k_configs_instantiate(name: str, tmp_path: Path) -> None:
    dm = instantiate(_compose(name, tmp_path).data)  # builds nothing yet
    assert isinstance(dm, TranslationDataModule) and isinstance(dm.corpus, Multi30k)
    assert (dm.corpus.src_lang, dm.corpus.tgt_lang) == ("en", name[-2:])
    assert dm.corpus.cache_dir == tmp_path / "multi30k" and dm.cache_dir == tmp_path / "cache"
    assert (dm.tokenizer_settings.vocab_size, dm.max_tokens, dm.seed) == (8000, 4096, 5)


def test_parallel_text_config_builds(tiny_parallel_dir: Path, tiny_datamodule, tmp_path: Path) -> None:
    vocab_size = tiny_datamodule.tokenizer_settings.vocab_size  # one the tiny corpus supports
    cfg = _compose("parallel_text", tmp_path, f"data.corpus.train={tiny_parallel_dir / 'train'}",
                   f"data.corpus.val={tiny_parallel_dir / 'val'}", f"data.corpus.test={{blind: {tiny_parallel_dir / 'test'}}}",
                   f"data.tokenizer.vocab_size={vocab_size}", "data.num_workers=0")
    dm = instantiate(cfg.data)
    assert isinstance(dm.corpus, ParallelText)
    assert dm.splits == ["train", "val", "blind"] and dm.src_vocab_size == vocab_size
