"""The encoder's vectorized integer simulation against the spec's pseudo-code, literally.

Each `literal_*` function below transcribes bitstream-v1.md with Python
integers and wraps after every single addition, multiplication and left shift
(spec 2.2), where the simulation wraps once per sum of products. Tiny
pictures only: the literal versions are per-sample Python loops.
"""

from __future__ import annotations

import numpy as np
import pytest

from coolchic_ref.encoder import integer_model as im
from coolchic_ref.encoder.bitstream import IntegerCodec, grid_shape
from coolchic_ref.encoder.format import ColorFormat
from coolchic_ref.encoder.random_codec import random_codec

TWO32 = 1 << 32


def w32(x: int) -> int:
    x %= TWO32
    return x - TWO32 if x >= 1 << 31 else x


def literal_round_shift(x: int, n: int) -> int:
    return x if n == 0 else w32(x + (1 << (n - 1))) >> n


def literal_activation(y: int, name: str) -> int:
    if name == "relu":
        return max(y, 0)
    if name == "leakyrelu":
        return y if y >= 0 else y >> 4
    return y


def literal_layer(inputs, taps, weights, bias, layer, w_shift, b_shift, frac, residual_inputs):
    """Spec 2.3 for one position: `taps[o]` lists (weight index, input value) pairs."""
    out = []
    for o in range(layer.out_channels):
        acc = w32(int(bias[o]) << (frac + w_shift - b_shift))
        for weight, value in taps(o):
            acc = w32(acc + w32(int(weight) * int(value)))
        y = literal_round_shift(acc, w_shift)
        if layer.kind.adds_input:
            y = w32(y + residual_inputs[o])
        out.append(literal_activation(y, layer.activation))
    return out


def literal_spatial_context(grid: np.ndarray, r: int, y: int, x: int) -> list[int]:
    """The causal context of (y, x), Q8, 0 outside the grid (spec 5.2, 5.3)."""
    height, width = grid.shape
    values = []
    for dy in range(-r, 1):
        for dx in range(-r, r + 1):
            if dy < 0 or dx < 0:
                yy, xx = y + dy, x + dx
                inside = 0 <= yy < height and 0 <= xx < width
                values.append((int(grid[yy, xx]) << 8) if inside else 0)
    return values


def literal_arm(codec: IntegerCodec, grid: np.ndarray, y: int, x: int) -> tuple[int, int]:
    return literal_arm_outputs(codec, literal_spatial_context(grid, codec.n_ctx_rowcol, y, x))


def literal_arm_outputs(codec: IntegerCodec, values: list[int]) -> tuple[int, int]:
    """(mu, log_scale) of the ARM (spec 2.3, 5.3) for the input vector `values`, Q8."""
    for layer, (w, b) in zip(codec.arm_layers, codec.arm_weights, strict=True):
        current = values
        values = literal_layer(
            current,
            lambda o, current=current, w=w: zip(w[o], current, strict=True),
            None,
            b,
            layer,
            codec.arm_w_shift,
            codec.arm_b_shift,
            8,
            current,
        )
    return values[0], values[1]


