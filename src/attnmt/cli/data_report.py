"""attnmt-data-report (python scripts/data_report.py): build a data config's DataModule and report what
training will see.

    attnmt-data-report                                   # Multi30k en-fr, the default data config
    attnmt-data-report data=multi30k_en_de data.max_tokens=8192
    attnmt-data-report data.cache_dir=/tmp/fresh_cache   # a cold build

Any override of configs/train.yaml works. Prints the vocabulary, sentence pairs per split (and the
pairs dropped as empty or too long), batches, padding ratio, build time, peak memory (RSS of this
process; encoding workers, `data.num_proc` > 1, are separate processes) and which caches were reused.
For preparation throughput across corpus sizes and worker counts: scripts/benchmark_data.py.
"""

from __future__ import annotations

import resource
import sys
import time

from attnmt.cli import command


def report(overrides: list[str]) -> dict:
    from hydra.utils import instantiate

    from attnmt.config import compose
    from attnmt.data import datamodule as _datamodule  # noqa: F401  (imports lightning before the timer starts)

    cfg = compose(overrides + ["paths.output_dir=unused"])
    started = time.perf_counter()
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    built = time.perf_counter() - started
    train_split = datamodule.corpus.train_split
    sampler = datamodule.sampler(train_split, shuffle=True)
    return {
        "tokenizer": repr(datamodule.tokenizer),
        "pairs": {split: len(datamodule.dataset(split)) for split in datamodule.splits},
        "dropped": {split: (datamodule.dataset(split).meta.get("dropped_empty", 0), datamodule.dataset(split).meta.get("dropped_long", 0))
                    for split in datamodule.splits},
        "train_batches": len(sampler),
        "max_tokens": datamodule.max_tokens,
        "padding_ratio": sampler.padding_ratio(),
        "build_seconds": built,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cache_hits": datamodule.cache_hits,
    }


@command
def main(argv: list[str] | None = None) -> int:
    overrides = sys.argv[1:] if argv is None else list(argv)
    if any(a in ("-h", "--help") for a in overrides):
        print(__doc__)
        return 0
    facts = report(overrides)
    print(f"tokenizer      {facts['tokenizer']}")
    for split, count in facts["pairs"].items():
        empty, long = facts["dropped"][split]
        print(f"pairs          {split}: {count} (dropped: {empty} with an empty side, {long} longer than max_len)")
    print(f"train batches  {facts['train_batches']} at max_tokens={facts['max_tokens']}")
    print(f"padding        {100 * facts['padding_ratio']:.2f}% of the batch tensors' cells")
    print(f"built in       {facts['build_seconds']:.2f} s; cache hits: {facts['cache_hits']}")
    print(f"peak RSS       {facts['peak_rss_mb']:.0f} MB (this process)")
    return 0
