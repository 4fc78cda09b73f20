"""Train a translation model: python train.py model=transformer (see configs/ and README.md).

Resume: python train.py ckpt_path=<run>/checkpoints/last.ckpt [trainer.max_steps=N ...]
        python train.py resume=<run>                  (the same, with the run's last.ckpt)
The run's own config comes back from the checkpoint and training continues in the same run folder.
"""

import logging
import re
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from attnmt.config import register_resolvers
from attnmt.errors import find_user_error, report_user_error

register_resolvers()


def _quote(value: str) -> str:
    return value if re.fullmatch(r"[\w/.\-]+", value) else "'" + value.replace("'", "\\'") + "'"


def resume_arguments(argv: list[str]) -> list[str]:
    """Rewrite a resume command line before Hydra reads it.

    `resume=<run>` becomes `ckpt_path=<run>/checkpoints/last.ckpt`. With ckpt_path= (single run, no
    hydra.run.dir given) the run folder is pinned to the checkpoint's run folder, and this start's
    Hydra files go to .hydra/resumed_<date>_<time>/ so the run's original .hydra/ stays as it was.
    """
    if any(a in ("-m", "--multirun") for a in argv):
        return argv
    argv = [f"ckpt_path={_quote(str(Path(a.split('=', 1)[1]) / 'checkpoints' / 'last.ckpt'))}" if a.startswith("resume=") else a
            for a in argv]
    checkpoints = [a.split("=", 1)[1].strip("'\"") for a in argv if a.startswith("ckpt_path=")]
    if not checkpoints or checkpoints[-1] in ("", "null") or any(a.startswith("hydra.run.dir=") for a in argv):
        return argv
    from attnmt.train import check_resume_override, run_dir_of  # late import: only when resuming

    if not Path(checkpoints[-1]).expanduser().is_file():
        from attnmt.errors import CheckpointError

        raise CheckpointError(f"checkpoint not found: {checkpoints[-1]}. Give an existing .ckpt file (e.g. <run>/checkpoints/last.ckpt).")
    for argument in argv:  # before Hydra composes: a key of the run's model may not exist in the default one
        if "=" in argument and not argument.startswith("-"):
            check_resume_override(argument.split("=", 1)[0], checkpoints[-1])
    run_dir = run_dir_of(checkpoints[-1])
    if run_dir is None:
        return argv
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    return [*argv, f"hydra.run.dir={_quote(str(run_dir))}", f"hydra.output_subdir=.hydra/resumed_{stamp}"]


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from attnmt.train import resume_config, train  # imported late: `python train.py --help` stays fast

    try:
        if cfg.get("ckpt_path"):
            # the run's own config (model, data, optim, ...) plus only the overrides that may change mid-run
            hydra_cfg = HydraConfig.get()
            cfg = resume_config(cfg.ckpt_path, list(hydra_cfg.overrides.task), current=cfg)
            if hydra_cfg.output_subdir is not None:  # Hydra saved the default-composed config: keep the real one
                OmegaConf.save(cfg, Path(hydra_cfg.runtime.output_dir) / hydra_cfg.output_subdir / "config.yaml")
        metrics = train(cfg)
    except Exception as error:
        report_user_error(error)  # one line for a user's mistake; a bug is raised again
        logging.getLogger("attnmt.train").error("error: %s", find_user_error(error))  # into the run folder's log too
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            return None  # a sweep goes on with its other jobs; scripts/compare.py lists this one as failed
        sys.exit(2)
    return metrics.get("best/val_bleu")  # the value a Hydra sweeper would optimise


if __name__ == "__main__":
    try:
        sys.argv = [sys.argv[0], *resume_arguments(sys.argv[1:])]
    except Exception as error:
        report_user_error(error)
        sys.exit(2)
    main()
