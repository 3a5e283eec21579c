"""The physics, as pure functions and data: the releases' catalogs and schemas, the event selection."""
