"""Development helpers: the pinned Azurite emulator, demo seeding and `make run`."""
