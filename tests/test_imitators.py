import pytest
import torch
from torch.func import functional_call, stack_module_state, vmap

from gvaempirics.bc.imitators import ImitatorSpec, make_imitator


@pytest.mark.parametrize("kind, history", [("mlp", 1), ("transformer", 3)])
def test_shapes_and_batched_checkpoints_match_single_calls(kind, history):
    torch.manual_seed(0)
    spec = ImitatorSpec(d_in=6, d_act=2, kind=kind, depth=2, width=16, history=history)
    models = [make_imitator(spec).eval() for _ in range(3)]
    x = torch.randn(3, 5, history, 6)
    params, buffers = stack_module_state(models)
    batched = vmap(lambda p, b, xi: functional_call(models[0], (p, b), (xi,)))(params, buffers, x)
    assert batched.shape == (3, 5, 2)
    for i, m in enumerate(models):
        torch.testing.assert_close(batched[i], m(x[i]), rtol=1e-5, atol=1e-6)


def test_mlp_layers_and_normalization_by_hand():
    spec = ImitatorSpec(d_in=2, d_act=1, depth=2, width=3, layer_norm=True, dropout=0.1, activation="tanh")
    m = make_imitator(spec)
    kinds = [type(l).__name__ for l in m.net]
    assert kinds == ["Linear", "LayerNorm", "Tanh", "Dropout", "Linear"]
    data = torch.tensor([[1.0, 10.0], [3.0, 30.0]])
    m.set_normalization(data)
    torch.testing.assert_close(m.in_mean, torch.tensor([2.0, 20.0]))
    torch.testing.assert_close(m.in_std, data.std(0))
    # only the newest augmented state is read
    x = torch.randn(4, 2, 2)
    m.eval()
    torch.testing.assert_close(m(x), m(x[:, -1:, :]))


def test_transformer_is_causal_in_its_window():
    torch.manual_seed(1)
    m = make_imitator(ImitatorSpec(d_in=4, d_act=2, kind="transformer", depth=1, width=8, n_heads=2, history=4)).eval()
    x = torch.randn(2, 4, 4)
    y = x.clone()
    y[:, 0] += 1.0  # changing an older state changes the action (it is in the window)
    assert not torch.allclose(m(x), m(y))


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(kind="rnn"), "kind='rnn' is not valid"),
        (dict(history=2), "history=2 is out of range for kind='mlp'"),
        (dict(dropout=1.0), r"dropout=1.0 is out of range"),
        (dict(kind="transformer", width=10, n_heads=4, history=2), "divisible"),
    ],
)
def test_bad_spec(kw, match):
    with pytest.raises(ValueError, match=match):
        ImitatorSpec(d_in=3, d_act=1, **kw)


@pytest.mark.parametrize("kind", ["mlp", "transformer"])
@pytest.mark.parametrize(
    "field, value",
    [
        ("depth", 3),
        ("width", 24),
        ("activation", "tanh"),
        ("activation", "silu"),
        ("activation", "gelu"),
        ("layer_norm", True),
        ("dropout", 0.5),
        ("history", 3),
    ],
)
def test_every_model_field_changes_the_model(kind, field, value):
    """Each architecture field changes what it says: the output on the same input and init seed."""
    from gvaempirics.bc.imitators import ImitatorSpec, make_imitator

    if kind == "mlp" and field == "history":
        pytest.skip("an MLP reads one augmented state")
    if kind == "transformer" and field == "layer_norm":
        pytest.skip("transformer blocks always normalize (pre-norm)")
    base = dict(d_in=5, d_act=2, kind=kind, depth=2, width=16, history=1 if kind == "mlp" else 2, n_heads=2)
    x = torch.randn(7, 3, 5, generator=torch.Generator().manual_seed(0))

    def out(**change):
        torch.manual_seed(0)
        model = make_imitator(ImitatorSpec(**{**base, **change}))
        model.train(field == "dropout")  # dropout acts in training mode
        torch.manual_seed(1)
        return model(x[:, -model.spec.history :])

    assert not torch.allclose(out(), out(**{field: value}))
