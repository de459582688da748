import pytest
import torch

from diffusion import ContextUnet, UnetConfig


def small(**kw):
    torch.manual_seed(0)
    model = ContextUnet(num_labels=4, resolution=16, channels=(8, 16, 16), emb_dim=16, **kw)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    return model.eval()


def test_forward_is_deterministic_and_shaped():
    model = small()
    x, t, c = torch.randn(3, 3, 16, 16), torch.tensor([0.0, 10.5, 999.0]), torch.eye(4)[:3]
    out = model(x, t, c)
    assert out.shape == x.shape
    # The course created a fresh random 1x1 conv inside forward(); two calls would differ.
    torch.testing.assert_close(model(x, t, c), out)


def test_residual_shortcuts_are_registered_parameters():
    names = dict(small().named_parameters())
    assert any(n.endswith("skip.weight") for n in names)


def test_time_and_context_change_the_prediction():
    model = small()
    x = torch.randn(1, 3, 16, 16)
    base = model(x, torch.tensor([100.0]), torch.eye(4)[:1])
    assert not torch.allclose(base, model(x, torch.tensor([400.0]), torch.eye(4)[:1]))
    assert not torch.allclose(base, model(x, torch.tensor([100.0]), torch.eye(4)[1:2]))
    # All-zero context uses the learned null embedding, not label 0.
    assert not torch.allclose(base, model(x, torch.tensor([100.0]), torch.zeros(1, 4)))


def test_context_mix_is_linear_in_the_embedding():
    model = small()
    t = torch.tensor([50.0])
    mix = model.embed(t, torch.tensor([[0.5, 0.5, 0, 0]]))
    ends = model.embed(t.repeat(2), torch.eye(4)[:2])
    torch.testing.assert_close(mix[0], ends.mean(0))


def test_config_round_trip_and_32px():
    model = ContextUnet(num_labels=6, resolution=32, channels=(8, 16, 16))
    config = UnetConfig(**model.config.to_dict())
    assert config == model.config
    assert ContextUnet(config)(
        torch.zeros(2, 3, 32, 32), torch.ones(2), torch.zeros(2, 6)
    ).shape == (
        2,
        3,
        32,
        32,
    )


def test_no_prompt_is_the_zero_text_embedding_the_model_was_trained_with():
    torch.manual_seed(0)
    model = ContextUnet(num_labels=3, resolution=8, channels=(8, 16), emb_dim=16, text_dim=4)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x, t, c = torch.randn(2, 3, 8, 8), torch.tensor([10.0, 40.0]), torch.eye(3)[:2]
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, c), model(x, t, c, text=torch.zeros(2, 4)))
        assert not torch.allclose(model(x, t, c), model(x, t, c, text=torch.ones(2, 4)))


def test_the_network_traces_as_one_graph_for_torch_compile():
    # A graph break splits torch.compile's work into pieces and recompiles each block's forward
    # once per width, until Dynamo's recompile limit sends the rest back to eager (it happened
    # when the tiling flag was a context variable read in every convolution).
    model = ContextUnet(
        UnetConfig(num_labels=3, resolution=8, channels=(8, 16), emb_dim=16, groups=4)
    )
    x, t, c = torch.randn(2, 3, 8, 8), torch.tensor([10.0, 400.0]), torch.eye(3)[:2]
    for circular in (False, True):
        torch._dynamo.reset()
        report = torch._dynamo.explain(model)(x, t, c, circular=circular)
        assert (report.graph_count, report.graph_break_count) == (1, 0), report.break_reasons


def test_dropout_acts_in_training_only_and_holds_no_weights():
    plain, dropping = small(), small(dropout=0.5)
    assert plain.state_dict().keys() == dropping.state_dict().keys()
    dropping.load_state_dict(plain.state_dict())
    x, t, c = torch.randn(2, 3, 16, 16), torch.tensor([5.0, 300.0]), torch.eye(4)[:2]
    # Sampling (eval mode) is the same network with or without it.
    torch.testing.assert_close(dropping(x, t, c), plain(x, t, c))
    dropping.train()
    torch.manual_seed(1)
    first = dropping(x, t, c)
    assert not torch.allclose(first, dropping(x, t, c))
    assert not torch.allclose(first, plain(x, t, c))
    for bad in (1.0, -0.1, "0.1"):
        with pytest.raises(ValueError, match="dropout must be a number in"):
            UnetConfig(dropout=bad)
