"""The model configs the tests loop over, found by globbing configs/model/ (never listed by hand).

Shared bases live in configs/model/base/ (not options of the model group, not globbed here). The
paper-size presets are GPU models: each marks itself with a "# paper-size preset" comment line and
is left out of the every-variant loops (tests/test_presets.py covers them).
"""

from __future__ import annotations

from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parents[1] / "configs" / "model"
PRESET_MARKER = "# paper-size preset"


def is_paper_preset(path: Path) -> bool:
    return any(line.startswith(PRESET_MARKER) for line in path.read_text().splitlines())


MODEL_CONFIGS = sorted(p.stem for p in MODEL_DIR.glob("*.yaml"))
PAPER_PRESETS = sorted(p.stem for p in MODEL_DIR.glob("*.yaml") if is_paper_preset(p))
VARIANTS = sorted(set(MODEL_CONFIGS) - set(PAPER_PRESETS))  # every attention variant: tests and the comparison run these
