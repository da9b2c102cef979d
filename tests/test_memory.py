"""Tests for labhelpers.memory: a measured peak sees real allocations, and the sampler stops."""

from __future__ import annotations

import sys
import threading

import pytest
import torch

from labhelpers.memory import GIB, PeakMemory, peak_memory, release_freed_memory, resident_bytes

MIB = 1024**2


def test_cpu_peak_sees_a_temporary_allocation():
    with peak_memory("cpu") as mem:
        block = torch.ones(64 * MIB // 4 * 4)  # 256 MiB of float32, touched so it is resident
        block.add_(1)
        del block
    assert mem.device == "cpu" and "RSS" in mem.method and "sampled every 2 ms" in mem.method
    assert mem.increase_bytes >= 200 * MIB, mem  # freed before the end, yet the peak remembers it
    assert mem.peak_bytes >= mem.baseline_bytes


def _fragmented_heap(n_blocks: int = 16384):
    """Allocate 256 MiB as 16 KiB tensors and keep one in 64: the allocator keeps the freed rest."""
    blocks = [torch.ones(4096) for _ in range(n_blocks)]
    kept = blocks[::64]
    del blocks
    return kept


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's")
def test_freed_memory_is_released_so_a_second_measurement_sees_its_own_work():
    first = _fragmented_heap()
    held = resident_bytes()[0]
    after = release_freed_memory()
    assert held - after >= 150 * MIB, (held, after)  # the freed 16 KiB blocks went back to the system
    with peak_memory("cpu") as mem:  # the same work again is measured, not hidden in retained memory
        second = _fragmented_heap()
    assert mem.increase_bytes >= 150 * MIB, mem
    del first, second


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="only Linux reports file-mapped pages apart")
def test_reading_a_mapped_file_is_not_counted_as_the_work_s_memory(tmp_path):
    # What a model loaded from safetensors is: weights mapped from a file, read in when first used.
    path = tmp_path / "weights.bin"
    torch.ones(64 * MIB).numpy().tofile(path)  # 256 MiB
    mapped = torch.from_file(str(path), shared=True, size=64 * MIB)  # mapped, not yet read
    with peak_memory("cpu") as mem:
        total = mapped.sum().item()  # pages every byte in
    assert total == 64 * MIB
    assert "anonymous" in mem.method
    assert mem.increase_bytes < 64 * MIB, mem  # 256 MiB of file pages became resident, none of them ours
    with peak_memory("cpu") as mem:
        copy = mapped.clone()  # a copy in the process's own memory does count
        copy.add_(1)
        del copy
    assert mem.increase_bytes >= 200 * MIB, mem


def test_cpu_peak_of_nothing_is_small():
    with peak_memory("cpu") as mem:
        sum(range(1000))
    assert mem.increase_bytes < 50 * MIB, mem


def test_sampler_thread_stops_even_when_the_block_raises():
    before = threading.active_count()
    with pytest.raises(RuntimeError, match="boom"):
        with peak_memory("cpu"):
            raise RuntimeError("boom")
    assert threading.active_count() == before


def test_str_reports_gib():
    text = str(PeakMemory("cpu", "test", baseline_bytes=GIB, peak_bytes=3 * GIB))
    assert text.startswith("peak 3.00 GiB (+2.00 GiB over the 1.00 GiB before)")


@pytest.mark.parametrize("interval", [0, -1, 5, "fast"])
def test_bad_interval_is_refused(interval):
    with pytest.raises(ValueError, match="interval_s"):
        peak_memory("cpu", interval_s=interval)


# ---------------------------------------------------------------------------------------------
# training_memory: the predicted memory of a training step
# ---------------------------------------------------------------------------------------------

from labhelpers import (LLAMA_2_7B, activation_bytes_per_layer, architecture, lora_trainable_params,  # noqa: E402
                        training_memory, training_memory_table)

SHAPE = {"n_layers": 4, "hidden_size": 256, "n_heads": 8, "vocab_size": 1000}


def test_adam_fp32_full_fine_tuning_holds_16_bytes_per_parameter():
    mem = training_memory(n_params=1e6, dtype="fp32", optimizer="adam")
    assert (mem.weights_bytes, mem.gradient_bytes, mem.master_weight_bytes, mem.optimizer_state_bytes) == (
        4e6, 4e6, 0.0, 8e6)
    assert mem.model_state_bytes == 16e6 and mem.activation_bytes == 0


def test_mixed_precision_adds_an_fp32_master_copy_and_keeps_16_bytes():
    mem = training_memory(n_params=1e6, dtype="bf16", mixed_precision=True, optimizer="adamw")
    assert (mem.weights_bytes, mem.gradient_bytes, mem.master_weight_bytes, mem.optimizer_state_bytes) == (
        2e6, 2e6, 4e6, 8e6)
    pure = training_memory(n_params=1e6, dtype="bf16", optimizer="adamw")  # torch keeps Adam states in bf16
    assert pure.master_weight_bytes == 0 and pure.model_state_bytes == 8e6


