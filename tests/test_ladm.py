"""LADM and the FedNCAlign-ML network: shapes, closed forms, frozen vs learnable tensors, ablations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedapp.models.backbones import SmallCNN
from fedapp.models.etf import simplex_etf
from fedapp.models.ladm import LADM
from fedapp.models.multilabel import ETFClassifier, GroupLinear, MultiLabelNet, build_multilabel_net
from fedapp.models.nets import PooledLinearNet

DIM, CLASSES = 16, 5


def tiny_backbone() -> SmallCNN:
    return SmallCNN(in_channels=1, width=4, out_dim=DIM)


def images(batch: int = 3) -> torch.Tensor:
    return torch.randn(batch, 1, 8, 16, generator=torch.Generator().manual_seed(0))


def trainable_names(module: nn.Module) -> set[str]:
    return {name for name, p in module.named_parameters() if p.requires_grad}


# ---------------------------------------------------------------- LADM


@pytest.mark.parametrize("query_mode", ["etf", "etf-learnable", "random-learnable"])
def test_ladm_output_is_one_feature_per_class(query_mode: str) -> None:
    ladm = LADM(DIM, CLASSES, num_heads=4, query_mode=query_mode)
    out = ladm(torch.randn(3, 32, DIM))  # 32 tokens = a 4x8 map
    assert out.shape == (3, CLASSES, DIM)


def test_ladm_single_token_closed_form() -> None:
    # With one token every softmax weight is 1, so every class gets A = W_O (W_V f + b_V) + b_O.
    torch.manual_seed(0)
    ladm = LADM(DIM, CLASSES)
    token = torch.randn(2, 1, DIM)
    w_v = ladm.attention.in_proj_weight[2 * DIM :]
    b_v = ladm.attention.in_proj_bias[2 * DIM :]
    expected = ladm.attention.out_proj(token @ w_v.T + b_v).expand(2, CLASSES, DIM)
    torch.testing.assert_close(ladm(token), expected)


def test_ladm_residual_norm_closed_form() -> None:
    torch.manual_seed(0)
    ladm = LADM(DIM, CLASSES, residual_norm=True)
    token = torch.randn(2, 1, DIM)
    w_v, b_v = ladm.attention.in_proj_weight[2 * DIM :], ladm.attention.in_proj_bias[2 * DIM :]
    attended = ladm.attention.out_proj(token @ w_v.T + b_v)  # (2, 1, d), same for every class
    queries = simplex_etf(CLASSES, DIM, 0).T.unsqueeze(0)  # (1, C, d)
    expected = nn.functional.layer_norm(queries + attended, (DIM,))  # LN weight 1, bias 0 at init
    torch.testing.assert_close(ladm(token), expected)


def test_ladm_attends_per_class() -> None:
    # Distinct queries attend differently over several tokens: the class features differ.
    torch.manual_seed(0)
    out = LADM(DIM, CLASSES)(torch.randn(1, 32, DIM))
    assert not torch.allclose(out[0, 0], out[0, 1])


def test_fixed_queries_are_the_etf_without_gradient_and_not_in_state_dict() -> None:
    ladm = LADM(DIM, CLASSES, query_mode="etf", etf_seed=7)
    assert torch.equal(ladm.queries, simplex_etf(CLASSES, DIM, 7).T)
    assert not ladm.queries.requires_grad
    assert "queries" not in ladm.state_dict()
    assert "queries" not in dict(ladm.named_parameters())
    ladm(torch.randn(2, 6, DIM)).sum().backward()
    assert ladm.queries.grad is None
    assert ladm.attention.in_proj_weight.grad is not None  # the projections do train


@pytest.mark.parametrize("query_mode", ["etf-learnable", "random-learnable"])
def test_learnable_queries_get_gradients_and_travel(query_mode: str) -> None:
    ladm = LADM(DIM, CLASSES, query_mode=query_mode)
    assert isinstance(ladm.queries, nn.Parameter)
    assert "queries" in ladm.state_dict()
    ladm(torch.randn(2, 6, DIM)).sum().backward()
    assert ladm.queries.grad is not None and ladm.queries.grad.abs().sum() > 0


def test_etf_learnable_initialises_to_the_etf() -> None:
    ladm = LADM(DIM, CLASSES, query_mode="etf-learnable", etf_seed=3)
    torch.testing.assert_close(ladm.queries.detach(), simplex_etf(CLASSES, DIM, 3).T, atol=0, rtol=0)


def test_random_learnable_is_seeded_unit_norm_and_not_the_etf() -> None:
    first = LADM(DIM, CLASSES, query_mode="random-learnable", etf_seed=3).queries.detach()
    again = LADM(DIM, CLASSES, query_mode="random-learnable", etf_seed=3).queries.detach()
    assert torch.equal(first, again)
    torch.testing.assert_close(first.norm(dim=1), torch.ones(CLASSES))
    assert not torch.allclose(first, simplex_etf(CLASSES, DIM, 3).T, atol=1e-2)


def test_ladm_ffn_is_optional() -> None:
    plain, with_ffn = LADM(DIM, CLASSES), LADM(DIM, CLASSES, ffn_dim=32)
    assert plain.ffn is None
    extra = sum(p.numel() for p in with_ffn.parameters()) - sum(p.numel() for p in plain.parameters())
    assert extra == DIM * 32 + 32 + 32 * DIM + DIM
    assert with_ffn(torch.randn(2, 6, DIM)).shape == (2, CLASSES, DIM)


def test_ladm_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="divisible by num_heads"):
        LADM(18, CLASSES, num_heads=4)
    with pytest.raises(ValueError, match="query_mode='learned' is unknown"):
        LADM(DIM, CLASSES, query_mode="learned")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs dim >= 5"):
        LADM(4, 6, num_heads=4)
    with pytest.raises(ValueError, match=r"expects tokens \(B, N, 16\)"):
        LADM(DIM, CLASSES)(torch.randn(2, DIM))


# ---------------------------------------------------------------- MultiLabelNet


def test_multilabel_net_shapes_and_etf_logits_closed_form() -> None:
    net = MultiLabelNet(tiny_backbone(), DIM, CLASSES)
    logits, features = net.forward_with_features(images())
    assert logits.shape == (3, CLASSES) and features.shape == (3, CLASSES, DIM)
    etf = simplex_etf(CLASSES, DIM, 0)
    expected = torch.stack([features[:, c] @ etf[:, c] for c in range(CLASSES)], dim=1)  # <h_c, w_c>
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(net(images()), logits)


def test_logit_scale_multiplies_the_etf_logits() -> None:
    torch.manual_seed(0)
    base = MultiLabelNet(tiny_backbone(), DIM, CLASSES).eval()
    scaled = MultiLabelNet(tiny_backbone(), DIM, CLASSES, logit_scale=2.5).eval()
    scaled.load_state_dict(base.state_dict())
    torch.testing.assert_close(scaled(images()), 2.5 * base(images()))
    learnable = MultiLabelNet(tiny_backbone(), DIM, CLASSES, learnable_scale=True)
    assert trainable_names(learnable.classifier) == {"scale"}
    with pytest.raises(ValueError, match="logit scale must be > 0"):
        MultiLabelNet(tiny_backbone(), DIM, CLASSES, logit_scale=0.0)


def test_etf_classifier_has_no_trainable_parameters_and_etf_never_in_state_dict() -> None:
    for use_ladm in (True, False):
        net = MultiLabelNet(tiny_backbone(), DIM, CLASSES, use_ladm=use_ladm, classifier="etf")
        assert trainable_names(net.classifier) == set()
        keys = set(net.state_dict())
        assert not any("etf" in key or "queries" in key or "scale" in key for key in keys)
        assert keys == {f"backbone.{k}" for k in net.backbone.state_dict()} | (
            {f"ladm.{k}" for k in net.ladm.state_dict()} if net.ladm is not None else set()
        )


def test_one_etf_serves_as_queries_and_prototypes() -> None:
    net = MultiLabelNet(tiny_backbone(), DIM, CLASSES, etf_seed=4)
    assert net.prototypes is not None and net.ladm is not None
    assert torch.equal(net.prototypes, simplex_etf(CLASSES, DIM, 4))
    assert torch.equal(net.ladm.queries, net.prototypes.T)


def test_state_dict_round_trip_rebuilds_the_etf_from_the_seed() -> None:
    torch.manual_seed(0)
    sender = MultiLabelNet(tiny_backbone(), DIM, CLASSES, etf_seed=2).eval()
    torch.manual_seed(1)
    receiver = MultiLabelNet(tiny_backbone(), DIM, CLASSES, etf_seed=2).eval()
    receiver.load_state_dict(sender.state_dict(), strict=True)
    torch.testing.assert_close(receiver(images()), sender(images()))


def test_fc_with_ladm_is_a_group_linear() -> None:
    net = MultiLabelNet(tiny_backbone(), DIM, CLASSES, classifier="fc")
    assert isinstance(net.classifier, GroupLinear) and net.prototypes is None
    assert trainable_names(net.classifier) == {"weight", "bias"}
    logits, features = net.forward_with_features(images())
    head = net.classifier
    expected = torch.stack(
        [features[:, c] @ head.weight[c] + head.bias[c] for c in range(CLASSES)], dim=1
    )  # <h_c, v_c> + b_c
    torch.testing.assert_close(logits, expected)


def test_group_linear_hand_computed() -> None:
    head = GroupLinear(2, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 2.0], [0.5, -1.0]]))
        head.bias.copy_(torch.tensor([0.1, -0.2]))
    features = torch.tensor([[[1.0, 1.0], [2.0, 4.0]]])  # h_0 = (1, 1), h_1 = (2, 4)
    # logit_0 = 1 + 2 + 0.1 = 3.1; logit_1 = 1 - 4 - 0.2 = -3.2
    torch.testing.assert_close(head(features), torch.tensor([[3.1, -3.2]]))


def test_etf_classifier_hand_computed() -> None:
    head = ETFClassifier(dim=1, num_classes=2, seed=0, scale=2.0)
    w = head.etf  # (1, 2): C=2 in d=1 is {+1, -1} up to sign
    torch.testing.assert_close(w.abs(), torch.ones(1, 2))
    pooled = torch.tensor([[3.0]])
    torch.testing.assert_close(head(pooled), 2.0 * 3.0 * w)
    per_class = torch.tensor([[[3.0], [5.0]]])
    torch.testing.assert_close(head(per_class), 2.0 * torch.tensor([[3.0 * w[0, 0], 5.0 * w[0, 1]]]))


def test_etf_without_ladm_uses_the_pooled_feature() -> None:
    net = MultiLabelNet(tiny_backbone(), DIM, CLASSES, use_ladm=False, classifier="etf")
    assert net.ladm is None
    logits, pooled = net.forward_with_features(images())
    assert pooled.shape == (3, DIM)
    torch.testing.assert_close(pooled, net.backbone(images()).mean(dim=(2, 3)))
    torch.testing.assert_close(logits, pooled @ simplex_etf(CLASSES, DIM, 0))  # <f, w_c>


def test_no_ladm_fc_row_is_exactly_pooled_linear_net() -> None:
    torch.manual_seed(0)
    built = build_multilabel_net(tiny_backbone(), DIM, CLASSES, use_ladm=False, classifier="fc")
    assert type(built) is PooledLinearNet
    torch.manual_seed(0)
    reference = PooledLinearNet(tiny_backbone(), DIM, CLASSES)
    assert built.state_dict().keys() == reference.state_dict().keys()
    torch.testing.assert_close(built(images()), reference(images()))
    with pytest.raises(ValueError, match="use PooledLinearNet"):
        MultiLabelNet(tiny_backbone(), DIM, CLASSES, use_ladm=False, classifier="fc")


@pytest.mark.parametrize(
    ("use_ladm", "classifier", "query_mode", "head_type", "has_ladm"),
    [
        (True, "etf", "etf", ETFClassifier, True),
        (True, "etf", "etf-learnable", ETFClassifier, True),
        (True, "etf", "random-learnable", ETFClassifier, True),
        (True, "fc", "etf", GroupLinear, True),
        (False, "etf", "etf", ETFClassifier, False),
    ],
)
def test_ablation_switches_build_the_documented_models(
    use_ladm: bool, classifier: str, query_mode: str, head_type: type, has_ladm: bool
) -> None:
    net = build_multilabel_net(
        tiny_backbone(), DIM, CLASSES, use_ladm=use_ladm, classifier=classifier, query_mode=query_mode
    )
    assert isinstance(net, MultiLabelNet)
    assert isinstance(net.classifier, head_type)
    assert (net.ladm is not None) == has_ladm
    if has_ladm:
        assert net.ladm.query_mode == query_mode
        assert ("ladm.queries" in net.state_dict()) == (query_mode != "etf")
    assert net(images()).shape == (3, CLASSES)


def test_multilabel_net_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="classifier='linear' is unknown"):
        build_multilabel_net(tiny_backbone(), DIM, CLASSES, classifier="linear")  # type: ignore[arg-type]
    net = MultiLabelNet(tiny_backbone(), 32, CLASSES)
    with pytest.raises(ValueError, match=r"backbone must give a \(B, 32, H', W'\) map"):
        net(images())


@pytest.mark.parametrize("query_mode", ["etf", "random-learnable"])
def test_folded_attention_equals_multihead_attention_values_and_gradients(query_mode: str) -> None:
    """LADM evaluates nn.MultiheadAttention's function in another order: same output, same gradients."""
    torch.manual_seed(0)
    folded, reference = LADM(DIM, CLASSES, query_mode=query_mode), None
    with torch.no_grad():  # non-zero biases, so that dropping b^K and moving b^V is really checked
        folded.attention.in_proj_bias.normal_()
        folded.attention.out_proj.bias.normal_()
    reference = LADM(DIM, CLASSES, query_mode=query_mode)
    reference.load_state_dict(folded.state_dict())
    tokens = torch.randn(3, 7, DIM)
    got = folded(tokens)
    queries = reference.queries.unsqueeze(0).expand(3, -1, -1)
    expected, _ = reference.attention(queries, tokens, tokens, need_weights=False)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    weights = torch.randn_like(got)
    (got * weights).sum().backward()
    (expected * weights).sum().backward()
    for (name, p), (_, q) in zip(folded.named_parameters(), reference.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-4, rtol=1e-4, msg=f"gradient of {name}")
