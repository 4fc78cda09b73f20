"""Data preparation benchmark: pairs/s and peak memory per corpus size, then the cached start.

    python scripts/benchmark_data.py --make 1 10 100 --out /scratch/bench     # synthetic corpora from Multi30k
    python scripts/benchmark_data.py --corpus /scratch/bench/x10 --num-proc 2 --input-sentence-size 500000

`--make N...` writes Multi30k train x N (copy k of each sentence ends in " (k)", so no two
training pairs are equal) plus the untouched val / test_2016_flickr files into <out>/xN/.
For each corpus, one fresh process prepares it into an empty cache (sentencepiece training +
encoding of every split): build seconds, training pairs per second, its peak RSS (ru_maxrss) and
the peak of its RSS plus its encoding workers' (sampled every 50 ms), and the CPU seconds it and
its workers used (comparable when the machine is shared; sentencepiece trains on every core). A second fresh process then starts from that cache the way
training does (DataModule built, training loader created, first batch drawn): seconds, the CPU
seconds of that process in that phase (`start cpu s`: comparable when the machine is shared) and
its peak RSS. `spm s` and `encode s` split a build: sentencepiece training (the sample pass is
before it) and encoding the training split, as the data module logs them.
Every measurement runs in its own process, so peak RSS figures are per run (ru_maxrss).
Add `--keep-cache` to leave the caches (next to each corpus, in `cache-p<num_proc><tag>/`), and
`--start-only` to measure only the cached start from such a kept cache (build columns: nan; run it
twice on a cache written by an older version: the first start adds the length index).
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LANGS = ("en", "fr")


def make_corpus(multi30k: Path, out: Path, copies: int) -> Path:
    """<out>/x<copies>/ with train.{en,fr} = Multi30k train x copies, val.* and test_2016_flickr.* as is."""
    folder = out / f"x{copies}"
    if all((folder / f"train.{lang}").is_file() for lang in LANGS):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for lang in LANGS:
        lines = gzip.decompress((multi30k / f"train.{lang}.gz").read_bytes()).decode("utf-8").split("\n")
        if lines[-1] == "":
            lines.pop()
        tmp = folder / f".train.{lang}.part"
        with open(tmp, "w", encoding="utf-8") as handle:
            for copy in range(copies):
                handle.write("".join(f"{line} ({copy})\n" for line in lines))
        tmp.replace(folder / f"train.{lang}")
        for split in ("val", "test_2016_flickr"):
            (folder / f"{split}.{lang}").write_bytes(gzip.decompress((multi30k / f"{split}.{lang}.gz").read_bytes()))
    return folder


def _datamodule(args: dict):
    from attnmt.data.corpus import ParallelText
    from attnmt.data.datamodule import TranslationDataModule

    corpus = ParallelText("en", "fr", train=f"{args['corpus']}/train", val=f"{args['corpus']}/val",
                          test={"test": f"{args['corpus']}/test_2016_flickr"})
    tokenizer = {"joint": True, "model_type": "unigram", "vocab_size": args["vocab_size"]}
    if args["input_sentence_size"] is not None:
        tokenizer["input_sentence_size"] = args["input_sentence_size"]
    extra = {"num_proc": args["num_proc"]} if args["num_proc"] != 1 else {}  # 1 also runs the code before num_proc existed
    return TranslationDataModule(corpus, tokenizer, cache_dir=args["cache"], max_tokens=args["max_tokens"],
                                 max_len=128, num_workers=0, pin_memory=False, **extra)


def _rss_mb(pid: int | str) -> float:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class BuildPhases(logging.Handler):
    """Seconds of the build's phases, from the data module's log records (nan when not logged)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seconds = {"tokenizer": float("nan"), "encode": float("nan")}

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("trained sentencepiece"):
            self.seconds["tokenizer"] = float(record.args[-1])
        elif "encoded %d pairs in %.1f s" in record.msg and record.args[0] == "train":
            self.seconds["encode"] = float(record.args[2])


