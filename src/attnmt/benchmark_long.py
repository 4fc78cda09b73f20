"""Time and memory of full vs sliding-window self-attention as inputs grow (attnmt-benchmark-long = scripts/benchmark_long.py).

The Transformer preset's encoder (configs/model/transformer.yaml sizes: 3 layers, d_model 256,
4 heads, ff 1024, vocabulary 8000) runs forward + backward on random token ids of each length,
once with full self-attention and once per window w (each position sees w positions each side).
Dropout is off, so both use F.scaled_dot_product_attention's fused kernels where the device has
them. Memory: the activations autograd keeps for backward (summed over distinct storages, any
device: what grows with the input), plus peak allocated memory on a GPU.
"""

from __future__ import annotations

import gc
import time

import torch

from attnmt.benchmark import machine, peak_memory_mb, reset_peak_memory, synchronize
from attnmt.models.transformer_seq2seq import TransformerSeq2Seq
from attnmt.modules.self_attention import FullSelfAttention
from attnmt.modules.sliding_window import SlidingWindowSelfAttention

PRESET = dict(encoder_layers=3, decoder_layers=1, d_model=256, heads=4, ff_size=1024, dropout=0.0)
VOCAB = 8000


def saved_for_backward_mb(forward) -> tuple[torch.Tensor, float]:
    """Run `forward()` and measure the tensors autograd saves for backward -> (output, MiB)."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = forward()
    return output, sum(storages.values()) / 2**20


def measure(length: int, window: int | None, batch: int, device: torch.device, repeats: int) -> dict:
    """Mean seconds of one encoder forward + backward at this length, and peak memory."""
    torch.manual_seed(0)
    pattern = FullSelfAttention() if window is None else SlidingWindowSelfAttention(window)
    model = TransformerSeq2Seq(VOCAB, VOCAB, True, encoder_self_attention=pattern, **PRESET).to(device).train()
    src = torch.randint(4, VOCAB, (batch, length), device=device)
    src_mask = torch.ones(batch, length, dtype=torch.bool, device=device)

    def step() -> None:
        model.encode(src, src_mask).square().mean().backward()
        model.zero_grad(set_to_none=True)

    # the untimed warm-up pass (kernels chosen, allocator primed) also measures the saved activations
    loss, saved_mb = saved_for_backward_mb(lambda: model.encode(src, src_mask).square().mean())
    loss.backward()
    model.zero_grad(set_to_none=True)
    del loss
    gc.collect()
    synchronize(device)
    reset_peak_memory(device)
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    synchronize(device)
    seconds = (time.perf_counter() - started) / repeats
    record = {"length": length, "window": window, "batch": batch, "device": device.type, "seconds": seconds,
              "tokens_per_s": batch * length / seconds, "saved_for_backward_mb": saved_mb}
    if device.type == "cuda":
        record["peak_allocated_mb"] = peak_memory_mb(device)
    return record


def run(lengths: list[int], windows: list[int], batch: int = 1, device_name: str = "cpu", repeats: int = 2,
        threads: int | None = None) -> dict:
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device_name)
    runs = []
    for length in lengths:
        for window in [None, *windows]:
            runs.append(measure(length, window, batch, device, repeats))
    return {"machine": machine(), "settings": {"lengths": lengths, "windows": windows, "batch": batch,
            "device": device.type, "repeats": repeats, "threads": torch.get_num_threads(), "model": PRESET},
            "runs": runs}


def format_table(report: dict) -> str:
    """One row per length: full and each window's ms and peak MiB, and the windowed speed-up."""
    windows = report["settings"]["windows"]
    by_key = {(r["length"], r["window"]): r for r in report["runs"]}
    gpu = report["settings"]["device"] == "cuda"
    memory = lambda r: f"{r['saved_for_backward_mb']:,.1f}" + (f" / {r['peak_allocated_mb']:,.0f}" if gpu else "")  # noqa: E731
    unit = "saved / peak MiB" if gpu else "saved MiB"
    header = ["length", "full ms", f"full {unit}"]
    for w in windows:
        header += [f"w={w} ms", f"w={w} {unit}", f"w={w} speed-up"]
    rows = [header]
    for length in report["settings"]["lengths"]:
        full = by_key[(length, None)]
        row = [str(length), f"{1000 * full['seconds']:,.1f}", memory(full)]
        for w in windows:
            r = by_key[(length, w)]
            row += [f"{1000 * r['seconds']:,.1f}", memory(r), f"{full['seconds'] / r['seconds']:.2f}x"]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows)
