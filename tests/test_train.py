"""End-to-end training on CPU with tiny models: real Hydra configs, Lightning trainers, TensorBoard files."""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import get_class

from attnmt.config import CONFIG_DIR, compose
from attnmt.train import train

from conftest import TINY_SIZES, TINY_VOCAB_SIZE, WRITTEN_VOCAB_SIZE, _find_multi30k
from model_configs import PAPER_PRESETS, VARIANTS

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = {  # per model family (the class attribute `family`)
    "transformer": ["model.d_model=32", "model.heads=2", "model.ff_size=64", "model.encoder_layers=1", "model.decoder_layers=1"],
    "rnn": [
        "model.embedding_size=32", "model.encoder_hidden_size=16", "model.hidden_size=32",
        "model.attention_size=32", "model.readout_size=32",
    ],
}
SCALARS = ["train/loss", "train/lr", "train/tokens_per_s", "val/loss", "val/ppl", "val/bleu", "val/chrf"]


@functools.cache
def model_family(model: str) -> str:
    """configs/model/<model>.yaml -> the family its class declares ("rnn", "transformer")."""
    return get_class(compose([f"model={model}"]).model["_target_"]).family


def tiny_overrides(parallel_dir: Path, cache_dir: Path, output_dir: Path, model: str = "transformer") -> list[str]:
    vocab = TINY_VOCAB_SIZE if _find_multi30k() is not None else WRITTEN_VOCAB_SIZE
    return [
        f"model={model}", *TINY_MODEL[model_family(model)], "trainer=cpu", "data=parallel_text",
        f"data.corpus.train={parallel_dir}/train", f"data.corpus.val={parallel_dir}/val",
        f"data.cache_dir={cache_dir}", f"data.tokenizer.vocab_size={vocab}", "data.max_tokens=512",
        "data.num_workers=0", f"paths.output_dir={output_dir}", "decode.validation.max_len_b=5",
        "trainer.enable_model_summary=false",
    ]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("train_cache")


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the run's TensorBoard event file(s), read back with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


@pytest.mark.parametrize("model", VARIANTS)  # every configs/model/*.yaml but the paper-size presets
def test_fast_dev_run_every_variant(model, tiny_parallel_dir, cache_dir, tmp_path):
    cfg = compose(tiny_overrides(tiny_parallel_dir, cache_dir, tmp_path, model) + ["debug=fast_dev_run"])
    metrics = train(cfg)
    assert metrics["global_step"] == 1
    assert math.isfinite(metrics["train/loss"])
    assert 0 <= metrics["val/bleu"] <= 100


