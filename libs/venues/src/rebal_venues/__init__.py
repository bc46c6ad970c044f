"""Venue adapters behind the `rebal.venue.Venue` port; only the tracker and the executor depend on them."""
