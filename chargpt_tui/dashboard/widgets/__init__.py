"""The dashboard's panels. Each is passive: the app hands it data, it redraws itself."""

from .device_panel import DevicePanel
from .footer import DashboardFooter
from .loss_chart import LossChart
from .progress_panel import ProgressPanel
from .samples_panel import SamplesPanel
from .status_bar import StatusBar

__all__ = ["DashboardFooter", "DevicePanel", "LossChart", "ProgressPanel", "SamplesPanel", "StatusBar"]
