"""A Spin-style WebAssembly HTTP host: `host up -f spin.toml`."""

__version__ = "0.1.0"