class TotalRss(threading.Thread):
    """Samples this process's RSS plus its children's (the encoding workers) every 50 ms; keeps the peak.

    ru_maxrss cannot tell it for the workers: a child inherits its parent's peak through fork + exec.
    """

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self.peak_workers, self._halt = 0.0, 0.0, threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.05):
            children = []
            for task in Path("/proc/self/task").iterdir():
                try:
                    children += (task / "children").read_text().split()
                except OSError:
                    pass
            workers = sum(_rss_mb(pid) for pid in children)
            self.peak_workers = max(self.peak_workers, workers)
            self.peak = max(self.peak, _rss_mb("self") + workers)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def child(args: dict) -> dict:
    """One measurement in this (fresh) process: 'prepare' or 'start'."""
    import lightning  # noqa: F401  (imported before the clock starts, as training has it loaded)

    phases = BuildPhases()
    data_log = logging.getLogger("attnmt.data")
    data_log.setLevel(logging.INFO)
    data_log.addHandler(phases)
    sampler = TotalRss()
    sampler.start()
    started, cpu_started = time.perf_counter(), time.process_time()
    datamodule = _datamodule(args)
    datamodule.setup("fit")
    facts = {"cache_hits": datamodule.cache_hits, "train_pairs": len(datamodule.dataset("train"))}
    if args["phase"] == "start":
        batch = next(iter(datamodule.train_dataloader()))
        facts["first_batch"] = list(batch.src.shape)
    facts["seconds"] = time.perf_counter() - started
    facts["phase_cpu_seconds"] = time.process_time() - cpu_started  # this process's CPU time in the phase
    usage, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of this process and its (finished) workers: comparable across machine loads
    facts["cpu_seconds"] = usage.ru_utime + usage.ru_stime + workers.ru_utime + workers.ru_stime
    facts["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sampler.stop()
    facts["total_peak_rss_mb"] = max(sampler.peak, facts["peak_rss_mb"])  # main + workers, sampled
    facts["worker_peak_rss_mb"] = sampler.peak_workers
    facts["phase_seconds"] = phases.seconds
    return facts


def run_child(args: dict) -> dict:
    command = [sys.executable, __file__, "--child", json.dumps(args)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"measurement failed: {' '.join(command)}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def lines_in(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 22), b""))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--make", type=int, nargs="*", default=[], metavar="N", help="write Multi30k x N corpora into --out")
    parser.add_argument("--out", type=Path, default=Path("/tmp/attnmt-bench-data"), help="folder for --make corpora")
    parser.add_argument("--multi30k", type=Path, default=REPO / "data" / "multi30k", help="raw Multi30k .gz files")
    parser.add_argument("--corpus", type=Path, nargs="*", default=[], help="folders with train/val/test_2016_flickr .en/.fr")
    parser.add_argument("--num-proc", type=int, nargs="*", default=[1], help="encoding processes (one run per value)")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--input-sentence-size", type=int, default=None,
                        help="sentences sampled to train sentencepiece (default: the TokenizerSettings default)")
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--no-start", action="store_true", help="skip the cached-start measurement")
    parser.add_argument("--keep-cache", action="store_true")
    parser.add_argument("--start-only", action="store_true", help="only the cached start, from a kept cache")
    parser.add_argument("--tag", default="", help="suffix of the cache folders (runs side by side)")
    options = parser.parse_args(argv)
    if options.child:
        print(json.dumps(child(json.loads(options.child))))
        return 0

    corpora = [make_corpus(options.multi30k, options.out, n) for n in options.make] + list(options.corpus)
    if not corpora:
        parser.error("nothing to measure: give --make N and/or --corpus DIR")
    print(f"{'corpus':>10} {'pairs':>9} {'proc':>4} {'build s':>8} {'pairs/s':>8} {'peak RSS MB':>11} "
          f"{'+workers MB':>11} {'cpu s':>7} {'spm s':>6} {'encode s':>8} {'start s':>7} {'start cpu s':>11} {'start RSS MB':>12}", flush=True)
    for corpus in corpora:
        pairs = lines_in(corpus / "train.en")
        for num_proc in options.num_proc:
            cache = corpus / f"cache-p{num_proc}{options.tag}"
            args = {"corpus": str(corpus), "cache": str(cache), "num_proc": num_proc, "vocab_size": options.vocab_size,
                    "input_sentence_size": options.input_sentence_size, "max_tokens": options.max_tokens}
            if options.start_only:
                if not cache.is_dir():
                    parser.error(f"--start-only: no cache {cache} (build it with --keep-cache)")
                built = {"seconds": float("nan"), "peak_rss_mb": float("nan"), "cpu_seconds": float("nan")}
            else:
                shutil.rmtree(cache, ignore_errors=True)
                built = run_child({**args, "phase": "prepare"})
            phase = built.get("phase_seconds", {"tokenizer": float("nan"), "encode": float("nan")})
            start = {"seconds": float("nan"), "peak_rss_mb": float("nan"), "phase_cpu_seconds": float("nan")}
            if not options.no_start:
                start = run_child({**args, "phase": "start"})
                assert set(start["cache_hits"].values()) == {True}, start["cache_hits"]
            print(f"{corpus.name:>10} {pairs:>9} {num_proc:>4} {built['seconds']:>8.1f} {pairs / built['seconds']:>8.0f} "
                  f"{built['peak_rss_mb']:>11.0f} {built.get('total_peak_rss_mb', float('nan')):>11.0f} {built['cpu_seconds']:>7.1f} {phase['tokenizer']:>6.1f} {phase['encode']:>8.1f} {start['seconds']:>7.2f} {start['phase_cpu_seconds']:>11.2f} "
                  f"{start['peak_rss_mb']:>12.0f}", flush=True)
            if not (options.keep_cache or options.start_only):
                shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main(sys.argv[1:]))
