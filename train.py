"""Train a translation model: python train.py model=transformer (see configs/ and README.md)."""

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from attnmt.config import register_resolvers
from attnmt.errors import find_user_error, report_user_error

register_resolvers()


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from attnmt.train import train  # imported late: `python train.py --help` stays fast

    try:
        metrics = train(cfg)
    except Exception as error:
        report_user_error(error)  # one line for a user's mistake; a bug is raised again
        logging.getLogger("attnmt.train").error("error: %s", find_user_error(error))  # into the run folder's log too
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            return None  # a sweep goes on with its other jobs; scripts/compare.py lists this one as failed
        sys.exit(2)
    return metrics.get("best/val_bleu")  # the value a Hydra sweeper would optimise


if __name__ == "__main__":
    main()
