"""Tests for labhelpers.distributed on the tiny profile: DDP on 2 real processes, FSDP sharding, bad arguments.

The two launches start real torchrun processes (gloo on the CPU), about 15 s each; the single-process
reference runs in this process through the script's own `main`.
"""

from __future__ import annotations

import json

import pytest
import torch

from labhelpers.distributed import launch, main, max_weight_difference, parse_args, weights_hash

SETTINGS = dict(steps=3, global_batch=4, seq_len=32)
TOLERANCE = 1e-5  # fp32 summation order differs between one process and two


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    folder = tmp_path_factory.mktemp("distributed")
    try:
        assert main(["--strategy", "single", "--profile", "tiny", "--steps", str(SETTINGS["steps"]),
                     "--global-batch", str(SETTINGS["global_batch"]), "--seq-len", str(SETTINGS["seq_len"]),
                     "--device", "cpu", "--save-weights", "--out", str(folder / "single")]) == 0
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    single = json.loads((folder / "single" / "rank0.json").read_text())
    common = dict(profile="tiny", device="cpu", save_weights=True, verbose=False, timeout_s=240, **SETTINGS)
    return {"single": single,
            "ddp": launch("ddp", 2, out=folder / "ddp", **common),
            "fsdp": launch("fsdp", 2, out=folder / "fsdp", **common)}


def test_ddp_ranks_hold_identical_weights_after_every_step(runs):
    ddp = runs["ddp"]
    assert ddp.world_size == 2 and [r["rank"] for r in ddp.ranks] == [0, 1]
    assert all(r["backend"] == "gloo" and r["local_batch"] == 2 for r in ddp.ranks)
    assert ddp.ranks_identical() == [True] * SETTINGS["steps"], ddp.hashes
    assert len(set(ddp.hashes[0])) == SETTINGS["steps"]  # every step changed the weights
    assert ddp.ranks[0]["initial_weights_hash"] != ddp.hashes[0][0]


def test_ddp_matches_one_process_on_the_same_global_batch(runs):
    single, ddp = runs["single"], runs["ddp"]
    assert single["world_size"] == 1 and single["local_batch"] == SETTINGS["global_batch"]
    assert single["initial_weights_hash"] == ddp.ranks[0]["initial_weights_hash"]  # the same start
    assert [s["target_tokens"] for s in single["steps"]] == [s["target_tokens"] for s in ddp.ranks[0]["steps"]]
    assert ddp.losses == pytest.approx([s["loss"] for s in single["steps"]], rel=1e-5)
    diff, where = max_weight_difference(single["weights_path"], ddp.weights_path)
    assert diff <= TOLERANCE, (diff, where)


def test_fsdp_shards_parameters_and_optimizer_states_and_trains_like_ddp(runs):
    fsdp, ddp = runs["fsdp"], runs["ddp"]
    n = fsdp.ranks[0]["n_params"]
    assert all(r["n_params"] == n for r in fsdp.ranks)
    assert sum(r["local_params"] for r in fsdp.ranks) == n
    for r in fsdp.ranks:
        assert r["local_params"] == pytest.approx(n / 2, rel=0.01)
        assert r["optimizer_state_numel"] == 2 * r["local_params"]  # AdamW: two moments per held number
    assert all(r["local_params"] == n and r["optimizer_state_numel"] == 2 * n for r in ddp.ranks)
    assert fsdp.losses == pytest.approx(ddp.losses, rel=1e-5)
    diff, where = max_weight_difference(ddp.weights_path, fsdp.weights_path)
    assert diff <= TOLERANCE, (diff, where)
    assert set(fsdp.table()["share of the model"].round(2)) == {0.5}


def test_memory_and_times_are_measured_per_rank(runs):
    for r in runs["ddp"].ranks + runs["fsdp"].ranks:
        m = r["memory"]
        assert m["peak_bytes"] >= m["start_of_training_bytes"] > 0
        assert m["training_bytes"] > 0 and r["train_s"] > 0 and r["wall_s"] >= r["train_s"]
        assert r["predicted"]["optimizer_state_bytes"] == 2 * r["predicted"]["weights_bytes"]


@pytest.mark.parametrize("kwargs, words", [
    (dict(strategy="zero3"), "strategy='zero3' is unknown"),
    (dict(strategy="ddp", nproc=0), "nproc=0 must be"),
    (dict(strategy="ddp", nproc=-2), "nproc=-2 must be"),
    (dict(strategy="ddp", nproc=1.5), "nproc=1.5 must be"),
    (dict(strategy="single", nproc=2), "strategy='single' is one process"),
    (dict(strategy="ddp", nproc=2, global_batch=3), "global_batch=3 must be a positive multiple of nproc=2"),
    (dict(strategy="ddp", nproc=2, timeout_s=0), "timeout_s=0 must be"),
])
def test_bad_arguments_give_one_clear_line(kwargs, words):
    strategy = kwargs.pop("strategy")
    with pytest.raises(ValueError) as err:
        launch(strategy, **{"profile": "tiny", **kwargs})
    assert words in str(err.value) and "\n" not in str(err.value)


def test_command_line_rejects_unknown_strategy_and_zero_steps(capsys):
    for argv in (["--strategy", "zero", "--out", "x"], ["--strategy", "ddp", "--steps", "0", "--out", "x"]):
        with pytest.raises(SystemExit) as exit_:
            parse_args(argv)
        assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'zero'" in err and "--steps must be at least 1" in err


def test_weights_hash_sees_a_one_ulp_change():
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3)
    before = weights_hash(layer)
    assert weights_hash(layer) == before
    with torch.no_grad():
        layer.weight[1, 2] = torch.nextafter(layer.weight[1, 2], torch.tensor(1.0))
    assert weights_hash(layer) != before
