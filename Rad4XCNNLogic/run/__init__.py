"""The whole run: its configuration, the stages as records, the runner (fingerprints, resume, run.json), the
HTML report, and reading a finished run folder back."""
