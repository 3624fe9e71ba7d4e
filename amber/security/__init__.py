"""Safe loading: the allowlist unpickler, stream vetting, scanning of foreign files, signing."""
