"""The suite's float comparisons take numbers, never tensors (see the guard in conftest.py)."""

import numpy as np
import pytest
import torch


def test_approx_refuses_a_tensor_on_either_side():
    with pytest.raises(TypeError, match="torch.Tensor"):
        pytest.approx(torch.tensor(1.0))
    with pytest.raises(TypeError, match="torch.Tensor"):
        assert torch.tensor(1.0) == pytest.approx(1.0)


def test_approx_still_compares_numbers_and_arrays():
    assert 0.1 + 0.2 == pytest.approx(0.3)
    assert 0.31 != pytest.approx(0.3)
    assert np.array([1.0, 2.0]) == pytest.approx([1.0, 2.0 + 1e-9])
    assert np.float32(0.5) == pytest.approx(0.5)
    assert {"a": 1.0} == pytest.approx({"a": 1.0 + 1e-9})
