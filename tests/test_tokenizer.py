"""SentencePiece tokenizer: round trips, special ids, save/load, content-keyed cache, race safety."""

from __future__ import annotations

import multiprocessing
import unicodedata
from pathlib import Path

import pytest

from attnmt.data.streaming import iter_pair_chunks
from attnmt.data.tokenizer import Tokenizer, TokenizerSettings, load_or_train
from attnmt.data.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from attnmt.errors import ConfigError, DataError

SMALL = TokenizerSettings(vocab_size=200)


def normalise(text: str) -> str:
    """What sentencepiece's default normaliser (nmt_nfkc) does to plain text: NFKC, runs of
    whitespace squeezed to one space, no leading/trailing space."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


@pytest.fixture(scope="module")
def tiny_text(tiny_parallel_dir: Path) -> tuple[list[str], list[str]]:
    chunks = list(iter_pair_chunks(tiny_parallel_dir / "train.en", tiny_parallel_dir / "train.fr"))
    return [s for c in chunks for s in c.src], [t for c in chunks for t in c.tgt]


@pytest.fixture(scope="module")
def small_tokenizer(tiny_text) -> Tokenizer:
    return Tokenizer.train(*tiny_text, SMALL)


def test_round_trip_on_multi30k(multi30k_datamodule) -> None:
    tok = multi30k_datamodule.tokenizer
    assert tok.joint and tok.src_vocab_size == tok.tgt_vocab_size == 8000
    for split in ("val", "test_2016_flickr"):
        sources, references = multi30k_datamodule.sources(split), multi30k_datamodule.references(split)
        decoded_src = tok.decode_tgt(tok.encode_src(sources))  # joint: one model decodes both sides
        decoded_tgt = tok.decode_tgt(tok.encode_tgt(references))
        assert decoded_src == [normalise(s) for s in sources]
        assert decoded_tgt == [normalise(s) for s in references]


def test_ids_have_no_specials_and_decode_stops_at_eos(small_tokenizer: Tokenizer, tiny_text) -> None:
    sentences = tiny_text[1][:5]
    ids = small_tokenizer.encode_tgt(sentences)
    assert all(i not in (PAD_ID, BOS_ID, EOS_ID) for seq in ids for i in seq)
    framed = [[BOS_ID, *seq, EOS_ID, *seq[:2], PAD_ID, PAD_ID] for seq in ids]  # junk after EOS is ignored
    assert small_tokenizer.decode_tgt(framed) == small_tokenizer.decode_tgt(ids) == [normalise(s) for s in sentences]
    pieces = small_tokenizer.tgt_pieces_from_ids([BOS_ID, *ids[0], EOS_ID])
    assert pieces[0] == "<s>" and pieces[-1] == "</s>" and len(pieces) == len(ids[0]) + 2
    assert small_tokenizer.src_pieces(tiny_text[0][0]) == small_tokenizer.src_pieces_from_ids(
        small_tokenizer.encode_src([tiny_text[0][0]])[0])


def test_unknown_characters_map_to_unk(small_tokenizer: Tokenizer) -> None:
    assert UNK_ID in small_tokenizer.encode_src(["Ω"])[0]


def test_save_load_round_trip(small_tokenizer: Tokenizer, tiny_text, tmp_path: Path) -> None:
    small_tokenizer.save(tmp_path / "tok")
    loaded = Tokenizer.load(tmp_path / "tok")
    assert loaded.fingerprint == small_tokenizer.fingerprint
    assert loaded.settings == small_tokenizer.settings
    assert loaded.encode_src(tiny_text[0]) == small_tokenizer.encode_src(tiny_text[0])
    model = tmp_path / "tok" / "joint.model"
    model.write_bytes(model.read_bytes()[:-10] + b"0123456789")  # changed model, stale fingerprint
    with pytest.raises(DataError, match="corrupt"):
        Tokenizer.load(tmp_path / "tok")
    with pytest.raises(DataError, match="cannot load the tokenizer"):
        Tokenizer.load(tmp_path / "missing")


def test_separate_and_bpe_models(tiny_text, tmp_path: Path) -> None:
    separate = Tokenizer.train(*tiny_text, TokenizerSettings(joint=False, model_type="bpe", vocab_size=150))
    assert not separate.joint and separate.src_vocab_size == separate.tgt_vocab_size == 150
    en, fr = tiny_text[0][0], tiny_text[1][0]
    assert "".join(separate.src_pieces(en)).replace("\u2581", " ").strip() == normalise(en)  # nothing lost
    assert separate.src_pieces_from_ids(separate.encode_src([en])[0]) == separate.src_pieces(en)
    assert separate.decode_tgt(separate.encode_tgt([fr])) == [normalise(fr)]
    reloaded = Tokenizer.load(separate.save(tmp_path / "sep"))
    assert sorted(p.name for p in (tmp_path / "sep").iterdir()) == ["src.model", "tgt.model", "tokenizer.json"]
    assert reloaded.fingerprint == separate.fingerprint
    assert reloaded.encode_tgt([fr]) == separate.encode_tgt([fr])


def test_settings_are_validated(tiny_text) -> None:
    with pytest.raises(ConfigError, match="model_type"):
        TokenizerSettings(model_type="word")
    with pytest.raises(ConfigError, match="data.tokenizer.vocab_size=100000"):
        Tokenizer.train(*tiny_text, TokenizerSettings(vocab_size=100_000))


def test_cache_reuses_and_invalidates(tiny_text, tmp_path: Path) -> None:
    def text():
        return tiny_text

    first, hit = load_or_train(tmp_path, SMALL, "digest-a", text)
    assert not hit
    again, hit = load_or_train(tmp_path, SMALL, "digest-a", lambda: pytest.fail("must not read text on a hit"))
    assert hit and again.fingerprint == first.fingerprint
    _, hit = load_or_train(tmp_path, TokenizerSettings(vocab_size=201), "digest-a", text)  # any setting change
    assert not hit
    _, hit = load_or_train(tmp_path, SMALL, "digest-b", text)  # different training text
    assert not hit
    assert len(list(tmp_path.glob("spm-*"))) == 3 and not list(tmp_path.glob(".*"))  # no temp folders left


def _train_in_process(args) -> str:
    folder, src, tgt = args
    tokenizer, _ = load_or_train(folder, SMALL, "race", lambda: (src, tgt))
    return tokenizer.fingerprint


def test_concurrent_builders_agree(tiny_text, tmp_path: Path) -> None:
    # two processes (like two DDP ranks) build the same cache entry at once: both end up with the
    # one model that won the rename, and no temporary folder is left behind
    with multiprocessing.get_context("fork").Pool(2) as pool:
        fingerprints = pool.map(_train_in_process, [(tmp_path, *tiny_text)] * 2)
    stored = Tokenizer.load(next(tmp_path.glob("spm-*")))
    assert fingerprints == [stored.fingerprint] * 2
    assert [p.name.startswith("spm-") for p in tmp_path.iterdir()] == [True]


def test_streamed_training_text_gives_the_same_model(tiny_text, small_tokenizer) -> None:
    """Functions that stream the sentences train the model that lists of them train."""
    src, tgt = tiny_text
    streamed = Tokenizer.train(lambda: iter(src), lambda: (s for s in tgt), SMALL)
    assert streamed.fingerprint == small_tokenizer.fingerprint


def test_sampled_training_is_deterministic(tiny_text) -> None:
    """Fewer sentences than the text holds: sentencepiece samples them with a fixed seed."""
    settings = TokenizerSettings(vocab_size=150, input_sentence_size=120)
    first, second = (Tokenizer.train(*tiny_text, settings) for _ in range(2))
    assert first.fingerprint == second.fingerprint


def test_byte_fallback_leaves_no_unknown_character(tiny_text, small_tokenizer) -> None:
    settings = TokenizerSettings(vocab_size=400, byte_fallback=True)
    tokenizer = Tokenizer.train(*tiny_text, settings)
    unseen = "Un 猫 dort ☃."
    assert UNK_ID in small_tokenizer.encode_src([unseen])[0]
    ids = tokenizer.encode_src([unseen])[0]
    assert UNK_ID not in ids and tokenizer.decode_tgt([ids]) == [unseen]  # joint: the same model
    with pytest.raises(ConfigError, match="byte_fallback needs more than 256"):
        TokenizerSettings(vocab_size=200, byte_fallback=True)


def test_existing_cache_keys_are_kept(tmp_path: Path, small_tokenizer) -> None:
    """Keys computed before shuffle_input_sentence / byte_fallback existed (values from that code):
    caches built then are still found, and their tokenizer.json files still load both ways."""
    from attnmt.data.tokenizer import cache_key

    assert cache_key(TokenizerSettings(), "digest-a") == "f85781b16de5"
    assert cache_key(TokenizerSettings(vocab_size=200, joint=False), "x") == "8329c2f7219d"
    assert cache_key(TokenizerSettings(byte_fallback=True), "digest-a") != "f85781b16de5"
    import json

    meta = json.loads((small_tokenizer.save(tmp_path / "tok") / "tokenizer.json").read_text())
    assert set(meta["settings"]) == {"joint", "model_type", "vocab_size", "character_coverage", "input_sentence_size"}
