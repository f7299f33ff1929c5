"""Use cases: everything that reads or changes the database on someone's behalf, one module per
use case, each callable alike from the CLI, the jobs, the API and the admin.

Rules: rule_versions (save, publish, roll back), rule_dry_run, rule_replay.
"""
