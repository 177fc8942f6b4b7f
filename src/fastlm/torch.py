"""fastlm.torch: the fused cross-entropy and a chunked linear + cross-entropy as torch autograd operators.

`pip install "fastlm[torch]"`. This module imports torch; `import fastlm` does not import this module.
CPU tensors only (another device is a ValueError naming it). The operators are registered with
torch.library.custom_op (fastlm::cross_entropy, fastlm::linear_cross_entropy, ...) with fake kernels and
autograd formulas, so torch.compile(fullgraph=True) keeps them in its graph and torch.library.opcheck
passes.

Both compute the gradient in the forward call (one fused pass; for the linear version chunk by chunk,
never holding the (N, V) logits) and keep it; backward only scales it by the incoming gradient (not at
all when that is 1 outside torch.compile). With reduction="none" an arbitrary per-token incoming
gradient is supported: cross_entropy scales the kept rows, linear_cross_entropy recomputes its chunks in
backward with those weights. In eager mode backward hands the kept gradient to autograd without a copy;
a second backward through the same graph (retain_graph=True) computes it again (inplace_grad=True,
whose logits are gone, raises there). Double backward (create_graph=True) raises a RuntimeError. The math and
the options are those of fastlm.cross_entropy_with_grad; the algorithm of the linear version is in
csrc/README.md ("Linear + cross-entropy").
"""


from typing import Optional, cast

import numpy as np
import torch

from . import linear as _linear
from . import losses as _losses

__all__ = ["cross_entropy", "linear_cross_entropy", "CrossEntropyLoss", "LinearCrossEntropyLoss"]

_REDUCTIONS = ("mean", "sum", "none")
_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_tensor(t, name: str, dtypes=_DTYPES) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise ValueError(f"{name} is on device {t.device}; fastlm.torch runs on the CPU only (move it with .cpu())")
    if dtypes is not None and t.dtype not in dtypes:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {t.dtype}")


def _check_targets(targets, shape, name="targets") -> None:
    _check_tensor(targets, name, None)
    if targets.requires_grad:
        raise ValueError(f"{name} requires grad; class indices have no gradient (integer targets, detached)")
    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {targets.dtype}")
    if tuple(targets.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(targets.shape)} but needs {tuple(shape)}")


def _np(t: torch.Tensor) -> np.ndarray:
    """A tensor's memory as an ndarray (bfloat16 as its bits, uint16)."""
    t = t.detach()
    return t.view(torch.int16).numpy().view(np.uint16) if t.dtype == torch.bfloat16 else t.numpy()


