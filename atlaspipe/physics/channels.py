"""The lepton channels of the four-lepton final state, and the flavour codes that make them.

Apart from the selection, which needs awkward, so that the run model, and every command that only
builds or reads documents (``atlaspipe submit``, ``status``), loads without the array libraries.
"""

from __future__ import annotations

ELECTRON = 11
MUON = 13
CHANNELS: tuple[str, ...] = ("4e", "4mu", "2e2mu")
"""Channel names, in the order of the histograms' channel axis."""
CHANNEL_OF_TYPE_SUM = {4 * ELECTRON: 0, 4 * MUON: 1, 2 * ELECTRON + 2 * MUON: 2}
"""The channel index of four leptons by the sum of their ``lep_type`` codes."""
ALLOWED_TYPE_SUMS: tuple[int, ...] = tuple(sorted(CHANNEL_OF_TYPE_SUM))
