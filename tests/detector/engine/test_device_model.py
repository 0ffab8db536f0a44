"""The device model's numpy forward pass, its hiding rule and its file format, on hand-built
weights (no TensorFlow): every expected value here is worked out in the test itself."""

from __future__ import annotations

import dataclasses
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detector.engine.device_model import (
    LOG_SIGMA_MAX,
    LOG_SIGMA_MIN,
    DeviceModel,
    DeviceModelError,
    load_device_model,
    save_device_model,
    weight_arrays,
)

# -- hand-built models ----------------------------------------------------------------------


def sibling_model(w: float = 1.0, log_sigma: float = 0.0, units: int = 2) -> DeviceModel:
    """Two metrics ("a", "b"), window 1, units 2; the head (8 -> 4 -> 2) forecasts each
    metric's change as ``w`` times its sibling's reading now, with log sigma `log_sigma`.

    Head input: [encoded (2), current a, current b, one-hot a, one-hot b, flag a, flag b].
    The judged metric's current reading is zeroed, so ``cur_a + cur_b`` is the sibling's.
    Hidden unit 0 = relu(cur_a + cur_b), unit 1 = relu(-(cur_a + cur_b)), so
    ``w * (h0 - h1)`` is ``w`` times the sibling's reading whatever its sign.
    """
    m = 2
    k0 = np.zeros((units + 3 * m, 4))
    k0[units + 0, 0] = k0[units + 1, 0] = 1.0
    k0[units + 0, 1] = k0[units + 1, 1] = -1.0
    k1 = np.zeros((4, 2))
    k1[0, 0], k1[1, 0] = w, -w
    return DeviceModel(
        metrics=("a", "b"),
        window=1,
        kernel=np.full((m, 4 * units), 0.1),
        recurrent=np.full((units, 4 * units), -0.2),
        bias=np.zeros(4 * units),
        dense=((k0, np.zeros(4)), (k1, np.array([0.0, log_sigma]))),
    )


def random_model(m: int = 3, window: int = 3, units: int = 2, seed: int = 1) -> DeviceModel:
    rng = np.random.default_rng(seed)
    return DeviceModel(
        metrics=tuple("abcdefgh"[:m]),
        window=window,
        kernel=rng.normal(0, 0.7, (m, 4 * units)),
        recurrent=rng.normal(0, 0.7, (units, 4 * units)),
        bias=rng.normal(0, 0.3, 4 * units),
        dense=(
            (rng.normal(0, 0.7, (units + 3 * m, 5)), rng.normal(0, 0.3, 5)),
            (rng.normal(0, 0.7, (5, 2)), rng.normal(0, 0.3, 2)),
        ),
    )


# -- a reference forward pass, written out with scalars -------------------------------------


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def ref_encode(model: DeviceModel, window: np.ndarray) -> list[float]:
    """One window ``(W, M)``: the LSTM, step by step, Keras gate order i, f, c, o."""
    u = model.units
    h = [0.0] * u
    c = [0.0] * u
    for x in window:
        pre = [
            sum(x[k] * model.kernel[k, j] for k in range(len(x)))
            + sum(h[k] * model.recurrent[k, j] for k in range(u))
            + model.bias[j]
            for j in range(4 * u)
        ]
        i = [sig(pre[j]) for j in range(u)]
        f = [sig(pre[u + j]) for j in range(u)]
        g = [math.tanh(pre[2 * u + j]) for j in range(u)]
        o = [sig(pre[3 * u + j]) for j in range(u)]
        c = [f[j] * c[j] + i[j] * g[j] for j in range(u)]
        h = [o[j] * math.tanh(c[j]) for j in range(u)]
    return h


def ref_head(model: DeviceModel, x: list[float]) -> tuple[float, float]:
    for n, (kernel, bias) in enumerate(model.dense):
        x = [
            sum(x[r] * kernel[r, col] for r in range(len(x))) + bias[col]
            for col in range(kernel.shape[1])
        ]
        if n < len(model.dense) - 1:
            x = [max(v, 0.0) for v in x]
    return x[0], min(max(x[1], LOG_SIGMA_MIN), LOG_SIGMA_MAX)


def ref_variant(
    model: DeviceModel, past: np.ndarray, now: np.ndarray, d: int, i: int, hidden: int | None
) -> tuple[float, float, float]:
    """``(z, expected, sigma)`` of metric `i` of device `d` with sibling `hidden` hidden."""
    m = now.shape[1]
    visible = [0.0 if j in (i, hidden) else 1.0 for j in range(m)]
    window = past[d] * np.array([0.0 if j == hidden else 1.0 for j in range(m)])
    head = (
        [now[d, j] * visible[j] for j in range(m)]
        + [1.0 if j == i else 0.0 for j in range(m)]
        + visible
    )
    mean, log_sigma = ref_head(model, ref_encode(model, window) + head)
    expected = window[-1, i] + mean
    sigma = math.exp(log_sigma)
    return (now[d, i] - expected) / sigma, expected, sigma


