"""fastlm.torch against torch itself: F.cross_entropy (and F.linear + F.cross_entropy) with torch's
autograd, float64 gradcheck, opcheck, torch.compile, and the error paths. Skips without torch."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional
ft = pytest.importorskip("fastlm.torch")

OPTIONS = [dict(), dict(label_smoothing=0.2), dict(weight=True), dict(weight=True, label_smoothing=0.1),
           dict(z_loss=0.05), dict(softcap=3.0), dict(temperature=0.6), dict(ignore_index=1)]
TOL = {torch.float64: (1e-12, 1e-12), torch.float32: (2e-5, 2e-6), torch.bfloat16: (2e-2, 2e-3),
       torch.float16: (5e-3, 5e-4)}


def torch_loss(z, t, opts, reduction, weight=None):
    """torch's own cross-entropy with the same options (z-loss, softcap and temperature written out)."""
    x = z
    if opts.get("softcap"):
        x = opts["softcap"] * torch.tanh(x / opts["softcap"])
    x = x / opts.get("temperature", 1.0)
    ii = opts.get("ignore_index", -100)
    loss = F.cross_entropy(x, t, weight=weight, ignore_index=ii, reduction="none",
                           label_smoothing=opts.get("label_smoothing", 0.0))
    if opts.get("z_loss"):
        w = torch.ones(()) if weight is None else weight[t.clamp(min=0)]
        loss = loss + opts["z_loss"] * torch.where(t != ii, w * torch.logsumexp(x, -1) ** 2, 0)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    w = (t != ii).to(x.dtype) if weight is None else torch.where(t != ii, weight[t.clamp(min=0)], 0)
    return loss.sum() / w.sum()


def data(dtype, N=12, V=37, seed=0, ignore=True):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(N, V, generator=g, dtype=torch.float64) * 3).to(dtype)
    t = torch.randint(0, V, (N,), generator=g)
    if ignore:
        t[[2, 7]] = -100
    w = torch.rand(V, generator=g, dtype=torch.float64) + 0.5
    return x, t, w


def split(opts, w, t):
    """The options without the weight flag, the weight, and t's ignored positions set to ignore_index."""
    o = dict(opts)
    weight = w if o.pop("weight", False) else None
    t[t == -100] = o.get("ignore_index", -100)
    return o, weight


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("opts", OPTIONS, ids=str)
def test_cross_entropy_gradcheck(reduction, opts):
    x, t, w = data(torch.float64)
    o, weight = split(opts, w, t)
    x.requires_grad_()
    assert torch.autograd.gradcheck(lambda z: ft.cross_entropy(z, t, weight=weight, reduction=reduction, **o), (x,))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("opts", OPTIONS, ids=str)
def test_cross_entropy_matches_torch(dtype, reduction, opts):
    x, t, w = data(dtype, N=33, V=300)
    o, weight = split(opts, w, t)
    rtol, atol = TOL[dtype]
    xa = x.clone().requires_grad_()
    loss = ft.cross_entropy(xa, t, weight=None if weight is None else weight.to(dtype), reduction=reduction, **o)
    assert loss.dtype == dtype
    # the reference: torch in float64 on the same (rounded) values
    xr = x.double().requires_grad_()
    want = torch_loss(xr, t, o, reduction, weight)
    go = torch.rand(want.shape, dtype=torch.float64) + 0.5  # an arbitrary incoming gradient, per token too
    (g,) = torch.autograd.grad(loss, xa, go.to(dtype))
    (gr,) = torch.autograd.grad(want, xr, go)
    assert g.dtype == dtype
    np.testing.assert_allclose(loss.double().detach(), want.detach(), rtol=rtol, atol=atol * 10)
    np.testing.assert_allclose(g.double(), gr, rtol=rtol, atol=atol * gr.abs().max().item())


def test_cross_entropy_all_ignored_and_zero_weights():
    x, t, w = data(torch.float64)
    t[:] = -100
    xa = x.clone().requires_grad_()
    loss = ft.cross_entropy(xa, t)
    loss.backward()
    xr = x.clone().requires_grad_()
    want = F.cross_entropy(xr, t)
    want.backward()
    assert torch.isnan(loss) and torch.isnan(want)
    torch.testing.assert_close(xa.grad, xr.grad)  # zeros
    assert (ft.cross_entropy(x, t, reduction="sum") == 0).item()


def test_cross_entropy_noncontiguous_and_leading_dims():
    x, t, _ = data(torch.float32, N=24, V=40)
    x3 = x.reshape(2, 12, 40).transpose(0, 1).requires_grad_()  # (12, 2, 40), not contiguous
    t3 = t.reshape(2, 12).T
    loss = ft.cross_entropy(x3, t3)
    loss.backward()
    xr = x3.detach().reshape(-1, 40).clone().requires_grad_()
    want = F.cross_entropy(xr, t3.reshape(-1))
    want.backward()
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(x3.grad.reshape(-1, 40), xr.grad)


