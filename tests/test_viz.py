"""Attention heatmaps: PNG files, arrays, word merging and real TensorBoard event files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib import image as mpimg
from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from attnmt.viz import attention_figure, figure_to_array, figure_to_png, log_attention_maps, merge_subwords


def random_attention(*shape: int, seed: int = 0) -> torch.Tensor:
    """Rows that sum to 1 over the last dimension."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).softmax(-1)


def test_png_and_array_have_the_figure_size(tmp_path: Path) -> None:
    figure = attention_figure(random_attention(5, 7), [f"s{i}" for i in range(7)], [f"t{i}" for i in range(5)], title="one")
    width, height = (figure.get_size_inches() * figure.dpi).round().astype(int)
    path = figure_to_png(figure, tmp_path / "nested" / "map.png")
    pixels = mpimg.imread(path)
    assert pixels.shape[:2] == (height, width)
    assert pixels.std() > 0.05  # something was drawn
    array = figure_to_array(figure)
    assert array.dtype == np.uint8 and array.shape == (height, width, 3)


def test_figure_scales_with_length_and_draws_every_head() -> None:
    long_tokens = [f"w{i}" for i in range(50)]
    small = attention_figure(random_attention(10, 10), long_tokens[:10], long_tokens[:10])
    large = attention_figure(random_attention(50, 50), long_tokens, long_tokens)
    assert (large.get_size_inches() > 3 * small.get_size_inches()).all()
    heatmap = large.axes[0]
    assert [label.get_text() for label in heatmap.get_xticklabels()] == long_tokens
    assert [label.get_text() for label in heatmap.get_yticklabels()] == long_tokens
    assert heatmap.images[0].get_clim() == (0.0, 1.0)

    grid = attention_figure(random_attention(3, 6, 4), list("abcd"), list("uvwxyz"), title="heads")
    panels = [ax for ax in grid.axes if ax.images]
    assert len(panels) == 3  # plus the colour bar axes, without images
    with pytest.raises(ValueError, match="2 target and 4 source"):
        attention_figure(random_attention(6, 4), list("abcd"), list("uv"))


def test_merge_subwords_sums_source_and_averages_target_pieces() -> None:
    src = ["\u2581A", "\u2581do", "g", "\u2581runs", "</s>"]
    tgt = ["\u2581Un", "\u2581chi", "en", "\u2581court", "</s>"]
    weights = random_attention(2, 5, 5, seed=1)  # [H, T, S]
    merged, src_words, tgt_words = merge_subwords(weights, src, tgt)

    assert src_words == ["A", "dog", "runs", "</s>"]
    assert tgt_words == ["Un", "chien", "court", "</s>"]
    assert merged.shape == (2, 4, 4)
    np.testing.assert_allclose(merged.sum(-1), 1.0, atol=1e-6)
    expected_dog_column = weights[..., 1] + weights[..., 2]
    chien_row = (weights[:, 1] + weights[:, 2]) / 2  # [H, S]
    np.testing.assert_allclose(merged[:, :, 1][:, [0, 2, 3]], expected_dog_column[:, [0, 3, 4]].numpy(), atol=1e-6)
    np.testing.assert_allclose(merged[:, 1, 1], (chien_row[:, 1] + chien_row[:, 2]).numpy(), atol=1e-6)


def read_events(folder: Path) -> EventAccumulator:
    events = EventAccumulator(str(folder), size_guidance={IMAGES: 0})
    events.Reload()
    return events


def test_log_attention_maps_writes_tensorboard_images_and_pngs(tmp_path: Path) -> None:
    src, tgt = ["\u2581a", "b", "\u2581c", "</s>"], ["\u2581x", "\u2581y", "</s>"]
    writer = SummaryWriter(log_dir=str(tmp_path / "tb"))
    written = log_attention_maps(writer, "probe_0", random_attention(2, 4, 3, 4), src, tgt, step=7, png_dir=tmp_path / "png")
    single_head = log_attention_maps(writer, "probe_1", random_attention(1, 1, 3, 4), src, tgt, step=7, merge=True)
    writer.close()

    expected_tags = ["attention_maps/probe_0/layer_0", "attention_maps/probe_0/layer_1", "attention_maps/probe_0/heads_layer_1"]
    assert written[:3] == expected_tags
    pngs = [Path(p) for p in written[3:]]
    assert [p.name for p in pngs] == ["probe_0_layer_0.png", "probe_0_layer_1.png", "probe_0_heads_layer_1.png"]
    assert all(mpimg.imread(p).shape[2] in (3, 4) for p in pngs)
    assert single_head == ["attention_maps/probe_1/layer_0"]

    events = read_events(tmp_path / "tb")
    assert set(events.Tags()[IMAGES]) == set(expected_tags + single_head)
    stored = events.Images("attention_maps/probe_0/heads_layer_1")[0]
    assert stored.step == 7 and stored.width > stored.height > 0


