"""mraster-tui: a terminal trading bot for Binance-compatible perpetual futures."""

__version__ = "0.1.0"
