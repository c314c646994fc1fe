"""One router per module: the API, Label Studio's ML backend protocol, health and the page."""
