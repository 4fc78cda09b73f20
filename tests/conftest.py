"""Shared fixtures: the raw Multi30k files, a tiny parallel corpus and a ready tiny DataModule.

Heavy imports (lightning, sentencepiece) happen inside fixtures, so collecting tests that do not
need data stays fast. The only global setting is the thread count below.
"""

from __future__ import annotations

import gzip
import itertools
import os
from pathlib import Path

import pytest
import torch

# Tests use tiny tensors: one intra-op thread is faster than two, and it stays fast when other
# processes (a second DDP rank, a parallel job) share the two cores. Spawned processes inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
MULTI30K_REQUIRED = ("train.en.gz", "train.fr.gz", "val.en.gz", "val.fr.gz", "test_2016_flickr.en.gz", "test_2016_flickr.fr.gz")

TINY_SIZES = {"train": 200, "val": 20, "test": 20}
TINY_VOCAB_SIZE = 300  # with Multi30k sentences; the written fallback corpus only supports WRITTEN_VOCAB_SIZE
WRITTEN_VOCAB_SIZE = 64


def _find_multi30k() -> Path | None:
    candidates = [os.environ.get("ATTNMT_MULTI30K_DIR"), REPO / "data" / "multi30k", REPO.parent / "shared" / "data" / "multi30k"]
    for candidate in candidates:
        if candidate and all((Path(candidate) / name).is_file() for name in MULTI30K_REQUIRED):
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def multi30k_dir() -> Path:
    """Folder with the raw Multi30k .gz files (env ATTNMT_MULTI30K_DIR, data/multi30k, ../shared/...)."""
    found = _find_multi30k()
    if found is None:
        pytest.skip("no local copy of Multi30k (set ATTNMT_MULTI30K_DIR to a folder with the .gz files)")
    return found


def _written_pairs(count: int, offset: int) -> list[tuple[str, str]]:
    """Small made-up English/French pairs, used only when Multi30k is not available."""
    subjects = [("a man", "un homme"), ("a woman", "une femme"), ("a child", "un enfant"), ("two dogs", "deux chiens"),
                ("an old man", "un vieil homme"), ("a young girl", "une jeune fille"), ("three workers", "trois ouvriers")]
    verbs = [("is walking", "marche"), ("is sitting", "est assis"), ("is playing", "joue"), ("is running", "court"),
             ("is waiting", "attend"), ("is reading", "lit")]
    places = [("on the beach", "sur la plage"), ("in the street", "dans la rue"), ("near a red car", "près d'une voiture rouge"),
              ("under a tree", "sous un arbre"), ("in a small kitchen", "dans une petite cuisine"), ("at night", "la nuit"),
              ("behind the blue house", "derrière la maison bleue"), ("next to a green bicycle", "à côté d'un vélo vert")]
    combos = itertools.islice(itertools.cycle(itertools.product(subjects, verbs, places)), offset, offset + count)
    return [(f"{s[0].capitalize()} {v[0]} {p[0]}.", f"{s[1].capitalize()} {v[1]} {p[1]}.") for s, v, p in combos]


@pytest.fixture(scope="session")
def tiny_parallel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Plain-text en/fr files train.* (200 pairs), val.* and test.* (20 each).

    Taken from the start of Multi30k train / val / test_2016_flickr when available, else written.
    """
    folder = tmp_path_factory.mktemp("tiny_parallel")
    source = _find_multi30k()
    multi30k_split = {"train": "train", "val": "val", "test": "test_2016_flickr"}
    offset = 0
    for split, size in TINY_SIZES.items():
        if source is not None:
            for lang in ("en", "fr"):
                with gzip.open(source / f"{multi30k_split[split]}.{lang}.gz", "rt", encoding="utf-8") as handle:
                    lines = [line.rstrip("\n") for line in itertools.islice(handle, size)]
                (folder / f"{split}.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
        else:
            pairs = _written_pairs(size, offset)
            offset += size
            (folder / f"{split}.en").write_text("\n".join(en for en, _ in pairs) + "\n", encoding="utf-8")
            (folder / f"{split}.fr").write_text("\n".join(fr for _, fr in pairs) + "\n", encoding="utf-8")
    return folder


def make_tiny_datamodule(parallel_dir: Path, cache_dir: Path, **overrides):
    """A TranslationDataModule over the tiny corpus (joint unigram vocabulary of 300), not built yet."""
    from attnmt.data.corpus import ParallelText
    from attnmt.data.datamodule import TranslationDataModule

    vocab_size = TINY_VOCAB_SIZE if _find_multi30k() is not None else WRITTEN_VOCAB_SIZE
    settings = dict(
        tokenizer={"joint": True, "model_type": "unigram", "vocab_size": vocab_size},
        cache_dir=cache_dir, max_tokens=512, eval_max_tokens=1024, max_len=64,
        num_workers=0, pin_memory=False, seed=0,
    )
    settings.update(overrides)
    corpus = ParallelText("en", "fr", train=str(parallel_dir / "train"), val=str(parallel_dir / "val"),
                          test={"test": str(parallel_dir / "test")})
    return TranslationDataModule(corpus, **settings)


@pytest.fixture(scope="session")
def tiny_datamodule_factory(tiny_parallel_dir: Path):
    """make(cache_dir, **overrides) -> an unbuilt TranslationDataModule over the tiny corpus."""
    return lambda cache_dir, **overrides: make_tiny_datamodule(tiny_parallel_dir, cache_dir, **overrides)


@pytest.fixture(scope="session")
def tiny_datamodule(tiny_parallel_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A set-up TranslationDataModule over the tiny corpus: vocabulary 300 (joint; 64 without
    Multi30k), max_tokens 512,
    splits train / val / test, num_workers 0. Shared by the session: do not change its settings."""
    dm = make_tiny_datamodule(tiny_parallel_dir, tmp_path_factory.mktemp("tiny_cache"))
    dm.setup("fit")
    return dm


@pytest.fixture(scope="session")
def multi30k_datamodule(multi30k_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """Multi30k en-fr with the default settings (joint unigram 8000, max_tokens 4096), built in a
    temporary cache: costs one sentencepiece training (a few seconds)."""
    from attnmt.data.datamodule import TranslationDataModule
    from attnmt.data.multi30k import Multi30k

    root = tmp_path_factory.mktemp("multi30k_en_fr")
    corpus = Multi30k("en", "fr", cache_dir=root / "raw", local_dir=multi30k_dir)
    dm = TranslationDataModule(corpus, {"joint": True, "model_type": "unigram", "vocab_size": 8000},
                               cache_dir=root / "cache", num_workers=0, pin_memory=False)
    dm.setup("fit")
    return dm
