"""Hypothesis strategies shared by the decoder tests."""

from __future__ import annotations

from hypothesis import strategies as st

# Any value msgpack can carry, kept small so that short strings (method names, keys) and
# the integer edges come up often: what a decoder must refuse with its one error.
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=7) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=20,
)
