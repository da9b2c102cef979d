"""Tests for lab 04's training script (written by the notebook's %%writefile cell) and its plumbing.

The script is taken from the notebook itself, so these tests run exactly what a student runs: one process
and two (DDP, FSDP) started by torchrun on the tiny profile (gloo on the CPU), about 15 s each.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F

from labhelpers import (get_profile, load_model, max_weight_difference, resolve_model_path, run_torchrun,
                        training_examples)

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "04_distributed_training.ipynb"
SETTINGS = dict(steps=3, global_batch=4, seq_len=32)
TOLERANCE = 1e-5  # fp32 summation order differs between one process and two


def script_from_notebook() -> str:
    """The source of the training script the notebook writes with %%writefile."""
    cells = [c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells
             if c.cell_type == "code" and c.source.startswith("%%writefile") and "train_data_parallel.py" in c.source]
    assert len(cells) == 1, f"{NOTEBOOK.name} should write the training script in exactly one cell, found {len(cells)}"
    return cells[0].split("\n", 1)[1]


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    path = tmp_path_factory.mktemp("script") / "train_data_parallel.py"
    path.write_text(script_from_notebook())
    resolve_model_path(get_profile("tiny").model)  # built once here, as the notebook does, before the ranks load it
    return path


def torchrun(script, strategy, nproc, out, **overrides):
    s = {**SETTINGS, **overrides}
    command = ["torchrun", "--standalone", f"--nproc_per_node={nproc}", str(script), "--strategy", strategy,
               "--profile", "tiny", "--device", "cpu", "--steps", str(s["steps"]), "--global-batch",
               str(s["global_batch"]), "--seq-len", str(s["seq_len"]), "--out", str(out)]
    return run_torchrun(command, out, timeout_s=300, verbose=False)


@pytest.fixture(scope="module")
def runs(script, tmp_path_factory):
    folder = tmp_path_factory.mktemp("distributed")
    return {strategy: torchrun(script, strategy, nproc, folder / strategy)
            for strategy, nproc in (("single", 1), ("ddp", 2), ("fsdp", 2))}


def test_ddp_ranks_hold_identical_weights_after_every_step(runs):
    ddp = runs["ddp"]
    assert ddp.strategy == "ddp" and ddp.world_size == 2 and [r["rank"] for r in ddp.ranks] == [0, 1]
    assert all(r["backend"] == "gloo" and r["local_batch"] == 2 for r in ddp.ranks)
    assert ddp.ranks_identical() == [True] * SETTINGS["steps"], ddp.hashes
    assert len(set(ddp.hashes[0])) == SETTINGS["steps"]  # every step changed the weights
    assert ddp.ranks[0]["initial_weights_hash"] != ddp.hashes[0][0]


def test_ddp_matches_one_process_on_the_same_global_batch(runs):
    single, ddp = runs["single"], runs["ddp"]
    assert single.world_size == 1 and single.ranks[0]["local_batch"] == SETTINGS["global_batch"]
    assert single.ranks[0]["initial_weights_hash"] == ddp.ranks[0]["initial_weights_hash"]  # the same start
    assert [s["target_tokens"] for s in single.ranks[0]["steps"]] == [s["target_tokens"] for s in ddp.ranks[0]["steps"]]
    assert ddp.losses == pytest.approx(single.losses, rel=1e-5)
    assert len(set(single.losses)) == SETTINGS["steps"]  # different batches, different losses: the match is not trivial
    diff, where = max_weight_difference(single.weights_path, ddp.weights_path)
    assert diff <= TOLERANCE, (diff, where)  # equal within fp32 rounding, though summed in another order


def test_first_loss_is_the_mean_token_loss_of_the_sampled_global_batch(runs):
    """By hand: the first global batch the sampler draws (seed 0), the initial weights, mean cross-entropy."""
    from torch.utils.data import DistributedSampler

    profile = get_profile("tiny")
    model, tokenizer = load_model(profile.model, profile=profile, dtype=torch.float32, device="cpu")
    examples = training_examples(tokenizer, profile, SETTINGS["steps"] * SETTINGS["global_batch"], SETTINGS["seq_len"])
    order = list(DistributedSampler(examples, num_replicas=1, rank=0, shuffle=True, seed=0))
    ids = torch.stack([examples[i]["input_ids"] for i in order[:SETTINGS["global_batch"]]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    want = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)).item()
    assert runs["single"].ranks[0]["steps"][0]["target_tokens"] == SETTINGS["global_batch"] * (SETTINGS["seq_len"] - 1)
    for run in runs.values():
        assert run.losses[0] == pytest.approx(want, rel=1e-5), run.strategy
    # another batch of the same examples gives another loss: the check sees which batch was drawn
    other = torch.stack([examples[i]["input_ids"] for i in order[SETTINGS["global_batch"]:2 * SETTINGS["global_batch"]]])
    with torch.no_grad():
        logits = model(input_ids=other).logits
    assert F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), other[:, 1:].reshape(-1)).item() != \
        pytest.approx(want, rel=1e-5)


def test_fsdp_shards_parameters_and_optimizer_states_and_trains_like_ddp(runs):
    fsdp, ddp = runs["fsdp"], runs["ddp"]
    n = fsdp.ranks[0]["n_params"]
    assert all(r["n_params"] == n for r in fsdp.ranks)
    assert sum(r["local_params"] for r in fsdp.ranks) == n
    for r in fsdp.ranks:
        assert r["local_params"] == pytest.approx(n / 2, rel=0.01)
        assert r["optimizer_state_numel"] == 2 * r["local_params"]  # AdamW: two moments per held number
    assert all(r["local_params"] == n and r["optimizer_state_numel"] == 2 * n for r in ddp.ranks)
    assert fsdp.ranks_identical() == [False] * SETTINGS["steps"]  # each rank hashes its own shard
    assert fsdp.losses == pytest.approx(ddp.losses, rel=1e-5)
    diff, where = max_weight_difference(ddp.weights_path, fsdp.weights_path)
    assert diff <= TOLERANCE, (diff, where)
    assert set(fsdp.table()["share of the model"].round(2)) == {0.5}


def test_memory_and_times_are_measured_per_rank(runs):
    for r in runs["ddp"].ranks + runs["fsdp"].ranks:
        m = r["memory"]
        assert m["peak_bytes"] >= m["start_of_training_bytes"] > 0
        assert m["training_bytes"] == m["peak_bytes"] - m["without_model_bytes"] > 0
        assert r["train_s"] > 0 and r["wall_s"] >= r["train_s"]
        assert r["predicted"]["optimizer_state_bytes"] == 2 * r["predicted"]["weights_bytes"] == 8 * r["n_params"]


def test_a_global_batch_that_does_not_split_fails_in_one_line_naming_it(script, tmp_path):
    with pytest.raises(RuntimeError) as err:
        torchrun(script, "ddp", 2, tmp_path, global_batch=3, steps=1)
    message = str(err.value)
    assert "--global-batch 3 must be a multiple of the 2 processes" in message and "\n" not in message


def test_run_torchrun_refuses_bad_arguments_and_stops_at_its_timeout(tmp_path):
    for bad in ([], "torchrun --standalone", [1, 2]):
        with pytest.raises(ValueError, match="must be a non-empty list of strings"):
            run_torchrun(bad, tmp_path)
    with pytest.raises(ValueError, match="timeout_s=0 must be"):
        run_torchrun(["torchrun"], tmp_path, timeout_s=0)
    with pytest.raises(TimeoutError, match="did not finish within 1 s"):
        run_torchrun([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path, timeout_s=1)
    with pytest.raises(RuntimeError, match="no process wrote a rank<r>.json"):
        run_torchrun([sys.executable, "-c", "pass"], tmp_path)


def test_training_examples_are_equal_length_sequences():
    profile = get_profile("tiny")
    _, causal_tok = load_model(profile.model, profile=profile, dtype=torch.float32, device="cpu")
    blocks = training_examples(causal_tok, profile, 5, 16)
    assert len(blocks) == 5 and all(list(b) == ["input_ids"] and b["input_ids"].shape == (16,) for b in blocks)
    assert not torch.equal(blocks[0]["input_ids"], blocks[1]["input_ids"])  # consecutive blocks of the text
    _, t5_tok = load_model(profile.seq2seq_model, profile=profile, dtype=torch.float32, device="cpu")
    pairs = training_examples(t5_tok, profile, 3, 64, seq2seq=True)
    for p in pairs:
        assert {k: v.shape for k, v in p.items()} == {"input_ids": (64,), "attention_mask": (64,), "labels": (64,)}
        n_in, n_out = int(p["attention_mask"].sum()), int((p["labels"] != -100).sum())
        assert 0 < n_in <= 64 and 0 < n_out <= 64
        assert (p["labels"][n_out:] == -100).all() and (p["input_ids"][n_in:] == t5_tok.pad_token_id).all()


def script_functions() -> dict:
    """The functions the script defines (with its imports), without running its training."""
    namespace: dict = {}
    tree = ast.parse(script_from_notebook())
    tree.body = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef))]
    exec(compile(tree, "train_data_parallel.py", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("family", ["causal", "seq2seq"])
def test_summed_token_loss_is_the_models_mean_loss_times_its_target_tokens(family):
    """Against transformers' own loss (the mean over target tokens), for both model families."""
    summed_token_loss = script_functions()["summed_token_loss"]
    profile = get_profile("tiny")
    name = profile.seq2seq_model if family == "seq2seq" else profile.model
    model, tokenizer = load_model(name, profile=profile, dtype=torch.float32, device="cpu")
    examples = training_examples(tokenizer, profile, 3, 24, seq2seq=family == "seq2seq")
    batch = {k: torch.stack([e[k] for e in examples]) for k in examples[0]}
    with torch.no_grad():
        loss_sum, n_tokens = summed_token_loss(model, batch, family == "seq2seq")
        labels = batch.get("labels", batch["input_ids"])
        mean = model(**{**batch, "labels": labels}).loss.item()
    want_tokens = int((labels != -100).sum()) if family == "seq2seq" else 3 * 23
    assert int(n_tokens) == want_tokens
    assert loss_sum.item() == pytest.approx(mean * want_tokens, rel=1e-5)


def test_weights_hash_sees_a_one_ulp_change():
    weights_hash = script_functions()["weights_hash"]
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3)
    before = weights_hash(layer)
    assert weights_hash(layer) == before
    with torch.no_grad():
        layer.weight[1, 2] = torch.nextafter(layer.weight[1, 2], torch.tensor(1.0))
    assert weights_hash(layer) != before
