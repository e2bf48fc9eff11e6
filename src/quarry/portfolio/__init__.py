"""Portfolio construction: from a day's scores to the names held.

- ``topk_dropout_day``: one rebalance of Qlib's TopK-Dropout rule, as sell and buy masks.
- ``topk_dropout``: the rule run over days x instruments, giving the holdings after each day.
"""

from quarry.portfolio._topk import topk_dropout, topk_dropout_day

__all__ = [
    "topk_dropout",
    "topk_dropout_day",
]
