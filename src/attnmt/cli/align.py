"""attnmt-align (python scripts/align.py): build (or find in the cache) the reference word alignments
of a corpus split.

    attnmt-align                                   # Multi30k en-fr test_2016_flickr, numpy IBM1+2 aligner
    attnmt-align --split val test_2016_flickr --backend eflomal
    attnmt-align --data multi30k_en_de -- data.corpus.local_dir=/path/to/multi30k
    attnmt-align --compare-with other/links.txt    # agreement (AER) with another alignment of the split

The aligner is trained on the training split plus the split aligned, in both directions, and
the directions are symmetrised (grow-diag-final-and). Results are cached under the data config's
cache folder (data/cache/align-<key>/, key = text + settings) and reused by
`attnmt-evaluate --alignment`. Prints the cache folder, time and sanity figures.
"""

from __future__ import annotations

import argparse
import json
import time

from attnmt.cli import command, setup_logging
from attnmt.errors import ConfigError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="attnmt-align", description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="multi30k_en_fr", help="a configs/data/ file (default multi30k_en_fr)")
    parser.add_argument("--split", nargs="+", help="splits to align (default: the data config's test splits)")
    parser.add_argument("--backend", choices=("ibm2", "eflomal"), default="ibm2",
                        help="ibm2 = the project's numpy aligner (default), eflomal = the optional extra")
    parser.add_argument("--heuristic", default="grow-diag-final-and",
                        help="symmetrisation: intersection, union, grow-diag, grow-diag-final, grow-diag-final-and")
    parser.add_argument("--compare-with", help="links of the same split in Pharaoh format: print their agreement")
    parser.add_argument("--show", type=int, default=0, help="print the links of the first N sentences as word pairs")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the data config, after --")
    return parser.parse_args(argv)


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    from hydra.utils import instantiate

    from attnmt.alignment.links import Reference, alignment_scores, read_pharaoh
    from attnmt.alignment.reference import corpus_alignments
    from attnmt.config import compose

    cfg = compose([f"data={args.data}", *args.overrides])
    corpus = instantiate(cfg.data.corpus)
    for split in args.split or corpus.test_splits:
        if split not in corpus.splits:
            raise ConfigError(f"unknown split {split!r}; {args.data} has: {', '.join(corpus.splits)}")
        started = time.perf_counter()
        result = corpus_alignments(corpus, split, cfg.data.cache_dir, args.backend, args.heuristic)
        seconds = time.perf_counter() - started
        print(f"{split}: {len(result.links)} pairs, {'cached' if result.cache_hit else 'built'} in {seconds:.1f} s "
              f"-> {result.folder}")
        print(json.dumps(result.meta, indent=2))
        if args.compare_with:
            other = read_pharaoh(args.compare_with)
            print(f"agreement with {args.compare_with} (as reference): "
                  f"{json.dumps(alignment_scores(result.links, [Reference.of(o) for o in other]))}")
        for k in range(min(args.show, len(result.links))):
            src, tgt = result.src_words[k], result.tgt_words[k]
            print(" ".join(f"{src[s]}-{tgt[t]}" for s, t in sorted(result.links[k])))
    return 0