@pytest.mark.parametrize("optimizer, state_bytes", [("sgd", 0), ("SGD-momentum", 4), ("Adam", 8), ("adamw", 8),
                                                     ("adamw_8bit", 2), ("adam8bit", 2)])
def test_optimizer_states_per_parameter(optimizer, state_bytes):
    mem = training_memory(n_params=1000, dtype="fp32", optimizer=optimizer)
    assert mem.optimizer_state_bytes == state_bytes * 1000


@pytest.mark.parametrize("dtype, nbytes", [("fp32", 4), (torch.float16, 2), ("bfloat16", 2), ("int8", 1), ("nf4", 0.5)])
def test_frozen_weights_take_their_dtype_size(dtype, nbytes):
    mem = training_memory(n_params=1e6, dtype=dtype, lora=0)
    assert mem.weights_bytes == nbytes * 1e6 and mem.gradient_bytes == 0 and mem.finetuning == "lora"


def test_lora_optimizer_state_scales_with_trainable_parameters():
    small = training_memory(n_params=7e9, dtype="bf16", lora=1_000_000)
    large = training_memory(n_params=7e9, dtype="bf16", lora=4_000_000)
    assert small.trainable_params == 1_000_000
    assert large.optimizer_state_bytes == 4 * small.optimizer_state_bytes == 4 * 8 * 1_000_000
    assert large.gradient_bytes == 4 * small.gradient_bytes  # fp32 adapter gradients
    full = training_memory(n_params=7e9, dtype="bf16", mixed_precision=True)
    assert small.model_state_bytes < full.model_state_bytes / 7  # the frozen base costs its weights only


def test_lora_count_from_a_real_model_and_config_matches_peft(tiny_llama):
    from labhelpers.adapters import add_adapter, lora_config, trainable_summary

    model, _ = tiny_llama
    config = lora_config(model, r=4, target_modules=["q_proj", "v_proj"])
    expected = trainable_summary(add_adapter(model, config))["trainable"]
    assert lora_trainable_params(model, config) == expected > 0
    mem = training_memory(model, lora=config, optimizer="adamw")
    assert mem.trainable_params == expected and mem.optimizer_state_bytes == 8 * expected
    assert mem.n_params == sum(p.numel() for p in model.parameters())


def test_a_peft_model_counts_as_lora_on_its_base(tiny_llama):
    from labhelpers.adapters import add_adapter, lora_config

    model, _ = tiny_llama
    peft_model = add_adapter(model, lora_config(model, r=2))
    mem = training_memory(peft_model)
    assert mem.finetuning == "lora"
    assert mem.n_params == sum(p.numel() for p in model.parameters())
    assert mem.trainable_params == sum(p.numel() for p in peft_model.parameters() if p.requires_grad)


def test_reads_the_shape_from_a_model(tiny_llama):
    model, _ = tiny_llama
    shape = architecture(model)
    c = model.config
    assert shape["hidden_size"] == c.hidden_size and shape["n_layers"] == c.num_hidden_layers
    assert shape["n_heads"] == c.num_attention_heads and shape["n_kv_heads"] == c.num_key_value_heads
    assert shape["vocab_size"] == c.vocab_size and shape["gated_mlp"] is True
    mem = training_memory(model, batch_size=2, seq_len=16)
    assert mem.activation_bytes > 0 and mem.n_params == sum(p.numel() for p in model.parameters())


def test_korthikanti_formula_is_reproduced_exactly():
    s, b, h, a = 2048, 4, 1024, 16  # 16-bit, dropout, MLP of 4h, plain attention: the paper's setting
    assert activation_bytes_per_layer(b, s, h, a, dropout=True) == s * b * h * (34 + 5 * a * s / h)


def test_activations_grow_linearly_with_batch():
    one = training_memory(n_params=1e6, batch_size=1, seq_len=128, **SHAPE).activation_bytes
    four = training_memory(n_params=1e6, batch_size=4, seq_len=128, **SHAPE).activation_bytes
    assert four == pytest.approx(4 * one)


def test_attention_scores_grow_quadratically_with_sequence_length():
    def scores(s):  # plain attention minus flash attention: the a*s^2 part alone
        return (activation_bytes_per_layer(1, s, 256, 8) - activation_bytes_per_layer(1, s, 256, 8, flash_attention=True))
    assert scores(512) == pytest.approx(4 * scores(256))
    flash = [activation_bytes_per_layer(1, s, 256, 8, flash_attention=True) for s in (256, 512)]
    assert flash[1] == pytest.approx(2 * flash[0])  # without the scores, linear


