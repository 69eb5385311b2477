"""Transports: thin adapters between a wire (WebRTC, SIP, media streams, a pipe) and a
:class:`~omni_rtc.conversation.Conversation`."""
