"""format_spec.md §4-§5: lossless, close to the ideal code length, integer-only probabilities."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from segcodec import bits, entropy


def smooth_latents(shape, seed=0):
    """Latents with spatial and cross-channel structure, like C's output."""
    rng = np.random.default_rng(seed)
    field = rng.normal(size=shape[1:])
    for axis in range(field.ndim):
        field = sum(np.roll(field, s, axis) for s in (-2, -1, 0, 1, 2))
    z = np.stack([(field + rng.normal(scale=1.0, size=field.shape) > t)
                  for t in np.linspace(-1, 1, shape[0])])
    return z.astype(np.uint8)


@pytest.mark.parametrize("shape", [(4, 16, 16), (2, 8, 12, 8), (3, 1, 1), (1, 5, 1, 7)])
def test_round_trip(shape):
    ndim = len(shape) - 1
    z = smooth_latents(shape)
    table = entropy.fit_table([z], ndim)
    payload = entropy.encode(z, table, ndim)
    np.testing.assert_array_equal(entropy.decode(payload, table, shape, ndim), z)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.uint8, hnp.array_shapes(min_dims=3, max_dims=4, max_side=7),
                  elements=st.integers(0, 1)),
       st.integers(0, 2**32 - 1))
def test_round_trip_any_latents_any_table(z, seed):
    ndim = z.ndim - 1
    table = np.random.default_rng(seed).integers(1, 65536, bits.n_contexts(z.shape[0], ndim))
    payload = entropy.encode(z, table, ndim)
    np.testing.assert_array_equal(entropy.decode(payload, table, z.shape, ndim), z)


def test_payload_is_within_one_percent_of_the_ideal_length():
    z = smooth_latents((8, 64, 64), seed=3)
    table = entropy.fit_table([smooth_latents((8, 64, 64), seed=s) for s in range(4)], 2)
    ideal = entropy.ideal_bits(z, table, 2)
    actual = 8 * len(entropy.encode(z, table, 2))
    assert ideal <= actual <= 1.01 * ideal


def test_small_payloads_cost_about_a_byte_over_ideal():
    # §4: trailing bytes of the last 32-bit word are dropped when the stream allows it.
    for seed in range(10):
        z = smooth_latents((4, 16, 16), seed=seed)
        table = entropy.fit_table([smooth_latents((4, 16, 16), seed=s) for s in range(20, 40)], 2)
        ideal = entropy.ideal_bits(z, table, 2)
        assert 8 * len(entropy.encode(z, table, 2)) <= ideal + 16


def test_context_model_beats_a_per_channel_probability():
    train = [smooth_latents((4, 16, 16), seed=s) for s in range(50)]
    test = [smooth_latents((4, 16, 16), seed=s) for s in range(100, 120)]
    table = entropy.fit_table(train, 2)
    # A per-channel table: every context of channel k gets channel k's marginal.
    flat = table.copy()
    per_channel = len(table) // 4
    for k in range(4):
        ones = sum(int(z[k].sum()) for z in train)
        total = sum(z[k].size for z in train)
        flat[k * per_channel:(k + 1) * per_channel] = round((ones + 0.5) / (total + 1) * 65536)
    ctx_bits = sum(entropy.ideal_bits(z, table, 2) for z in test)
    flat_bits = sum(entropy.ideal_bits(z, flat, 2) for z in test)
    assert ctx_bits < 0.8 * flat_bits


def test_decoding_uses_one_coder_call_per_channel_and_phase(monkeypatch):
    import constriction
    calls = []
    real = constriction.stream.queue.RangeDecoder

    class Counting:
        def __init__(self, words):
            self.inner = real(words)

        def decode(self, *args):
            calls.append(1)
            return self.inner.decode(*args)

    z = smooth_latents((4, 16, 16))
    table = entropy.fit_table([z], 2)
    payload = entropy.encode(z, table, 2)
    monkeypatch.setattr(constriction.stream.queue, "RangeDecoder", Counting)
    entropy.decode(payload, table, z.shape, 2)
    assert len(calls) == 2 * 4


def test_contexts_follow_the_spec_on_a_small_example():
    z = np.zeros((2, 3, 3), np.uint8)
    z[0] = [[1, 0, 1], [0, 1, 0], [1, 1, 1]]
    z[1] = [[0, 1, 0], [1, 0, 1], [0, 0, 0]]
    z4 = bits.as_grid4(z)
    span = 5  # 2 * ndim + 1
    pos, ctx = bits.phase_contexts(z4, 0, 1, 2)  # channel 0, odd squares
    assert pos.tolist() == [1, 3, 5, 7]
    # (1): neighbours 1, 1, 1 (left, right, centre) -> n = 3; no earlier channel -> a = 0.
    assert ctx[0] == ((2 * 0 + 1) * 4 + 0) * span + 3
    pos, ctx = bits.phase_contexts(z4, 1, 0, 2)  # channel 1, even squares
    # (0,0): a = z[0,0,0] = 1; n = channel-0 neighbours (0,1)=0 and (1,0)=0 -> 0.
    assert ctx[0] == ((2 * 1 + 0) * 4 + 1) * span + 0
    # centre (1,1): a = 1; channel-0 neighbours 0, 0, 0, 1 -> n = 1.
    assert pos[2] == 4 and ctx[2] == ((2 * 1 + 0) * 4 + 1) * span + 1