def test_cross_entropy_inplace_grad_consumes_logits():
    x, t, _ = data(torch.float32)
    xr = x.clone().requires_grad_()
    F.cross_entropy(xr, t).backward()
    leaf = x.clone().requires_grad_()
    logits = leaf * 1.0  # a non-leaf whose storage fastlm may overwrite
    loss = ft.cross_entropy(logits, t, inplace_grad=True)
    torch.testing.assert_close(loss, F.cross_entropy(x, t))
    torch.testing.assert_close(logits.detach(), xr.grad)  # the logits now hold the gradient
    loss.backward(retain_graph=True)
    torch.testing.assert_close(leaf.grad, xr.grad)
    with pytest.raises(RuntimeError, match="consumed"):  # the gradient cannot be computed again
        loss.backward()


def test_retain_graph_and_double_backward():
    x, t, _ = data(torch.float64)
    xa = x.clone().requires_grad_()
    loss = ft.cross_entropy(xa, t)
    loss.backward(retain_graph=True)
    first = xa.grad.clone()
    loss.backward()  # retain_graph: the gradient again (computed anew), accumulated
    torch.testing.assert_close(xa.grad, 2 * first)
    h, W = torch.randn(7, 3, requires_grad=True), torch.randn(11, 3, requires_grad=True)
    tt = torch.randint(0, 11, (7,))
    lin = ft.linear_cross_entropy(h, W, tt, chunk_size=3)
    lin.backward(retain_graph=True)
    g1 = (h.grad.clone(), W.grad.clone())
    lin.backward()
    torch.testing.assert_close(h.grad, 2 * g1[0])
    torch.testing.assert_close(W.grad, 2 * g1[1])
    loss = ft.cross_entropy(xa, t)
    (g,) = torch.autograd.grad(loss, xa, create_graph=False)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(ft.cross_entropy(xa, t), xa, create_graph=True)


def test_errors_name_the_argument():
    x, t, _ = data(torch.float32)
    with pytest.raises(ValueError, match="targets requires grad"):
        ft.cross_entropy(x, t.double().requires_grad_())  # integer tensors cannot require grad
    with pytest.raises(TypeError, match="targets must be an integer"):
        ft.cross_entropy(x, t.double())
    with pytest.raises(ValueError, match="device meta"):
        ft.cross_entropy(x.to("meta"), t)
    with pytest.raises(TypeError, match="logits must be float16, bfloat16"):
        ft.cross_entropy(x.to(torch.int32), t)
    with pytest.raises(ValueError, match="targets has shape"):
        ft.cross_entropy(x, t[:3])
    with pytest.raises(ValueError, match=r"targets\[0\] = 99"):
        ft.cross_entropy(x, torch.full_like(t, 99))
    with pytest.raises(ValueError, match="reduction"):
        ft.cross_entropy(x, t, reduction="avg")
    h, W = torch.randn(5, 4), torch.randn(7, 4)
    with pytest.raises(ValueError, match="hidden has shape"):
        ft.linear_cross_entropy(torch.randn(5, 3), W, torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"weight must be \(V, D\)"):
        ft.linear_cross_entropy(h, W[0], torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="bias has shape"):
        ft.linear_cross_entropy(h, W, torch.zeros(5, dtype=torch.long), bias=torch.zeros(6))
    with pytest.raises(ValueError, match="chunk_size"):
        ft.linear_cross_entropy(h, W, torch.zeros(5, dtype=torch.long), chunk_size=0)
    with pytest.raises(TypeError, match="same dtype"):
        ft.linear_cross_entropy(h, W.double(), torch.zeros(5, dtype=torch.long))


def test_opcheck():
    x, t, w = data(torch.float32)
    torch.library.opcheck(ft._ce_op, (x.requires_grad_(), t, w.float(), -100, "mean", 0.1, 0.01, 0.0, 0.9))
    torch.library.opcheck(ft._ce_op, (x, t, None, -100, "none", 0.0, 0.0, 4.0, 1.0))
    h, W, b = torch.randn(9, 6, requires_grad=True), torch.randn(11, 6, requires_grad=True), torch.randn(11)
    tt = torch.randint(0, 11, (9,))
    for reduction in ("mean", "sum", "none"):
        torch.library.opcheck(ft._lce_op, (h, W, tt, b, None, -100, reduction, 0.0, 0.0, 0.0, 1.0, 4))


def _backend():
    try:
        import torch._inductor  # noqa: F401
        return "inductor"
    except Exception:  # noqa: BLE001 - the compiler needs a C++ toolchain; aot_eager traces the same graph
        return "aot_eager"


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_training_step_matches_eager(backend):
    if backend == "inductor" and _backend() != "inductor":
        pytest.skip("inductor is unavailable here")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh())
    head = torch.nn.Linear(32, 50)
    h, t = torch.randn(20, 16), torch.randint(0, 50, (20,))

    def step(h, t):
        z = model(h)
        return ft.cross_entropy(head(z), t, label_smoothing=0.1) + ft.linear_cross_entropy(
            z, head.weight, t, bias=head.bias, chunk_size=8)

    compiled = torch.compile(step, fullgraph=True, backend=backend)
    params = list(model.parameters()) + list(head.parameters())
    loss_c = compiled(h, t)
    grads_c = torch.autograd.grad(loss_c, params)
    loss_e = step(h, t)
    grads_e = torch.autograd.grad(loss_e, params)
    torch.testing.assert_close(loss_c, loss_e)
    for a, b in zip(grads_c, grads_e):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("opts", [dict(), dict(label_smoothing=0.2, z_loss=0.01), dict(class_weight=True),
                                  dict(softcap=4.0, temperature=0.8)], ids=str)
