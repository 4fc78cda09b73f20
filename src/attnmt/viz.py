"""Cross-attention heatmaps: figures, sentencepiece-to-word merging, PNG and TensorBoard output.

Source tokens run along the x-axis, target tokens down the y-axis; colours span [0, 1], or
[0, the figure's largest weight] with scale="max" (diffuse maps stay readable).
Only matplotlib's object-oriented API with the Agg canvas is used (no pyplot, no display), so
this works on headless machines and inside training loops without leaking figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from attnmt.data.vocab import BOS_PIECE, EOS_PIECE, PAD_PIECE

WORD_START = "\u2581"  # sentencepiece's "▁": the piece begins a new word
STANDALONE_PIECES = (BOS_PIECE, EOS_PIECE, PAD_PIECE)
CELL_INCHES = 0.26  # one token cell: ~19 pt, room for 8 pt labels even at 50 x 50 tokens
LABEL_POINTS = 8
DPI = 100
# TensorBoard's top-level tag of attention heatmaps, for training's probes and evaluation alike
# (statistics go under metrics.ATTENTION_STATS_TAG, so the two never share a section)
ATTENTION_MAPS_TAG = "attention_maps"


def _as_numpy(weights: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(weights, torch.Tensor):
        return weights.detach().to("cpu", torch.float32).numpy()
    return np.asarray(weights, dtype=np.float32)


def _check_tokens(weights: np.ndarray, src_tokens: Sequence[str], tgt_tokens: Sequence[str]) -> None:
    target_len, source_len = weights.shape[-2:]
    if (target_len, source_len) != (len(tgt_tokens), len(src_tokens)):
        raise ValueError(
            f"attention is [.., {target_len}, {source_len}] but there are {len(tgt_tokens)} target "
            f"and {len(src_tokens)} source tokens"
        )


SCALES = ("fixed", "max")


def colour_max(values: np.ndarray, scale: str = "fixed") -> float:
    """Upper end of the colour scale: 1 ("fixed", maps comparable with each other) or the largest
    weight drawn ("max", a diffuse map uses the whole colour range)."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    if scale == "max":
        top = float(np.max(values)) if values.size else 1.0
        return top if top > 0 else 1.0
    return 1.0


def _draw_map(ax: Any, weights: np.ndarray, src_tokens: Sequence[str], tgt_tokens: Sequence[str], title: str | None,
              vmax: float = 1.0, x_labels: bool = True, y_labels: bool = True) -> Any:
    """Draw one [T, S] map on ax; returns the image (for the colour bar).

    x_labels / y_labels False: tick labels and axis title left to the grid's outer panels.
    """
    image = ax.imshow(weights, vmin=0.0, vmax=vmax, cmap="viridis", aspect="equal", interpolation="nearest")
    ax.set_xticks(range(len(src_tokens)), labels=list(src_tokens) if x_labels else [], rotation=90, fontsize=LABEL_POINTS)
    ax.set_yticks(range(len(tgt_tokens)), labels=list(tgt_tokens) if y_labels else [], fontsize=LABEL_POINTS)
    ax.tick_params(length=0)
    if x_labels:
        ax.set_xlabel("source", fontsize=LABEL_POINTS + 1)
    if y_labels:
        ax.set_ylabel("target", fontsize=LABEL_POINTS + 1)
    if title:
        ax.set_title(title, fontsize=LABEL_POINTS + 2)
    return image


def _wrap(text: str, width: int) -> str:
    """Break a long title line (a translation) at spaces so it never widens the figure."""
    import textwrap

    return "\n".join(textwrap.wrap(text, max(width, 30))) or text