def ref_judge(
    model: DeviceModel, past: np.ndarray, now: np.ndarray, hiding: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The module docstring's contract, one device and one metric at a time."""
    b, m = now.shape
    out = [np.zeros((b, m)) for _ in range(3)]
    for d in range(b):
        suspect = None
        if hiding:
            # None: nobody hidden; k: the others without k, k's own term charged 1.
            costs = {None: sum(ref_variant(model, past, now, d, j, None)[0] ** 2 for j in range(m))}
            for k in range(m):
                others = (
                    ref_variant(model, past, now, d, j, k)[0] ** 2 for j in range(m) if j != k
                )
                costs[k] = sum(others) + 1.0
            suspect = min(costs, key=lambda k: costs[k])
        for i in range(m):
            got = ref_variant(model, past, now, d, i, None if i == suspect else suspect)
            for k in range(3):
                out[k][d, i] = got[k]
    return out[0], out[1], out[2]


# -- validate ---------------------------------------------------------------------------------


def test_hand_built_models_validate() -> None:
    sibling_model().validate()
    random_model().validate()
    random_model(m=8, window=1, units=1).validate()
    assert sibling_model().units == 2
    assert sibling_model().n_metrics == 2


def _replace_dense(model: DeviceModel, layer: int, kernel: Any = None, bias: Any = None) -> Any:
    dense = list(model.dense)
    k, b = dense[layer]
    dense[layer] = (k if kernel is None else kernel, b if bias is None else bias)
    return {"dense": tuple(dense)}


def _nan_in(array: np.ndarray) -> np.ndarray:
    out = array.copy()
    out.flat[0] = np.nan
    return out


BASE = sibling_model()
INVALID_MODELS: dict[str, dict[str, Any]] = {
    "one metric": {"metrics": ("a",), "kernel": np.zeros((1, 8))},
    "nine metrics": {"metrics": tuple("abcdefghi"), "kernel": np.zeros((9, 8))},
    "unsorted metrics": {"metrics": ("b", "a")},
    "duplicate metrics": {"metrics": ("a", "a")},
    "window 0": {"window": 0},
    "kernel rows": {"kernel": np.zeros((3, 8))},
    "kernel columns": {"kernel": np.zeros((2, 7))},
    "recurrent shape": {"recurrent": np.zeros((2, 6))},
    "bias shape": {"bias": np.zeros(7)},
    "bias 2-d": {"bias": np.zeros((1, 8))},
    "first dense in-width": _replace_dense(BASE, 0, kernel=np.zeros((7, 4))),
    "dense bias width": _replace_dense(BASE, 0, bias=np.zeros(3)),
    "layers do not chain": _replace_dense(BASE, 1, kernel=np.zeros((5, 2))),
    "dense kernel 1-d": _replace_dense(BASE, 1, kernel=np.zeros(4)),
    "head ends in 3 outputs": _replace_dense(BASE, 1, kernel=np.zeros((4, 3)), bias=np.zeros(3)),
    "head ends in 1 output": _replace_dense(BASE, 1, kernel=np.zeros((4, 1)), bias=np.zeros(1)),
    "no head": {"dense": ()},
    "NaN kernel": {"kernel": _nan_in(BASE.kernel)},
    "inf recurrent": {"recurrent": BASE.recurrent * np.inf},
    "NaN bias": {"bias": _nan_in(BASE.bias)},
    "NaN dense bias": _replace_dense(BASE, 1, bias=np.array([0.0, np.nan])),
    "inf dense kernel": _replace_dense(BASE, 0, kernel=np.full((8, 4), np.inf)),
}


@pytest.mark.parametrize("case", sorted(INVALID_MODELS))
def test_validate_refuses(case: str) -> None:
    model = dataclasses.replace(BASE, **INVALID_MODELS[case])
    with pytest.raises(DeviceModelError):
        model.validate()


# -- the forward pass -------------------------------------------------------------------------


def test_encode_is_one_lstm_step_for_a_one_step_window() -> None:
    # Two metrics, one unit: the gates' pre-activations are written out by hand.
    kernel = np.array([[0.5, -0.3, 0.8, 0.2], [-0.4, 0.6, 0.1, -0.7]])  # (M=2, 4U=4)
    bias = np.array([0.1, 0.2, -0.1, 0.3])
    model = DeviceModel(
        metrics=("a", "b"),
        window=1,
        kernel=kernel,
        recurrent=np.array([[9.0, 9.0, 9.0, 9.0]]),  # h0 = 0: plays no part in step one
        bias=bias,
        dense=((np.zeros((1 + 6, 2)), np.zeros(2)),),
    )
    model.validate()
    xa, xb = 1.5, -2.0
    pre_i = 0.5 * xa - 0.4 * xb + 0.1
    pre_f = -0.3 * xa + 0.6 * xb + 0.2
    pre_c = 0.8 * xa + 0.1 * xb - 0.1
    pre_o = 0.2 * xa - 0.7 * xb + 0.3
    c = sig(pre_i) * math.tanh(pre_c) + sig(pre_f) * 0.0  # c0 = 0
    h = sig(pre_o) * math.tanh(c)
    out = model.encode(np.array([[[xa, xb]], [[0.0, 0.0]]]))
    assert out.shape == (2, 1)
    assert out[0, 0] == pytest.approx(h, rel=1e-12)
    # All inputs zero: pre-activations are the bias alone.
    assert out[1, 0] == pytest.approx(sig(0.3) * math.tanh(sig(0.1) * math.tanh(-0.1)), rel=1e-12)


def test_encode_carries_state_over_several_steps() -> None:
    model = random_model(m=3, window=4, units=3)
    rng = np.random.default_rng(5)
    past = rng.normal(0, 1, (3, 4, 3))
    out = model.encode(past)
    for d in range(3):
        np.testing.assert_allclose(out[d], ref_encode(model, past[d]), rtol=1e-10, atol=1e-12)


def test_predict_matches_the_reference_head_with_clipped_log_sigma() -> None:
    model = random_model(m=2, window=2, units=2, seed=3)
    rng = np.random.default_rng(2)
    past = rng.normal(0, 1, (4, 2, 2))
    head = rng.normal(0, 1, (4, 6))
    out = model.predict(past, head)
    for d in range(4):
        want = ref_head(model, ref_encode(model, past[d]) + list(head[d]))
        np.testing.assert_allclose(out[d], want, rtol=1e-10, atol=1e-12)
    # A huge output is clipped to the log sigma bounds.
    k1, b1 = model.dense[1]
    big = dataclasses.replace(model, dense=(model.dense[0], (k1, b1 + np.array([0.0, 100.0]))))
    assert np.all(big.predict(past, head)[:, 1] == LOG_SIGMA_MAX)
    small = dataclasses.replace(model, dense=(model.dense[0], (k1, b1 - np.array([0.0, 100.0]))))
    assert np.all(small.predict(past, head)[:, 1] == LOG_SIGMA_MIN)


# -- judge: the hiding rule --------------------------------------------------------------------


def test_a_huge_sibling_is_the_suspect_and_is_hidden_from_the_judged_metric() -> None:
    model = sibling_model(w=1.0)
    model.validate()
    past = np.zeros((1, 1, 2))
    now = np.array([[0.0, 100.0]])  # a normal, b huge

    z, expected, sigma = model.judge(past, now)
    # Hiding b leaves a at z 0 (forecast 0); hiding a leaves b at z 100: b is the suspect.
    # a is judged without b: z 0, where with b seen it would be -100.
    assert z[0, 0] == pytest.approx(0.0, abs=1e-12)
    assert expected[0, 0] == pytest.approx(0.0, abs=1e-12)
    assert sigma[0, 0] == pytest.approx(1.0)
    # b, the suspect, is judged with a seen (forecast 0): its own deviation stays.
    assert z[0, 1] == pytest.approx(100.0)
    assert expected[0, 1] == pytest.approx(0.0, abs=1e-12)

    z_all, expected_all, _ = model.judge(past, now, hiding=False)
    assert z_all[0, 0] == pytest.approx(-100.0)
    assert expected_all[0, 0] == pytest.approx(100.0)
    assert z_all[0, 1] == pytest.approx(100.0)


def test_a_deviation_on_the_judged_metric_is_judged_with_its_siblings_seen() -> None:
    model = sibling_model(w=0.5, log_sigma=math.log(2.0))
    past = np.array([[[1.0, 3.0]]])  # last readings: a = 1, b = 3
    now = np.array([[41.0, 3.0]])  # a jumps by 40; b holds
    z, expected, sigma = model.judge(past, now)
    # Hiding a leaves b at z 0 (forecast 3); hiding b leaves a at z 20: a is the suspect,
    # judged with b seen: expected 1 + 0.5 * 3 = 2.5, sigma 2.
    assert z[0, 0] == pytest.approx((41.0 - 2.5) / 2.0)
    assert expected[0, 0] == pytest.approx(2.5)
    assert sigma[0, 0] == pytest.approx(2.0)
    # b is judged without a: forecast 3, z 0.
    assert z[0, 1] == pytest.approx(0.0, abs=1e-12)
    assert expected[0, 1] == pytest.approx(3.0)
    z, expected, _ = model.judge(past, now, hiding=False)
    assert z[0, 0] == pytest.approx((41.0 - 2.5) / 2.0)
    assert z[0, 1] == pytest.approx((3.0 - 23.5) / 2.0)
    assert expected[0, 1] == pytest.approx(23.5)


def test_a_fault_cannot_hide_behind_the_sibling_that_shows_it() -> None:
    """Three metrics: a follows b, b follows a, c follows its own past; with b hidden, the
    model forecasts a from c instead. a departs from b to where c happens to be.

    Judged by its smallest |z| over the variants, a would be judged with b hidden (forecast
    from c: z 0.5) and the fault missed. Hiding a leaves b and c consistent, so a is the
    suspect and is judged with b seen: z 8."""
    m, units = 3, 1
    onehot, flags = units + m, units + 2 * m  # where the head's one-hots and flags start
    k0 = np.zeros((units + 3 * m, 4))
    # unit 0: b's reading now, for a only (b hidden: 0)
    k0[units + 1, 0] = 1.0
    k0[onehot + 1, 0] = k0[onehot + 2, 0] = -1e6
    # unit 1: c's reading now, for a only and only while b is hidden
    k0[units + 2, 1] = 1.0
    k0[flags + 1, 1] = -1e3
    k0[onehot + 1, 1] = k0[onehot + 2, 1] = -1e6
    # unit 2: a's reading now, for b only (a hidden: 0)
    k0[units + 0, 2] = 1.0
    k0[onehot + 0, 2] = k0[onehot + 2, 2] = -1e6
    k1 = np.zeros((4, 2))
    k1[0, 0] = k1[1, 0] = k1[2, 0] = 1.0  # the forecast change is their sum; log sigma 0
    model = DeviceModel(
        metrics=("a", "b", "c"),
        window=1,
        kernel=np.zeros((m, 4 * units)),
        recurrent=np.zeros((units, 4 * units)),
        bias=np.zeros(4 * units),
        dense=((k0, np.zeros(4)), (k1, np.zeros(2))),
    )
    model.validate()
    past = np.array([[[0.0, 0.0, 7.5]]])
    now = np.array([[8.0, 0.0, 7.5]])  # a departs; b and c hold
    z, expected, _ = model.judge(past, now)
    assert z[0, 0] == pytest.approx(8.0)  # judged against b (forecast 0)
    assert expected[0, 0] == pytest.approx(0.0, abs=1e-12)
    assert z[0, 1] == pytest.approx(0.0, abs=1e-12)  # b without a: forecast 0
    assert z[0, 2] == pytest.approx(0.0, abs=1e-12)
    # What the smallest |z| would have kept for a: its variant with b hidden.
    got = ref_variant(model, past, now, 0, 0, 1)
    assert got[0] == pytest.approx(0.5)


def test_siblings_moving_together_are_judged_with_each_other_seen() -> None:
    model = sibling_model(w=1.0)
    # a and b jump from 0 to 8 and 7 together (a start-up): seen together they agree (z 1
    # and -1); any one hidden, the other's jump is unexplained (z 7 or 8). Nobody is the
    # suspect.
    z, expected, _ = model.judge(np.zeros((1, 1, 2)), np.array([[8.0, 7.0]]))
    assert z[0, 0] == pytest.approx(1.0)
    assert z[0, 1] == pytest.approx(-1.0)
    assert expected[0, 0] == pytest.approx(7.0)


def test_each_device_of_a_batch_gets_its_own_suspect() -> None:
    model = sibling_model(w=1.0)
    past = np.zeros((2, 1, 2))
    # Device 0: b huge, the suspect. Device 1: a = 0.4, b = 0.5 agree seen together (sum of
    # squares 0.02), against 1.16 with b hidden and 1.25 with a hidden: nobody is suspect,
    # both are judged with the other seen.
    now = np.array([[0.0, 100.0], [0.4, 0.5]])
    z, expected, _ = model.judge(past, now)
    assert z[0, 0] == pytest.approx(0.0, abs=1e-12)
    assert z[0, 1] == pytest.approx(100.0)
    assert z[1, 0] == pytest.approx(-0.1)
    assert expected[1, 0] == pytest.approx(0.5)
    assert z[1, 1] == pytest.approx(0.1)
    assert expected[1, 1] == pytest.approx(0.4)


@pytest.mark.parametrize("hiding", [True, False])
def test_judge_follows_the_documented_input_layout(hiding: bool) -> None:
    model = random_model(m=3, window=3, units=2, seed=7)
    rng = np.random.default_rng(11)
    past = rng.normal(0, 1, (4, 3, 3))
    now = rng.normal(0, 1, (4, 3))
    now[1, 2] = 25.0  # one broken sensor
    got = model.judge(past, now, hiding=hiding)
    want = ref_judge(model, past, now, hiding)
    for g, w in zip(got, want, strict=True):
        assert g.shape == (4, 3)
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12)


