"""Dropout: masks by the specified counter-based generator, inverted scaling, gradients, determinism, resume."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import nncompile as nc
from nncompile import nn
from nncompile.gradcheck import check_gradients, random_batch

from reference import dropout_mask

try:
    import torch_oracle
except ImportError:  # PyTorch is a test-only oracle
    torch_oracle = None


def _mask_program(width: int, p: float) -> nc.CompiledProgram:
    x = nn.Input(width)
    return nc.compile(nn.Model(x, nn.Dense(1)(nn.Dropout(p)(x)), loss=nn.MSE(), name=f"drop_{width}"))


def _masks(prog: nc.CompiledProgram, rows: int, seed: int, step: int | None = None) -> np.ndarray:
    """The mask a training call draws (loss_and_grad: update count 0; a step: its update count)."""
    engine = prog.engine(prog.init_params(0))
    engine.set_seed(seed)
    ws = engine.workspace(rows)
    ws.X[...] = 1.0
    ws.T[...] = 0.0
    if step is None:
        ws.train_loss()
    else:
        engine.reset_state("sgd")
        ws.step_sgd(0.0, step)
    return ws.masks[0].copy()


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_mask_frequency_over_a_million_draws_is_within_three_sigma(p: float) -> None:
    masks = _mask_program(1000, p)
    kept = _masks(masks, 1000, seed=12345)
    assert kept.size == 10**6 and set(np.unique(kept)) <= {0.0, 1.0}
    sigma = np.sqrt(p * (1 - p) / kept.size)
    assert abs(kept.mean() - (1 - p)) < 3 * sigma
    rows, cols = kept.mean(axis=1), kept.mean(axis=0)      # no row or column pattern either
    assert abs(rows.std() - np.sqrt(p * (1 - p) / 1000)) < 0.2 * np.sqrt(p * (1 - p) / 1000)
    assert abs(cols.std() - np.sqrt(p * (1 - p) / 1000)) < 0.2 * np.sqrt(p * (1 - p) / 1000)
    neighbours = np.corrcoef(kept.ravel()[:-1], kept.ravel()[1:])[0, 1]
    assert abs(neighbours) < 4 / np.sqrt(kept.size)


@pytest.mark.parametrize("seed,step", [(0, 0), (7, 1), (2**40 + 3, 123456), (2**64 - 1, 2**33 + 5)])
def test_masks_are_the_specified_generator(seed: int, step: int) -> None:
    prog = _mask_program(37, 0.3)
    got = _masks(prog, 11, seed, None if step == 0 else step)
    np.testing.assert_array_equal(got, dropout_mask(seed, step, 1, 0.3, (11, 37)))


def test_each_layer_step_and_seed_draws_its_own_mask() -> None:
    x = nn.Input(50)
    a, b = nn.Dropout(0.5), nn.Dropout(0.5)
    prog = nc.compile(nn.Model(x, nn.Dense(2)(a(x) + b(x)), loss=nn.MSE(), name="two_drops"))
    engine = prog.engine(prog.init_params(0))
    ws = engine.workspace(40)
    ws.X[...] = 1.0
    ws.train_loss()
    first, second = (m.copy() for m in ws.masks)
    np.testing.assert_array_equal(first, dropout_mask(0, 0, 1, 0.5, (40, 50)))
    np.testing.assert_array_equal(second, dropout_mask(0, 0, 2, 0.5, (40, 50)))
    assert (first != second).mean() > 0.4
    engine.set_seed(1)
    ws.train_loss()
    assert (ws.masks[0] != first).mean() > 0.4


def test_dropout_scales_in_training_and_is_the_identity_in_evaluation() -> None:
    x = nn.Input(6)
    prog = nc.compile(nn.Model(x, nn.Dense(3)(nn.Dropout(0.25)(nn.Tanh()(nn.Dense(6)(x)))), loss=nn.MSE(),
                               name="drop_eval"))
    params, (X, Y) = prog.init_params(1), random_batch(prog, 9, 1)
    a = np.tanh(X @ params["dense1.W"] + params["dense1.b"])
    np.testing.assert_allclose(prog.forward(params, X), a @ params["dense2.W"] + params["dense2.b"], rtol=1e-13)
    mask = dropout_mask(5, 0, 1, 0.25, (9, 6))
    out = (a * mask / 0.75) @ params["dense2.W"] + params["dense2.b"]
    loss, _ = prog.loss_and_grad(params, X, Y, seed=5)
    assert loss == pytest.approx(np.mean((out - Y) ** 2), rel=1e-13)
    assert prog.loss_and_grad(params, X, Y, seed=5)[0] == loss     # the same seed, the same masks
    assert prog.loss_and_grad(params, X, Y, seed=6)[0] != loss


@pytest.mark.parametrize("seed", [0, 3])
def test_gradients_equal_finite_differences_at_a_fixed_seed(seed: int) -> None:
    x = nn.Input(4)
    h = nn.Dropout(0.3)(nn.Sigmoid()(nn.Dense(5)(x)))
    prog = nc.compile(nn.Model(x, nn.Dense(2)(nn.Dropout(0.5)(h) + h), loss=nn.SoftmaxCrossEntropy(),
                               name="drop_fd"))
    X, Y = random_batch(prog, 8, seed)
    report = check_gradients(prog, prog.init_params(seed), X, Y, samples=0, seed=seed)
    assert max(report.values()) < 1e-7, report


@pytest.mark.skipif(torch_oracle is None, reason="PyTorch is not installed (a test-only oracle)")
def test_gradients_equal_pytorch_with_the_specified_masks() -> None:
    x = nn.Input(4)
    h = nn.Tanh()(nn.Dense(6)(x))
    model = nn.Model(x, nn.Dense(3)(nn.Dropout(0.4)(h) * h), loss=nn.SoftmaxCrossEntropy(), l2=0.01,
                     name="drop_torch")
    prog = nc.compile(model)
    params, (X, Y) = prog.init_params(2), random_batch(prog, 7, 2)
    loss, grads = prog.loss_and_grad(params, X, Y, seed=99)
    _, T = prog.prepare(X, Y)
    index = next(i for i, node in enumerate(model.nodes) if isinstance(node.layer, nn.Dropout))
    expected_loss, expected, _ = torch_oracle.loss_and_grad(model, params, X, T,
                                                            {index: dropout_mask(99, 0, 1, 0.4, (7, 6))})
    assert loss == pytest.approx(expected_loss, rel=1e-12)
    for name in grads:
        np.testing.assert_allclose(grads[name], expected[name], rtol=1e-9, atol=1e-12)


def test_training_draws_new_masks_each_update_and_resumes_the_same_sequence(tmp_path: Path) -> None:
    x = nn.Input(5)
    h = nn.ReLU()(nn.BatchNorm()(nn.Dense(8)(x)))       # the running statistics resume too
    model = nn.Model(x, nn.Dense(2)(nn.Dropout(0.5)(h)), loss=nn.MSE(), name="drop_train")
    prog = nc.compile(model)
    X, Y = random_batch(prog, 24, 0)
    whole = nc.train(prog, X, Y, epochs=4, batch_size=8, seed=11, lr=0.05)
    nc.train(prog, X, Y, epochs=2, batch_size=8, seed=11, lr=0.05, checkpoint=tmp_path / "ck.npz")
    resumed = nc.train(prog, X, Y, epochs=4, batch_size=8, seed=11, lr=0.05, resume=tmp_path / "ck.npz")
    for name in whole.params:
        np.testing.assert_array_equal(whole.params[name], resumed.params[name])
    other = nc.train(prog, X, Y, epochs=4, batch_size=8, seed=12, lr=0.05, params=prog.init_params(11))
    assert not np.array_equal(other.params["dense1.W"], whole.params["dense1.W"])
    first, second = _masks(_mask_program(5, 0.5), 8, 11, step=1), _masks(_mask_program(5, 0.5), 8, 11, step=2)
    assert not np.array_equal(first, second)


def _host_kernel_source(cuda_source: str) -> str:
    """The generated kernels as host C++: one 'thread' runs each grid-stride loop over every element."""
    shim = ("#include <cstdio>\n#include <cstdlib>\n#include <cmath>\n"
            "#define __global__\n#define __device__\n#define __forceinline__ inline\n#define __restrict__\n"
            "#define __shared__ static\nstruct dim { unsigned x; };\n"
            "static dim blockIdx = {0}, blockDim = {1}, threadIdx = {0}, gridDim = {1};\n"
            "static inline void __syncthreads() {}\n")
    start = cuda_source.index("typedef ")
    body = cuda_source[start:]
    body = body[:body.index("// Sum and max over the 32 lanes")] + body[body.index("// The step count"):]
    return shim + body[:body.index("\n// k1_")] if "\n// k1_" in body else shim + body


@pytest.mark.skipif(shutil.which("g++") is None, reason="no host C++ compiler to run the generated kernel")
def test_the_generated_cuda_mask_kernel_computes_the_same_masks(tmp_path: Path) -> None:
    """The CUDA source's nc_dropout_mask, compiled for the host and run: the same masks as NumPy's."""
    from nncompile.backends import cuda
    from nncompile.derive import derive
    x = nn.Input(13)
    program = derive(nn.Model(x, nn.Dense(1)(nn.Dropout(0.35)(x)), loss=nn.MSE(), name="host_mask")).program
    source = _host_kernel_source(cuda.render_source(program))
    main = """
