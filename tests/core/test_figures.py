"""The shared panel figure: the columns asked for are on a log scale, with a geometric moving average."""
import math

import pandas as pd
import pytest

from tinygpt.core.figures import curves_figure, moving_average, pyplot


def test_log_columns_get_a_log_axis_and_the_others_stay_linear():
    history = pd.DataFrame({"step": [0, 1, 2, 3], "loss": [10.8, 6.0, 5.0, 4.6],
                            "perplexity": [math.exp(v) for v in (10.8, 6.0, 5.0, 4.6)]})
    fig = curves_figure(history, ["loss", "perplexity"], "t", log_y=["perplexity"])
    scales = {ax.get_title(): ax.get_yscale() for ax in fig.axes}
    pyplot().close(fig)
    assert scales == {"loss": "linear", "perplexity": "log"}


def test_the_moving_average_on_a_log_axis_is_geometric():
    values = pd.Series([1000.0, 10.0, 100.0])
    assert moving_average(values, 3).tolist() == pytest.approx([1000, 505, 370])
    assert moving_average(values, 3, log=True).tolist() == pytest.approx([1000, 100, 100])  # (1000*10*100)^(1/3)
