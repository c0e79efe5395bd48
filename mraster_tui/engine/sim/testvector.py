"""Constants of the loopback exchange that the CLI needs without importing the server.

The default API key and secret are the signing test vector of the Binance/AsterDex docs; they
are public and only ever accepted by the loopback exchange."""

TEST_API_KEY = "dbefbc809e3e83c283a984c3a1459732ea7db1360ca80c5c2c8867408d28cc83"
TEST_API_SECRET = "2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9"
VENUES = ("binance", "aster")