def literal_cdf(mu: int, log_scale: int, latent_min: int, alphabet: int) -> list[int]:
    exp_neg, inv_scale = im.tables()
    mass = (1 << 24) - alphabet
    s = min(max(log_scale, -1536), 2048)
    inv = int(inv_scale[s + 1536])
    m = min(max(mu, -(1 << 23)), 1 << 23)

    def g(i: int) -> int:
        b = ((latent_min + i) << 8) - 128
        t = (abs(b - m) * inv) >> 20
        e = int(exp_neg[t]) if t < 5632 else 0
        return e >> 1 if b < m else (1 << 30) - (e >> 1)

    d = g(alphabet) - g(0)
    if d > 0:
        return [i + (g(i) - g(0)) * mass // d for i in range(alphabet + 1)]
    return [i + i * mass // alphabet for i in range(alphabet + 1)]


def literal_upsample_line(a: list[int], taps: list[int], shift: int, n_out: int) -> list[int]:
    n_in = len(a)
    out = []
    for i in range(n_out):
        j = i >> 1
        acc = 0
        for k, v in enumerate(taps):
            if i % 2 == 0:
                m = k >> 1 if k % 2 == 0 else -((k + 1) >> 1)
            else:
                m = -(k >> 1) if k % 2 == 0 else (k + 1) >> 1
            acc = w32(acc + w32(v * a[min(max(j + m, 0), n_in - 1)]))
        out.append(literal_round_shift(acc, shift))
    return out


def literal_dense(codec: IntegerCodec) -> np.ndarray:
    taps = [int(v) for v in codec.ups_taps]
    channels = []
    for g, latent in enumerate(codec.latents):
        x = [[int(v) << 12 for v in row] for row in latent]
        for level in range(g, 0, -1):
            rows, cols = grid_shape(codec.height, codec.width, level - 1)
            columns = [
                literal_upsample_line([row[c] for row in x], taps, codec.ups_shift, rows)
                for c in range(len(x[0]))
            ]
            x = [[columns[c][r] for c in range(len(columns))] for r in range(rows)]
            x = [literal_upsample_line(row, taps, codec.ups_shift, cols) for row in x]
        channels.append(x)
    return np.array(channels, dtype=np.int64)


def literal_synthesis(codec: IntegerCodec, dense: np.ndarray) -> np.ndarray:
    x = [[[int(v) for v in row] for row in plane] for plane in dense]
    height, width = codec.height, codec.width
    for layer, (w, b) in zip(codec.syn_layers, codec.syn_weights, strict=True):
        k, half = layer.kernel, layer.kernel // 2
        out = [[[0] * width for _ in range(height)] for _ in range(layer.out_channels)]
        for yy in range(height):
            for xx in range(width):

                def taps(o, yy=yy, xx=xx, w=w, k=k, half=half, x=x):
                    for i in range(len(x)):
                        for ky in range(k):
                            for kx in range(k):
                                sy = min(max(yy + ky - half, 0), height - 1)
                                sx = min(max(xx + kx - half, 0), width - 1)
                                yield w[o][i][ky][kx], x[i][sy][sx]

                res = [x[o][yy][xx] for o in range(len(x))]
                values = literal_layer(
                    None, taps, None, b, layer, codec.syn_w_shift, codec.syn_b_shift, 12, res
                )
                for o, v in enumerate(values):
                    out[o][yy][xx] = v
        x = out
    return np.array(x, dtype=np.int64)


def literal_planes(codec: IntegerCodec, synthesis: np.ndarray) -> list[np.ndarray]:
    maxval = (1 << codec.bit_depth) - 1
    height, width = codec.height, codec.width
    planes = []
    for channel, c in enumerate(synthesis):
        c = [[int(v) for v in row] for row in c]
        if codec.color_format == ColorFormat.YUV420 and channel > 0:
            c = [
                [
                    w32(
                        c[2 * y][2 * x]
                        + c[2 * y][min(2 * x + 1, width - 1)]
                        + c[min(2 * y + 1, height - 1)][2 * x]
                        + c[min(2 * y + 1, height - 1)][min(2 * x + 1, width - 1)]
                        + 2
                    )
                    >> 2
                    for x in range((width + 1) // 2)
                ]
                for y in range((height + 1) // 2)
            ]
        planes.append(
            np.array(
                [[(min(max(v, 0), 4096) * maxval + 2048) >> 12 for v in row] for row in c],
                dtype=np.int64,
            )
        )
    return planes


# ---------------------------------------------------------------------------


def test_wrap32_and_round_shift() -> None:
    values = np.array([0, 1, -1, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**40 + 5, -(2**45)])
    assert [int(v) for v in im.wrap32(values)] == [w32(int(v)) for v in values]
    for n in range(0, 20):
        got = im.round_shift(values, n)
        assert [int(v) for v in got] == [literal_round_shift(w32(int(v)), n) for v in values]


def test_tables_are_normative_length() -> None:
    exp_neg, inv_scale = im.tables()
    assert exp_neg.shape == (5632,) and inv_scale.shape == (3585,)
    assert exp_neg[0] == 1 << 30 and inv_scale[1536] == 1 << 20
    assert np.all(np.diff(exp_neg) <= 0) and np.all(np.diff(inv_scale) < 0)


@pytest.mark.parametrize("alphabet", [2, 3, 7, 40, 300])
def test_laplace_cdf_matches_literal(alphabet: int) -> None:
    rng = np.random.default_rng(alphabet)
    for _ in range(40):
        latent_min = int(rng.integers(-32768, 32768 - alphabet + 1))
        if rng.random() < 0.5:
            latent_min = int(rng.integers(-alphabet, 1))
        mu = int(rng.choice([rng.integers(-(2**31), 2**31), rng.integers(-3000, 3000)]))
        mu = mu if rng.random() < 0.5 else (latent_min + int(rng.integers(0, alphabet))) * 256
        log_scale = int(rng.choice([rng.integers(-(2**31), 2**31), rng.integers(-1700, 2200)]))
        expected = literal_cdf(mu, log_scale, latent_min, alphabet)
        table = im.laplace_cdf_table(np.array([mu]), np.array([log_scale]), latent_min, alphabet)
        assert table[0].tolist() == expected
        some = rng.integers(0, alphabet + 1, size=5)
        assert im.laplace_cdf(mu, log_scale, some, latent_min, alphabet).tolist() == [
            expected[i] for i in some
        ]
        assert expected[0] == 0 and expected[-1] == 1 << 24
        assert all(b > a for a, b in zip(expected, expected[1:], strict=False))


def test_degenerate_distribution_is_uniform() -> None:
    # mu far above the alphabet with a tiny scale: every G equals 0, D = 0.
    table = im.laplace_cdf_table(np.array([1 << 23]), np.array([-1536]), -3, 4)
    mass = (1 << 24) - 4
    assert table[0].tolist() == [i + i * mass // 4 for i in range(5)]


@pytest.mark.parametrize("seed", range(6))
def test_arm_matches_literal(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    codec = random_codec(
        rng, width=7, height=5, n_grids=2, n_ctx_rowcol=1 + seed % 3, extreme=seed >= 3
    )
    for g, grid in enumerate(codec.latents):
        mu, log_scale = im.arm_mu_log_scale(codec, g)
        for y in range(grid.shape[0]):
            for x in range(grid.shape[1]):
                assert (mu[y, x], log_scale[y, x]) == literal_arm(codec, grid, y, x)


@pytest.mark.parametrize("taps", range(1, 9))
def test_upsample_pass_matches_literal(taps: int) -> None:
    rng = np.random.default_rng(taps)
    for n_in in (1, 2, 3, 4, 7):
        for n_out in (2 * n_in - 1, 2 * n_in):
            if n_out < 1:
                continue
            for extreme in (False, True):
                bound = 2**31 if extreme else 2**16
                a = rng.integers(-bound, bound, size=(3, n_in))
                v = rng.integers(-32768, 32768, size=taps)
                shift = int(rng.integers(0, 17))
                got = im.upsample_pass(a, v, shift, n_out, axis=1)
                for row, line in zip(got, a, strict=True):
                    expected = literal_upsample_line(line.tolist(), v.tolist(), shift, n_out)
                    assert row.tolist() == expected


@pytest.mark.parametrize(
    "size, extreme, syn",
    [
        ((1, 1), False, "2-3-linear-relu,3-1-linear-none"),
        ((6, 5), False, "4-5-linear-leakyrelu,4-3-residual-relu,3-7-linear-none"),
        ((5, 3), True, "3-3-linear-leakyrelu,3-1-residual-relu,3-7-residual-none"),
        ((9, 2), True, "2-1-linear-relu,3-5-linear-none"),
        ((3, 4), False, "1-3-linear-none"),
    ],
)
def test_full_simulation_matches_literal(size, extreme, syn) -> None:
    width, height = size
    rng = np.random.default_rng(width * 31 + height)
    n_channels = int(syn.split(",")[-1].split("-")[0])
    codec = random_codec(
        rng,
        width=width,
        height=height,
        n_grids=4,
        color_format=3 if n_channels == 3 else 0,
        syn=syn,
        extreme=extreme,
        ups_taps=int(rng.integers(1, 9)),
    )
    dense = im.upsample_dense(codec)
    assert dense.tolist() == literal_dense(codec).tolist()
    synthesis = im.synthesis_output(codec, dense)
    assert synthesis.tolist() == literal_synthesis(codec, dense).tolist()
    planes = im.simulate_decode(codec)
    expected = literal_planes(codec, synthesis)
    assert [p.tolist() for p in planes] == [p.tolist() for p in expected]


def test_exact_matmul_large_values() -> None:
    rng = np.random.default_rng(5)
    w = rng.integers(-32768, 32768, size=(4, 3136))
    x = rng.integers(-(2**31), 2**31, size=(3136, 3))
    expected = [
        [sum(int(a) * int(b) for a, b in zip(row, col, strict=True)) for col in x.T] for row in w
    ]
    got = im._exact_matmul(w, x)
    assert [[w32(v) for v in row] for row in got.tolist()] == [
        [w32(v) for v in row] for row in expected
    ]


def test_canonical_raw_bytes() -> None:
    planes = [np.array([[1, 2], [3, 258]]), np.array([[65535]])]
    assert im.canonical_raw_bytes(planes, 10) == bytes([1, 0, 2, 0, 3, 0, 2, 1, 255, 255])
    assert im.canonical_raw_bytes([np.array([[1, 2, 255]])], 8) == bytes([1, 2, 255])


def test_latent_bits_matches_frequencies() -> None:
    rng = np.random.default_rng(9)
    codec = random_codec(rng, width=9, height=7, n_grids=3, constant_grids=[1])
    total = 0.0
    for grid in codec.latents:
        lo, hi = int(grid.min()), int(grid.max())
        if lo == hi:
            continue
        for y in range(grid.shape[0]):
            for x in range(grid.shape[1]):
                mu, log_scale = literal_arm(codec, grid, y, x)
                cdf = literal_cdf(mu, log_scale, lo, hi - lo + 1)
                s = int(grid[y, x]) - lo
                total += 24 - np.log2(cdf[s + 1] - cdf[s])
    assert im.latent_bits(codec) == pytest.approx(total, rel=1e-12)


@pytest.mark.parametrize("extreme", [False, True])
def test_banded_evaluation_equals_whole(monkeypatch: pytest.MonkeyPatch, extreme: bool) -> None:
    """ARM and synthesis work in bands of rows; one-row bands give the same result."""
    rng = np.random.default_rng(77)
    codec = random_codec(
        rng, width=21, height=13, n_grids=3, n_ctx_rowcol=3, extreme=extreme,
        syn="5-7-linear-relu,5-3-residual-leakyrelu,3-5-linear-none", color_format=1,
    )  # fmt: skip
    whole = [im.arm_mu_log_scale(codec, g) for g in range(3)]
    dense = im.upsample_dense(codec)
    synthesis = im.synthesis_output(codec, dense)
    monkeypatch.setattr(im, "_BLOCK_ELEMENTS", 1)
    for g in range(3):
        mu, log_scale = im.arm_mu_log_scale(codec, g)
        assert np.array_equal(mu, whole[g][0]) and np.array_equal(log_scale, whole[g][1])
    assert np.array_equal(im.synthesis_output(codec, dense), synthesis)


def test_synthesis_split_path_matches_literal() -> None:
    """Extreme weights on wide 7x7 layers: sums of products reach 2^53, so the
    simulation splits the activations into 16-bit halves; still exact."""
    codec = random_codec(
        np.random.default_rng(123), width=4, height=3, n_grids=7, color_format=2, extreme=True,
        syn="16-7-linear-none,3-7-linear-leakyrelu", shifts=dict(ups_shift=0),
    )  # fmt: skip
    dense = im.upsample_dense(codec)
    w0 = codec.syn_weights[0][0]
    assert int(np.abs(w0).sum(axis=(1, 2, 3)).max()) * int(np.abs(dense).max()) >= 1 << 53
    synthesis = im.synthesis_output(codec, dense)
    assert synthesis.tolist() == literal_synthesis(codec, dense).tolist()
