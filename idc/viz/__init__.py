"""Figure helpers shared by the stages (book-style panels, grids, overlays)."""
