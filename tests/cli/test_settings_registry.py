"""`rebal config` and `rebal doctor` find every installed service's settings through the distributions'
``rebal.settings`` entry points, not a list in the CLI."""

from __future__ import annotations

from importlib.metadata import entry_points

from rebal.settings import PORTS, ServiceSettings
from rebal_cli.config import SETTINGS_ENTRY_POINTS, VENUES, service_classes
from rebal_venues.factory import VenuesConfig


def test_every_service_and_the_venues_register_their_settings() -> None:
    names = sorted(entry.name for entry in entry_points(group=SETTINGS_ENTRY_POINTS))
    assert names == sorted([*PORTS, VENUES])
    found = service_classes()
    assert list(found) == [*PORTS, VENUES]  # in the services' order, the venues last
    for name in PORTS:
        settings = found[name]
        assert issubclass(settings, ServiceSettings) and settings.service == name
    assert found[VENUES] is VenuesConfig


def test_the_venues_class_is_loaded_only_when_asked_for() -> None:
    assert list(service_classes(with_venues=False)) == list(PORTS)
