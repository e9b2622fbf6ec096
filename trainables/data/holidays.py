"""Public holidays as known-future features: whether a row's day is a holiday, and whether each of the next
``horizon`` steps is. The calendar is a function of time alone, so the leads are known when the forecast is made
(a holiday a week ahead is in every calendar today), unlike any measured column's future."""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd
from pandas.tseries.holiday import AbstractHolidayCalendar, Holiday, USFederalHolidayCalendar

HOLIDAY_CALENDARS: tuple[str, ...] = ("US",)
"""``US``: the federal holidays (pandas' calendar: New Year, MLK, Presidents, Memorial, Juneteenth, Independence,
Labor, Columbus, Veterans, Thanksgiving, Christmas), both the days observed and the dates themselves: births,
traffic and sales move on the 25th of December when the office closes on the 24th."""


def holiday_names(horizon: int) -> list[str]:
    """Feature names: the row's own day, then one lead per forecast step."""
    return ["holiday", *(f"holiday_lead{k}" for k in range(1, horizon + 1))]


@cache
def _calendar(name: str) -> AbstractHolidayCalendar:
    if name != "US":
        raise ValueError(f"data.holidays = {name!r}: must be one of {', '.join(HOLIDAY_CALENDARS)}")
    observed = USFederalHolidayCalendar.rules
    actual = [
        Holiday(f"{rule.name} (date)", month=rule.month, day=rule.day, start_date=rule.start_date)
        for rule in observed
        if rule.observance is not None and rule.month and rule.day
    ]
    return AbstractHolidayCalendar(name="US federal, observed and actual", rules=[*observed, *actual])


def holiday_features(times: pd.Series, name: str, step: pd.Timedelta, horizon: int) -> dict[str, np.ndarray]:
    """0/1 columns (float64) for ``holiday_names(horizon)``: is the day of ``times + k * step`` a holiday, k = 0..H."""
    index = pd.DatetimeIndex(times)
    if len(index) == 0:
        return {n: np.zeros(0) for n in holiday_names(horizon)}
    first, last = index.min().normalize(), index.max().normalize()
    dates = _calendar(name).holidays(first - pd.Timedelta(days=1), last + step * horizon + pd.Timedelta(days=1))
    return {
        feature: (index + step * k).normalize().isin(dates).astype(np.float64)
        for k, feature in enumerate(holiday_names(horizon))
    }


__all__ = ["HOLIDAY_CALENDARS", "holiday_features", "holiday_names"]
