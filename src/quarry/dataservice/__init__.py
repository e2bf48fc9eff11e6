"""The data service: the registered datasets served point in time over HTTP (Arrow IPC or
Parquet) and Arrow Flight, behind the job database's tokens and dataset rules, every read
written to the audit log.

- ``DataService`` and ``create_data_app``: the catalog, answers kept in memory by commit,
  the routes (``_app``); ``FlightFront``: the same reads over Flight (``_flight``).
- ``build_data`` and ``serve_data``: mounted on ``quarry server start``'s port, or alone
  (``--only data``), Flight with ``--flight-port`` (``_server``).

The client is the data layer's (``quarry.connect``), so that research code reads through
the service without importing a server.
"""

from quarry.dataservice._app import DataService, create_data_app
from quarry.dataservice._catalog import DataCatalog, NoSuchDataset
from quarry.dataservice._server import DataStack, build_data, serve_data

__all__ = [
    "DataCatalog",
    "DataService",
    "DataStack",
    "NoSuchDataset",
    "build_data",
    "create_data_app",
    "serve_data",
]
