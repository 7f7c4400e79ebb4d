"""The tuning database's format, below both of its users: `reidc compile --tuning-db` reads it
(database.py: the folder, the target keys, a checked read-only load), `reidc tune` writes it
(compiler/tune/database.py). records.py checks the MetaSchedule JSON lines TVM would crash on."""
