"""The estimators' compiled Glorot draw (``kernels/common/mt19937.py``) against numpy's own
``RandomState.uniform``: the same bits, and the stream left where numpy's call leaves it."""
import numpy as np
import pytest

from fastnn.kernels.common import mt19937 as _mt19937


@pytest.fixture
def compiled_always(monkeypatch):
    monkeypatch.setattr(_mt19937, "COMPILED_FROM", 1)


def _both(prepare, low, high, shape, dtype):
    ours, theirs = np.random.RandomState(11), np.random.RandomState(11)
    prepare(ours)
    prepare(theirs)
    want = theirs.uniform(low, high, shape).astype(dtype, copy=False)
    got = _mt19937.uniform(ours, low, high, shape, dtype)
    return got, want, ours, theirs


# every kind of start in a 624-word block (0, odd words, its last pair, its end), and sizes
# below, at and across the block's 312 doubles
@pytest.mark.parametrize("before", [0, 1, 5, 311, 312, 313, 623, 624, 625])
@pytest.mark.parametrize("shape", [(1,), (2,), (311,), (312,), (313,), (97, 103)])
def test_same_bits_and_stream_after(compiled_always, before, shape):
    got, want, ours, theirs = _both(lambda rs: rs.uniform(size=before), -0.3, 0.7, shape,
                                    np.float64)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(ours.uniform(size=700), theirs.uniform(size=700))


@pytest.mark.parametrize("words", [1, 3, 623])
def test_odd_word_offsets(compiled_always, words):
    """A 32-bit draw before leaves the stream at an odd word: a double then spans two blocks."""
    got, want, ours, theirs = _both(lambda rs: rs.randint(0, 2**31, size=words), -1.0, 1.0,
                                    (1000,), np.float64)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(ours.randint(0, 2**31, size=9), theirs.randint(0, 2**31, size=9))


def test_float32_and_the_gaussian_cache(compiled_always):
    """The cast is numpy's (round to nearest); a cached Gaussian stays cached."""
    got, want, ours, theirs = _both(lambda rs: rs.standard_normal(1), -1e-3, 1e-3, (64, 129),
                                    np.float32)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    assert ours.standard_normal() == theirs.standard_normal()


def test_large_draw_takes_the_compiled_path_and_matches():
    size = _mt19937.COMPILED_FROM + 7
    got, want, ours, theirs = _both(lambda rs: None, -0.01, 0.01, (size,), np.float32)
    np.testing.assert_array_equal(got, want)
    assert ours.uniform() == theirs.uniform()


def test_other_bit_generators_take_numpys_path(compiled_always):
    ours = np.random.RandomState(np.random.PCG64(3))
    theirs = np.random.RandomState(np.random.PCG64(3))
    np.testing.assert_array_equal(_mt19937.uniform(ours, 0, 1, (50,), np.float64),
                                  theirs.uniform(0, 1, 50))
