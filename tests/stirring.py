"""A shared test helper: tiny random models whose layers matter."""

from __future__ import annotations

import copy

import torch


def stirred(model):
    """A copy of a tiny model whose layers matter, in eval mode.

    Freshly built, the random weights are so small that the last input token's embedding dominates
    the output: greedy decoding repeats that token ("\\n" after the chat template, <pad> after T5's
    decoder start) whatever the prompt, and losses barely depend on the layers. Scaling the layers'
    matrices (not the embeddings) by 10 makes each prompt's output its own.
    """
    copied = copy.deepcopy(model)
    embedding = copied.get_input_embeddings().weight
    with torch.no_grad():
        for param in copied.parameters():
            if param.dim() == 2 and param is not embedding:
                param.mul_(10)
    return copied.eval()