def test_gradient_checkpointing_reduces_activations_only():
    plain = training_memory(n_params=1e6, batch_size=8, seq_len=256, **SHAPE)
    checkpointed = training_memory(n_params=1e6, batch_size=8, seq_len=256, gradient_checkpointing=True, **SHAPE)
    assert checkpointed.activation_bytes < plain.activation_bytes / 2
    assert checkpointed.model_state_bytes == plain.model_state_bytes


def test_fp32_activations_take_twice_the_16_bit_ones():
    layer = {"batch_size": 2, "seq_len": 64, "hidden_size": 256, "n_heads": 8}
    assert activation_bytes_per_layer(**layer, bytes_per_activation=4) == 2 * activation_bytes_per_layer(**layer)
    fp32 = training_memory(n_params=1e6, batch_size=2, seq_len=64, dtype="fp32", **SHAPE)
    bf16 = training_memory(n_params=1e6, batch_size=2, seq_len=64, dtype="bf16", **SHAPE)
    logits = 2 * 64 * SHAPE["vocab_size"]  # fp32: logits + log-probs (8 bytes); bf16: + an fp32 copy (10 bytes)
    assert fp32.activation_bytes - 8 * logits == pytest.approx(2 * (bf16.activation_bytes - 10 * logits))


def test_the_lectures_12_to_20_extra_bytes_per_parameter():
    # Full fine-tuning of Llama-2-7B in fp32 with Adam: gradients (4) + two Adam states (8) = 12 extra bytes per
    # parameter before activations; one 2048-token sequence of activations brings it to ~18 (the lecture: "+20").
    states_only = training_memory(**LLAMA_2_7B, dtype="fp32", optimizer="adamw")
    assert states_only.extra_bytes_per_param == pytest.approx(12)
    with_batch = training_memory(**LLAMA_2_7B, dtype="fp32", optimizer="adamw", batch_size=1, seq_len=2048)
    assert 12 < with_batch.extra_bytes_per_param <= 20
    # Mixed bf16: 16 bytes/param of states, so 8x the fp16 weights, more with activations
    mixed = training_memory(**LLAMA_2_7B, dtype="bf16", mixed_precision=True, batch_size=1, seq_len=2048)
    assert mixed.times_weights("fp16") > 8 == pytest.approx(mixed.model_state_bytes / (mixed.n_params * 2))


def test_str_rows_and_table_agree():
    mem = training_memory(n_params=7e9, dtype="bf16", mixed_precision=True, batch_size=1, seq_len=512, **SHAPE)
    rows = mem.rows()
    assert rows[-1]["component"] == "total" and rows[-1]["bytes"] == pytest.approx(mem.total_bytes, rel=1e-12)
    assert sum(r["bytes"] for r in rows[:-1]) == pytest.approx(mem.total_bytes)
    assert mem.table().loc["total", "GiB"] == pytest.approx(mem.total_bytes / GIB)
    text = str(mem)
    assert f"{mem.total_bytes / GIB:.2f} GiB" in text and "fp32 master weights" in text


def test_table_of_scenarios():
    table = training_memory_table({"fp32 Adam": {"dtype": "fp32"}, "LoRA": {"dtype": "bf16", "lora": 1000}},
                                  n_params=1e6)
    assert list(table.index) == ["fp32 Adam", "LoRA"]
    assert table.loc["fp32 Adam", "bytes per parameter"] == pytest.approx(16)
    assert table.loc["LoRA", "total"] < table.loc["fp32 Adam", "total"]


@pytest.mark.parametrize("kwargs, argument", [
    ({"n_params": 1e6, "optimizer": "lion"}, "optimizer="),
    ({"n_params": 1e6, "dtype": "fp8"}, "dtype="),
    ({"n_params": -5}, "n_params="),
    ({}, "n_params"),
    ({"n_params": 1e6, "batch_size": -1, "seq_len": 8, **SHAPE}, "batch_size="),
    ({"n_params": 1e6, "seq_len": -8, **SHAPE}, "seq_len="),
    ({"n_params": 1e6, "seq_len": 8}, "n_layers"),
    ({"n_params": 1e6, "seq_len": 8, **SHAPE, "hidden_size": -1}, "hidden_size="),
    ({"n_params": 1e6, "lora": -3}, "lora="),
    ({"n_params": 1e6, "dtype": "4bit"}, "dtype="),  # quantised weights cannot be fully fine-tuned
    ({"n_params": 1e6, "dtype": "fp32", "mixed_precision": True}, "mixed_precision="),
])
def test_bad_input_is_one_line_naming_the_argument(kwargs, argument):
    with pytest.raises(ValueError) as info:
        training_memory(**kwargs)
    assert argument in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------
# Measuring a training step, term by term, against the prediction
# ---------------------------------------------------------------------------------------------

