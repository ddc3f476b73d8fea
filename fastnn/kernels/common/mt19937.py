"""scikit-learn's Glorot draw, the same bits, compiled: ``uniform(rs, low, high, shape, dtype)``
(the estimators' first-layer draw; here with the kernels, so that it is cached where they are).

scikit-learn's MLP draws its first layer with ``rs.uniform(-bound, bound, (n_features,
hidden))`` from a ``numpy.random.RandomState``, and the estimators draw the same numbers to fit
as it fits.  For wide sparse data that draw is most of a fit: 200,000 features x 256 hidden units
are 51M doubles from MT19937, 0.33 s in numpy (float64 out, then a cast to float32), against
0.14 s for the two epochs of sparse SGD that follow.  The stream is sequential, but most of its
cost is not: one MT19937 block is a 624-word recurrence (``_twist``) followed by 624 independent
tempers, and a double is two tempered words (``(a >> 5) * 2**26 + (b >> 6)) / 2**53``, numpy's
``random_standard_uniform``).  Block by block, with the tempering and the conversion
vectorised and written straight into the output's dtype, the same draw takes 0.09 s.

``rs``'s state is read and written back (``get_state`` / ``set_state``), so the draws after this
one (the biases, the second layer, the epochs' shuffles) continue the stream as numpy's would.
Exactness is tested against ``RandomState.uniform`` at every offset in a block and odd word
offsets (a 32-bit draw before).  Draws below ``COMPILED_FROM`` values, and a ``RandomState``
on another bit generator, take numpy's own path.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..jit import CACHE

# (strict IEEE, not the kernels' fastmath: numpy computes low + range * u as two roundings)
_OPTIONS = dict(cache=CACHE, nogil=True, fastmath=False, error_model="numpy")
N, M = 624, 397
# values: below this numpy's own draw (~50 ms at 8M) costs less than the compiled one's first
# call in a process (0.2 s to load it from the cache; 0.9 s to compile it the first time ever)
COMPILED_FROM = 1 << 23


@njit(**_OPTIONS)
def _twist(mt):
    """The next block of MT19937's state, in place (its reference implementation)."""
    upper, lower, matrix = np.uint32(0x80000000), np.uint32(0x7fffffff), np.uint32(0x9908b0df)
    one = np.uint32(1)
    for i in range(N - M):
        y = (mt[i] & upper) | (mt[i + 1] & lower)
        mt[i] = mt[i + M] ^ (y >> one) ^ (matrix * (y & one))
    for i in range(N - M, N - 1):
        y = (mt[i] & upper) | (mt[i + 1] & lower)
        mt[i] = mt[i + M - N] ^ (y >> one) ^ (matrix * (y & one))
    y = (mt[N - 1] & upper) | (mt[0] & lower)
    mt[N - 1] = mt[M - 1] ^ (y >> one) ^ (matrix * (y & one))


@njit(**_OPTIONS, inline="always")
def _temper(y):
    y ^= y >> np.uint32(11)
    y ^= (y << np.uint32(7)) & np.uint32(0x9d2c5680)
    y ^= (y << np.uint32(15)) & np.uint32(0xefc60000)
    y ^= y >> np.uint32(18)
    return y


@njit(**_OPTIONS, inline="always")
def _double(a, b, low, span):
    """numpy's ``low + span * next_double`` from two tempered words."""
    u = (np.float64(a >> np.uint32(5)) * 67108864.0 + np.float64(b >> np.uint32(6))) \
        / 9007199254740992.0
    return low + span * u


@njit(**_OPTIONS, inline="always")
def _next_word(mt, pos):
    """The tempered word at ``pos`` (a new block first when the state's is used up) and the
    next ``pos``: MT19937's ``genrand`` one word at a time."""
    if pos == N:
        _twist(mt)
        pos = 0
    return _temper(mt[pos]), pos + 1


@njit(**_OPTIONS)
def _fill(mt, pos, low, span, out):
    """``out[i] = low + span * next_double`` for every ``i`` of ``out (size,)`` (cast to its
    dtype), from the state ``mt (624,)`` at word ``pos``; returns the new ``pos``.  Words up to
    the next block boundary one at a time, then whole blocks (312 doubles each: the twist, then
    tempers and conversions with no dependence between them), then the tail one at a time."""
    n, i = out.shape[0], 0
    while i < n and 0 < pos < N:
        a, pos = _next_word(mt, pos)
        b, pos = _next_word(mt, pos)
        out[i] = _double(a, b, low, span)
        i += 1
    while n - i >= N // 2:  # pos is 0 (a fresh block) or N (the block is used up)
        if pos == N:
            _twist(mt)
        pos = N
        for j in range(N // 2):
            out[i + j] = _double(_temper(mt[2 * j]), _temper(mt[2 * j + 1]), low, span)
        i += N // 2
    while i < n:
        a, pos = _next_word(mt, pos)
        b, pos = _next_word(mt, pos)
        out[i] = _double(a, b, low, span)
        i += 1
    return pos


def uniform(rs: np.random.RandomState, low, high, shape, dtype) -> np.ndarray:
    """``rs.uniform(low, high, shape).astype(dtype)``, to the bit, leaving ``rs`` where that
    call would (module docstring)."""
    size = int(np.prod(shape))
    state = rs.get_state(legacy=False) if size >= COMPILED_FROM else None
    if state is None or state.get("bit_generator") != "MT19937":
        return rs.uniform(low, high, shape).astype(dtype, copy=False)
    mt = np.array(state["state"]["key"], dtype=np.uint32)
    out = np.empty(shape, dtype)
    pos = _fill(mt, int(state["state"]["pos"]), float(low), float(high) - float(low),
                out.reshape(-1))
    state["state"] = {"key": mt, "pos": pos}
    rs.set_state(state)
    return out
