"""The review web app and API, also a Label Studio ML backend."""