def _empty(shape, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialized CPU tensor in NumPy's memory: NumPy asks Linux for transparent huge pages on large
    arrays, which makes first writes to a fresh (N, V) gradient several times cheaper than torch.empty's."""
    if dtype == torch.bfloat16:
        return torch.from_numpy(np.empty(shape, np.int16)).view(torch.bfloat16)
    return torch.from_numpy(np.empty(shape, torch.empty((), dtype=dtype).numpy().dtype))


def _weight_np(weight: Optional[torch.Tensor]):
    return None if weight is None else weight.detach().to(torch.float64).numpy()


# ------------------------------------------------------------------------------------------ cross_entropy
@torch.library.custom_op("fastlm::cross_entropy", mutates_args=())
def _ce_op(logits: torch.Tensor, targets: torch.Tensor, weight: Optional[torch.Tensor], ignore_index: int,
           reduction: str, label_smoothing: float, z_loss: float, softcap: float,
           temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, d loss / d logits) in one fused call; the gradient is that of the sum for "none"."""
    grad = _empty(logits.shape, logits.dtype)
    loss = _losses.xent_with_grad_into(_np(logits), _np(targets), _np(grad), weight=_weight_np(weight),
                                       ignore_index=ignore_index, reduction=reduction,
                                       label_smoothing=label_smoothing, z_loss=z_loss,
                                       softcap=softcap if softcap > 0 else None, temperature=temperature)
    return torch.as_tensor(np.asarray(loss)).to(logits.dtype), grad


@_ce_op.register_fake
def _(logits, targets, weight, ignore_index, reduction, label_smoothing, z_loss, softcap, temperature):
    loss_shape = targets.shape if reduction == "none" else ()
    return logits.new_empty(loss_shape), torch.empty_like(logits, memory_format=torch.contiguous_format)


def _no_double_backward(what: str) -> None:
    if torch.is_grad_enabled() and not torch.compiler.is_compiling():
        raise RuntimeError(f"{what} has no double backward (create_graph=True): its gradient comes from a fused "
                           "kernel, not from differentiable torch operations")


def _scaled(grad: torch.Tensor, go: torch.Tensor) -> torch.Tensor:
    """grad times the incoming gradient go (a scalar, or one per row of grad's leading dims)."""
    if go.dim() == 0:
        # the common case, loss.backward() on the loss itself, in eager mode (a traced go is a subclass)
        if type(go) is torch.Tensor and not torch.compiler.is_compiling() and go.item() == 1:
            return grad
        return grad * go.to(grad.dtype)
    return grad * go.to(grad.dtype).unsqueeze(-1)


def _keep(ctx, grads, inputs=None, recompute=None) -> None:
    """Keep the forward's gradients for backward. In eager mode they are handed over, not saved: backward
    returns them as they are and autograd adopts them without a copy; a second backward through the same
    graph (retain_graph=True, gradcheck) gets them again from recompute(*inputs), whose tensors are saved
    (references only). Traced (torch.compile, opcheck), the gradients are saved as usual."""
    ctx.set_materialize_grads(False)  # else autograd fills an (N, V) zero tensor for the gradient outputs
    if all(type(t) is torch.Tensor for t in grads):
        ctx.kept, ctx.recompute = list(grads), recompute
        ctx.save_for_backward(*(inputs or ()))
    else:
        ctx.kept = None
        ctx.save_for_backward(*grads)


def _take(ctx, what: str):
    _no_double_backward(what)
    if ctx.kept is None:
        return ctx.saved_tensors
    if ctx.kept:
        kept, ctx.kept = ctx.kept, []
        return kept
    if ctx.recompute is None:
        raise RuntimeError(f"{what}: its gradient was handed to the first backward through this graph and "
                           "cannot be computed again (the logits were consumed); retain_graph=True is not supported")
    with torch.no_grad():
        return ctx.recompute(*ctx.saved_tensors)


def _ce_setup(ctx, inputs, output):
    logits, targets, weight, *options = inputs
    _keep(ctx, (output[1],), (logits, targets, weight),
          lambda logits, targets, weight: (_ce_op(logits, targets, weight, *options)[1],))


def _ce_backward(ctx, g_loss, g_grad):
    (grad,) = _take(ctx, "fastlm.torch.cross_entropy")
    if g_loss is None:
        return (None,) * 9
    return _scaled(grad, g_loss), None, None, None, None, None, None, None, None


_ce_op.register_autograd(_ce_backward, setup_context=_ce_setup)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, *, weight: Optional[torch.Tensor] = None,
                  ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0,
                  z_loss: float = 0.0, softcap: Optional[float] = None, temperature: float = 1.0,
                  inplace_grad: bool = False) -> torch.Tensor:
    """Cross-entropy of softmax(logits) (class axis last) against integer targets, with autograd.

    The loss and options of fastlm.cross_entropy (torch's F.cross_entropy for weight, ignore_index,
    reduction, label_smoothing; plus z_loss, softcap, temperature); float16 / bfloat16 are read as such
    and computed in float32, the gradient written in the logits' dtype. The gradient d loss / d logits
    is computed in the forward call and kept (an (..., V) tensor, as torch's own backward makes);
    backward scales it by the incoming gradient. In eager mode backward hands that tensor over to autograd
    (no copy); a second backward through the same graph (retain_graph=True) computes it again.

    inplace_grad=True writes that gradient into the logits' own storage: the logits are consumed (their
    values are the gradient afterwards) and no (..., V) tensor is allocated. Eager mode only; the logits
    must be a contiguous tensor that autograd lets us overwrite (not a leaf that requires grad).
    """
    _check_tensor(logits, "logits")
    if logits.dim() == 0:
        raise ValueError("logits must have at least one dimension (..., V)")
    _check_targets(targets, logits.shape[:-1])
    if weight is not None:
        _check_tensor(weight, "weight", None)
        if weight.requires_grad:
            raise ValueError("weight requires grad; class weights get no gradient (pass weight.detach())")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    cap = 0.0 if softcap is None else float(softcap)
    if inplace_grad:
        return _CrossEntropyInplace.apply(logits, targets, weight, int(ignore_index), reduction,
                                          float(label_smoothing), float(z_loss), cap, float(temperature))
    return _ce_op(logits, targets, weight, int(ignore_index), reduction, float(label_smoothing), float(z_loss), cap,
                  float(temperature))[0]


class _CrossEntropyInplace(torch.autograd.Function):
    """cross_entropy(inplace_grad=True): the gradient overwrites the logits' storage."""

    @staticmethod
    def forward(ctx, logits, targets, weight, ignore_index, reduction, label_smoothing, z_loss, softcap, temperature):
        if not logits.is_contiguous():
            raise ValueError("inplace_grad=True needs contiguous logits (their storage receives the gradient)")
        x = _np(logits)
        loss = _losses.xent_with_grad_into(x, _np(targets), x, weight=_weight_np(weight), ignore_index=ignore_index,
                                           reduction=reduction, label_smoothing=label_smoothing, z_loss=z_loss,
                                           softcap=softcap if softcap > 0 else None, temperature=temperature)
        ctx.mark_dirty(logits)
        _keep(ctx, (logits,))  # handed over; a second backward raises (the logits are gone)
        return torch.as_tensor(np.asarray(loss)).to(logits.dtype), logits

    @staticmethod
    def backward(ctx, g_loss, g_grad):
        (grad,) = _take(ctx, "fastlm.torch.cross_entropy(inplace_grad=True)")
        if g_loss is None:
            return (None,) * 9
        return _scaled(grad.detach(), g_loss), None, None, None, None, None, None, None, None

    @classmethod
    def apply(cls, *args):  # type: ignore[override]
        return super().apply(*args)[0]


class CrossEntropyLoss(torch.nn.Module):
    """nn.Module form of fastlm.torch.cross_entropy, with torch.nn.CrossEntropyLoss's constructor
    conventions (weight, ignore_index, reduction, label_smoothing) plus z_loss, softcap, temperature."""

    def __init__(self, weight: Optional[torch.Tensor] = None, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0, *, z_loss: float = 0.0, softcap: Optional[float] = None,
                 temperature: float = 1.0, inplace_grad: bool = False) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.ignore_index, self.reduction, self.label_smoothing = ignore_index, reduction, label_smoothing
        self.z_loss, self.softcap, self.temperature, self.inplace_grad = z_loss, softcap, temperature, inplace_grad

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return cross_entropy(logits, targets, weight=cast(Optional[torch.Tensor], self.weight), ignore_index=self.ignore_index,
                             reduction=self.reduction, label_smoothing=self.label_smoothing, z_loss=self.z_loss,
                             softcap=self.softcap, temperature=self.temperature, inplace_grad=self.inplace_grad)


# ----------------------------------------------------------------------------------- linear_cross_entropy
_TORCH = _linear._Backend(lambda shape, like: torch.empty(shape, dtype=like.dtype),
                          lambda shape, like: torch.zeros(shape, dtype=like.dtype),
                          lambda a, b, out: torch.mm(a, b, out=out), lambda a, b, out, part: out.addmm_(a, b), _np,
                          lambda a, like: torch.from_numpy(a).to(like.dtype))


def _lce_opts(class_weight, ignore_index, reduction, label_smoothing, z_loss, softcap, temperature):
    return dict(weight=_weight_np(class_weight), ignore_index=ignore_index,
                reduction="none" if reduction == "none" else "sum", label_smoothing=label_smoothing, z_loss=z_loss,
                softcap=softcap if softcap > 0 else None, temperature=temperature)


def _lce_run(hidden, weight, targets, bias, class_weight, ignore_index, reduction, label_smoothing, z_loss, softcap,
             temperature, chunk_size, want_grad, row_scale=None):
    """The chunk loop on tensors: (loss as a float64 array, dh, dW, db); "mean" is applied here."""
    D, V = hidden.shape[-1], weight.shape[0]
    h = hidden.detach().reshape(-1, D).contiguous()
    W = weight.detach().contiguous()
    b = None if bias is None else bias.detach().contiguous()
    t = targets.detach().reshape(-1).to(torch.int64).numpy()
    ignored = _linear.check_targets(t, V, ignore_index, tuple(targets.shape))
    chunk = _linear.chunk_rows(h.shape[0], V, h.element_size(), chunk_size if chunk_size > 0 else None)
    opts = _lce_opts(class_weight, ignore_index, reduction, label_smoothing, z_loss, softcap, temperature)
    wsum = _linear.weight_sum(t, ignored, None if class_weight is None else class_weight.detach().double().numpy())
    return _linear.run_reduced(_TORCH, h, W, b, t, chunk, opts, want_grad, reduction, ignored, wsum, row_scale)


def _lce_loss_tensor(loss: np.ndarray, like: torch.Tensor, shape) -> torch.Tensor:
    return torch.as_tensor(np.asarray(loss, np.float64)).to(like.dtype).reshape(shape)


@torch.library.custom_op("fastlm::linear_cross_entropy", mutates_args=())
def _lce_op(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, bias: Optional[torch.Tensor],
            class_weight: Optional[torch.Tensor], ignore_index: int, reduction: str, label_smoothing: float,
            z_loss: float, softcap: float, temperature: float, chunk_size: int
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, d_hidden, d_weight, d_bias) of the mean or sum; for "none" the loss alone (empty gradients:
    backward recomputes with the per-token incoming gradient). d_bias is empty without a bias."""
    want = reduction != "none"
    loss, dh, dW, db = _lce_run(hidden, weight, targets, bias, class_weight, ignore_index, reduction,
                                label_smoothing, z_loss, softcap, temperature, chunk_size, want)
    out = _lce_loss_tensor(loss, hidden, targets.shape if reduction == "none" else ())
    if not want:
        return out, hidden.new_empty(0), weight.new_empty(0), weight.new_empty(0)
    return (out, dh.reshape(hidden.shape), dW, weight.new_empty(0) if db is None else db)


@_lce_op.register_fake
def _(hidden, weight, targets, bias, class_weight, ignore_index, reduction, label_smoothing, z_loss, softcap,
      temperature, chunk_size):
    if reduction == "none":
        return hidden.new_empty(targets.shape), hidden.new_empty(0), weight.new_empty(0), weight.new_empty(0)
    return (hidden.new_empty(()), torch.empty_like(hidden, memory_format=torch.contiguous_format),
            torch.empty_like(weight, memory_format=torch.contiguous_format),
            weight.new_empty(0) if bias is None else weight.new_empty(weight.shape[0]))


@torch.library.custom_op("fastlm::linear_cross_entropy_backward", mutates_args=())
def _lce_backward_op(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, bias: Optional[torch.Tensor],
                     class_weight: Optional[torch.Tensor], ignore_index: int, label_smoothing: float, z_loss: float,
                     softcap: float, temperature: float, chunk_size: int, grad_output: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gradients of sum_i grad_output[i] l_i (reduction "none"), recomputing the chunks."""
    scale = grad_output.detach().reshape(-1).to(hidden.dtype).contiguous()
    _, dh, dW, db = _lce_run(hidden, weight, targets, bias, class_weight, ignore_index, "none", label_smoothing,
                             z_loss, softcap, temperature, chunk_size, True, scale)
    return dh.reshape(hidden.shape), dW, weight.new_empty(0) if db is None else db


@_lce_backward_op.register_fake
def _(hidden, weight, targets, bias, class_weight, ignore_index, label_smoothing, z_loss, softcap, temperature,
      chunk_size, grad_output):
    return (torch.empty_like(hidden, memory_format=torch.contiguous_format),
            torch.empty_like(weight, memory_format=torch.contiguous_format),
            weight.new_empty(0) if bias is None else weight.new_empty(weight.shape[0]))


def _lce_setup(ctx, inputs, output):
    hidden, weight, targets, bias, class_weight, ignore_index, reduction, ls, zl, cap, temp, chunk = inputs
    ctx.reduction, ctx.has_bias = reduction, bias is not None
    ctx.options = (ignore_index, ls, zl, cap, temp, chunk)
    if reduction == "none":
        ctx.kept = None
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(hidden, weight, targets, bias, class_weight)
    else:
        _keep(ctx, output[1:], (hidden, weight, targets, bias, class_weight),
              lambda *saved: _lce_op(*saved, ignore_index, reduction, ls, zl, cap, temp, chunk)[1:])


def _lce_backward(ctx, g_loss, g_dh, g_dw, g_db):
    saved = _take(ctx, "fastlm.torch.linear_cross_entropy")
    if g_loss is None:
        return (None,) * 12
    if ctx.reduction == "none":
        hidden, weight, targets, bias, class_weight = saved
        ignore_index, ls, zl, cap, temp, chunk = ctx.options
        dh, dW, db = _lce_backward_op(hidden, weight, targets, bias, class_weight, ignore_index, ls, zl, cap, temp,
                                      chunk, g_loss)
    else:
        dh, dW, db = (_scaled(g, g_loss) for g in saved)
    return (dh, dW, None, db if ctx.has_bias else None) + (None,) * 8


_lce_op.register_autograd(_lce_backward, setup_context=_lce_setup)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *,
                         bias: Optional[torch.Tensor] = None, chunk_size: Optional[int] = None,
                         class_weight: Optional[torch.Tensor] = None, ignore_index: int = -100,
                         reduction: str = "mean", label_smoothing: float = 0.0, z_loss: float = 0.0,
                         softcap: Optional[float] = None, temperature: float = 1.0) -> torch.Tensor:
    """Cross-entropy of softmax(hidden @ weight.T + bias) against targets, with gradients for hidden,
    weight and bias, never holding the (N, V) logits: rows run in chunks (chunk_size rows; default about
    64 MiB of logits, at least 256 rows), each one torch matmul into a reused buffer, the fused kernel in
    place, and two matmuls for the gradients (fastlm.linear_cross_entropy_with_grad is the NumPy twin).
    Argument order (hidden, weight, targets) as torch's F.linear; hidden (..., D), weight (V, D), bias
    (V,), targets (...). The per-class weight of the loss is class_weight. float16 / bfloat16 run their
    matmuls in that dtype and the loss in float32 (bfloat16 logits are read as such by the kernel).
    """
    _check_tensor(hidden, "hidden")
    _check_tensor(weight, "weight")
    if weight.dtype != hidden.dtype:
        raise TypeError(f"hidden ({hidden.dtype}) and weight ({weight.dtype}) must have the same dtype")
    if bias is not None:
        _check_tensor(bias, "bias")
        if bias.dtype != hidden.dtype:
            raise TypeError(f"bias ({bias.dtype}) must have hidden's dtype ({hidden.dtype})")
    _check_tensor(targets, "targets", None)
    _linear.check_shapes(tuple(hidden.shape), tuple(weight.shape), tuple(targets.shape),
                         None if bias is None else tuple(bias.shape),
                         None if class_weight is None else tuple(class_weight.shape))
    _check_targets(targets, hidden.shape[:-1])
    if class_weight is not None and class_weight.requires_grad:
        raise ValueError("class_weight requires grad; class weights get no gradient (pass class_weight.detach())")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    chunk = 0 if chunk_size is None else int(chunk_size)
    if chunk_size is not None and chunk < 1:
        raise ValueError(f"chunk_size must be >= 1 (rows per chunk), got {chunk_size!r}")
    return _lce_op(hidden, weight, targets, bias, class_weight, int(ignore_index), reduction, float(label_smoothing),
                   float(z_loss), 0.0 if softcap is None else float(softcap), float(temperature), chunk)[0]


