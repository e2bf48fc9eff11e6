"""Qlib's feature sets, Alpha158 and Alpha360, with Qlib's names and formulas."""

from __future__ import annotations

__all__ = ["DEFAULT_LABEL", "FEATURE_SETS", "alpha158", "alpha360"]

# The close-to-close return from t+1 to t+2: a signal known at t's close trades at t+1.
DEFAULT_LABEL = "Ref($close, -2)/Ref($close, -1) - 1"

_WINDOWS = (5, 10, 20, 30, 60)
_EPS = "1e-12"

_KBAR = {
    "KMID": "($close-$open)/$open",
    "KLEN": "($high-$low)/$open",
    "KMID2": f"($close-$open)/($high-$low+{_EPS})",
    "KUP": "($high-Greater($open, $close))/$open",
    "KUP2": f"($high-Greater($open, $close))/($high-$low+{_EPS})",
    "KLOW": "(Less($open, $close)-$low)/$open",
    "KLOW2": f"(Less($open, $close)-$low)/($high-$low+{_EPS})",
    "KSFT": "(2*$close-$high-$low)/$open",
    "KSFT2": f"(2*$close-$high-$low)/($high-$low+{_EPS})",
    "OPEN0": "$open/$close",
    "HIGH0": "$high/$close",
    "LOW0": "$low/$close",
    "VWAP0": "$vwap/$close",
}

_UP = "Greater($close-Ref($close, 1), 0)"
_DOWN = "Greater(Ref($close, 1)-$close, 0)"
_MOVE = "Abs($close-Ref($close, 1))"
_VUP = "Greater($volume-Ref($volume, 1), 0)"
_VDOWN = "Greater(Ref($volume, 1)-$volume, 0)"
_VMOVE = "Abs($volume-Ref($volume, 1))"
_WV = "Abs($close/Ref($close, 1)-1)*$volume"

# Rolling features: name prefix and formula with {d} for the window, in Qlib's order.
_ROLLING = {
    "ROC": "Ref($close, {d})/$close",
    "MA": "Mean($close, {d})/$close",
    "STD": "Std($close, {d})/$close",
    "BETA": "Slope($close, {d})/$close",
    "RSQR": "Rsquare($close, {d})",
    "RESI": "Resi($close, {d})/$close",
    "MAX": "Max($high, {d})/$close",
    "MIN": "Min($low, {d})/$close",
    "QTLU": "Quantile($close, {d}, 0.8)/$close",
    "QTLD": "Quantile($close, {d}, 0.2)/$close",
    "RANK": "Rank($close, {d})",
    "RSV": f"($close-Min($low, {{d}}))/(Max($high, {{d}})-Min($low, {{d}})+{_EPS})",
    "IMAX": "IdxMax($high, {d})/{d}",
    "IMIN": "IdxMin($low, {d})/{d}",
    "IMXD": "(IdxMax($high, {d})-IdxMin($low, {d}))/{d}",
    "CORR": "Corr($close, Log($volume+1), {d})",
    "CORD": "Corr($close/Ref($close,1), Log($volume/Ref($volume, 1)+1), {d})",
    "CNTP": "Mean($close>Ref($close, 1), {d})",
    "CNTN": "Mean($close<Ref($close, 1), {d})",
    "CNTD": "Mean($close>Ref($close, 1), {d})-Mean($close<Ref($close, 1), {d})",
    "SUMP": f"Sum({_UP}, {{d}})/(Sum({_MOVE}, {{d}})+{_EPS})",
    "SUMN": f"Sum({_DOWN}, {{d}})/(Sum({_MOVE}, {{d}})+{_EPS})",
    "SUMD": f"(Sum({_UP}, {{d}})-Sum({_DOWN}, {{d}}))/(Sum({_MOVE}, {{d}})+{_EPS})",
    "VMA": f"Mean($volume, {{d}})/($volume+{_EPS})",
    "VSTD": f"Std($volume, {{d}})/($volume+{_EPS})",
    "WVMA": f"Std({_WV}, {{d}})/(Mean({_WV}, {{d}})+{_EPS})",
    "VSUMP": f"Sum({_VUP}, {{d}})/(Sum({_VMOVE}, {{d}})+{_EPS})",
    "VSUMN": f"Sum({_VDOWN}, {{d}})/(Sum({_VMOVE}, {{d}})+{_EPS})",
    "VSUMD": f"(Sum({_VUP}, {{d}})-Sum({_VDOWN}, {{d}}))/(Sum({_VMOVE}, {{d}})+{_EPS})",
}


def alpha158() -> dict[str, str]:
    """Qlib's Alpha158: 9 candlestick features, 4 price ratios, 29 rolling families x 5
    windows, named as Qlib names them."""
    out = dict(_KBAR)
    for prefix, formula in _ROLLING.items():
        for d in _WINDOWS:
            out[f"{prefix}{d}"] = formula.format(d=d)
    return out


def alpha360() -> dict[str, str]:
    """Qlib's Alpha360: the last 60 days of prices relative to today's close, and of volume
    relative to today's volume."""
    out: dict[str, str] = {}
    for field in ("close", "open", "high", "low", "vwap"):
        for lag in range(59, 0, -1):
            out[f"{field.upper()}{lag}"] = f"Ref(${field}, {lag})/$close"
        out[f"{field.upper()}0"] = f"${field}/$close"
    for lag in range(59, 0, -1):
        out[f"VOLUME{lag}"] = f"Ref($volume, {lag})/($volume+{_EPS})"
    out["VOLUME0"] = f"$volume/($volume+{_EPS})"
    return out


FEATURE_SETS = {"alpha158": alpha158, "alpha360": alpha360}
