import pytest

from bicep_model import MISSING_TOOLS, pycep, yaml


@pytest.fixture(autouse=True)
def _tools_installed():
    if pycep is None or yaml is None:
        pytest.fail(MISSING_TOOLS)