def _spec_contexts(z4, k, phase, ndim):
    """§5.1-§5.2 read literally, one position at a time."""
    _, nd, nh, nw = z4.shape
    src = k if phase == 1 else k - 1
    pos, ctx = [], []
    for d in range(nd):
        for h in range(nh):
            for w in range(nw):
                if (d + h + w) % 2 != phase:
                    continue
                a = (int(z4[k - 1, d, h, w]) if k >= 1 else 0) + \
                    (2 * int(z4[k - 2, d, h, w]) if k >= 2 else 0)
                n = 0
                if src >= 0:
                    steps = [(0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1)] + \
                        ([(-1, 0, 0), (1, 0, 0)] if ndim == 3 else [])
                    for dd, dh, dw in steps:
                        if 0 <= d + dd < nd and 0 <= h + dh < nh and 0 <= w + dw < nw:
                            n += int(z4[src, d + dd, h + dh, w + dw])
                pos.append((d * nh + h) * nw + w)
                ctx.append(((2 * k + phase) * 4 + a) * (2 * ndim + 1) + n)
    return pos, ctx


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(1, 5), st.integers(1, 6), st.integers(1, 6),
       st.booleans(), st.integers(0, 2 ** 32 - 1))
def test_contexts_equal_the_spec_read_one_position_at_a_time(k, nd, nh, nw, three, seed):
    ndim = 3 if three else 2
    shape = (k, nd, nh, nw) if three else (k, nh, nw)
    z4 = bits.as_grid4(np.random.default_rng(seed).integers(0, 2, shape, dtype=np.uint8))
    for c in range(k):
        for phase in (0, 1):
            pos, ctx = bits.phase_contexts(z4, c, phase, ndim)
            assert (pos.tolist(), ctx.tolist()) == _spec_contexts(z4, c, phase, ndim)


def test_garbage_payload_gives_bits_or_a_format_error():
    from segcodec.errors import SgcFormatError
    table = np.full(bits.n_contexts(2, 3), 30000)
    rng = np.random.default_rng(0)
    outcomes = set()
    for n in range(0, 200):
        try:
            z = entropy.decode(rng.bytes(n % 64), table, (2, 4, 5, 6), 3)
        except SgcFormatError:
            outcomes.add("error")
            continue
        assert z.shape == (2, 4, 5, 6) and set(np.unique(z)) <= {0, 1}
        outcomes.add("bits")
    assert "bits" in outcomes


def test_table_checks():
    with pytest.raises(ValueError, match="shape"):
        entropy.check_table(np.ones(3), 2, 2)
    with pytest.raises(ValueError, match="1..65535"):
        entropy.check_table(np.zeros(bits.n_contexts(1, 2)), 1, 2)


def _trimmed_by_trial_decodes(sealed, symbols, probabilities):
    """The §4 trim as 0.3.0 made it: decode each candidate and keep the first that works."""
    from segcodec import wire
    for keep in range(max(0, len(sealed) - 4), len(sealed)):
        candidates = [sealed[:keep]]
        if keep and sealed[keep - 1] < 255:
            candidates.append(sealed[:keep - 1] + bytes([sealed[keep - 1] + 1]))
        for cand in candidates:
            try:
                out = wire.decoder_for(cand).decode(wire.coder_model(), probabilities)
            except (ValueError, RuntimeError, AssertionError):
                continue
            if np.array_equal(out, symbols):
                return cand
    return sealed


def test_the_computed_trim_is_the_trial_decoders_choice():
    """Random streams, including runs of near-certain bits (the coder's carries)."""
    import constriction

    from segcodec import wire
    rng = np.random.default_rng(7)
    for i in range(600):
        n = int(rng.integers(1, 2000))
        if i % 3:
            p_one = rng.integers(1, 65535, n) / 65536
        else:
            p_one = np.where(rng.random(n) < 0.5, 1 / 65536, 65535 / 65536)
        probabilities = np.stack([1 - p_one, p_one], 1)
        symbols = (rng.random(n) < p_one).astype(np.int32)
        encoder = constriction.stream.queue.RangeEncoder()
        encoder.encode(symbols, wire.coder_model(), probabilities)
        words, (lower, width) = encoder.pos()
        sealed = wire.coded_bytes(encoder)
        assert entropy.shortest_payload(sealed, words, lower, width) == \
            _trimmed_by_trial_decodes(sealed, symbols, probabilities)