# -- files --------------------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    model = random_model(m=3, window=2, units=2)
    path = tmp_path / "device_0.npz"
    save_device_model(model, path)
    loaded = load_device_model(path, ("a", "b", "c"), 2)
    assert loaded.metrics == ("a", "b", "c")
    assert loaded.window == 2
    assert len(loaded.dense) == len(model.dense)
    for name, array in weight_arrays(model).items():
        np.testing.assert_array_equal(weight_arrays(loaded)[name], array, err_msg=name)
    assert sorted(weight_arrays(model)) == [
        "dense0_bias",
        "dense0_kernel",
        "dense1_bias",
        "dense1_kernel",
        "lstm_bias",
        "lstm_kernel",
        "lstm_recurrent",
    ]


@pytest.mark.parametrize("missing", ["lstm_kernel", "lstm_recurrent", "lstm_bias", "dense0_bias"])
def test_load_refuses_a_missing_array(tmp_path: Path, missing: str) -> None:
    arrays = weight_arrays(random_model(m=3))
    del arrays[missing]
    path = tmp_path / "m.npz"
    np.savez(path, **arrays)
    with pytest.raises(DeviceModelError, match=missing):
        load_device_model(path, ("a", "b", "c"), 3)


def test_load_refuses_a_head_with_a_gap_in_its_layers(tmp_path: Path) -> None:
    # dense1 missing, dense2 present: the head ends at dense0, which has 5 outputs, not 2.
    arrays = weight_arrays(random_model(m=3))
    arrays["dense2_kernel"] = arrays.pop("dense1_kernel")
    arrays["dense2_bias"] = arrays.pop("dense1_bias")
    path = tmp_path / "m.npz"
    np.savez(path, **arrays)
    with pytest.raises(DeviceModelError):
        load_device_model(path, ("a", "b", "c"), 3)


