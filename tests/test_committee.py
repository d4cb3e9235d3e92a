"""A committee of networks with scikit-learn's own VotingClassifier (no home-made ensemble class)."""

import numpy as np
from sklearn.ensemble import VotingClassifier

from conftest import make_ring_images
from lensclf import LensClassifier

FAST = dict(max_epochs=1, batch_size=16, verbose=0, device="cpu")


def test_soft_voting_averages_the_members_probabilities():
    X, y = make_ring_images(48, size=16, seed=7)
    members = [(f"net{k}", LensClassifier(random_state=k, **FAST)) for k in range(3)]
    committee = VotingClassifier(members, voting="soft").fit(X, y)
    assert list(committee.classes_) == [0, 1]
    expected = np.mean([member.predict_proba(X) for member in committee.estimators_], axis=0)
    np.testing.assert_allclose(committee.predict_proba(X), expected, rtol=1e-6, atol=1e-7)
    # the members were really trained apart (different seeds give different networks)
    assert not np.allclose(committee.estimators_[0].predict_proba(X), committee.estimators_[1].predict_proba(X))
    np.testing.assert_array_equal(committee.predict(X), (expected[:, 1] > 0.5).astype(int))
