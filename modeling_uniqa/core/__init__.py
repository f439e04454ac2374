"""What every tool of the package stands on: loading a model folder, fingerprints, atomic files,
the process runtime (threads, devices, dtypes, process-group shutdown) and inference speed-ups.
Imports only the remote-code files and `errors`."""