int main(int argc, char** argv) {
    const unsigned long long seed = strtoull(argv[1], 0, 10);
    double hp[2] = {atof(argv[2]), atof(argv[4])};
    const int n = 9, width = 13;
    real m[n * width];
    nc_dropout_mask(m, &seed, hp, 0, atoi(argv[5]), 1u, (unsigned)strtoul(argv[3], 0, 10), n, width);
    for (int i = 0; i < n * width; ++i) printf("%d", (int)m[i]);
    return 0;
}
"""
    (tmp_path / "mask.cpp").write_text(source + main)
    subprocess.run(["g++", "-O1", "-Wall", "-Werror", "-o", str(tmp_path / "mask"), str(tmp_path / "mask.cpp")],
                   check=True, capture_output=True, text=True)
    from nncompile.derive.ir import dropout_threshold
    for seed, step, row0 in ((0, 0, None), (2**40 + 7, 3, 0), (2**64 - 1, 2**32 + 9, None), (5, 7, 300)):
        args = [str(row0 or 0), "-1" if row0 is None else "1"]  # row0 read from hp[1], or none
        out = subprocess.run([str(tmp_path / "mask"), str(seed), str(step), str(dropout_threshold(0.35)), *args],
                             check=True, capture_output=True, text=True).stdout
        expected = dropout_mask(seed, step, 1, 0.35, (9, 13), row0 or 0).astype(int).ravel()
        assert [int(c) for c in out] == list(expected)
