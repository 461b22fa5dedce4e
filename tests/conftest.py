"""Every fixture shared between test folders lives in tests/support (tests.support.plugin); a
folder's conftest holds only what that folder uses."""

pytest_plugins = ["tests.support.plugin"]
