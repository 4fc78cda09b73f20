"""Training and decoding speed of the model presets on real batches (attnmt-benchmark, scripts/benchmark.py).

Per family (a configs/model/ name) and device, on the batches training really uses (the
TranslationDataModule's token buckets, epoch 0 of the training order):
- mode `model`: a plain PyTorch loop over batches collated and moved to the device beforehand
  (forward, label-smoothed cross-entropy, backward, gradient clipping, AdamW and LR schedule step):
  what the model itself allows.
- mode `lightning`: the real training path, TranslationTask + Trainer.fit on the DataModule (loader
  worker, collate, host-to-device copy, Lightning's loop, the throughput callback), validation off.
Both time the same `steps` batches after the same `warmup` batches, so their token counts are
equal and the gap between them is the cost of the data pipeline and the loop.
- decoding: sentences/s of greedy and beam search over the first N validation sentences.

Throughput counts real target tokens (EOS included, padding excluded) per second of wall time.
With reference figures (Settings.references, `--reference FILE`: tokens/s of another toolkit per
"<transformer|rnn>/<device>" and optionally a target ratio) each training record also gets its
ratio to them; measured figures and targets live in docs/benchmarks.md and
scripts/benchmark_reference.json, never here.
Peak memory: peak RSS of this process on the CPU (reset before each measurement where Linux
allows it), peak allocated tensor memory on a GPU.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import itertools
import os
import platform
import re
import resource
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from attnmt.callbacks import ThroughputMonitor
from attnmt.config import CONFIG_DIR, compose
from attnmt.cpu_memory import retain_freed_memory
from attnmt.data.batch import Batch
from attnmt.data.batching import SPECIALS_PER_SIDE, TokenBucketSampler, collate
from attnmt.errors import CheckpointError, ConfigError
from attnmt.inference import DecodeSettings
from attnmt.modules.checks import count_parameters
from attnmt.search import beam_search, greedy
from attnmt.train import build_task

MODES = ("model", "lightning")
PRECISIONS = ("32", "bf16-mixed")


@dataclass
class Settings:
    """What to measure. `overrides` are extra Hydra overrides for every family (e.g. another corpus)."""

    families: tuple[str, ...] = ("transformer", "bahdanau", "luong")
    devices: tuple[str, ...] = ("auto",)  # cpu | cuda | auto (cuda when present, else cpu)
    modes: tuple[str, ...] = MODES
    steps: int = 20
    warmup: int = 3
    repeats: int = 1  # measure each mode this often (interleaved) and report the median run
    max_tokens: int = 4096
    threads: int | None = None  # CPU intra-op threads; None keeps torch's default
    precision: str = "32"
    compile: bool = False  # torch.compile the Transformer's model
    retain_memory: bool = True  # cpu_memory.retain_freed_memory(), as training does (False: glibc's defaults)
    decode_sentences: int = 200
    beam_size: int = field(default_factory=lambda: DecodeSettings().beam_size)  # greedy is always measured too
    checkpoints: dict[str, str] = field(default_factory=dict)  # family -> .ckpt whose weights decode
    overrides: tuple[str, ...] = ()
    family_overrides: dict[str, tuple[str, ...]] = field(default_factory=dict)  # applied after `overrides`
    # "<reference_key>/<device>" (e.g. "transformer/cpu") -> {"tokens_per_s": float, "target_ratio": float (optional)}
    references: dict[str, dict[str, float]] = field(default_factory=dict)

    def check(self) -> None:
        known = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))
        for family in self.families:
            if family not in known:
                raise ConfigError(f"--families: unknown model config {family!r}; choose from {', '.join(known)}")
        for device in self.devices:
            if device not in ("cpu", "cuda", "auto"):
                raise ConfigError(f"--device: {device!r} must be cpu, cuda or auto")
        for mode in self.modes:
            if mode not in MODES:
                raise ConfigError(f"--modes: {mode!r} must be one of {', '.join(MODES)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision {self.precision!r} must be one of {', '.join(PRECISIONS)}")
        for name in ("steps", "warmup", "repeats", "max_tokens", "beam_size"):
            if getattr(self, name) < 1:  # warm-up >= 1: the timed window starts after a finished step
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.decode_sentences < 0 or (self.threads is not None and self.threads < 1):
            raise ConfigError("--decode-sentences must be >= 0 and --threads >= 1")
        for family, path in self.checkpoints.items():
            if family not in self.families or not Path(path).is_file():
                raise ConfigError(f"--checkpoint {family}={path}: needs a benchmarked family and an existing .ckpt file")


# --- measuring helpers -------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock times cover it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> bool:
    """Start a new peak; False where the platform cannot reset the CPU peak (then it is the process's)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:  # Linux: writing 5 resets VmHWM, the peak resident set size
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated tensor memory (GPU) or peak resident set size of this process (CPU), in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        found = re.search(r"^VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
        if found:
            return int(found.group(1)) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return peak / 2**20 if platform.system() == "Darwin" else peak / 1024


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16-mixed" else contextlib.nullcontext()


def reference_key(cfg: DictConfig) -> str:
    """The model class's declared family ('transformer', 'rnn', ...): which reference figure it compares with."""
    from hydra.utils import get_class

    return get_class(str(cfg.model["_target_"])).family


# --- configuration and data --------------------------------------------------------------------
def merge_overrides(base: list[str], extra: list[str] | tuple[str, ...]) -> list[str]:
    """Hydra overrides, `extra` replacing entries of `base` that set the same key or group."""
    key = lambda override: override.split("=", 1)[0].lstrip("+~")  # noqa: E731
    replaced = {key(o) for o in extra}
    return [o for o in base if key(o) not in replaced] + list(extra)


def family_config(family: str, settings: Settings, output_dir: Path) -> DictConfig:
    base = [f"model={family}", f"data.max_tokens={settings.max_tokens}", f"paths.output_dir={output_dir}"]
    overrides = merge_overrides(merge_overrides(base, settings.overrides), settings.family_overrides.get(family, ()))
    return compose(overrides)


def training_batches(datamodule, count: int) -> Iterator[list[int]]:
    """Index lists of the first `count` training batches, in the order Trainer.fit sees them."""
    sampler = datamodule.sampler(datamodule.corpus.train_split, shuffle=True, training=True)
    produced = 0
    for epoch in itertools.count():
        sampler.set_epoch(epoch)
        for indices in sampler.batches():
            if produced == count:
                return
            produced += 1
            yield list(indices)


def build(cfg: DictConfig, datamodule, device: torch.device, compile_model: bool):
    """A freshly initialised TranslationTask (same seed, same weights every time) on `device`."""
    L.seed_everything(cfg.seed, verbose=False)
    task = build_task(cfg, datamodule).to(device)
    if compile_model:
        task.model = torch.compile(task.model, dynamic=True)  # batch shapes change every step
    return task


# --- training throughput -----------------------------------------------------------------------
def train_record(family: str, device: torch.device, mode: str, tokens: int, steps: int, seconds: float, **extra) -> dict:
    return {"family": family, "device": device.type, "kind": "train", "mode": mode, "tokens": int(tokens),
            "steps": steps, "seconds": seconds, "tokens_per_s": tokens / seconds, "ms_per_step": 1000 * seconds / steps,
            **extra}


def measure_model_loop(family: str, task, cfg: DictConfig, datamodule, settings: Settings, device: torch.device) -> dict:
    """The plain loop: batches collated and on the device before the clock starts."""
    dataset = datamodule.dataset(datamodule.corpus.train_split)
    on_host = [collate([dataset[i] for i in indices]) for indices in training_batches(datamodule, settings.warmup + settings.steps)]
    tokens = sum(int(batch.tgt_mask.sum()) for batch in on_host[settings.warmup :])  # on the host: no device sync
    batches = [batch.to(device) for batch in on_host]
    optimizers = task.configure_optimizers()  # AdamW as configured, fused on CUDA
    optimizer, scheduler = optimizers["optimizer"], optimizers["lr_scheduler"]["scheduler"]
    parameters = [p for p in task.parameters() if p.requires_grad]
    clip = cfg.trainer.get("gradient_clip_val") or 0.0
    task.train()

    def step(batch: Batch) -> None:
        with autocast(device, settings.precision):
            loss, _ = task.loss(batch, task.label_smoothing)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(parameters, clip)  # returns a tensor: no host sync
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()

    reset = reset_peak_memory(device)
    for batch in batches[: settings.warmup]:
        step(batch)
    synchronize(device)
    started = time.perf_counter()
    for batch in batches[settings.warmup :]:
        step(batch)
    synchronize(device)
    seconds = time.perf_counter() - started
    return train_record(family, device, "model", tokens, settings.steps, seconds,
                        peak_memory_mb=peak_memory_mb(device), peak_reset=reset,
                        sentences_per_batch=sum(len(b) for b in batches) / len(batches))


class StepWindowTimer(L.Callback):
    """Times Trainer.fit from the end of batch `warmup` to the end of batch `warmup + steps`.

    The window therefore holds exactly `steps` loads and `steps` optimisation steps. Target tokens
    are summed on the device and read once at the end, so timing adds no per-step host sync.
    """

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps = warmup, steps
        self.finished = 0
        self.tokens: torch.Tensor | None = None
        self.started = self.ended = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch: Batch, batch_idx: int) -> None:
        self.finished += 1
        if self.warmup < self.finished <= self.warmup + self.steps:
            count = batch.tgt_mask.sum()
            self.tokens = count if self.tokens is None else self.tokens + count
        if self.finished in (self.warmup, self.warmup + self.steps):
            synchronize(pl_module.device)
            now = time.perf_counter()
            if self.finished == self.warmup:
                self.started = now
            else:
                self.ended = now


def measure_lightning(family: str, task, cfg: DictConfig, datamodule, settings: Settings, device: torch.device) -> dict:
    """The real path: Trainer.fit with the DataModule's loader; no validation, logging or checkpoints."""
    timer = StepWindowTimer(settings.warmup, settings.steps)
    trainer = instantiate(
        cfg.trainer,
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1, strategy="auto", num_nodes=1,
        precision="bf16-mixed" if settings.precision == "bf16-mixed" else "32-true",
        max_steps=settings.warmup + settings.steps, max_epochs=-1, max_time=None,
        limit_train_batches=None, limit_val_batches=0, num_sanity_val_steps=0,
        callbacks=[ThroughputMonitor(cfg.trainer.log_every_n_steps), timer],
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    reset = reset_peak_memory(device)
    trainer.fit(task, datamodule=datamodule)
    if timer.ended is None:
        raise RuntimeError(f"Trainer.fit stopped after {timer.finished} batches, before the timed window ended")
    return train_record(family, device, "lightning", int(timer.tokens), settings.steps,
                        timer.ended - timer.started, peak_memory_mb=peak_memory_mb(device), peak_reset=reset,
                        workers=datamodule.num_workers)


# --- decoding speed ----------------------------------------------------------------------------
def decode_model(task, settings: Settings, family: str, datamodule, device: torch.device) -> tuple[torch.nn.Module, str]:
    """The model to decode with: a trained checkpoint's when given, else the benchmark's own.

    The benchmark's own model has seen a few dozen batches at most: its outputs mostly run to the
    length limit, so its sentences/s are a pessimistic bound (see mean_output_len).
    """
    path = settings.checkpoints.get(family)
    if path is None:
        steps = (settings.warmup + settings.steps) if settings.modes else 0
        return getattr(task.model, "_orig_mod", task.model).to(device), f"benchmark model ({steps} steps)"
    from attnmt.inference import load_for_inference

    model, tokenizer, _ = load_for_inference(path)
    if tokenizer.fingerprint != datamodule.tokenizer.fingerprint:
        raise CheckpointError(f"--checkpoint {family}={path}: trained with another vocabulary than the benchmark data")
    return model.to(device), f"checkpoint {path}"


def measure_decoding(model, weights: str, family: str, cfg: DictConfig, datamodule, settings: Settings,
                     device: torch.device) -> list[dict]:
    """Greedy and beam search over the first N validation sentences, batched as evaluation batches them."""
    dataset = datamodule.dataset(datamodule.corpus.val_split)
    count = min(settings.decode_sentences, len(dataset))
    if count == 0:
        return []
    sampler = TokenBucketSampler(dataset.src_lengths[:count] + SPECIALS_PER_SIDE, dataset.tgt_lengths[:count] + SPECIALS_PER_SIDE,
                                 cfg.data.eval_max_tokens, shuffle=False)
    batches = [collate([dataset[i] for i in indices]).to(device) for indices in sampler.batches()]
    validation = DecodeSettings.from_config(cfg.decode.validation, key="decode.validation")
    limits = {"max_len_a": validation.max_len_a, "max_len_b": validation.max_len_b}  # as validation decodes
    alpha = DecodeSettings().alpha
    model.eval()
    records = []
    for search in ("greedy", f"beam{settings.beam_size}"):
        output_tokens = 0
        synchronize(device)
        started = time.perf_counter()
        for batch in batches:
            with autocast(device, settings.precision):
                if search == "greedy":
                    found = greedy(model, batch.src, batch.src_mask, need_attention=False, **limits)
                else:
                    found = [n_best[0] for n_best in beam_search(model, batch.src, batch.src_mask, beam_size=settings.beam_size,
                                                                 alpha=alpha, need_attention=False, **limits)]
            output_tokens += sum(len(h.output_ids) for h in found)
        seconds = time.perf_counter() - started
        records.append({"family": family, "device": device.type, "kind": "decode", "mode": search, "sentences": count,
                        "seconds": seconds, "sentences_per_s": count / seconds, "output_tokens_per_s": output_tokens / seconds,
                        "mean_output_len": output_tokens / count, "weights": weights})
    return records


# --- putting it together -----------------------------------------------------------------------
def resolve_device(name: str) -> torch.device | None:
    """cpu / cuda / auto -> a device, or None when CUDA is asked for and absent."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        return None
    return torch.device(name)


def benchmark_family(family: str, settings: Settings, device: torch.device, output_dir: Path) -> list[dict]:
    """Every requested mode plus decoding for one family on one device -> records."""
    cfg = family_config(family, settings, output_dir)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    compile_model = settings.compile and reference_key(cfg) == "transformer"
    common = {"max_tokens": int(cfg.data.max_tokens), "precision": settings.precision, "compile": compile_model,
              "warmup": settings.warmup, "threads": torch.get_num_threads()}
    measured: dict[str, list[dict]] = {mode: [] for mode in settings.modes}
    task = None
    for _ in range(settings.repeats):  # modes interleaved: a slow minute of a shared machine hits them all
        for mode in settings.modes:
            task = None  # free the previous model before the next peak-memory window
            gc.collect()
            task = build(cfg, datamodule, device, compile_model)
            measure = measure_model_loop if mode == "model" else measure_lightning
            record = measure(family, task, cfg, datamodule, settings, device)
            record.update(common, parameters=count_parameters(task.model), reference=reference_key(cfg))
            measured[mode].append(record)
    records = [median_run(runs) for runs in measured.values()]
    if settings.decode_sentences:
        task = task or build(cfg, datamodule, device, compile_model=False)
        model, weights = decode_model(task, settings, family, datamodule, device)
        records += measure_decoding(model, weights, family, cfg, datamodule, settings, device)
    return records


def median_run(runs: list[dict]) -> dict:
    """The run with the median tokens/s (the slower middle one for an even count), so its figures
    stay consistent with each other, plus every run's tokens/s and the highest peak memory."""
    ordered = sorted(runs, key=lambda r: r["tokens_per_s"])
    median = dict(ordered[(len(ordered) - 1) // 2])
    median.update(repeats=len(runs), tokens_per_s_runs=[r["tokens_per_s"] for r in runs],
                  peak_memory_mb=max(r["peak_memory_mb"] for r in runs))
    return median


def add_reference_ratios(record: dict, references: dict[str, dict[str, float]]) -> dict:
    """A training record + its ratio to the reference figure of its kind and device, when one is given."""
    reference = references.get(f"{record.get('reference')}/{record['device']}")
    if record.get("kind") == "train" and reference:
        record["reference_tokens_per_s"] = float(reference["tokens_per_s"])
        record["ratio_to_reference"] = record["tokens_per_s"] / float(reference["tokens_per_s"])
        if "target_ratio" in reference:
            record["target_ratio"] = float(reference["target_ratio"])
    return record


def read_references(path: str | Path) -> dict[str, dict[str, float]]:
    """A reference file (JSON: {"transformer/cpu": {"tokens_per_s": 900, "target_ratio": 2}, ...})."""
    import json

    try:
        found = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"--reference {path}: not a readable JSON file ({err})") from None
    entries = found.get("references", found) if isinstance(found, dict) else None
    if not isinstance(entries, dict) or not all(isinstance(v, dict) and "tokens_per_s" in v for v in entries.values()):
        raise ConfigError(f'--reference {path}: expected {{"<transformer|rnn>/<cpu|cuda>": {{"tokens_per_s": N, '
                          f'"target_ratio": R}}, ...}}')
    return {key: value for key, value in entries.items()}


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        cpu = found.group(1).strip() if found else cpu
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch": torch.__version__, "lightning": L.__version__,
            "python": platform.python_version(), "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def run(settings: Settings, progress: Callable[[dict], None] | None = None) -> dict:
    """Measure everything `settings` asks for -> {"machine", "settings", "runs": [records]}.

    `progress(report so far)` is called after each family, so a run cut short still leaves results.
    """
    settings.check()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    retained = retain_freed_memory() if settings.retain_memory else False
    report = {"machine": {**machine(), "malloc_retains_freed_memory": retained}, "settings": asdict(settings), "runs": []}
    with tempfile.TemporaryDirectory(prefix="attnmt-bench-") as output_dir:
        for device_name in dict.fromkeys(settings.devices):
            device = resolve_device(device_name)
            for family in settings.families:
                if device is None:
                    report["runs"].append({"family": family, "device": device_name, "kind": "skipped", "mode": "-",
                                           "reason": "no CUDA device"})
                    continue
                report["runs"] += [add_reference_ratios(r, settings.references)
                                   for r in benchmark_family(family, settings, device, Path(output_dir))]
                if progress is not None:
                    progress(report)
    return report


def format_table(report: dict) -> str:
    """The report as two plain-text tables (training, decoding) plus skipped entries."""
    rows = [("family", "device", "mode", "tok/s", "ms/step", "peak MiB", "params", "x ref (target)")]
    for r in report["runs"]:
        if r["kind"] == "train":
            ratio = f"{r['ratio_to_reference']:.2f}x" if "ratio_to_reference" in r else "-"
            if "target_ratio" in r:
                ratio += f" (>={r['target_ratio']:g}x)"
            speed = f"{r['tokens_per_s']:,.0f}"
            if r.get("repeats", 1) > 1:  # median (slowest-fastest)
                speed += f" ({min(r['tokens_per_s_runs']):,.0f}-{max(r['tokens_per_s_runs']):,.0f})"
            rows.append((r["family"], r["device"], r["mode"], speed, f"{r['ms_per_step']:,.1f}",
                         f"{r['peak_memory_mb']:,.0f}", f"{r['parameters'] / 1e6:.2f}M", ratio))
    decode = [("family", "device", "search", "sent/s", "out tok/s", "mean len", "weights")]
    for r in report["runs"]:
        if r["kind"] == "decode":
            decode.append((r["family"], r["device"], r["mode"], f"{r['sentences_per_s']:,.1f}",
                           f"{r['output_tokens_per_s']:,.0f}", f"{r['mean_output_len']:.1f}", r["weights"]))
    skipped = [f"skipped: {r['family']} on {r['device']} ({r['reason']})" for r in report["runs"] if r["kind"] == "skipped"]
    parts = [_columns(table) for table in (rows, decode) if len(table) > 1] + (["\n".join(skipped)] if skipped else [])
    return "\n\n".join(parts)


def _columns(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.rjust(w) if i >= 3 else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
                     for row in rows)
