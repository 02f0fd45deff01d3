"""What the tests share: helpers (plain functions), fixtures (a pytest plugin) and the real parts they start."""
