# Written by `python -m labhelpers.tools.export` from the notebooks' #@save cells: edit the notebook, then run it again.
"""Lesson code written in the notebooks and exported for later labs, benchmarks and tests."""

from .rlhf_ppo_detoxification import ValueHead, logprobs_from_logits, logprobs_and_values, reference_logprobs, Rollout, rollout, masked_mean, kl_penalty, compute_rewards, gae, masked_var, whiten, advantages_and_returns, PolicyLoss, policy_loss, ValueLoss, value_loss, ppo_epochs, PPOTrainer  # noqa: F401

__all__ = ['ValueHead', 'logprobs_from_logits', 'logprobs_and_values', 'reference_logprobs', 'Rollout', 'rollout', 'masked_mean', 'kl_penalty', 'compute_rewards', 'gae', 'masked_var', 'whiten', 'advantages_and_returns', 'PolicyLoss', 'policy_loss', 'ValueLoss', 'value_loss', 'ppo_epochs', 'PPOTrainer']
