"""Build a data config's DataModule and report what training will see.

    python scripts/data_report.py                          # Multi30k en-fr, the default data config
    python scripts/data_report.py data=multi30k_en_de data.max_tokens=8192
    python scripts/data_report.py data.cache_dir=/tmp/fresh_cache    # a cold build

Any override of configs/train.yaml works. Prints the vocabulary, sentence pairs per split (and the
pairs dropped as empty or too long), batches, padding ratio, build time, peak memory (RSS of this
process; encoding workers, `data.num_proc` > 1, are separate processes) and which caches were reused.
For preparation throughput across corpus sizes and worker counts: scripts/benchmark_data.py.
"""

from __future__ import annotations

import resource
import sys
import time

from hydra.utils import instantiate

from attnmt.config import compose
from attnmt.data import datamodule as _datamodule  # noqa: F401  (imports lightning before the timer starts)
from attnmt.errors import report_user_error


def report(overrides: list[str]) -> dict:
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


def main(argv: list[str]) -> int:
    try:
        facts = report(argv)
    except Exception as error:
        report_user_error(error)
        return 2
    print(f"tokenizer      {facts['tokenizer']}")
    for split, count in facts["pairs"].items():
        empty, long = facts["dropped"][split]
        print(f"pairs          {split}: {count} (dropped: {empty} with an empty side, {long} longer than max_len)")
    print(f"train batches  {facts['train_batches']} at max_tokens={facts['max_tokens']}")
    print(f"padding        {100 * facts['padding_ratio']:.2f}% of the batch tensors' cells")
    print(f"built in       {facts['build_seconds']:.2f} s; cache hits: {facts['cache_hits']}")
    print(f"peak RSS       {facts['peak_rss_mb']:.0f} MB (this process)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
