# Written by `python -m labhelpers.tools.export` from the notebooks' #@save cells: edit the notebook, then run it again.
"""Lesson code written in the notebooks and exported for later labs, benchmarks and tests."""

from .instruction_fine_tuning import Task, TASKS, get_task, task_prompt, IGNORE_INDEX, answer_end_id, encode_example, InstructionData, build_instruction_data  # noqa: F401
from .rlhf_ppo_detoxification import ValueHead, logprobs_from_logits, logprobs_and_values, reference_logprobs, Rollout, rollout, masked_mean, kl_penalty, compute_rewards, gae, masked_var, whiten, advantages_and_returns, PolicyLoss, policy_loss, ValueLoss, value_loss, ppo_epochs, PPOTrainer  # noqa: F401

__all__ = ['Task', 'TASKS', 'get_task', 'task_prompt', 'IGNORE_INDEX', 'answer_end_id', 'encode_example', 'InstructionData', 'build_instruction_data', 'ValueHead', 'logprobs_from_logits', 'logprobs_and_values', 'reference_logprobs', 'Rollout', 'rollout', 'masked_mean', 'kl_penalty', 'compute_rewards', 'gae', 'masked_var', 'whiten', 'advantages_and_returns', 'PolicyLoss', 'policy_loss', 'ValueLoss', 'value_loss', 'ppo_epochs', 'PPOTrainer']
