"""The web dashboard: jobs, runs, models and datasets in the browser, served by
``quarry server start`` at ``/`` behind the job service's tokens (``add_dashboard``)."""

from quarry.ui._app import add_dashboard

__all__ = ["add_dashboard"]
