"""Hydra/OmegaConf glue: resolvers used by configs/ and helpers to compose configs in code.

Resolvers (registered on import):
  ${attnmt.project_root:}   the repository root (env ATTNMT_ROOT overrides), so runs work from any cwd
  ${attnmt.auto_precision:} "bf16-mixed" on a CUDA device that supports it, else "32-true"
  ${attnmt.auto_workers:}   DataLoader workers: 1 with a GPU, 0 on a CPU-only machine
  ${attnmt.decode_default:<field>}  a default of attnmt.inference.DecodeSettings (beam_size, alpha,
                            max_len_a, max_len_b, max_tokens): the decoding defaults are declared there only
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from omegaconf import OmegaConf

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def project_root() -> str:
    if "ATTNMT_ROOT" in os.environ:
        return os.environ["ATTNMT_ROOT"]
    repo = Path(__file__).resolve().parents[2]
    return str(repo if (repo / "configs").is_dir() else Path.cwd())


def auto_precision() -> str:
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def auto_workers() -> int:
    # On a CPU-only machine a worker process competes with training for the same cores, so
    # collating in-process is faster there (docs/benchmarks.md, "Loader workers").
    return 1 if torch.cuda.is_available() else 0


def decode_default(name: str):
    from attnmt.inference import decode_default as default  # late: only configs that decode need it

    return default(name)


def register_resolvers() -> None:
    resolvers = (("attnmt.project_root", project_root), ("attnmt.auto_precision", auto_precision),
                 ("attnmt.auto_workers", auto_workers), ("attnmt.decode_default", decode_default))
    for name, fn in resolvers:
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def compose(overrides: list[str] | None = None, config_name: str = "train"):
    """Compose the project's config outside a @hydra.main (tests, notebooks).

    `paths.output_dir` normally comes from Hydra's run dir; pass it as an override here.
    """
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides or []), return_hydra_config=False)


register_resolvers()
