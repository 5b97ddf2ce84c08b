"""The foundation encoder's inputs and network: layer tokens and `LayerEncoder`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from zooprobe.encoder.augment import permute_neurons
from zooprobe.encoder.config import EncoderConfigError, PretrainTarget
from zooprobe.encoder.layer_model import LayerEncoder, LayerEncoderConfig
from zooprobe.errors import InvalidInputError
from zooprobe.symmetry import Architecture, pad_dead, widen
from zooprobe.tokens.layers import N_TOKEN_F, layer_tokens, pad_tokens
from zooprobe.zoo.models import SubjectModel
from zooprobe.zoo.space import ArchSpec

TARGETS = [
    PretrainTarget("log10_learning_rate", "continuous", mean=-2.0, std=0.5),
    PretrainTarget("optimizer", "categorical", classes=["adam", "sgd"]),
    PretrainTarget("has_dropout", "binary"),
]


def _mlp(depth: int = 3, width: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    spec = ArchSpec("digits", "mlp", depth, width, False, False, (64,), 10)
    model = SubjectModel(spec, "relu")
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_one_token_per_main_layer_plus_the_input_token() -> None:
    tokens = layer_tokens(_mlp(depth=3))
    assert tokens.shape == (1 + 4, N_TOKEN_F)  # 3 hidden layers and the output layer
    assert tokens[0, 0] == 1 and tokens[1:, 1].eq(1).all()  # token types
    assert torch.isfinite(tokens).all()


def test_tokens_are_invariant_to_hidden_neuron_permutations() -> None:
    sd = _mlp()
    permuted = permute_neurons(sd, generator=torch.Generator().manual_seed(3))
    assert any(not torch.equal(sd[k], permuted[k]) for k in sd)  # the weights did change
    torch.testing.assert_close(layer_tokens(permuted), layer_tokens(sd), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("transform", [lambda sd: widen(sd, Architecture("relu"), 2),
                                       lambda sd: widen(sd, Architecture("relu"), 4),
                                       lambda sd: pad_dead(sd, Architecture("relu"), 3)])  # fmt: skip
def test_widened_or_padded_networks_get_the_original_tokens(transform) -> None:
    sd = _mlp()
    changed = transform(sd)
    assert changed["layers.0.linear.weight"].shape[0] > sd["layers.0.linear.weight"].shape[0]
    torch.testing.assert_close(layer_tokens(changed), layer_tokens(sd), atol=1e-4, rtol=1e-4)


def test_a_network_deeper_than_the_encoder_is_refused_with_its_depth() -> None:
    with pytest.raises(InvalidInputError, match="main layers"):
        layer_tokens(_mlp(depth=6), max_layers=4)


def test_encoder_reads_mixed_depths_in_one_batch_and_padding_does_not_change_a_model() -> None:
    torch.manual_seed(0)
    cfg = LayerEncoderConfig(d_model=32, n_layers=1, n_heads=4, latent_dim=8, dropout=0.0)
    enc = LayerEncoder(cfg, TARGETS)
    shallow, deep = layer_tokens(_mlp(depth=1)), layer_tokens(_mlp(depth=5, seed=1))
    x, mask = pad_tokens([shallow, deep])
    enc.fit_standardization(x, mask)
    enc.eval()
    both = enc(x, mask)
    assert both.shape == (2, enc.representation_dim) == (2, 8 + 1 + 2 + 1)
    alone = enc(*pad_tokens([shallow]))
    torch.testing.assert_close(both[0], alone[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(both[0], both[1])


def test_config_errors_name_the_field() -> None:
    with pytest.raises(EncoderConfigError, match="multiple of n_heads"):
        LayerEncoderConfig(d_model=30, n_heads=4)
    with pytest.raises(EncoderConfigError, match="parameters"):
        LayerEncoderConfig(d_model=4096, n_layers=8)


def test_tokenizing_many_networks_at_once_gives_each_its_own_tokens_bit_for_bit(
    tiny_zoo: Path, head_zoo: Path
) -> None:
    """The foundation encoder featurizes same-architecture networks together (`tokenize_many`): every
    network still gets exactly the tokens it gets alone, so a file's prediction does not depend on the
    files beside it; and a bad item is named."""
    from zooprobe.api import load_encoder, load_zoo

    sds = []
    for path in (tiny_zoo, head_zoo):
        zoo = load_zoo(path)
        sds += [zoo.state_dict(i) for i in range(len(zoo))]
    sds += [_mlp(depth=d, width=w, seed=s) for d in (1, 3) for w in (3, 16) for s in (0, 1)]  # short biases
    encoder = load_encoder("foundation", progress=False)
    many = encoder.tokenize_many(sds)
    assert len({tuple(t.tokens.shape) for t in many}) >= 3  # several architectures, some in groups
    for sd, got in zip(sds, many, strict=True):
        assert torch.equal(got.tokens, layer_tokens(sd, encoder.config.max_layers))
    with pytest.raises(InvalidInputError, match="encode: state dict 1: "):
        encoder.tokenize_many([sds[0], {"w": torch.tensor([float("nan")])}])
    with pytest.raises(InvalidInputError, match="item 1 is a list"):
        encoder.tokenize_many([sds[0], []])