def test_colour_scale_fixed_or_per_map_maximum() -> None:
    diffuse = torch.full((4, 5), 0.2)
    diffuse[0, 0] = 0.3
    fixed = attention_figure(diffuse, list("abcde"), list("wxyz"))
    scaled = attention_figure(diffuse, list("abcde"), list("wxyz"), scale="max")
    assert fixed.axes[0].images[0].get_clim() == (0.0, 1.0)
    assert scaled.axes[0].images[0].get_clim() == pytest.approx((0.0, 0.3))
    with pytest.raises(ValueError, match="scale"):
        attention_figure(diffuse, list("abcde"), list("wxyz"), scale="log")


@pytest.mark.slow
def test_titles_name_variant_step_layer_and_show_the_translation(tmp_path: Path) -> None:
    src, tgt = ["\u2581a", "\u2581b", "</s>"], ["\u2581x", "</s>"]
    writer = SummaryWriter(log_dir=str(tmp_path / "tb"))
    written = log_attention_maps(writer, "probe_0", random_attention(1, 1, 2, 3), src, tgt, step=400,
                                 png_dir=tmp_path / "png", tag_root="custom", title="bahdanau · step 400",
                                 translation="Un chat.")
    writer.close()
    assert written[0] == "custom/probe_0/layer_0"
    figure = attention_figure(random_attention(2, 3), ["a", "b", "c"], ["x", "y"], title="bahdanau · step 400 · probe_0 · "
                              "layer 0 (single map)\n→ Un chat.")
    title = figure.axes[0].get_title()
    assert "bahdanau" in title and "step 400" in title and "layer 0" in title and "Un chat." in title


def test_log_attention_maps_titles(tmp_path: Path, monkeypatch) -> None:
    """The titles log_attention_maps gives: variant, step, layer, head text and the translation."""
    import attnmt.viz as viz

    titles: list[str] = []
    original = viz.attention_figure
    monkeypatch.setattr(viz, "attention_figure", lambda *a, **k: titles.append(a[3]) or original(*a, **k))
    writer = SummaryWriter(log_dir=str(tmp_path / "tb"))
    src, tgt = ["\u2581a", "</s>"], ["\u2581x", "</s>"]
    viz.log_attention_maps(writer, "probe_0", random_attention(1, 1, 2, 2), src, tgt, step=3, title="luong · step 3",
                           translation="Un x.")
    viz.log_attention_maps(writer, "probe_0", random_attention(2, 4, 2, 2), src, tgt, step=3, title="transformer · step 3")
    writer.close()
    assert titles[0] == "luong · step 3 · probe_0 · layer 0 (single map)\n→ Un x."  # an RNN: no "mean of heads"
    assert titles[1] == "transformer · step 3 · probe_0 · layer 0 (mean of heads)"
    assert titles[-1] == "transformer · step 3 · probe_0 · layer 1, each head"


def test_head_grid_stays_readable() -> None:
    """Labels only on the outer panels; a 4-head grid of a 23-token sentence stays about as wide as
    tall and not much larger than four single maps."""
    tokens = [f"tok{i}" for i in range(23)]
    grid = attention_figure(random_attention(4, 23, 23), tokens, tokens, title="heads")
    single = attention_figure(random_attention(23, 23), tokens, tokens)
    width, height = grid.get_size_inches()
    assert 0.7 < width / height < 1.5
    assert width * height < 4 * np.prod(single.get_size_inches())
    panels = [ax for ax in grid.axes if ax.images]
    labelled_x = [ax for ax in panels if any(label.get_text() for label in ax.get_xticklabels())]
    labelled_y = [ax for ax in panels if any(label.get_text() for label in ax.get_yticklabels())]
    assert len(labelled_x) == 2 and len(labelled_y) == 2  # bottom row, left column
