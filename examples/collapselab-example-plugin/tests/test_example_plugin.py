"""The plugin author's tests: collapselab's conformance kit, three lines per object."""

from collapselab_example_plugin.curators import LikelihoodBand
from collapselab_example_plugin.losses import SoftTruncation

from collapselab.testing import check_curator, check_loss


def test_soft_truncation_conforms():
    check_loss(SoftTruncation(gamma=0.9, tau=0.05))


def test_likelihood_band_conforms():
    check_curator(LikelihoodBand(low=0.1, high=0.2))
