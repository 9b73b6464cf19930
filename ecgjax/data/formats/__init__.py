"""One module per on-disk format; each registers its reader with `specs.register_format`."""
