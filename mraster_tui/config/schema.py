"""The settings schema: the single source of truth for every setting.

Each :class:`Setting` says where it lives in TOML (section and key), its ``ASTER_*`` environment
name (the seed's names), its type, default, range or choices, a one-line help, whether it is a
secret and whether it can change while the engine runs.  The config loader, ``mraster-tui
config``, the README's reference table and the TUI's config editor are all generated from it.

The Python attribute name of a setting is its env name lower-cased without a leading
``aster_`` (``ASTER_RSI_BUY_MIN`` -> ``rsi_buy_min``, ``FAST_TP_RET1`` -> ``fast_tp_ret1``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BOOL, INT, FLOAT, STR, LIST = "bool", "int", "float", "str", "list"


@dataclass(frozen=True, slots=True)
class Setting:
    env: str
    section: str
    type: str
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None
    secret: bool = False
    live: bool = True  # can change while the engine runs
    seed: bool = True  # listed in the seed README
    step: float | None = None  # suggested UI step (sliders)

    @property
    def name(self) -> str:
        n = self.env.lower()
        return n[len("aster_"):] if n.startswith("aster_") else n

    @property
    def key(self) -> str:
        return self.name

    @property
    def range_text(self) -> str:
        if self.choices:
            return "|".join(self.choices)
        if self.min is not None and self.max is not None:
            return f"{_fmt(self.min)}..{_fmt(self.max)}"
        if self.min is not None:
            return f">= {_fmt(self.min)}"
        if self.max is not None:
            return f"<= {_fmt(self.max)}"
        return ""


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


S = Setting

DEFAULT_INCLUDE = (
    "BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "ADAUSDT", "AVAXUSDT",
    "LINKUSDT", "DOTUSDT", "LTCUSDT", "TRXUSDT", "BCHUSDT", "NEARUSDT", "ATOMUSDT", "APTUSDT",
    "ARBUSDT", "OPUSDT", "SUIUSDT", "INJUSDT", "FILUSDT", "ETCUSDT", "UNIUSDT", "ASTERUSDT",
)

SETTINGS: tuple[Setting, ...] = (
    # -- venue -------------------------------------------------------------------------
    S("ASTER_EXCHANGE_BASE", "venue", STR, "https://fapi.asterdex.com",
      "REST endpoint for market data and orders (e.g. https://fapi.binance.com).", live=False),
    S("ASTER_VENUE", "venue", STR, "auto",
      "Venue dialect: auto picks by host (binance.com -> binance, asterdex -> aster).",
      choices=("auto", "binance", "aster"), live=False, seed=False),
    S("ASTER_API_KEY", "venue", STR, "", "Exchange API key (read from env/.env/secrets file; never saved to config.toml).",
      secret=True, live=False),
    S("ASTER_API_SECRET", "venue", STR, "", "Exchange API secret matching the key (never saved to config.toml).",
      secret=True, live=False),
    S("ASTER_RECV_WINDOW", "venue", INT, 10000, "recvWindow in ms tolerated for signed requests.",
      min=1, max=60000, live=False),
    S("ASTER_WORKING_TYPE", "venue", STR, "MARK_PRICE", "Price that triggers stops/TPs on the venue.",
      choices=("MARK_PRICE", "CONTRACT_PRICE")),
    S("ASTER_HTTP_RETRIES", "venue", INT, 2, "Extra attempts for failed reads (orders are never retried blindly).",
      min=0, max=10, live=False),
    S("ASTER_HTTP_BACKOFF", "venue", FLOAT, 0.6, "Base delay in seconds for read retries (exponential, with jitter).",
      min=0.0, max=30.0, live=False),
    S("ASTER_HTTP_TIMEOUT", "venue", FLOAT, 20.0, "HTTP request timeout in seconds.", min=1.0, max=120.0, live=False),
    S("ASTER_KLINE_CACHE_SEC", "venue", FLOAT, 45.0, "Lifetime of cached klines in seconds.", min=0.0, max=3600.0),
    S("ASTER_MAX_DATA_AGE_SEC", "venue", FLOAT, 120.0,
      "Market data older than this never opens a position (managing open ones may use it, with a warning).",
      min=5.0, max=3600.0, seed=False),
    S("ASTER_FETCH_CONCURRENCY", "venue", INT, 64,
      "Concurrent market-data requests per scan (kept-alive connections; the weight budget still limits the rate).",
      min=1, max=128, live=False, seed=False),
    # -- run ---------------------------------------------------------------------------
    S("ASTER_PAPER", "run", BOOL, False,
      "Paper trading on the simulated exchange (no signed request leaves the machine). Without keys the bot is always paper.",
      live=False),
    S("ASTER_RUN_ONCE", "run", BOOL, False, "Run a single scan cycle and exit.", live=False),
    S("ASTER_LOGLEVEL", "run", STR, "INFO", "Log verbosity.", choices=("DEBUG", "INFO", "WARNING", "ERROR")),
    S("ASTER_LOG_FORMAT", "run", STR, "text", "Headless log format: readable text or JSON lines.",
      choices=("text", "json"), live=False, seed=False),
    S("ASTER_STATE_FILE", "run", STR, "aster_state.json",
      "State file (trades, policy, cooldowns); a relative path resolves under the data dir.", live=False),
    S("ASTER_LOOP_SLEEP", "run", FLOAT, 20.0,
      "Seconds between protective passes; full scans are also scheduled right after each candle close.",
      min=1.0, max=3600.0),
    S("ASTER_SCAN_DELAY_SEC", "run", FLOAT, 1.0, "Seconds after a candle close (server time) before the scan.",
      min=0.0, max=60.0, seed=False),
    S("ASTER_HISTORY_MAX", "run", INT, 250, "Closed trades kept in the state file.", min=10, max=100000),
    S("ASTER_DECISION_LOG", "run", STR, "decisions.jsonl",
      "Append-only decision log (JSONL); relative to the data dir; empty disables it.", live=False, seed=False),
    S("ASTER_PRESET", "run", STR, "none", "Active preset applied on top of the defaults.",
      choices=("none", "low", "mid", "high"), seed=False),
    # -- universe ----------------------------------------------------------------------
    S("ASTER_QUOTE", "universe", STR, "USDT", "Quote asset of traded contracts and of the account.", live=False),
    S("ASTER_INCLUDE_SYMBOLS", "universe", LIST, DEFAULT_INCLUDE,
      "Allow-list of symbols (comma-separated); empty means every eligible symbol."),
    S("ASTER_EXCLUDE_SYMBOLS", "universe", LIST, ("AMZNUSDT", "APRUSDT"), "Block-list applied after the allow-list."),
    S("ASTER_UNIVERSE_MAX", "universe", INT, 40, "Symbols kept, ranked by 24h quote volume.", min=1, max=1000),
    S("ASTER_UNIVERSE_ROTATE", "universe", BOOL, False,
      "Rotate a window through the ranked list each cycle so every eligible symbol gets scanned."),
    S("ASTER_MIN_QUOTE_VOL_USDT", "universe", FLOAT, 75000.0, "Minimum 24h quote volume to be tradable.",
      min=0.0, max=1e12),
    # -- strategy ----------------------------------------------------------------------
    S("ASTER_INTERVAL", "strategy", STR, "5m", "Signal timeframe (closed candles only).",
      choices=("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h"), live=False),
    S("ASTER_HTF_INTERVAL", "strategy", STR, "30m", "Higher timeframe for trend alignment.",
      choices=("5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d"), live=False),
    S("ASTER_KLINES", "strategy", INT, 360, "Candles of history fetched per symbol and timeframe.",
      min=120, max=1500, live=False),
    S("ASTER_RSI_BUY_MIN", "strategy", FLOAT, 51.0, "RSI(14) must be above this for longs.", min=0.0, max=100.0),
    S("ASTER_RSI_SELL_MAX", "strategy", FLOAT, 49.0, "RSI(14) must be below this for shorts.", min=0.0, max=100.0),
    S("ASTER_ALLOW_TREND_ALIGN", "strategy", BOOL, True,
      "Also take trend continuations (fast EMA above slow, HTF aligned) without a fresh cross."),
    S("ASTER_ALIGN_RSI_PAD", "strategy", FLOAT, 1.5, "RSI pad for trend-continuation entries.", min=0.0, max=50.0),
    S("ASTER_SPREAD_BPS_MAX", "strategy", FLOAT, 0.009,
      "Max spread as a FRACTION of mid price (0.009 = 0.9 %, despite the name); limit is max(this, 0.5*ATR/close).",
      min=0.0, max=1.0),
    S("ASTER_WICKINESS_MAX", "strategy", FLOAT, 0.985, "Max larger-wick/range of the last closed candle.",
      min=0.0, max=1.0),
    S("ASTER_MIN_EDGE_R", "strategy", FLOAT, 0.08, "Minimum expected edge in R.", min=-10.0, max=10.0),
    S("ASTER_FUNDING_FILTER_ENABLED", "strategy", BOOL, True, "Skip entries when funding is against the trade."),
    S("ASTER_FUNDING_MAX_LONG", "strategy", FLOAT, 0.0010, "Max funding rate (fraction) for longs.", min=0.0, max=1.0),
    S("ASTER_FUNDING_MAX_SHORT", "strategy", FLOAT, 0.0010, "Max |negative funding| (fraction) for shorts.",
      min=0.0, max=1.0),
    # -- risk --------------------------------------------------------------------------
    S("ASTER_DEFAULT_NOTIONAL", "risk", FLOAT, 120.0, "Notional (USDT) used only when equity is unknown.",
      min=0.0, max=1e9),
    S("ASTER_RISK_PER_TRADE", "risk", FLOAT, 0.007, "Fraction of equity risked per trade (a budget, not a floor).",
      min=0.0001, max=0.1, step=0.0025),
    S("ASTER_LEVERAGE", "risk", INT, 3, "Leverage set on the venue (presets cap at 5x; above 5 only in Pro mode).",
      min=1, max=125, step=1),
    S("ASTER_EQUITY_FRACTION", "risk", FLOAT, 0.25, "Notional cap per trade = equity * leverage * this.",
      min=0.01, max=1.0),
    S("ASTER_MIN_NOTIONAL_USDT", "risk", FLOAT, 5.0, "Skip orders below this notional (never rounded up).",
      min=0.0, max=1e9),
    S("ASTER_MAX_NOTIONAL_USDT", "risk", FLOAT, 300.0, "Hard notional ceiling per trade; 0 means no cap.",
      min=0.0, max=1e12),
    S("ASTER_SIZE_MULT", "risk", FLOAT, 1.0, "Global risk multiplier.", min=0.0, max=10.0),
    S("ASTER_SIZE_MULT_S", "risk", FLOAT, 1.0, "Risk multiplier of the S bucket.", min=0.0, max=10.0),
    S("ASTER_SIZE_MULT_M", "risk", FLOAT, 1.4, "Risk multiplier of the M bucket.", min=0.0, max=10.0),
    S("ASTER_SIZE_MULT_L", "risk", FLOAT, 1.9, "Risk multiplier of the L bucket.", min=0.0, max=10.0),
    S("ASTER_SL_ATR_MULT", "risk", FLOAT, 1.3, "Stop-loss distance in ATRs.", min=0.1, max=20.0),
    S("ASTER_TP_ATR_MULT", "risk", FLOAT, 2.0, "Take-profit distance in ATRs.", min=0.1, max=50.0),
    S("ASTER_MAX_OPEN_GLOBAL", "risk", INT, 2, "Max simultaneous positions.", min=0, max=100),
    S("ASTER_MAX_OPEN_PER_SYMBOL", "risk", INT, 1, "Max positions per symbol (one-way mode: 0 or 1).", min=0, max=1),
    S("ASTER_FAIL_COOLDOWN_SEC", "risk", FLOAT, 60.0, "Block a symbol for this long after an order failure.",
      min=0.0, max=86400.0, seed=False),
    # -- fasttp ------------------------------------------------------------------------
    S("FAST_TP_ENABLED", "fasttp", BOOL, True, "Tighten the stop to lock in profit on adverse moves."),
    S("FASTTP_MIN_R", "fasttp", FLOAT, 0.25, "Unrealised R needed before FastTP acts.", min=0.0, max=10.0),
    S("FAST_TP_RET1", "fasttp", FLOAT, -0.0010, "Adverse 60 s return that triggers FastTP (long; mirrored short).",
      min=-0.5, max=0.0),
    S("FAST_TP_RET3", "fasttp", FLOAT, -0.0020, "Adverse 180 s return that triggers FastTP (long; mirrored short).",
      min=-0.5, max=0.0),
    S("FASTTP_SNAP_ATR", "fasttp", FLOAT, 0.25, "New stop sits this many ATRs behind mid (never loosens).",
      min=0.0, max=10.0),
    S("FASTTP_COOLDOWN_S", "fasttp", FLOAT, 45.0, "Seconds between FastTP moves on a symbol.", min=0.0, max=86400.0),
    # -- policy ------------------------------------------------------------------------
    S("ASTER_BANDIT_ENABLED", "policy", BOOL, True, "LinUCB bandit decides TAKE/SKIP and the size bucket."),
    S("ASTER_ALPHA_ENABLED", "policy", BOOL, True, "Online alpha model may veto or promote after warm-up.", seed=False),
    S("ASTER_ALPHA_THRESHOLD", "policy", FLOAT, 0.55, "Alpha P(R>margin) below this vetoes (after warm-up).",
      min=0.0, max=1.0, seed=False),
    S("ASTER_ALPHA_WARMUP", "policy", INT, 40, "Closed trades before the alpha model may veto.", min=0, max=100000,
      seed=False),
    S("ASTER_ALPHA_LR", "policy", FLOAT, 0.05, "Alpha model learning rate.", min=1e-6, max=1.0, seed=False),
    S("ASTER_ALPHA_L2", "policy", FLOAT, 0.0005, "Alpha model L2 penalty.", min=0.0, max=1.0, seed=False),
    S("ASTER_ALPHA_MIN_CONF", "policy", FLOAT, 0.2, "Minimum model confidence before it may veto.",
      min=0.0, max=1.0, seed=False),
    S("ASTER_ALPHA_PROMOTE", "policy", FLOAT, 0.15, "Probability above threshold+this promotes the bucket one step.",
      min=0.0, max=1.0, seed=False),
    S("ASTER_ALPHA_MARGIN", "policy", FLOAT, 0.05, "R margin: the alpha model predicts P(R > margin).",
      min=0.0, max=5.0, seed=False),
    S("ASTER_BANDIT_UCB_ALPHA", "policy", FLOAT, 1.0,
      "Bandit optimism about contexts it has little data on (LinUCB alpha).", min=0.0, max=10.0, seed=False),
    S("ASTER_BANDIT_EXPLORE", "policy", FLOAT, 0.05,
      "Share of policy skips taken anyway in bucket S, to keep learning.", min=0.0, max=0.5, seed=False),
    S("ASTER_BANDIT_MAX_SKIPS", "policy", INT, 20,
      "After this many policy skips in a row the next signal is taken in bucket S (no deadlock).",
      min=1, max=1000, seed=False),
    S("ASTER_BANDIT_RISK_AVERSION", "policy", FLOAT, 0.15,
      "Risk aversion in the bucket reward; higher favours smaller buckets.", min=0.0, max=5.0, seed=False),
    S("ASTER_BANDIT_SIZE_CAUTION", "policy", FLOAT, 1.0,
      "Certainty a bigger bucket needs over a smaller one (0 = greedy sizing).", min=0.0, max=10.0, seed=False),
    # -- guard -------------------------------------------------------------------------
    S("ASTER_GUARD_INTERVAL_SEC", "guard", FLOAT, 5.0, "Seconds between bracket-guard passes.", min=1.0, max=600.0,
      seed=False),
    S("ASTER_GUARD_FAIL_LIMIT", "guard", INT, 3, "Consecutive guard failures that trip the circuit breaker.",
      min=1, max=100, seed=False),
    # -- paper / demo ------------------------------------------------------------------
    S("ASTER_PAPER_BALANCE", "paper", FLOAT, 10000.0, "Starting USDT balance of the paper/demo account.",
      min=1.0, max=1e12, live=False, seed=False),
    S("ASTER_TAKER_FEE", "paper", FLOAT, 0.0005, "Simulated taker fee (Binance USD-M VIP0).", min=0.0, max=0.01,
      live=False, seed=False),
    S("ASTER_MAKER_FEE", "paper", FLOAT, 0.0002, "Simulated maker fee (Binance USD-M VIP0).", min=-0.01, max=0.01,
      live=False, seed=False),
    S("ASTER_SLIPPAGE_BPS", "paper", FLOAT, 1.0, "Simulated slippage beyond half the spread, in bps.",
      min=0.0, max=500.0, live=False, seed=False),
    S("ASTER_DEMO_SYMBOLS", "paper", INT, 8, "Symbols in the offline demo market.", min=1, max=300, live=False,
      seed=False),
    S("ASTER_DEMO_SPEED", "paper", FLOAT, 300.0, "Demo clock speed (300 = one 5m candle per second).",
      min=1.0, max=100000.0, live=False, seed=False),
    S("ASTER_DEMO_SEED", "paper", INT, 1, "Seed of the synthetic demo market.", min=0, max=2**31 - 1, live=False,
      seed=False),
    # -- ui ----------------------------------------------------------------------------
    S("ASTER_UI_PRO", "ui", BOOL, False, "Start the TUI in Pro mode (remembered when toggled with p).", seed=False),
)

BY_ENV: dict[str, Setting] = {s.env: s for s in SETTINGS}
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(s.section for s in SETTINGS))

assert len(BY_ENV) == len(SETTINGS) and len(BY_NAME) == len(SETTINGS), "duplicate setting"


def setting(settings: Any, name: str) -> Any:
    """``settings.name``, or the schema's default when ``settings`` is None or a duck-typed
    object without it (engine parts built in tests or tools without a full :class:`Settings`)."""
    default = BY_NAME[name].default
    return default if settings is None else getattr(settings, name, default)

# The preset persona's guardrails (the schema's own range for leverage is the venue's).
PRESET_RISK_MIN, PRESET_RISK_MAX, PRESET_RISK_STEP = 0.0025, 0.05, 0.0025
PRESET_LEVERAGE_MIN, PRESET_LEVERAGE_MAX = 1, 5
PRESETS: tuple[str, ...] = ("low", "mid", "high")