def attention_figure(
    weights: torch.Tensor | np.ndarray,
    src_tokens: Sequence[str],
    tgt_tokens: Sequence[str],
    title: str | None = None,
    scale: str = "fixed",
    alignment: Any = None,
) -> Figure:
    """A heatmap of weights [T, S], or a grid with one heatmap per head for [H, T, S].

    The figure grows with the number of tokens (a fixed cell size), so labels keep a readable
    size whatever the sentence length. In a head grid only the bottom row carries source labels
    and only the left column target labels, so the panels, not repeated labels, fill the image.
    Every panel shares one colour bar over [0, 1] (scale="fixed") or [0, largest weight] ("max").
    title may hold several lines (e.g. the translation); lines are wrapped to the figure width.
    alignment: optional (source index, target index) links, drawn as red outlined cells.
    """
    from matplotlib.patches import Rectangle

    values = _as_numpy(weights)
    if values.ndim == 2:
        values = values[None]  # [1, T, S]
    if values.ndim != 3:
        raise ValueError(f"attention_figure wants [T, S] or [H, T, S], got shape {values.shape}")
    _check_tokens(values, src_tokens, tgt_tokens)
    vmax = colour_max(values, scale)
    heads, target_len, source_len = values.shape
    columns = math.ceil(math.sqrt(heads))
    grid_rows = math.ceil(heads / columns)
    longest_label = max((len(token) for token in (*src_tokens, *tgt_tokens)), default=1)
    label_inches = 0.6 + 0.07 * min(longest_label, 20)  # room for tick labels and axis titles
    panel_w = source_len * CELL_INCHES + 0.3
    panel_h = target_len * CELL_INCHES + (0.45 if heads > 1 else 0.3)  # + the panel title
    width = columns * panel_w + label_inches + 1.2
    title_lines = 0
    if title:
        title = "\n".join(_wrap(line, int(width * 12)) for line in title.split("\n"))
        title_lines = title.count("\n") + 1
    height = grid_rows * panel_h + label_inches + 0.3 + 0.22 * title_lines
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(grid_rows, columns, squeeze=False)
    image = None
    for head, ax in enumerate(axes.flat):
        if head >= heads:
            ax.set_axis_off()
            continue
        row, column = divmod(head, columns)
        bottom = row == grid_rows - 1 or head + columns >= heads  # nothing drawn below this panel
        panel_title = (title if heads == 1 else f"head {head}")
        image = _draw_map(ax, values[head], src_tokens, tgt_tokens, panel_title, vmax=vmax,
                          x_labels=heads == 1 or bottom, y_labels=heads == 1 or column == 0)
        for s, t in alignment or ():  # reference links (source, target) as outlined cells
            ax.add_patch(Rectangle((s - 0.5, t - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.2))
    if heads > 1 and title:
        figure.suptitle(title, fontsize=LABEL_POINTS + 3)
    figure.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8)
    return figure


def side_by_side_figure(panels: Sequence[tuple[str, Any, Sequence[str], Sequence[str]]], title: str | None = None) -> Figure:
    """One row of maps that may differ in target tokens: panels = [(title, weights [T, S], src, tgt)].

    Used to compare variants on the same source sentence; one colour bar over [0, 1].
    """
    if not panels:
        raise ValueError("side_by_side_figure needs at least one panel")
    arrays = [_as_numpy(weights) for _, weights, _, _ in panels]
    for values, (_, _, src, tgt) in zip(arrays, panels):
        _check_tokens(values[None], src, tgt)
    width = sum(v.shape[1] * CELL_INCHES + 1.6 for v in arrays) + 1.2
    height = max(v.shape[0] for v in arrays) * CELL_INCHES + 2.2
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels), squeeze=False, width_ratios=[v.shape[1] + 6 for v in arrays])
    image = None
    for ax, values, (name, _, src, tgt) in zip(axes.flat, arrays, panels):
        image = _draw_map(ax, values, src, tgt, name)
    if title:
        figure.suptitle(title, fontsize=LABEL_POINTS + 3)
    figure.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8)
    return figure


def _word_groups(pieces: Sequence[str]) -> tuple[list[int], list[str]]:
    """Sentencepiece pieces -> (word index of every piece, the words without "▁")."""
    groups: list[int] = []
    words: list[str] = []
    for i, piece in enumerate(pieces):
        standalone = piece in STANDALONE_PIECES
        continues = i > 0 and not piece.startswith(WORD_START) and not standalone and pieces[i - 1] not in STANDALONE_PIECES
        if continues:
            words[-1] += piece
        else:
            words.append(piece.removeprefix(WORD_START) if not standalone else piece)
        groups.append(len(words) - 1)
    return groups, words


def _membership(groups: list[int], n_words: int) -> np.ndarray:
    """[pieces] word index -> [pieces, words] 0/1 matrix."""
    matrix = np.zeros((len(groups), n_words), dtype=np.float32)
    matrix[np.arange(len(groups)), groups] = 1.0
    return matrix


