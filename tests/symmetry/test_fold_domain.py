"""The applicability domain's folded-BatchNorm check (`FoldDetector`) on random zooprobe and nn.Sequential
networks: trained on a zoo's BatchNorm networks folded, it flags held-out folded networks, passes their
unfolded originals and survives a save/load round trip."""

from __future__ import annotations

import numpy as np
import torch
from symmetry_nets import sequential_subject, zoo_subject

from zooprobe.heads.domain import ApplicabilityDomain, architecture, fit_domain
from zooprobe.symmetry import canonicalize, fold_batchnorm
from zooprobe.tokens.statistics import featurize


def _networks(seeds: range) -> list[dict[str, torch.Tensor]]:
    out = []
    for seed in seeds:
        norm = "batch" if seed % 2 else "none"
        if seed % 3:
            out.append(zoo_subject("mlp", "relu", depth=2, width=6, norm=norm, seed=seed)[1])
        else:
            out.append(sequential_subject("tanh", (6, 5), norm, seed)[1])
    return out


def test_fold_detector_flags_folded_networks_and_round_trips():
    train, held = _networks(range(60)), _networks(range(1000, 1030))
    folded_train = [canonicalize(fold_batchnorm(sd)) for sd in train if any("running_var" in k for k in sd)]
    stats = featurize(train)
    rng = np.random.default_rng(0)
    features = {"statistics": stats, "representation": rng.normal(size=(len(train), 4))}
    validation = {"statistics": featurize(held), "representation": rng.normal(size=(len(held), 4))}
    features["raw_statistics"], validation["raw_statistics"] = stats, validation["statistics"]
    domain = fit_domain(
        [architecture(sd) for sd in train], features, validation, folded=featurize(folded_train)
    )
    assert domain.fold is not None
    domain = ApplicabilityDomain.from_saved(domain.to_record(), domain.arrays())
    assert domain.fold is not None

    bn = [sd for sd in held if any("running_var" in k for k in sd)]
    folded = [canonicalize(fold_batchnorm(sd)) for sd in bn]
    for group, expect_flagged in ((folded, True), (bn, False)):
        raw = featurize(group)
        checks = domain.check(
            [architecture(sd) for sd in group],
            {"statistics": raw, "representation": rng.normal(size=(len(group), 4)), "raw_statistics": raw},
        )
        fold_flags = [any(r.startswith("folded BatchNorm") for r in c.reasons) for c in checks]
        share = float(np.mean(fold_flags))
        assert (share >= 0.9) if expect_flagged else (share == 0.0), (expect_flagged, share)
