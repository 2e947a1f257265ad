"""Metric conversions and the sliding-window plan of the shared scoring protocol."""
import math

import numpy as np
import pytest

from pipeline.scoring.protocol import flat_metrics, split_metrics, window_plan


def test_metric_conversions():
    lp = np.log(np.full(100, 0.25))  # every token at p = 1/4
    m = split_metrics(lp, chars=200)
    assert m["tokens"] == 100
    assert m["nll"] == pytest.approx(math.log(4))
    assert m["ppl"] == pytest.approx(4.0)
    assert m["bpc"] == pytest.approx(100 * 2 / 200)  # 2 bits per token over 2 chars per token
    assert flat_metrics({"valid": m})["valid_ppl"] == pytest.approx(4.0)


@pytest.mark.parametrize("n, window, stride", [(1000, 128, 64), (129, 128, 64), (50, 128, 64), (1000, 100, 100),
                                               (1000, 64, 1), (777, 128, 96)])
def test_window_plan_scores_every_token_once_with_context(n, window, stride):
    plan = window_plan(n, window, stride)
    scored = np.zeros(n, int)
    for start, first, end in plan:
        assert start <= first <= end <= n and end - start <= window
        scored[first:end] += 1
        if start > 0:  # every token after the first window keeps >= window - stride tokens of context
            assert first - start >= window - stride
    assert (scored == 1).all()
