"""Families of generative models, all behind one protocol (:class:`collapselab.families.base.Family`)."""

from __future__ import annotations

from collapselab.families.base import FAMILIES, Family, FamilyConfig, Resources
from collapselab.families.categorical import Categorical, CategoricalConfig
from collapselab.families.causal_lm import CausalLM, CausalLMConfig
from collapselab.families.gaussian import Gaussian, GaussianConfig
from collapselab.families.gmm import GMM, GMMConfig
from collapselab.families.linear import Linear, LinearConfig
from collapselab.families.vae import VAE, VAEConfig

#: an experiment's ``family:`` setting: any registered family by ``name``
FamilySettings = FAMILIES.field()


def make_family(config: FamilyConfig, n_chains: int, spec: dict) -> Family:
    """An unfitted family of ``config.name`` holding ``n_chains`` chains for data described by ``spec``."""
    return FAMILIES[config.name](config, n_chains, spec)


__all__ = ["FAMILIES", "GMM", "Categorical", "CategoricalConfig", "CausalLM",
           "CausalLMConfig", "Family", "FamilyConfig", "FamilySettings",
           "Gaussian", "GaussianConfig", "GMMConfig", "Linear", "LinearConfig", "Resources", "VAE", "VAEConfig",
           "make_family"]
