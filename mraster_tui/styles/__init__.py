"""Textual stylesheets of the app (global.tcss, app.tcss); theme variables only."""
