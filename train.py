"""Train a translation model: python train.py model=transformer (see configs/ and README.md)."""

import sys

import hydra
from omegaconf import DictConfig

from attnmt.config import register_resolvers
from attnmt.errors import UserError

register_resolvers()


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from attnmt.train import train  # imported late: `python train.py --help` stays fast

    try:
        metrics = train(cfg)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    return metrics.get("best/val_bleu")  # the value a Hydra sweeper would optimise


if __name__ == "__main__":
    main()
