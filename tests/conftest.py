"""Shared fixtures: a fixed seed and the distinct small sizes of STYLE.md §9."""

import pytest
import torch

# Distinct small sizes, so that swapped axes fail loudly.
B, T, D, H = 3, 5, 4, 6


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
