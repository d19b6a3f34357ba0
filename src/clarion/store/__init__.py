"""The SQL store: models, the unit of work, migrations."""