def merge_subwords(
    weights: torch.Tensor | np.ndarray, src_pieces: Sequence[str], tgt_pieces: Sequence[str]
) -> tuple[np.ndarray, list[str], list[str]]:
    """Turn piece-level attention [..., T, S] into word-level attention [..., T_words, S_words].

    A word is a piece starting with "▁" (or the first piece, or <s> / </s> / <pad>, which stand
    alone) plus the pieces that follow it without "▁". Source columns of one word are summed (the
    weight the word received), target rows of one word averaged (so each row still sums to 1).
    -> (word-level weights as numpy float32, source words, target words)
    """
    values = _as_numpy(weights)
    _check_tokens(values, src_pieces, tgt_pieces)
    src_groups, src_words = _word_groups(src_pieces)
    tgt_groups, tgt_words = _word_groups(tgt_pieces)
    sum_columns = _membership(src_groups, len(src_words))  # [S, S_words]
    tgt_members = _membership(tgt_groups, len(tgt_words))  # [T, T_words]
    mean_rows = (tgt_members / tgt_members.sum(axis=0, keepdims=True)).T  # [T_words, T]
    merged = mean_rows @ values @ sum_columns  # [..., T_words, S_words]
    return merged.astype(np.float32), src_words, tgt_words


def figure_to_png(figure: Figure, path: str | Path) -> Path:
    """Write the figure as a PNG of exactly figsize x dpi pixels; creates missing folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=figure.dpi)
    return path


def figure_to_array(figure: Figure) -> np.ndarray:
    """Render the figure -> [H, W, 3] uint8 RGB (for SummaryWriter.add_image(..., dataformats="HWC"))."""
    canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def log_attention_maps(
    writer: Any,
    tag_prefix: str,
    weights: torch.Tensor | np.ndarray,
    src_tokens: Sequence[str],
    tgt_tokens: Sequence[str],
    step: int,
    png_dir: str | Path | None = None,
    head_grid_layer: int = -1,
    merge: bool = False,
    tag_root: str = ATTENTION_MAPS_TAG,
    title: str | None = None,
    translation: str | None = None,
    scale: str = "fixed",
) -> list[str]:
    """Log one sentence's cross-attention weights [L, H, T, S] as images.

    writer: a torch.utils.tensorboard SummaryWriter (Lightning: logger.experiment).
    Writes per layer the head-averaged map under "<tag_root>/<tag_prefix>/layer_<l>" and, when
    there are several heads, every head of layer `head_grid_layer` (negative counts from the
    end) under "<tag_root>/<tag_prefix>/heads_layer_<l>" (tag_root: "attention_maps" by default).
    With png_dir the same figures go to <png_dir>/<tag_prefix>_layer_<l>.png and
    ..._heads_layer_<l>.png. merge=True shows words instead of sentencepiece pieces (see
    merge_subwords). title (e.g. "bahdanau · step 400") starts every figure title, followed by
    the map's name and layer/head; translation, when given, is the title's second line.
    scale: "fixed" colours over [0, 1], "max" over [0, the figure's largest weight].
    -> the tags written, followed by the PNG paths written.
    """
    values = _as_numpy(weights)
    if values.ndim != 4:
        raise ValueError(f"log_attention_maps wants [L, H, T, S], got shape {values.shape}")
    if merge:
        values, src_tokens, tgt_tokens = merge_subwords(values, src_tokens, tgt_tokens)
    layers, heads = values.shape[:2]
    grid_layer = head_grid_layer % layers
    head_text = "mean of heads" if heads > 1 else "single map"  # an RNN attention has one "head"
    prefix = f"{title} · " if title else ""
    second_line = f"\n→ {translation}" if translation else ""
    figures: list[tuple[str, Figure]] = []
    for layer in range(layers):
        name = f"layer_{layer}"
        caption = f"{prefix}{tag_prefix} · layer {layer} ({head_text}){second_line}"
        figures.append((name, attention_figure(values[layer].mean(axis=0), src_tokens, tgt_tokens, caption, scale=scale)))
    if heads > 1:
        name = f"heads_layer_{grid_layer}"
        caption = f"{prefix}{tag_prefix} · layer {grid_layer}, each head{second_line}"
        figures.append((name, attention_figure(values[grid_layer], src_tokens, tgt_tokens, caption, scale=scale)))

    tags, paths = [], []
    for name, figure in figures:
        tag = f"{tag_root}/{tag_prefix}/{name}"
        writer.add_image(tag, figure_to_array(figure), global_step=step, dataformats="HWC")
        tags.append(tag)
        if png_dir is not None:
            paths.append(str(figure_to_png(figure, Path(png_dir) / f"{tag_prefix.replace('/', '_')}_{name}.png")))
    return tags + paths
