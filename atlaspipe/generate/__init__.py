"""MC and pseudo-data in the real ATLAS Open Data schemas, and the embedded demo sample."""