from labhelpers.memory import measure_training_step, saved_for_backward  # noqa: E402


def test_saved_for_backward_counts_activations_not_weights():
    layer = torch.nn.Linear(256, 256)
    x = torch.randn(64, 256, requires_grad=True)
    with saved_for_backward(layer) as saved:
        y = torch.tanh(layer(x))  # keeps x (for the weight's gradient) and tanh's output
    assert saved.bytes == 2 * 64 * 256 * 4 and saved.n_tensors == 2
    y.sum().backward()  # the hooks are gone: backward still works
    assert layer.weight.grad is not None


def test_sdpa_models_are_predicted_without_attention_scores(tiny_llama):
    model, _ = tiny_llama
    assert model.config._attn_implementation != "eager"
    inferred = training_memory(model, batch_size=2, seq_len=64)
    assert inferred.activation_bytes == training_memory(model, batch_size=2, seq_len=64, flash_attention=True).activation_bytes
    assert inferred.activation_bytes < training_memory(model, batch_size=2, seq_len=64, flash_attention=False).activation_bytes


def test_step_peak_holds_activations_or_gradients_not_both():
    # Worked out by hand for SHAPE, fp32, batch 2 x 32 = 64 tokens, plain attention, no dropout, MLP 4h = 1024:
    # per token and layer 4h + 2ad + 2 kv d + 2i = 1024 + 512 + 512 + 2048 = 4096 numbers, plus a*s = 256 scores,
    # 4 bytes each: 17,408 bytes; 64 tokens x 4 layers: 4,456,448. Logits and log-probs 64 x 1000 x 8 = 512,000,
    # final norm and output-layer inputs 2 x 64 x 256 x 4 = 131,072: activations 5,099,520 bytes.
    mem = training_memory(n_params=1e6, batch_size=2, seq_len=32, **SHAPE)
    assert mem.activation_bytes == 5_099_520
    assert mem.loss_gradient_bytes == 512_000  # 2 fp32 tensors of 64 x 1000
    # weights 4e6 + AdamW 8e6, and the larger phase: activations + loss gradients 5,611,520 > gradients 4e6
    assert mem.step_peak_bytes == 4e6 + 8e6 + 5_611_520
    assert mem.step_increase_bytes == 8e6 + 5_611_520
    assert mem.total_bytes == 16e6 + 5_099_520  # everything added up, gradients and activations both
    # ten times the parameters: now the gradients (4e7) are the larger phase
    assert training_memory(n_params=1e7, batch_size=2, seq_len=32, **SHAPE).step_peak_bytes == 4e7 + 8e7 + 4e7


@pytest.mark.parametrize("lora_r", [None, 4])
def test_measured_step_matches_the_calculators_counts(tiny_llama, lora_r):
    from labhelpers.adapters import lora_config

    model, _ = tiny_llama
    m = measure_training_step(profile="tiny", batch_size=2, lora_r=lora_r, steps=2, fresh_process=False)  # median length
    predicted = training_memory(model, batch_size=m["batch_size"], seq_len=m["seq_len"],
                                lora=None if lora_r is None else lora_config(model, r=lora_r))
    assert m["batch_size"] == 2 and m["seq_len"] >= m["tokens"] / 2 and len(m["steps"]) == 2
    assert m["trainable_params"] == predicted.trainable_params
    step2 = m["steps"][1]
    assert step2["optimizer_state_bytes"] == predicted.optimizer_state_bytes  # exact: 8 bytes per trained parameter
    assert step2["gradient_bytes"] == predicted.gradient_bytes
    assert 0.5 < predicted.activation_bytes / step2["saved_activation_bytes"] < 2
    assert m["steps"][0]["optimizer_state_bytes"] == step2["optimizer_state_bytes"]  # created in step 1
    assert m["loaded_bytes"] > 0 and m["peak_increase_bytes"] == max(s["peak_bytes"] for s in m["steps"]) - m["loaded_bytes"]


def test_measuring_in_a_fresh_process_returns_the_same_counts():
    here = measure_training_step(profile="tiny", batch_size=1, seq_len=32, steps=1, fresh_process=False)
    there = measure_training_step(profile="tiny", batch_size=1, seq_len=32, steps=1)
    for key in ("saved_activation_bytes", "gradient_bytes", "optimizer_state_bytes"):
        assert here["steps"][0][key] == there["steps"][0][key], key
    assert there["seq_len"] == here["seq_len"] and there["config"] == "full"


@pytest.mark.parametrize("kwargs, argument", [({"batch_size": 0}, "batch_size="), ({"steps": 0}, "steps="),
                                              ({"seq_len": -1}, "seq_len="), ({"lora_r": 0}, "lora_r=")])
def test_measure_refuses_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        measure_training_step(profile="tiny", **kwargs)
