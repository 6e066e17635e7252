"""A battery of 178 small programs over torch's differentiable ops, outside the presets, in
float64 and float32: every op step the stepper records has a NumPy reference that agrees.

Nodes allowed to go without one would be listed in NO_RULE; none are.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradviz.backward.stepper import BackwardStepper

d = torch.float64
# Programs whose nodes may go without a rule, and which nodes.
NO_RULE: dict[str, set[str]] = {}


def x(*s, pos=False):
    t = torch.randn(*s, dtype=d)
    if pos:
        t = t.abs() + 0.5
    return t.requires_grad_()


CASES = {
    "elu": lambda: F.elu(x(3,4)).sum(),
    "selu": lambda: F.selu(x(3,4)).sum(),
    "celu": lambda: F.celu(x(3,4)).sum(),
    "silu": lambda: F.silu(x(3,4)).sum(),
    "mish": lambda: F.mish(x(3,4)).sum(),
    "hardswish": lambda: F.hardswish(x(3,4)).sum(),
    "hardsigmoid": lambda: F.hardsigmoid(x(3,4)).sum(),
    "hardtanh": lambda: F.hardtanh(x(3,4)).sum(),
    "softplus": lambda: F.softplus(x(3,4)).sum(),
    "softsign": lambda: F.softsign(x(3,4)).sum(),
    "prelu": lambda: F.prelu(x(3,4), x(1)).sum(),
    "rrelu_eval": lambda: F.rrelu(x(3,4), training=False).sum(),
    "glu": lambda: F.glu(x(3,4)).sum(),
    "logsigmoid": lambda: F.logsigmoid(x(3,4)).sum(),
    "tanhshrink": lambda: F.tanhshrink(x(3,4)).sum(),
    "softshrink": lambda: F.softshrink(x(3,4)).sum(),
    "hardshrink": lambda: F.hardshrink(x(3,4)).sum(),
    "threshold": lambda: F.threshold(x(3,4),0.1,2.).sum(),
    "relu6": lambda: F.relu6(x(3,4)).sum(),
    "gelu_tanh": lambda: F.gelu(x(3,4), approximate="tanh").sum(),
    "groupnorm": lambda: nn.GroupNorm(2,4).to(d)(x(2,4,3)).sum(),
    "instnorm": lambda: nn.InstanceNorm1d(4, affine=True).to(d)(x(2,4,5)).sum(),
    "bn1d": lambda: nn.BatchNorm1d(4).to(d)(x(3,4)).pow(2).sum(),
    "bn_eval": lambda: nn.BatchNorm1d(4).to(d).eval()(x(3,4)).pow(2).sum(),
    "rmsnorm": lambda: nn.RMSNorm(4).to(d)(x(3,4)).pow(2).sum(),
    "localresp": lambda: nn.LocalResponseNorm(2).to(d)(x(2,4,5)).sum(),
    "sdpa": lambda: F.scaled_dot_product_attention(x(2,3,4),x(2,3,4),x(2,3,4)).sum(),
    "sdpa_causal": lambda: F.scaled_dot_product_attention(
        x(2,3,4),x(2,3,4),x(2,3,4), is_causal=True).sum(),
    "mha": lambda: nn.MultiheadAttention(4,2,batch_first=True).to(d)(
        x(2,3,4),x(2,3,4),x(2,3,4))[0].sum(),
    "cosine_sim": lambda: F.cosine_similarity(x(3,4),x(3,4)).sum(),
    "pairwise": lambda: F.pairwise_distance(x(3,4),x(3,4)).sum(),
    "cdist": lambda: torch.cdist(x(3,4),x(5,4)).sum(),
    "einsum": lambda: torch.einsum("ij,jk->ik", x(3,4), x(4,2)).sum(),
    "norm": lambda: x(3,4).norm().mul(1),
    "norm_dim": lambda: torch.linalg.vector_norm(x(3,4),dim=1).sum(),
    "logsumexp": lambda: x(3,4).logsumexp(1).sum(),
    "cumsum": lambda: x(3,4).cumsum(1).pow(2).sum(),
    "cumprod": lambda: x(3,4).cumprod(1).sum(),
    "topk": lambda: x(3,4).topk(2)[0].pow(2).sum(),
    "sort": lambda: x(3,4).sort(1)[0].pow(2).sum(),
    "gather": lambda: x(3,4).gather(1, torch.tensor([[0],[2],[1]])).pow(2).sum(),
    "scatter": lambda: torch.zeros(3,4,dtype=d).scatter(
        1, torch.tensor([[0],[2],[1]]), x(3,1)).pow(2).sum(),
    "scatter_add": lambda: x(3,4).scatter_add(1, torch.tensor([[0],[2],[1]]), x(3,1)).pow(2).sum(),
    "index_select": lambda: x(3,4).index_select(1, torch.tensor([0,2])).pow(2).sum(),
    "repeat": lambda: x(3,4).repeat(2,1).pow(2).sum(),
    "flip": lambda: x(3,4).flip(1).pow(2).cumsum(1).sum(),
    "roll": lambda: x(3,4).roll(1,1).cumsum(1).pow(2).sum(),
    "unfold": lambda: x(3,8).unfold(1,3,2).pow(2).sum(),
    "F.unfold": lambda: F.unfold(x(1,2,4,4), 2).pow(2).sum(),
    "F.fold": lambda: F.fold(x(1,8,9), (4,4), 2).pow(2).sum(),
    "max_dim": lambda: x(3,4).max(1)[0].pow(2).sum(),
    "min": lambda: x(3,4).min().pow(2),
    "amax": lambda: x(3,4).amax(1).pow(2).sum(),
    "median": lambda: x(3,5).median(1)[0].pow(2).sum(),
    "var": lambda: x(3,4).var(1).sum(),
    "std": lambda: x(3,4).std().mul(1),
    "prod": lambda: x(3,4).prod(1).sum(),
    "trig": lambda: (
        x(3).sin()+x(3).cos()+x(3).tan()+x(3).atan()+x(3).sinh()+x(3).cosh()).sum(),
    "asin": lambda: (x(3).mul(0.3).asin()+x(3).mul(0.3).acos()).sum(),
    "erf": lambda: (x(3).erf()+x(3).erfc()).sum(),
    "log1p": lambda: (
        x(3,pos=True).log1p()+x(3).expm1()+x(3,pos=True).log2()+x(3,pos=True).log10()).sum(),
    "rsqrt": lambda: x(3,pos=True).rsqrt().sum(),
    "reciprocal": lambda: x(3,pos=True).reciprocal().sum(),
    "sign_floor": lambda: (x(3).floor()+x(3).round()+x(3).trunc()+x(3).frac()).sum(),
    "atan2": lambda: torch.atan2(x(3),x(3)).sum(),
    "hypot": lambda: torch.hypot(x(3),x(3)).sum(),
    "fmod": lambda: torch.fmod(x(3),1.5).sum(),
    "remainder": lambda: torch.remainder(x(3),1.5).sum(),
    "lerp": lambda: torch.lerp(x(3),x(3),0.3).sum(),
    "addcmul": lambda: torch.addcmul(x(3),x(3),x(3)).sum(),
    "addcdiv": lambda: torch.addcdiv(x(3),x(3),x(3,pos=True)).sum(),
    "minimum": lambda: torch.minimum(x(3),x(3)).sum(),
    "fmax": lambda: torch.fmax(x(3),x(3)).sum(),
    "clamp_t": lambda: x(3).clamp(min=x(3)).sum(),
    "xlogy": lambda: torch.xlogy(x(3),x(3,pos=True)).sum(),
    "sigmoid_bce_logits": lambda: F.binary_cross_entropy_with_logits(
        x(3,4), torch.rand(3,4,dtype=d)),
    "kl_div": lambda: F.kl_div(
        F.log_softmax(x(3,4),1), F.softmax(torch.randn(3,4,dtype=d),1), reduction="batchmean"),
    "huber": lambda: F.huber_loss(x(3,4), torch.randn(3,4,dtype=d)),
    "l1": lambda: F.l1_loss(x(3,4), torch.randn(3,4,dtype=d)),
    "ce_smooth": lambda: F.cross_entropy(x(3,4), torch.tensor([0,1,2]), label_smoothing=0.1),
    "ce_probs": lambda: F.cross_entropy(x(3,4), F.softmax(torch.randn(3,4,dtype=d),1)),
    "ce_weight": lambda: F.cross_entropy(
        x(3,4), torch.tensor([0,1,2]), weight=torch.rand(4,dtype=d)),
    "ce_ignore": lambda: F.cross_entropy(x(3,4), torch.tensor([0,-100,2])),
    "nll2d": lambda: F.nll_loss(F.log_softmax(x(2,3,4,4),1), torch.randint(0,3,(2,4,4))),
    "margin": lambda: F.margin_ranking_loss(x(3),x(3),torch.tensor([1.,-1.,1.],dtype=d)),
    "hinge": lambda: F.hinge_embedding_loss(x(3,4), torch.ones(3,4,dtype=d)),
    "multimargin": lambda: F.multi_margin_loss(x(3,4), torch.tensor([0,1,2])),
    "multilabel_soft": lambda: F.multilabel_soft_margin_loss(x(3,4), torch.ones(3,4,dtype=d)),
    "poisson": lambda: F.poisson_nll_loss(x(3,4), torch.rand(3,4,dtype=d)),
    "gaussian_nll": lambda: F.gaussian_nll_loss(x(3,4), torch.randn(3,4,dtype=d), x(3,4,pos=True)),
    "triplet": lambda: F.triplet_margin_loss(x(3,4),x(3,4),x(3,4)),
    "cosine_emb": lambda: F.cosine_embedding_loss(x(3,4),x(3,4),torch.tensor([1,-1,1])),
    "soft_margin": lambda: F.soft_margin_loss(x(3,4), torch.ones(3,4,dtype=d)),
    "ctc": lambda: F.ctc_loss(F.log_softmax(x(6,2,5),2), torch.tensor([[1,2],[3,4]]),
                              torch.tensor([6,6]), torch.tensor([2,2])),
    "maxpool1d": lambda: F.max_pool1d(x(1,2,8),2).sum(),
    "maxpool3d": lambda: F.max_pool3d(x(1,1,4,4,4),2).sum(),
    "avgpool1d": lambda: F.avg_pool1d(x(1,2,8),2).sum(),
    "avgpool3d": lambda: F.avg_pool3d(x(1,1,4,4,4),2).sum(),
    "adaptive_max": lambda: F.adaptive_max_pool2d(x(1,2,5,5),2).sum(),
    "adaptive_avg1d": lambda: F.adaptive_avg_pool1d(x(1,2,7),3).sum(),
    "lppool": lambda: F.lp_pool2d(x(1,2,4,4,pos=True),2,2).sum(),
    "conv_t1d": lambda: nn.ConvTranspose1d(2,3,3,stride=2).to(d)(x(1,2,5)).pow(2).sum(),
    "conv_t2d": lambda: nn.ConvTranspose2d(2,3,3,stride=2).to(d)(x(1,2,4,4)).pow(2).sum(),
    "conv3d": lambda: nn.Conv3d(2,3,2).to(d)(x(1,2,3,3,3)).pow(2).sum(),
    "conv_groups": lambda: nn.Conv2d(4,4,3,groups=2,padding=1,dilation=1).to(d)(
        x(1,4,5,5)).pow(2).sum(),
    "conv_dil": lambda: nn.Conv2d(2,3,3,dilation=2,stride=2).to(d)(x(1,2,7,7)).pow(2).sum(),
    "bilinear": lambda: nn.Bilinear(3,4,2).to(d)(x(5,3),x(5,4)).pow(2).sum(),
    "emb_bag": lambda: nn.EmbeddingBag(10,3).to(d)(torch.tensor([[1,2],[3,4]])).pow(2).sum(),
    "rnn_tanh": lambda: nn.RNN(3,4).to(d)(x(5,2,3))[0].pow(2).sum(),
    "lstmcell": lambda: nn.LSTMCell(3,4).to(d)(x(2,3))[0].pow(2).sum(),
    "grucell": lambda: nn.GRUCell(3,4).to(d)(x(2,3)).pow(2).sum(),
    "grid_sample": lambda: F.grid_sample(x(1,2,4,4), x(1,3,3,2).tanh(), align_corners=False).sum(),
    "affine_grid": lambda: F.affine_grid(x(1,2,3), (1,1,4,4), align_corners=False).pow(2).sum(),
    "normalize": lambda: F.normalize(x(3,4)).pow(3).sum(),
    "diag": lambda: x(4,4).diag().pow(2).sum(),
    "diag_embed": lambda: torch.diag_embed(x(3)).pow(2).sum(),
    "trace": lambda: x(4,4).trace().mul(1),
    "diagonal": lambda: x(4,4).diagonal().pow(2).sum(),
    "kron": lambda: torch.kron(x(2,2),x(2,2)).pow(2).sum(),
    "outer": lambda: torch.outer(x(3),x(4)).pow(2).sum(),
    "dot": lambda: torch.dot(x(3),x(3)).mul(1),
    "mv": lambda: torch.mv(x(3,4),x(4)).pow(2).sum(),
    "baddbmm": lambda: torch.baddbmm(x(2,3,2),x(2,3,4),x(2,4,2)).pow(2).sum(),
    "addbmm": lambda: torch.addbmm(x(3,2),x(2,3,4),x(2,4,2)).pow(2).sum(),
    "addmv": lambda: torch.addmv(x(3),x(3,4),x(4)).pow(2).sum(),
    "addr": lambda: torch.addr(x(3,4),x(3),x(4)).pow(2).sum(),
    "inverse": lambda: torch.linalg.inv(x(3,3)+3*torch.eye(3,dtype=d)).sum(),
    "det": lambda: torch.linalg.det(x(3,3)).mul(1),
    "solve": lambda: torch.linalg.solve(x(3,3)+3*torch.eye(3,dtype=d), x(3,2)).sum(),
    "cholesky": lambda: torch.linalg.cholesky(
        (lambda a: a@a.mT+torch.eye(3,dtype=d))(x(3,3))).sum(),
    "svd": lambda: torch.linalg.svdvals(x(3,3)).sum(),
    "qr": lambda: torch.linalg.qr(x(3,3))[1].sum(),
    "eigh": lambda: torch.linalg.eigvalsh((lambda a: a+a.mT)(x(3,3))).pow(2).sum(),
    "slogdet": lambda: torch.linalg.slogdet(x(3,3)+3*torch.eye(3,dtype=d))[1].mul(1),
    "matrix_exp": lambda: torch.linalg.matrix_exp(x(3,3)).sum(),
    "pinv": lambda: torch.linalg.pinv(x(3,2)).sum(),
    "triangular_solve": lambda: torch.linalg.solve_triangular(
        x(3,3).triu()+3*torch.eye(3,dtype=d), x(3,2), upper=True).sum(),
    "index_put": lambda: torch.zeros(5,dtype=d).index_put(
        (torch.tensor([0,2]),), x(2)).pow(2).sum(),
    "index_add": lambda: x(5).index_add(0, torch.tensor([0,2]), x(2)).pow(2).sum(),
    "masked_scatter": lambda: torch.zeros(4,dtype=d).masked_scatter(
        torch.tensor([1,0,1,0]).bool(), x(4)).pow(2).sum(),
    "masked_select": lambda: x(4).masked_select(torch.tensor([1,0,1,0]).bool()).pow(2).sum(),
    "take": lambda: x(3,4).take(torch.tensor([0,5])).pow(2).sum(),
    "chunk": lambda: x(4,4).chunk(2)[1].pow(2).sum(),
    "split_sizes": lambda: torch.split(x(5,2),[2,3])[1].pow(2).sum(),
    "unbind": lambda: x(3,4).unbind(0)[1].pow(2).sum(),
    "movedim": lambda: x(2,3,4).movedim(0,2).cumsum(0).pow(2).sum(),
    "flatten": lambda: x(2,3,4).flatten(1).cumsum(1).pow(2).sum(),
    "as_strided": lambda: x(9).as_strided((2,2),(3,1)).pow(2).sum(),
    "expand_as": lambda: x(3,1).expand_as(torch.empty(3,4)).cumsum(1).pow(2).sum(),
    "tile": lambda: x(2,2).tile(2,1).cumsum(0).pow(2).sum(),
    "rot90": lambda: x(3,4).rot90().cumsum(0).pow(2).sum(),
    "inplace_slice": lambda: (lambda t: (t.__setitem__(slice(0,1), x(1,4)), t)[1])(
        x(3,4).mul(1)).pow(2).sum(),
    "inplace_relu": lambda: F.relu(x(3,4).mul(1), inplace=True).pow(2).sum(),
    "pad_circ": lambda: F.pad(x(1,2,4), (1,1), mode="circular").pow(2).sum(),
    "complex_abs": lambda: torch.view_as_complex(x(3,2)).abs().sum(),
    "fft": lambda: torch.fft.rfft(x(8)).abs().sum(),
    "polar": lambda: torch.polar(x(3,pos=True), x(3)).real.sum(),
    "dropout_train": lambda: F.dropout(x(3,4), 0.5, training=True).pow(2).sum(),
    "alpha_dropout": lambda: F.alpha_dropout(x(3,4), 0.5, training=True).pow(2).sum(),
    "dropout2d": lambda: F.dropout2d(x(1,3,4,4), 0.5, training=True).pow(2).sum(),
    "to_float32": lambda: x(3,4).float().pow(2).sum().to(d),
    "sum_dtype": lambda: x(3,4).sum(dtype=torch.float32),
    "nan_mean": lambda: x(3,4).nanmean(),
    "nansum": lambda: x(3,4).nansum(),
    "cummax": lambda: x(3,4).cummax(1)[0].pow(2).sum(),
    "logcumsumexp": lambda: x(3,4).logcumsumexp(1).sum(),
    "kthvalue": lambda: x(3,5).kthvalue(2,1)[0].pow(2).sum(),
    "mode": lambda: torch.tensor([[1.,1.,2.]],dtype=d,requires_grad=True).mode(1)[0].pow(2).sum(),
    "std_mean": lambda: torch.std_mean(x(3,4),1)[0].sum(),
    "softmin": lambda: F.softmin(x(3,4),1).pow(2).sum(),
    "softmax_temperature": lambda: F.softmax(x(3,4)/0.5,1).pow(2).sum(),
    "sinc": lambda: x(3,4).sinc().sum(),
    "i0": lambda: torch.i0(x(3)).sum(),
    "lgamma": lambda: (x(3,pos=True).lgamma()+x(3,pos=True).digamma()).sum(),
    "tensor_pow": lambda: x(3,pos=True).pow(x(3)).sum(),
    "float_pow": lambda: torch.pow(2.0, x(3)).sum(),
    "where_scalar": lambda: torch.where(x(3)>0, x(3), 0.).sum(),
    "clip_grad_like": lambda: x(3,4).clamp(-0.5,0.5).pow(2).sum(),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", sorted(CASES))
def test_every_op_step_has_an_agreeing_numpy_reference(name, dtype, monkeypatch):
    # float32 too: the app's models are float32, where round-off must not read as a bug.
    monkeypatch.setitem(globals(), "d", dtype)  # the programs read the module's `d`
    torch.manual_seed(1)
    stepper = BackwardStepper(CASES[name]())
    ops = stepper.op_steps()
    assert ops
    disagree = [(s.node.label, s.max_rel_error)
                for s in ops if s.reference is not None and not s.agrees]
    assert disagree == []
    missing = {s.node.grad_fn for s in ops if s.reference is None}
    allowed = NO_RULE.get(name, set())
    assert missing <= allowed, missing - allowed