@pytest.mark.parametrize("experiment", ["compare_equal_updates", "compare_multi30k_en_fr"])
def test_the_comparisons_sweep_every_variant_but_the_presets(experiment: str) -> None:
    """The comparison's sweeper line, as Hydra expands it, is exactly the variants the tests glob."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    sweep = OmegaConf.load(CONFIG_DIR / "experiment" / f"{experiment}.yaml").hydra.sweeper.params.model
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
        [override] = parser.parse_overrides([f"model={sweep}"])
        assert sorted(override.sweep_string_iterator()) == VARIANTS
    assert PAPER_PRESETS and not set(PAPER_PRESETS) & set(VARIANTS)  # the presets' marker found, and excluded


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml")))
def test_every_experiment_composes_and_runs(experiment, tiny_parallel_dir, cache_dir, tmp_path):
    cfg = compose([f"experiment={experiment}"])  # as shipped: must compose with its real data config
    assert cfg.trainer.max_time or cfg.trainer.max_steps > 0 or cfg.trainer.max_epochs > 0
    family = "transformer" if get_class(cfg.model._target_).family == "transformer" else "luong"
    overrides = [f"experiment={experiment}"] + tiny_overrides(tiny_parallel_dir, cache_dir, tmp_path, family)
    overrides = [o for o in overrides if not o.startswith("model=")] + ["debug=fast_dev_run"]
    metrics = train(compose(overrides))
    assert metrics["global_step"] == 1


@pytest.mark.slow
def test_training_logs_scalars_and_attention_images_to_tensorboard(tiny_parallel_dir, cache_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = compose(tiny_overrides(tiny_parallel_dir, cache_dir, tmp_path) + ["debug=limit", "trainer.limit_val_batches=1.0"])
    metrics = train(cfg)
    found = scalars(tmp_path)
    for tag in SCALARS:
        assert tag in found, f"{tag} missing from the event file; found {sorted(found)}"
    assert all(math.isfinite(v) for _, v in found["train/loss"])
    assert len(found["val/bleu"]) == 2  # one validation per epoch, 2 epochs
    assert metrics["val/decoded"] == TINY_SIZES["val"]  # the whole validation set was decoded
    accumulator = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0, "tensors": 0})
    accumulator.Reload()
    tags = accumulator.Tags()
    # maps and statistics have their own top-level sections in TensorBoard
    assert any(tag.startswith("attention_maps/probe_0/") for tag in tags["images"]), tags["images"]
    assert not any(tag.startswith("attention/") for tag in tags["images"] + tags["scalars"])
    assert [s for s, _ in found["best/val_bleu"]] == [s for s, _ in found["val/bleu"]]

    # the probe translations and validation samples as text, at every validation
    from tensorboard.util import tensor_util

    probes = accumulator.Tensors("translations/probes/text_summary")
    samples = accumulator.Tensors("translations/val_samples/text_summary")
    assert len(probes) == len(samples) == 2
    probe_text = tensor_util.make_ndarray(probes[-1].tensor_proto).item().decode()
    assert "| source | hypothesis |" in probe_text and "The cat sat on the mat." in probe_text
    sample_text = tensor_util.make_ndarray(samples[-1].tensor_proto).item().decode()
    reference = (tiny_parallel_dir / "val.fr").read_text(encoding="utf-8").splitlines()[0]
    assert "| source | hypothesis | reference |" in sample_text and reference.replace("|", "\\|") in sample_text

    # TensorBoard's HParams tab: this run's session with its hyper-parameters
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = accumulator.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in content
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    hparams = {key: value.ListFields()[0][1] for key, value in start.hparams.items()}
    assert hparams["model.d_model"] == 32 and hparams["seed"] == 1234 and hparams["variant"]
    assert hparams["optim.optimizer._target_"] and "data.tokenizer.vocab_size" in hparams
    checkpoints = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert "last.ckpt" in checkpoints and any(name.startswith("best-") for name in checkpoints)
    summary = json.loads((tmp_path / "train_metrics.json").read_text())
    assert summary["metrics"]["global_step"] == 10


@pytest.mark.slow
def test_fast_dev_run_writes_nothing(tiny_parallel_dir, cache_dir, tmp_path):
    """`python train.py debug=fast_dev_run`: no run folder, no checkpoint, no log file, anywhere."""
    work = tmp_path / "work"
    work.mkdir()
    overrides = [o for o in tiny_overrides(tiny_parallel_dir, cache_dir, tmp_path / "unused") if not o.startswith("paths.output_dir")]
    done = subprocess.run([sys.executable, str(REPO / "train.py"), *overrides, "debug=fast_dev_run",
                           f"paths.log_dir={tmp_path / 'outputs'}"], cwd=work, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "validation step" in done.stdout + done.stderr or "fast_dev_run" in done.stdout + done.stderr
    assert list(work.iterdir()) == []
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "unused").exists()


def test_overfit_checkpoint_is_where_evaluate_looks(tiny_parallel_dir, cache_dir, tmp_path):
    from attnmt.inference import resolve_checkpoint

    cfg = compose(tiny_overrides(tiny_parallel_dir, cache_dir, tmp_path, "luong")
                  + ["debug=overfit", "trainer.max_epochs=2", "trainer.enable_progress_bar=false"])
    train(cfg)
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert not list(tmp_path.rglob("tensorboard/checkpoints"))
    assert resolve_checkpoint(tmp_path) == tmp_path / "checkpoints" / "last.ckpt"


@pytest.mark.slow
def test_same_seed_gives_same_losses(tiny_parallel_dir, cache_dir, tmp_path):
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        cfg = compose(
            tiny_overrides(tiny_parallel_dir, cache_dir, tmp_path / name, "bahdanau")
            + ["debug=limit", "trainer.max_epochs=1", "trainer.limit_val_batches=0", f"seed={seed}"]
        )
        train(cfg)
        runs[name] = [value for _, value in scalars(tmp_path / name)["train/loss"]]
    assert len(runs["a"]) == 5
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]


@pytest.mark.slow
def test_overfitting_one_batch_reaches_near_zero_loss(tiny_parallel_dir, cache_dir, tmp_path):
    cfg = compose(
        tiny_overrides(tiny_parallel_dir, cache_dir, tmp_path, "transformer")
        + ["debug=overfit", "trainer.max_epochs=80", "trainer.check_val_every_n_epoch=1000", "model.d_model=64",
           "model.ff_size=128", "optim.optimizer.lr=5e-3", "model.dropout=0.0", "data.max_tokens=128", "logger=none"]
    )
    metrics = train(cfg)
    assert metrics["train/loss"] < 0.1  # from ~ln(vocab) = 5.7 at the start


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.parametrize("stop", ["mid_epoch", "epoch_end"])
@pytest.mark.slow
def test_resume_from_last_checkpoint_matches_an_uninterrupted_run(stop, tiny_parallel_dir, cache_dir, tmp_path):
    """Weights after resuming equal an uninterrupted run's: optimizer, schedule, data order and RNG restored.

    mid_epoch: last.ckpt written after a training step inside the epoch; epoch_end: written after
    the validation that closes the epoch (the default checkpointing), then training goes on in a
    freshly shuffled epoch.
    """
    from hydra.utils import instantiate

    def overrides(run_dir: Path, *extra: str) -> list[str]:
        return tiny_overrides(tiny_parallel_dir, cache_dir, run_dir, "transformer") + [
            "trainer.max_epochs=10", "trainer.limit_val_batches=1", "callbacks.model_checkpoint.monitor=null",
            "callbacks.early_stopping=null", "logger=none", *extra,
        ]

    datamodule = instantiate(compose(overrides(tmp_path)).data)
    per_epoch = len(datamodule.sampler(datamodule.corpus.train_split, shuffle=True))
    total = per_epoch + 3  # the resumed run crosses into the next epoch (new shuffle)
    every_step = "callbacks.model_checkpoint.every_n_train_steps=1"  # so the runs end with their final weights
    if stop == "mid_epoch":
        stop_at, first_run = per_epoch // 2, [every_step, f"trainer.max_steps={per_epoch // 2}"]
    else:  # the default checkpointing: last.ckpt written when the epoch's validation ends
        stop_at, first_run = per_epoch, ["trainer.max_epochs=1"]

    straight = tmp_path / "straight"
    train(compose(overrides(straight, every_step, f"trainer.max_steps={total}")))

    resumed = tmp_path / "resumed"
    train(compose(overrides(resumed, *first_run)))
    last = resumed / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == stop_at
    metrics = train(compose(overrides(resumed, every_step, f"trainer.max_steps={total}", f"ckpt_path={last}")))
    assert metrics["global_step"] == total

    expected, got = _weights(straight / "checkpoints" / "last.ckpt"), _weights(last)
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6, msg=name)


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_validates_on_both_ranks(tiny_parallel_dir, cache_dir, tmp_path):
    """`python train.py trainer=ddp trainer.accelerator=cpu trainer.devices=2` as a user runs it."""
    run_dir = tmp_path / "ddp"
    overrides = [o for o in tiny_overrides(tiny_parallel_dir, cache_dir, run_dir) if not o.startswith(("trainer=", "paths.output_dir"))]
    command = [
        sys.executable, str(REPO / "train.py"), "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
        *overrides, "debug=limit", "trainer.max_epochs=1", "trainer.limit_val_batches=1.0", f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((run_dir / "train_metrics.json").read_text())["metrics"]
    # each rank decodes its own shard; the logged BLEU is over both ranks' outputs together
    assert summary["val/decoded"] == TINY_SIZES["val"]
    assert summary["global_step"] == 5
    assert (run_dir / ".hydra" / "config.yaml").is_file()
