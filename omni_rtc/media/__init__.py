"""Media converters between aiortc tracks and the realtime session."""