def test_load_refuses_weights_for_another_signature(tmp_path: Path) -> None:
    path = tmp_path / "m.npz"
    save_device_model(random_model(m=3), path)
    with pytest.raises(DeviceModelError):
        load_device_model(path, ("a", "b"), 3)
    with pytest.raises(DeviceModelError):
        load_device_model(path, ("a", "b", "c"), 0)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not an npz at all\n", id="text"),
        pytest.param(b"PK\x03\x04 truncated zip", id="truncated-zip"),
        pytest.param(b"\x93NUMPY broken header", id="broken-npy"),
    ],
)
def test_load_refuses_a_file_that_is_not_an_npz(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "m.npz"
    path.write_bytes(content)
    with pytest.raises(DeviceModelError):
        load_device_model(path, ("a", "b", "c"), 3)


def test_load_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DeviceModelError):
        load_device_model(tmp_path / "absent.npz", ("a", "b"), 1)


def _touch(path: str) -> None:
    Path(path).write_text("pickle ran")


class _Payload:
    """Unpickling this writes a file: proof that a pickle ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return _touch, (str(self.path),)


def test_load_refuses_pickled_object_arrays_without_running_them(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    arrays: dict[str, Any] = dict(weight_arrays(random_model(m=3)))
    evil = np.empty(1, dtype=object)
    evil[0] = _Payload(marker)
    arrays["lstm_bias"] = evil
    path = tmp_path / "m.npz"
    np.savez(path, **arrays)  # savez pickles object arrays
    with pytest.raises(DeviceModelError):
        load_device_model(path, ("a", "b", "c"), 3)
    assert not marker.exists()
    # A bare pickle is refused too.
    pickled = tmp_path / "p.npz"
    pickled.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(DeviceModelError):
        load_device_model(pickled, ("a", "b", "c"), 3)
    assert not marker.exists()