class LinearCrossEntropyLoss(torch.nn.Module):
    """nn.Module form of fastlm.torch.linear_cross_entropy: forward(hidden, weight, targets, bias=None),
    with torch.nn.CrossEntropyLoss's constructor conventions (the class weight is `class_weight`)."""

    def __init__(self, class_weight: Optional[torch.Tensor] = None, ignore_index: int = -100,
                 reduction: str = "mean", label_smoothing: float = 0.0, *, z_loss: float = 0.0,
                 softcap: Optional[float] = None, temperature: float = 1.0, chunk_size: Optional[int] = None) -> None:
        super().__init__()
        self.register_buffer("class_weight", class_weight)
        self.ignore_index, self.reduction, self.label_smoothing = ignore_index, reduction, label_smoothing
        self.z_loss, self.softcap, self.temperature, self.chunk_size = z_loss, softcap, temperature, chunk_size

    def forward(self, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        return linear_cross_entropy(hidden, weight, targets, bias=bias, chunk_size=self.chunk_size,
                                    class_weight=cast(Optional[torch.Tensor], self.class_weight), ignore_index=self.ignore_index,
                                    reduction=self.reduction, label_smoothing=self.label_smoothing,
                                    z_loss=self.z_loss, softcap=self.softcap, temperature=self.temperature)
