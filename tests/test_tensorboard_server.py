"""A real TensorBoard server on loopback serves a trained and evaluated run: scalars, attention images."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from matplotlib import image as mpimg

from test_evaluate import evaluated_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EVAL_RUN = "tensorboard/eval/test/beam5"  # run names are folders relative to --logdir


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(base: str, path: str, **query: str) -> bytes:
    url = f"{base}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_parallel_dir):
    """(base URL, run folder) of `python -m tensorboard.main` on the evaluated run; stopped afterwards."""
    run, _ = evaluated_run(tmp_path_factory, tiny_parallel_dir)
    port = free_port()
    log = (tmp_path_factory.mktemp("tensorboard_log") / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(run), "--host", "127.0.0.1", "--port", str(port),
         "--load_fast=false", "--reload_interval=1"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:  # up when it answers, ready when both runs are loaded
            assert process.poll() is None, f"tensorboard exited with {process.returncode}; see {log.name}"
            try:
                runs = json.loads(get(base, "/data/runs"))
                if {"tensorboard", EVAL_RUN} <= set(runs):
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, f"tensorboard did not serve both runs within 60 s; see {log.name}"
            time.sleep(0.5)
        yield base, run
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.mark.slow
def test_scalar_tags_are_served(server) -> None:
    base, _ = server
    tags = json.loads(get(base, "/data/plugin/scalars/tags"))
    assert "val/bleu" in tags["tensorboard"]  # training
    assert {"eval/bleu", "attention_stats/transformer/layer_1/mean/entropy"} <= set(tags[EVAL_RUN])


def test_attention_images_are_served_as_png(server) -> None:
    base, run = server
    tags = json.loads(get(base, "/data/plugin/images/tags"))
    assert "attention_maps/probe_0/layer_0" in tags["tensorboard"]  # logged during training
    # evaluation's maps sit in the same Images-tab section as training's
    assert {"attention_maps/eval_test_0/layer_1", "attention_maps/eval_test_0/heads_layer_1",
            "attention_maps/probe_0/layer_1"} <= set(tags[EVAL_RUN])

    entries = json.loads(get(base, "/data/plugin/images/images", tag="attention_maps/probe_0/layer_1", run=EVAL_RUN))
    assert len(entries) == 1
    blob = get(base, "/data/plugin/images/individualImage?" + entries[0]["query"])
    assert blob.startswith(PNG_MAGIC)
    png = run / "eval" / "attention" / "test" / "beam5" / "probe_0_layer_1.png"
    assert mpimg.imread(io.BytesIO(blob), format="png").shape[:2] == mpimg.imread(png).shape[:2]  # the same figure


def test_hparams_and_text_tabs_are_served(server) -> None:
    """The HParams tab lists the training run as a session with its hyper-parameters and metric columns;
    the Text tab has the probe translations."""
    base, _ = server
    request = urllib.request.Request(
        f"{base}/data/plugin/hparams/experiment", data=json.dumps({"experimentName": ""}).encode(),
        headers={"Content-Type": "application/json", "X-TensorBoard-Feature-Flags": "{}"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        experiment = json.loads(response.read())
    names = {info["name"] for info in experiment["hparamInfos"]}
    assert {"variant", "seed", "model.d_model"} <= names
    metrics = {info["name"]["tag"] for info in experiment.get("metricInfos", [])}
    assert {"val/bleu", "best/val_bleu"} <= metrics
    text_tags = json.loads(get(base, "/data/plugin/text/tags"))
    # torch.utils.tensorboard names text summaries <tag>/text_summary
    assert {"translations/probes/text_summary", "translations/val_samples/text_summary"} <= set(text_tags["tensorboard"])
