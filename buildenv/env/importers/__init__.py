"""Translate other tools' schemas (Great Expectations suites, TFDV schemas) into environment
columns: `buildenv import gx|tfdv`."""
