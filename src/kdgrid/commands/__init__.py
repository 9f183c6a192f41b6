"""One module per `kdgrid` subcommand (see `kdgrid.cli`)."""