@pytest.mark.parametrize("bias", [False, True])
def test_linear_cross_entropy_gradcheck(reduction, opts, bias):
    g = torch.Generator().manual_seed(1)
    h = torch.randn(2, 9, 5, generator=g, dtype=torch.float64, requires_grad=True)
    W = torch.randn(13, 5, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(13, generator=g, dtype=torch.float64, requires_grad=True) if bias else None
    t = torch.randint(0, 13, (2, 9), generator=g)
    t[0, 3] = -100
    o = dict(opts)
    cw = torch.rand(13, generator=g, dtype=torch.float64) + 0.5 if o.pop("class_weight", False) else None
    args = (h, W) + ((b,) if bias else ())
    assert torch.autograd.gradcheck(
        lambda h, W, *b: ft.linear_cross_entropy(h, W, t, bias=b[0] if b else None, class_weight=cw,
                                                 reduction=reduction, chunk_size=4, **o), args)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("chunk_size", [None, 1, 7, 64])
def test_linear_cross_entropy_matches_torch(dtype, reduction, chunk_size):
    g = torch.Generator().manual_seed(2)
    h = torch.randn(50, 24, generator=g).to(dtype)
    W = (torch.randn(300, 24, generator=g) / 4).to(dtype)
    b = torch.randn(300, generator=g).to(dtype)
    t = torch.randint(0, 300, (50,), generator=g)
    t[[0, 9]] = -100
    params = [p.clone().requires_grad_() for p in (h, W, b)]
    loss = ft.linear_cross_entropy(*params[:2], t, bias=params[2], reduction=reduction, chunk_size=chunk_size)
    ref = [p.double().requires_grad_() for p in (h, W, b)]
    want = F.cross_entropy(F.linear(ref[0], ref[1], ref[2]), t, reduction=reduction)
    go = torch.rand(want.shape, dtype=torch.float64, generator=g) + 0.5
    got_g = torch.autograd.grad(loss, params, go.to(dtype))
    want_g = torch.autograd.grad(want, ref, go)
    rtol = {torch.float64: 1e-10, torch.float32: 1e-4, torch.bfloat16: 5e-2}[dtype]
    np.testing.assert_allclose(loss.double().detach(), want.detach(), rtol=rtol, atol=rtol)
    for a, r in zip(got_g, want_g):
        assert a.dtype == dtype
        np.testing.assert_allclose(a.double(), r, rtol=rtol, atol=rtol * r.abs().max().item())


def test_linear_cross_entropy_all_ignored():
    h, W = torch.randn(6, 4, requires_grad=True), torch.randn(9, 4, requires_grad=True)
    t = torch.full((6,), -100)
    loss = ft.linear_cross_entropy(h, W, t)
    loss.backward()
    assert torch.isnan(loss)
    assert (h.grad == 0).all() and (W.grad == 0).all()


def test_modules():
    x, t, w = data(torch.float32)
    m = ft.CrossEntropyLoss(weight=w.float(), label_smoothing=0.1)
    torch.testing.assert_close(m(x, t), F.cross_entropy(x, t, weight=w.float(), label_smoothing=0.1))
    h, W = torch.randn(12, 8), torch.randn(37, 8)
    lm = ft.LinearCrossEntropyLoss(ignore_index=-100, chunk_size=5)
    torch.testing.assert_close(lm(h, W, t), F.cross_entropy(h @ W.T, t), rtol=1e-5, atol=1e-6)


def test_bench_group_runs():
    """The fastlm.torch bench group on tiny shapes: every side runs and the tables have their rows."""
    from fastlm import bench_torch

    fns = bench_torch.make_ce_cases((2, 3, 50), "float32", 1)
    assert set(fns) == {"fastlm.torch", "torch", "raw numpy call"}
    for fn in fns.values():
        fn()
    row = {"shape": (2, 3, 50), "dtype": "float32", **{k: 1.0 for k in fns}}
    assert bench_torch.format_ce_table([row]).count("\n") == 2
    side = bench_torch.run_linear_side("fastlm", (64, 8, 100), repeat=1)
    naive = bench_torch.run_linear_side("naive", (64, 8, 100), repeat=1)
    assert side["loss"] == pytest.approx(naive["loss"], rel=1e-5)
    assert bench_torch.format_linear_table([{"shape": (64, 8, 100), "fastlm": side, "naive": naive}]).count("\n") == 2
